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

from polydistill.errors import CheckpointError
from polydistill.utils import atomic_write_json, library_versions

__all__ = ["save_run_state", "load_run_state", "latest_round", "clear_run_state", "flatten_state",
           "unflatten_state"]

FORMAT = "polydistill.run_state"
FORMAT_VERSION = 2  # 2: one run layout for every setup (collector state per task)
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
