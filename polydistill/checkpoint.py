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

from polydistill.config import from_dict, to_dict
from polydistill.embodiment import EmbodimentTable
from polydistill.errors import CheckpointError, ObservationError, PolydistillError, SpaceMismatchError
from polydistill.student import GeneralistStudent, StudentConfig
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


def save_student(path: str | Path, student: GeneralistStudent,
                 extra: dict[str, Any] | None = None) -> Path:
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
    from polydistill.team_student import TeamStudent
    from polydistill.vision_student import VisionStudent

    kind: dict[str, Any] = {"student": "generalist"}
    if isinstance(student, TeamStudent):
        kind = {"student": "team", "team_config": to_dict(student.team),
                "modality_sizes": list(student.modality_sizes)}
    elif isinstance(student, VisionStudent):
        kind = {"student": "vision", "vision_config": to_dict(student.vision),
                "pixel_shape": list(student.pixel_shape) if student.pixel_shape else None}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **kind,
        "student_config": to_dict(student.config),
        "embodiments": student.table.to_json(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": library_versions(),
        **(extra or {}),
    }
    meta = json.loads(json.dumps(meta))  # what load() will see (e.g. int dict keys -> str)
    meta["sha256"] = _content_sha256(state, meta)
    atomic_write_bytes(file, st_save(state, metadata={"polydistill": json.dumps(meta)}))
    return file


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
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("polydistill", "null"))
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
        table = EmbodimentTable.from_json(meta["embodiments"])
        config = from_dict(StudentConfig, meta["student_config"])
        if meta.get("student") == "vision":
            from polydistill.vision_student import VisionConfig, VisionStudent

            e = table.embodiments[0]
            shape = meta.get("pixel_shape")
            student = VisionStudent(e.obs_dim, np.array(e.action_low), np.array(e.action_high),
                                    tuple(shape) if shape else None, config,
                                    from_dict(VisionConfig, meta["vision_config"]))
        elif meta.get("student") == "team":
            from polydistill.team_student import TeamConfig, TeamStudent

            e = table.embodiments[0]
            student = TeamStudent(e.obs_dim, np.array(e.action_low), np.array(e.action_high), config,
                                  from_dict(TeamConfig, meta["team_config"]),
                                  tuple(meta["modality_sizes"]))
        elif meta.get("student") == "generalist":
            student = GeneralistStudent(table, config)
        else:
            raise CheckpointError(f"unknown student kind {meta.get('student')!r}")
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

    A recurrent (vision) student keeps its state between ``predict`` calls, one row per
    observation of the batch; call :meth:`reset` at the start of an episode (or with the mask
    of batch rows whose episode just ended).
    """

    def __init__(self, student: GeneralistStudent, metadata: dict[str, Any]) -> None:
        self.student = student
        self.metadata = metadata
        self.table = student.table
        self.recurrent = bool(getattr(student, "recurrent", False))
        self._state: torch.Tensor | None = None
        self._first: np.ndarray | None = None
        self._frozen: dict[int, Any] = {}  # embodiment id -> folded deterministic policy

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

    def _embodiment(self, embodiment: str | None) -> int:
        if embodiment is None:
            if len(self.table) == 1:
                return 0
            raise ObservationError(
                f"this student drives several embodiments {self.table.names}; pass embodiment=NAME"
            )
        return self.table.id(embodiment)

    def prepare(self, obs: Any, embodiment: str | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Validate and pad ``obs``; returns (padded obs, token ids, was_single).

        Raises:
            ObservationError: unknown embodiment, wrong rank/shape, non-numeric dtype, empty
                batch, or non-finite values.
        """
        e = self._embodiment(embodiment)
        x, single = self._validate(obs, e)
        padded = self.table.pad_obs(x.astype(np.float32), e)
        return torch.from_numpy(padded), torch.full((x.shape[0],), e, dtype=torch.long), single

    def _validate(self, obs: Any, e: int) -> tuple[np.ndarray, bool]:
        """``obs`` as a finite real ``(N, obs_dim)`` array of embodiment ``e``, and whether it was one row."""
        emb = self.table.embodiments[e]
        try:
            x = np.asarray(obs)
        except Exception as exc:  # ragged lists and the like
            raise ObservationError(f"observation is not array-like: {exc}") from None
        if x.dtype == object or not (np.issubdtype(x.dtype, np.floating)
                                     or np.issubdtype(x.dtype, np.integer)):
            raise ObservationError(
                f"observation for {emb.name!r} must be a real-valued array, got dtype {x.dtype}"
            )
        single = x.ndim == 1
        if single:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != emb.obs_dim:
            raise ObservationError(
                f"observation for {emb.name!r}: expected shape ({emb.obs_dim},) or "
                f"(N, {emb.obs_dim}), got {np.asarray(obs).shape}"
            )
        if x.shape[0] == 0:
            raise ObservationError(f"observation batch for {emb.name!r} is empty")
        if not np.all(np.isfinite(x)):
            bad = np.argwhere(~np.isfinite(x))[0].tolist()
            raise ObservationError(
                f"observation for {emb.name!r} has a non-finite value at index {bad}"
            )
        return x, single

    def prepare_dict(self, obs: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor, bool]:
        """Validate a vision student's Dict observation (exactly its groups, no others).

        Raises:
            ObservationError: missing or extra group, wrong shape, dtype or non-finite values.
        """
        keys = tuple(k for k in self.student.obs_keys if k != "first")  # "first": see reset()
        if not isinstance(obs, dict):
            raise ObservationError(
                f"this student takes a dict with groups {list(keys)}, got {type(obs).__name__}"
            )
        if set(obs) != set(keys):
            raise ObservationError(f"observation groups must be exactly {sorted(keys)}, got {sorted(obs)}")
        proprio, _, single = self.prepare(obs["proprio"])
        out = {"proprio": proprio}
        if "pixels" in keys:
            px = np.asarray(obs["pixels"])
            shape = tuple(self.student.pixel_shape)
            if px.dtype != np.uint8:
                raise ObservationError(f"pixels must be uint8, got {px.dtype}")
            batch = px[None] if px.ndim == len(shape) else px
            if batch.shape[1:] != shape or batch.shape[0] != proprio.shape[0]:
                raise ObservationError(
                    f"pixels: expected shape {shape} or (N, *{shape}) matching proprio's N, got {px.shape}"
                )
            out["pixels"] = torch.from_numpy(np.ascontiguousarray(batch))
        return out, torch.zeros(proprio.shape[0], dtype=torch.long), single

    def check_env(self, env: Any, embodiment: str | None = None) -> None:
        """Refuse an env whose spaces differ from the ones this student was trained for.

        Raises:
            SpaceMismatchError: naming the space, what the checkpoint expects and what the env has.
        """
        kind = self.metadata.get("student")

        def shape(space: Any) -> tuple[int, ...]:
            return tuple(getattr(space, "shape", None) or ())

        def need(what: str, expected: Any, got: Any) -> None:
            if expected != got:
                raise SpaceMismatchError(
                    f"{what}: the student expects {expected}, the env {getattr(env, 'spec', None) or env!s} "
                    f"has {got}"
                )

        if kind == "team":
            agent = env.possible_agents[0]
            space, act = env.observation_space(agent), env.action_space(agent)
            mods = self.student.team.modalities  # type: ignore[attr-defined]
            have = getattr(space, "spaces", {})
            need("deployable modalities", list(mods), [m for m in mods if m in have])
            need("modality sizes", list(self.student.modality_sizes),  # type: ignore[attr-defined]
                 [int(np.prod(shape(have[m]))) for m in mods])
            e = self.table.embodiments[0]
        elif kind == "vision":
            space, act = env.observation_space, env.action_space
            have = getattr(space, "spaces", {})
            e = self.table.embodiments[0]
            need("observation groups", sorted(k for k in self.student.obs_keys if k != "first"),
                 sorted(k for k in self.student.obs_keys if k in have and k != "first"))
            need("proprio shape", (e.obs_dim,), shape(have["proprio"]))
            if "pixels" in have and self.student.pixel_shape:  # type: ignore[attr-defined]
                need("pixels shape", tuple(self.student.pixel_shape), shape(have["pixels"]))  # type: ignore[attr-defined]
        else:
            space, act = env.observation_space, env.action_space
            e = self.table.embodiments[self._embodiment(embodiment)]
            need(f"observation shape of {e.name!r}", (e.obs_dim,), shape(space))
        if e.action_kind == "discrete":
            need(f"number of actions of {e.name!r}", e.action_dim, int(getattr(act, "n", -1)))
        else:
            need(f"action shape of {e.name!r}", (e.action_dim,), shape(act))
            bounds = (list(e.action_low or ()), list(e.action_high or ()))
            got = (np.asarray(act.low, float).tolist(), np.asarray(act.high, float).tolist())
            if not np.allclose(bounds, got, atol=1e-6):
                need(f"action bounds of {e.name!r}", bounds, got)

    def export(self, path: str | Path, fmt: str = "onnx", embodiment: str | None = None) -> Path:
        """Write this student as ONNX (``fmt="onnx"``) or TorchScript (``"torchscript"``).

        The exported graph includes the observation normalizer and the action clipping; see
        :mod:`polydistill.export` for its inputs and outputs. Returns the file written.
        """
        from polydistill.export import export_student

        return export_student(self, path, fmt, embodiment)  # type: ignore[arg-type]

    def _predict_team(self, obs: Any, deterministic: bool) -> dict[str, np.ndarray]:
        """Actions of the agents present: ``{agent: {modality: array}} -> {agent: action}``."""
        from polydistill.team_student import flatten_modalities

        mods = tuple(self.student.team.modalities)  # type: ignore[attr-defined]
        sizes = tuple(self.student.modality_sizes)  # type: ignore[attr-defined]
        if not isinstance(obs, dict) or not obs:
            raise ObservationError(
                "a team student takes {agent_id: {modality: array}} for the agents present, got "
                f"{type(obs).__name__ if not isinstance(obs, dict) else 'an empty dict'}"
            )
        rows = []
        for agent, o in obs.items():
            try:
                row = flatten_modalities(o, mods, sizes)
            except ObservationError as exc:
                raise ObservationError(f"agent {agent!r}: {exc}") from None
            if not np.all(np.isfinite(row)):
                raise ObservationError(f"agent {agent!r}: observation has a non-finite value")
            rows.append(row)
        x = torch.from_numpy(np.stack(rows))[None]
        n = x.shape[1]
        a = self.student.act({"obs": x, "present": torch.ones(1, n, dtype=torch.bool)},  # type: ignore[arg-type]
                             torch.zeros(1, n, dtype=torch.long), deterministic=deterministic)[0].numpy()
        return {agent: a[k] for k, agent in enumerate(obs)}

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
    def predict(self, obs: Any, embodiment: str | None = None,
                deterministic: bool = True) -> np.ndarray:
        """Action(s) for one observation ``(obs_dim,)`` or a batch ``(N, obs_dim)``.

        Vision students take a dict ``{"proprio": ..., "pixels": uint8 (3, H, W)}`` (or batches).
        Continuous actions are clipped to the embodiment's bounds and cut to its action
        length; discrete actions are integer ids.
        """
        kind = self.metadata.get("student")
        if kind == "team":
            return self._predict_team(obs, deterministic)
        if deterministic and not self.recurrent and type(self.student) is GeneralistStudent:
            e = self._embodiment(embodiment)
            x, single = self._validate(obs, e)
            policy = self._frozen.get(e)
            if policy is None:
                policy = self._frozen[e] = self.student.frozen_policy(e)
            a = policy(torch.from_numpy(x.astype(np.float32, copy=False))).numpy()
            return a[0] if single else a
        if kind == "vision":
            x, emb, single = self.prepare_dict(obs)
        else:
            x, emb, single = self.prepare(obs, embodiment)
        if self.recurrent:
            a = self._step(x, emb, deterministic)
        else:
            a = self.student.act(x, emb, deterministic=deterministic).numpy()
        a = self.table.unpad_action(a, int(emb[0]))
        return a[0] if single else a
