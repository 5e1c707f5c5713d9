"""Thin wrapper: same as `polydistill quickstart ...`."""

import sys

from polydistill.cli import main

if __name__ == "__main__":
    sys.exit(main(["quickstart", *sys.argv[1:]]))
