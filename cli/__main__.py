"""``python -m cli``: the same as the ``mfa-gate`` command."""

from cli.main import main

main()
