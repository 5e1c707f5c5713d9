"""Thin wrapper: same as `polydistill train-teacher ...`."""

import sys

from polydistill.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-teacher", *sys.argv[1:]]))
