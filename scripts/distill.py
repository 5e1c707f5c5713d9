"""Thin wrapper: same as `polydistill distill ...`."""

import sys

from polydistill.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
