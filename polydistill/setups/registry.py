"""The setup registry: a recipe's ``setup:`` name -> its config, run, evaluation and benchmark.

The command line looks setups up here and never branches on their names, so a new setup is
one module that defines a :class:`~polydistill.distill.run.DaggerRun` subclass and registers it.
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
    recipe: str | None = None
    """Recipe in ``agents/`` that ``polydistill distill`` uses without ``--recipe``."""

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
    import polydistill.setups  # noqa: F401  (registers the built-in setups)

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

    ``None`` reads the generalist's default recipe.
    """
    if path is None:
        path = _recipe_path(get_setup("generalist"))
    data = load_yaml(path)
    return get_setup(data.pop("setup", "generalist")), data


def _recipe_path(setup: Setup) -> Path:
    from polydistill.utils import agents_dir

    if setup.recipe is None:
        raise ConfigError(f"setup {setup.name!r} has no default recipe: pass --recipe")
    return agents_dir() / setup.recipe
