"""``python -m bench``: run the benchmark (see ``python -m bench --help``)."""

from bench.main import main

raise SystemExit(main())
