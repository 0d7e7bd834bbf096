"""``python -m listener``: run the confirmation listener until SIGTERM or SIGINT."""

from listener.main import main

raise SystemExit(main())
