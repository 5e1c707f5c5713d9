"""Distillation-run checkpoints: commit points a run resumes from after ``kill -9``.

A run state is any nesting of dicts, lists, tuples, scalars, numpy arrays and torch tensors
(student and optimizer state, buffer arrays and cursors, RNG states, env action logs). It is
written as one ``state.safetensors`` (every array) plus one ``state.json`` (the structure,
with array references), never pickle.

The commit protocol makes a kill at any moment harmless::

    checkpoints/.round-000007-<id>.tmp-<pid>/   <- written and fsynced file by file
    checkpoints/round-000007-<id>/             <- the folder renamed in one step
    checkpoints/latest.json               <- then this pointer, replaced atomically, with
                                             the SHA-256 of both files

``latest.json`` only ever names a complete folder, so a kill mid-write leaves the previous
commit as the latest; leftovers are removed at the next commit. Loading checks the format
version and the hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydistill.errors import CheckpointError, ConfigError, PolydistillError
from polydistill.utils import atomic_write_json, json_roundtrip, library_versions

__all__ = ["save_run_state", "load_run_state", "latest_round", "clear_run_state", "flatten_state",
           "unflatten_state", "ResumableRun", "check_same_config"]

FORMAT = "polydistill.run_state"
FORMAT_VERSION = 1
POINTER = "latest.json"
_PAUSE_ENV = "POLYDISTILL_TEST_PAUSE_IN_COMMIT_S"  # fault-injection hook of the kill tests


# ---------------------------------------------------------------------------- structure
def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "s") -> Any:
    """JSON skeleton of ``obj``; its arrays go to ``tensors`` under unique keys."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}#{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"{prefix}#{len(tensors)}"
        ok = obj.flags.writeable and obj.flags.c_contiguous  # arrays from Ray are read-only
        tensors[key] = torch.from_numpy(obj if ok else np.array(obj, order="C"))
        return {"__ndarray__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: flatten_state(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}}
        return {"__items__": [[k, flatten_state(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise CheckpointError(f"cannot store a {type(obj).__name__} in a run state")


def unflatten_state(skel: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skel, list):
        return [unflatten_state(v, tensors) for v in skel]
    if not isinstance(skel, dict):
        return skel
    try:
        if "__tensor__" in skel:
            return tensors[skel["__tensor__"]]
        if "__ndarray__" in skel:
            return tensors[skel["__ndarray__"]].numpy()
        if "__dict__" in skel:
            return {k: unflatten_state(v, tensors) for k, v in skel["__dict__"].items()}
        if "__items__" in skel:
            return {k: unflatten_state(v, tensors) for k, v in skel["__items__"]}
        if "__tuple__" in skel:
            return tuple(unflatten_state(v, tensors) for v in skel["__tuple__"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"run state structure is damaged: {exc!r}") from None
    raise CheckpointError(f"run state structure is damaged: unexpected node {sorted(skel)}")


# ---------------------------------------------------------------------------- files
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    _fsync_file(path)


def save_run_state(root: str | Path, round_idx: int, state: dict[str, Any]) -> Path:
    """Commit ``state`` as the run's latest checkpoint (see the module docstring).

    Args:
        root: The run's checkpoint folder.
        round_idx: Rounds completed at this commit point (names the folder).
        state: The run state.

    Returns:
        The committed folder.
    """
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # a fresh name every commit: the folder the pointer names is never touched before the
    # new pointer is in place (re-committing a round must not delete the only good commit)
    name = f"round-{round_idx:06d}-{os.urandom(4).hex()}"
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state(state, tensors)
    save_file(tensors, str(tmp / "state.safetensors"))
    _fsync_file(tmp / "state.safetensors")
    pause = float(os.environ.get(_PAUSE_ENV, "0") or 0)
    if pause > 0:
        time.sleep(pause)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "round": round_idx,
            "versions": library_versions(), "state": skeleton}
    atomic_write_json(tmp / "state.json", meta)
    _fsync_dir(tmp)
    final = root / name
    os.replace(tmp, final)
    _fsync_dir(root)
    atomic_write_json(root / POINTER, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "round": round_idx, "dir": name,
        "sha256": {f: _sha256(final / f) for f in ("state.safetensors", "state.json")},
    })
    for old in root.glob("round-*"):  # only the commit just pointed at is needed
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".round-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def clear_run_state(root: str | Path) -> None:
    """Remove every commit under ``root`` (a fresh run replacing an old one in its folder)."""
    root = Path(root)
    (root / POINTER).unlink(missing_ok=True)  # first: no pointer to a folder being removed
    for p in [*root.glob("round-*"), *root.glob(".round-*.tmp-*")]:
        shutil.rmtree(p, ignore_errors=True)


def latest_round(root: str | Path) -> int | None:
    """Rounds completed at the latest commit under ``root`` (``None``: no commit yet)."""
    p = Path(root) / POINTER
    if not p.is_file():
        return None
    try:
        return int(json.loads(p.read_text())["round"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{str(p)!r} is unreadable: {exc!r}") from None


def load_run_state(root: str | Path) -> tuple[int, dict[str, Any]]:
    """Load the latest committed run state under ``root``.

    Returns:
        ``(rounds completed, state)``.

    Raises:
        CheckpointError: if there is no commit, or it is damaged, of another format or version.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(root)
    pointer = root / POINTER
    if not pointer.is_file():
        raise CheckpointError(f"no committed run state in {str(root)!r} (no {POINTER})")
    try:
        ptr = json.loads(pointer.read_text())
        folder = root / ptr["dir"]
        hashes = dict(ptr["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{str(pointer)!r} is unreadable: {exc!r}") from None
    if ptr.get("format") != FORMAT or ptr.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{str(pointer)!r}: expected {FORMAT} v{FORMAT_VERSION}, got "
                              f"{ptr.get('format')} v{ptr.get('format_version')}")
    for f, digest in hashes.items():
        p = folder / f
        if not p.is_file():
            raise CheckpointError(f"run state file {str(p)!r} is missing")
        if _sha256(p) != digest:
            raise CheckpointError(f"run state file {str(p)!r} does not match its SHA-256 (damaged)")
    try:
        meta = json.loads((folder / "state.json").read_text())
        tensors = load_file(str(folder / "state.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"run state in {str(folder)!r} is unreadable: {exc}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"run state version {meta.get('format_version')} != {FORMAT_VERSION}")
    return int(meta["round"]), unflatten_state(meta["state"], tensors)


# ---------------------------------------------------------------------------- trainers
def check_same_config(saved: Any, mine: Any, ignore: tuple[str, ...] = ()) -> None:
    """Refuse a run state written under another config (top-level keys in ``ignore`` may differ).

    Raises:
        CheckpointError: naming the keys that differ.
    """
    a, b = ({k: v for k, v in json_roundtrip(c or {}).items() if k not in ignore} for c in (saved, mine))
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise CheckpointError(f"run state was written by a run with another config (differs in {diff})")


class ResumableRun:
    """Mixin of the trainers: commit points under ``checkpoint_dir`` and :meth:`resume`.

    A trainer provides ``state_dict()`` / ``load_state_dict()`` (the whole run at a round
    boundary), ``round`` (rounds done) and ``checkpoint_dir`` (``None``: no commits).
    """

    checkpoint_dir: Path | None
    round: int
    resume_may_differ: tuple[str, ...] = ()
    """Config keys a resumed run may change (they do not change what is computed)."""

    def _core_state(self) -> dict[str, Any]:
        """What every trainer saves: config, progress, student, optimizer, buffer, global RNGs."""
        from polydistill.config import to_dict
        from polydistill.utils import global_rng_state

        t: Any = self
        return {"config": to_dict(t.config), "round": t.round, "history": t.history,
                "student": t.student.state_dict(), "distiller": t.distiller.state_dict(),
                "buffer": {"state": t.buffer.state(), "data": dict(t.buffer.data)},
                "global_rng": global_rng_state()}

    def _load_core_state(self, state: dict[str, Any]) -> None:
        """Check the config, then restore what :meth:`_core_state` saved."""
        from polydistill.config import to_dict
        from polydistill.utils import set_global_rng_state

        t: Any = self
        check_same_config(state.get("config"), to_dict(t.config), ignore=self.resume_may_differ)
        t.student.load_state_dict(state["student"])
        t.distiller.load_state_dict(state["distiller"])
        t.buffer.load_state(state["buffer"]["state"], state["buffer"]["data"])
        set_global_rng_state(state["global_rng"])
        t.round = int(state["round"])
        t.history = list(state["history"])

    def state_dict(self) -> dict[str, Any]:
        """The whole run at a round boundary."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        raise NotImplementedError

    def commit(self) -> Path | None:
        """Commit the run state under ``checkpoint_dir`` (no-op without one)."""
        if self.checkpoint_dir is None:
            return None
        return save_run_state(self.checkpoint_dir, self.round, self.state_dict())

    def _start_or_continue(self) -> None:
        """At round 0, a fresh run replaces an older one's commits in the same folder."""
        if self.round == 0 and self.checkpoint_dir is not None:
            clear_run_state(self.checkpoint_dir)

    def resume(self) -> bool:
        """Continue from the latest commit, if there is one.

        On CPU the resumed run ends with the same student, bit for bit, as an uninterrupted run.

        Returns:
            Whether a commit was found (``False``: the run starts from scratch).

        Raises:
            ConfigError: if the trainer was built without a run folder.
            CheckpointError: if the commit is damaged or belongs to another config.
        """
        if self.checkpoint_dir is None:
            raise ConfigError("resume() needs a trainer built with run_dir")
        if latest_round(self.checkpoint_dir) is None:
            return False
        _, state = load_run_state(self.checkpoint_dir)
        try:
            self.load_state_dict(state)
        except PolydistillError:
            raise  # typed errors (replay mismatch, dead worker, bad config) say what they are
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"run state in {str(self.checkpoint_dir)!r} is incomplete or "
                                  f"damaged: {exc!r}") from None
        self._after_resume()
        return True

    def _after_resume(self) -> None:
        """Hook: e.g. reopen loggers at the resumed step."""
