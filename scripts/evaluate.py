"""Thin wrapper: same as `polydistill evaluate ...`."""

import sys

from polydistill.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
