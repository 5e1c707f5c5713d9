"""Setups: one module each, with a run class found by name through the registry.

============  ==========================================================================
setup         what
============  ==========================================================================
generalist    specialist teachers (one per task or embodiment) -> one generalist student
vision        privileged-state teacher -> student on pixels + proprioception
caml          shared-knowledge multi-agent teacher -> per-agent students (PettingZoo)
============  ==========================================================================
"""

from polydistill.setups import caml, generalist, vision  # noqa: E402, I001  (register the built-ins)
from polydistill.setups.registry import Setup, get_setup, list_setups, read_recipe, register_setup

__all__ = ["Setup", "get_setup", "list_setups", "read_recipe", "register_setup", "caml", "generalist",
           "vision"]
