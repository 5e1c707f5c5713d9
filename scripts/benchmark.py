"""Thin wrapper: same as `polydistill benchmark ...`."""

import sys

from polydistill.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
