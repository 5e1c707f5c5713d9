"""The ``polydistill`` command: thin, it looks setups up in the registry and never branches on them."""

from polydistill.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
