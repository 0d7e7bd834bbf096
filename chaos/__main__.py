"""``python -m chaos [--actions N] [--database sqlite|postgres] [--output FILE.json] [--quick]``."""

from chaos.suite import main

raise SystemExit(main())
