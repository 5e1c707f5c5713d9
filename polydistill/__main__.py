"""``python -m polydistill ...``: the same command line as the ``polydistill`` script."""

from polydistill.cli import main

raise SystemExit(main())
