"""Setups: one module each, found by name in this registry.

``generalist``, ``vision``, ``caml`` and ``morphology`` ship with polydistill.

A recipe's ``setup:`` name maps to its config, run class, evaluation and benchmark; the command
line looks setups up here and never branches on their names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polydistill.config import load_yaml
from polydistill.errors import ConfigError

__all__ = ["Setup", "register_setup", "get_setup", "list_setups", "read_recipe"]


@dataclass(frozen=True)
class Setup:
    """A registered setup."""

    name: str
    """What recipes write as ``setup: NAME`` (recorded in ``run.json`` and student metadata)."""
    run: type
    """The run class (a :class:`~polydistill.distill.run.DaggerRun` subclass); its ``Config`` is
    the config class and its ``evaluate_student`` the evaluation."""
    benchmark: str | Callable[..., dict[str, Any]] | None = None
    """``polydistill benchmark NAME``: a function of :class:`~polydistill.bench.BenchOptions`
    returning the report (or its ``"module:function"`` path, imported when run)."""

    @property
    def config(self) -> type:
        """The config class."""
        return self.run.Config

    def evaluate(self, student: Any, options: Any) -> list[Any]:
        """Rows of :meth:`DaggerRun.evaluate_student` for a loaded student."""
        return self.run.evaluate_student(student, options)


_SETUPS: dict[str, Setup] = {}


def register_setup(setup: Setup) -> Setup:
    """Make ``setup`` known under its name (re-registering a name replaces it)."""
    if setup.run.setup != setup.name:
        raise ConfigError(f"setup {setup.name!r}: its run class says setup = {setup.run.setup!r}")
    _SETUPS[setup.name] = setup
    return setup


def list_setups() -> list[str]:
    """Names of the registered setups."""
    return sorted(_SETUPS)


def get_setup(name: Any) -> Setup:
    """The setup registered as ``name``.

    Raises:
        ConfigError: for an unknown name (the message lists the registered ones).
    """
    names = list_setups()
    if name not in _SETUPS:
        raise ConfigError(f"unknown setup {name!r}; registered setups: {', '.join(names)}")
    return _SETUPS[name]


def read_recipe(path: str | Path | None) -> tuple[Setup, dict[str, Any]]:
    """The setup a recipe names (``setup:``, default ``generalist``) and its config fields.

    ``None`` reads the default recipe, ``agents/distill.yaml``.
    """
    from polydistill.utils import agents_dir

    data = load_yaml(agents_dir() / "distill.yaml" if path is None else path)
    return get_setup(data.pop("setup", "generalist")), data


from polydistill.setups import caml, generalist, morphology, vision  # noqa: E402, F401  (the built-ins register themselves)
