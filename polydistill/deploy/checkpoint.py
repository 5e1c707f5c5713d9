"""Student checkpoints (safetensors + JSON metadata, never pickle) and the deployment API.

A student checkpoint is one ``.safetensors`` file whose header metadata holds the JSON
description (format version, student config, embodiment table, tasks, library versions and a
SHA-256 over the weights and this metadata). It is written to a temp file, fsynced and renamed,
so a crash never leaves a half-written checkpoint behind. :func:`load_student` needs torch, NumPy and
safetensors only: no gymnasium, no stable-baselines3.

Example:
    >>> from polydistill import load_student
    >>> policy = load_student("runs/quickstart/student")  # doctest: +SKIP
    >>> action = policy.predict(obs, embodiment="hopper")  # doctest: +SKIP

"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from polydistill.errors import CheckpointError, ObservationError, PolydistillError
from polydistill.students.base import Student, student_class
from polydistill.utils import atomic_write_bytes, library_versions

__all__ = ["save_student", "load_student", "DeployedStudent", "resolve_student_path",
           "FORMAT", "FORMAT_VERSION"]

FORMAT = "polydistill.student"
FORMAT_VERSION = 1
FILENAME = "student.safetensors"


def resolve_student_path(path: str | Path) -> Path:
    """``path`` itself if it names a ``.safetensors`` file, else ``path/student.safetensors``."""
    p = Path(path)
    return p if p.suffix == ".safetensors" else p / FILENAME


def _content_sha256(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """SHA-256 over the weights and the metadata, less this hash and the creation time."""
    h = hashlib.sha256()
    body = {k: v for k, v in meta.items() if k not in ("sha256", "created")}
    h.update(json.dumps(body, sort_keys=True).encode())
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_student(path: str | Path, student: Student, extra: dict[str, Any] | None = None) -> Path:
    """Write ``student`` to ``path`` atomically; returns the file written.

    Args:
        path: A ``.safetensors`` file path, or a folder (``student.safetensors`` inside).
        student: The student to save (its observation statistics are part of the weights).
        extra: More JSON-safe metadata (tasks, loss, config, metrics).
    """
    file = resolve_student_path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"refusing to save a student with non-finite weights in {bad}")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **student.metadata(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": library_versions(),
        **(extra or {}),
    }
    meta = json.loads(json.dumps(meta))  # what load() will see (e.g. int dict keys -> str)
    meta["sha256"] = _content_sha256(state, meta)
    atomic_write_bytes(file, st_save(state, metadata={"polydistill": json.dumps(meta)}))
    return file


_MAX_HEADER = 64 << 20  # safetensors' own limit on the JSON header (100 MB) rounded down


def _header_metadata(header: bytes) -> Any:
    """The ``polydistill`` entry of a safetensors JSON header, decoded (``None`` when absent)."""
    return json.loads(json.loads(header).get("__metadata__", {}).get("polydistill", "null"))


def read_student_metadata(path: str | Path) -> dict[str, Any]:
    """A student checkpoint's JSON metadata, read from the safetensors header without the weights.

    Args:
        path: the checkpoint file, or the folder holding ``student.safetensors``.

    Returns:
        The metadata dict that :func:`load_student` would see.

    Raises:
        CheckpointError: the file is missing, not safetensors, or carries no polydistill metadata.
    """
    file = resolve_student_path(path)
    try:
        with file.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < _MAX_HEADER:
                raise ValueError(f"header length {n} is out of range")
            meta = _header_metadata(f.read(n))
    except OSError as exc:
        raise CheckpointError(f"cannot read student checkpoint {str(file)!r}: {exc}") from None
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointError(
            f"{str(file)!r} is not a readable safetensors student checkpoint: {exc}"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{str(file)!r} has no polydistill metadata; not a student checkpoint")
    return meta


def _read(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not file.exists():
        raise CheckpointError(f"student checkpoint not found: expected a file at {str(file)!r}")
    if not file.is_file():
        raise CheckpointError(f"student checkpoint {str(file)!r} is not a regular file")
    raw = file.read_bytes()
    if not raw:
        raise CheckpointError(f"student checkpoint {str(file)!r} is empty (0 bytes)")
    try:
        state = st_load(raw)
        meta = _header_metadata(raw[8:8 + int.from_bytes(raw[:8], "little")])
    except (SafetensorError, ValueError, UnicodeDecodeError, json.JSONDecodeError,
            OverflowError, MemoryError, AttributeError) as exc:
        hint = ""
        if raw[:1] == b"\x80" or raw[:2] == b"PK":
            hint = " It looks like a pickle/torch.save file; polydistill never unpickles checkpoints."
        raise CheckpointError(
            f"{str(file)!r} is not a readable safetensors student checkpoint "
            f"(truncated or corrupted?): {exc}.{hint}"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{str(file)!r} has no polydistill metadata; not a student checkpoint")
    return state, meta


def load_student(path: str | Path, env: Any = None, embodiment: str | None = None) -> DeployedStudent:
    """Load a student for deployment (torch + NumPy + safetensors only).

    Args:
        path: The ``.safetensors`` file, or the folder holding ``student.safetensors``.
        env: Optionally the env it will drive (Gymnasium env, or PettingZoo env for team
            students): its spaces are checked against the checkpoint's (see
            :meth:`DeployedStudent.check_env`).
        embodiment: With ``env``, the embodiment it is (for multi-embodiment students).

    Raises:
        CheckpointError: missing, empty, truncated, corrupted, tampered (hash mismatch), or of an
            unsupported format version.
        SpaceMismatchError: ``env``'s spaces are not the ones the student was trained for.
    """
    file = resolve_student_path(path)
    if Path(path).is_dir() and not file.exists():
        raise CheckpointError(f"{str(path)!r} is a folder without {FILENAME}")
    state, meta = _read(file)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(file)!r}: expected format {FORMAT!r}, got {meta.get('format')!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(file)!r}: checkpoint format version {version!r} is not supported by this "
            f"polydistill (reads version {FORMAT_VERSION})"
        )
    if _content_sha256(state, meta) != meta.get("sha256"):
        raise CheckpointError(
            f"{str(file)!r}: weights or metadata do not match the stored SHA-256 (corrupted file)"
        )
    try:
        student = student_class(meta.get("student")).from_metadata(meta)
        student.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, PolydistillError) as exc:
        raise CheckpointError(f"{str(file)!r}: inconsistent student checkpoint: {exc}") from None
    student.eval()
    deployed = DeployedStudent(student, meta)
    if env is not None:
        deployed.check_env(env, embodiment)
    return deployed


class DeployedStudent:
    """A loaded student: ``predict(obs, embodiment=...)`` with input validation.

    What ``obs`` is depends on the student's kind (its :meth:`~polydistill.students.Student.prepare`):
    a flat array (generalist), a dict of groups (vision) or ``{agent: {modality: array}}``
    (team). A recurrent student keeps its state between ``predict`` calls, one row per
    observation of the batch; call :meth:`reset` at the start of an episode (or with the mask
    of batch rows whose episode just ended).
    """

    def __init__(self, student: Student, metadata: dict[str, Any]) -> None:
        self.student = student
        self.metadata = metadata
        self.table = student.table
        self.recurrent = bool(student.recurrent)
        self._state: torch.Tensor | None = None
        self._first: np.ndarray | None = None

    def reset(self, done: Any = None) -> None:
        """Start new episodes: all of them (``done=None``) or the rows where ``done`` is true.

        Raises:
            ObservationError: if ``done`` is not a boolean mask over the current batch.
        """
        if done is None or self._first is None:
            self._state = self._first = None
            return
        mask = np.asarray(done)
        if mask.dtype != bool or mask.shape != self._first.shape:
            raise ObservationError(
                f"reset(done): expected a bool mask of shape {self._first.shape}, got "
                f"{mask.dtype} {mask.shape}"
            )
        self._first |= mask

    @property
    def embodiments(self) -> list[str]:
        """Names of the embodiments this student can drive."""
        return self.table.names

    @property
    def tasks(self) -> list[str]:
        """Names of its task tokens (empty: one token per embodiment)."""
        return list(self.table.task_names)

    def check_env(self, env: Any, embodiment: str | None = None) -> None:
        """Refuse an env whose spaces differ from the ones this student was trained for.

        Raises:
            SpaceMismatchError: naming the space, what the checkpoint expects and what the env has.
        """
        self.student.check_env(env, embodiment)

    def export(self, path: str | Path, fmt: str = "onnx", embodiment: str | None = None,
               task: str | None = None) -> Path:
        """Write this student as ONNX (``fmt="onnx"``) or TorchScript (``"torchscript"``).

        The exported graph includes the observation normalizer and the action clipping; see
        :mod:`polydistill.deploy.export` for its inputs and outputs. Returns the file written.
        """
        from polydistill.deploy.export import export_student

        return export_student(self, path, fmt, embodiment, task)  # type: ignore[arg-type]

    def _step(self, x: Any, emb: torch.Tensor, deterministic: bool) -> np.ndarray:
        n = emb.shape[0]
        if self._state is None or self._first is None:
            self._state = self.student.initial_state(n)  # type: ignore[operator]
            self._first = np.ones(n, dtype=bool)
        elif self._state.shape[0] != n:
            raise ObservationError(
                f"this recurrent student holds the state of {self._state.shape[0]} episodes but got "
                f"a batch of {n}; call reset() to start a new batch"
            )
        a, self._state = self.student.step(x, emb, self._state,  # type: ignore[operator]
                                           torch.from_numpy(self._first), deterministic)
        self._first = np.zeros(n, dtype=bool)
        return a.numpy()

    @torch.inference_mode()
    def predict(self, obs: Any, embodiment: str | None = None, deterministic: bool = True, *,
                task: str | None = None, body: Any = None) -> Any:
        """Action(s) for one observation or a batch (see the class docstring for ``obs``).

        A student with task tokens (many tasks on one body) also needs ``task``; pass
        :data:`~polydistill.students.UNSEEN_TASK` for a task it never saw.

        Continuous actions are clipped to the embodiment's bounds and cut to its action
        length; discrete actions are integer ids; a team student returns ``{agent: action}``.

        A morphology student (setup ``morphology``) drives a body it has no name for from the
        body's descriptor, ``body=`` (see :mod:`polydistill.students.morphology`).

        Raises:
            ObservationError: for an observation the student cannot act on, or ``body`` given
                to a student that reads no body descriptor.
        """
        if body is None:
            x, emb, single = self.student.prepare(obs, embodiment, task)
        elif not self.student.reads_body:
            raise ObservationError(f"this {self.student.kind} student reads no body descriptor; "
                                   "drop body= (morphology students take it)")
        else:
            x, emb, single = self.student.prepare(obs, embodiment, task, body=body)  # type: ignore[call-arg]
        if self.recurrent:
            a = self.table.unpad_action(self._step(x, emb, deterministic), int(emb[0]))
        else:
            a = self.student.deploy_act(x, emb, deterministic)
        return self.student.finish(a, single, obs)
