"""Small shared helpers: atomic writes, library versions, seeding."""

from __future__ import annotations

import json
import os
import platform
import random
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydistill.weights import split_evenly, split_weighted

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = ["atomic_write_bytes", "atomic_write_json", "library_versions", "seed_everything",
           "agents_dir", "spawn_seeds", "split_evenly", "split_weighted", "global_rng_state",
           "set_global_rng_state", "json_roundtrip", "make_env", "EnvNamespace", "ENV_NAMESPACES"]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temp file and ``os.replace``.

    A crash at any moment leaves either the old file or the new one, never a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def command_line(program: str | None = None) -> str:
    """The command line of this process, shell-quoted, for a report or a checkpoint's history.

    Args:
        program: name to show in place of ``argv[0]`` (e.g. ``"scripts/benchmark.py"``). By default
            the console script and ``python -m polydistill`` both show as ``polydistill``.

    Returns:
        The command line, e.g. ``"polydistill distill --env-id polydistill/Pendulum-v0"``.
    """
    argv = list(sys.argv) or [""]
    if program is not None:
        argv[0] = program
    elif Path(argv[0]).name in ("polydistill", "__main__.py"):
        argv[0] = "polydistill"
    return shlex.join(argv)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on (for manifests and checkpoints)."""
    import importlib.metadata as md

    import polydistill

    out = {
        "polydistill": polydistill.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
    }
    for dist, key in (("gymnasium", "gymnasium"), ("mujoco", "mujoco"),
                      ("stable_baselines3", "stable_baselines3"), ("safetensors", "safetensors")):
        try:  # metadata lookup: no import of the (heavy, optional at deployment) package
            out[key] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def agents_dir() -> Path:
    """The installed ``agents/`` folder (recipes and shipped teachers, ``polydistill.agents``)."""
    import polydistill.agents

    return Path(polydistill.agents.__file__).parent


def shipped_path(raw: str | Path) -> Path:
    """``raw`` where it exists (or is absolute), else the same path in the installed ``agents/``.

    ``agents/teachers/x`` and ``teachers/x`` both name a shipped teacher, so recipes can name
    shipped files from any working directory.
    """
    path = Path(raw)
    if path.exists() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("agents",) else path.parts
    return agents_dir().joinpath(*parts)


def spawn_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 32-bit seeds derived from ``seed`` (no two streams share a seed)."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a fresh NumPy generator for the caller."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def global_rng_state() -> dict[str, Any]:
    """States of Python's, NumPy's and torch's global RNGs (JSON-safe except torch's tensor)."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(),
                                        "pos": int(np_state["state"]["pos"])}},
        "torch": torch.get_rng_state(),
    }


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`global_rng_state` (accepts its JSON round trip: lists for tuples)."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32),
                         "pos": int(np_state["state"]["pos"])}
    np.random.set_state(np_state)
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))


def json_roundtrip(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(obj))


@dataclass(frozen=True)
class EnvNamespace:
    """An env id namespace that an optional package registers (e.g. ``Meta-World/``)."""

    module: str
    """Imported to register the namespace's ids."""
    extra: str
    """The pip extra that installs it."""
    wrapper: str | None = None
    """``"module:Name"`` of a wrapper :func:`make_env` puts on every env of the namespace."""

    def __post_init__(self) -> None:
        from polydistill.errors import ConfigError

        if self.wrapper is not None and len(self.wrapper.split(":")) != 2:
            raise ConfigError(f"EnvNamespace.wrapper must be 'module:Name', got {self.wrapper!r}")


ENV_NAMESPACES: dict[str, EnvNamespace] = {
    "Meta-World": EnvNamespace("metaworld", "metaworld", "polydistill.wrappers.gymnasium:SeedTaskChoice"),
}
"""Namespaces :func:`make_env` knows how to bring in; add an entry to support another package."""


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None, **make_kwargs: Any) -> Any:
    """``gymnasium.make`` with user errors (unknown id, bad keyword) turned into ConfigError.

    Ids of an :data:`ENV_NAMESPACES` namespace import their package first (a missing package
    names the extra to install) and get the namespace's wrapper.
    """
    import importlib

    import gymnasium as gym

    import polydistill.envs  # noqa: F401  (registers polydistill/ ids)
    from polydistill.errors import ConfigError

    name = env_id.split("/")[0] if "/" in env_id and ":" not in env_id else None
    space = ENV_NAMESPACES.get(name) if name is not None else None
    if space is not None and env_id not in gym.registry:
        try:
            importlib.import_module(space.module)  # registers the namespace's ids
        except ImportError as exc:
            raise ConfigError(f"{env_id!r} needs the {space.module!r} package: pip install -e "
                              f"\".[{space.extra}]\" ({exc})") from None
    try:
        env = gym.make(env_id, **dict(env_kwargs or {}), **make_kwargs)
    except gym.error.Error as exc:
        raise ConfigError(f"unknown env id {env_id!r}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"bad env_kwargs {dict(env_kwargs or {})} for {env_id!r}: {exc}") from None
    if space is None or space.wrapper is None:
        return env
    module, attr = space.wrapper.split(":")
    try:
        return getattr(importlib.import_module(module), attr)(env)
    except Exception as exc:
        env.close()
        raise ConfigError(f"wrapper {space.wrapper!r} of the {name!r} envs failed: {exc!r}") from None
