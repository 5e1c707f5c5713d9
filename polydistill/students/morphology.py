"""Morphology-aware students: one network for every body of a family.

Four kinds share one :class:`MorphSpec` (the family's padded observation layout and the bodies
the student trained on), one buffer layout, the distiller, checkpoints, ``predict`` and export:

==============  ==========================================================================
kind            how the student knows which body it drives
==============  ==========================================================================
``token``       a one-hot token per training body; a new body borrows the token of the
                training body nearest to it in descriptor space (the COMPASS baseline)
``descriptor``  the body descriptor (its normalised parameters) as an input
``history``     the last ``k`` observations and actions, no descriptor (the RMA pattern:
                for bodies whose parameters are unknown)
``joints``      one token per joint (angle, velocity, place in the chain, descriptor) and a
                root token; a small transformer over them, one action per joint token, so
                bodies with other joint counts share every weight (URMA, Body Transformer)
==============  ==========================================================================

Every kind reads the body's raw observation padded to the family's layout
(:class:`~polydistill.students.layout.FamilyLayout`); a table row is one *layout* (one joint
count), and observation statistics are kept per layout (the ``joints`` kind pools them over
joints, so it also drives joint counts it never trained on). Deployment::

    student.predict(obs, body=descriptor)        # a body it never saw (descriptor, joints, token)
    student.predict(obs, embodiment="hopper-train-03")   # a training body, by name
    student.predict(obs)                         # history: the body is inferred

NumPy + torch only (deployable without gymnasium or MuJoCo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from polydistill.config import from_dict
from polydistill.errors import ConfigError, ObservationError, TrainingError
from polydistill.students.base import (
    ACTIVATIONS,
    Student,
    StudentConfig,
    StudentOutput,
    need,
    no_task_tokens,
    obs_rows,
    space_shape,
)
from polydistill.students.embodiment import Embodiment, EmbodimentTable
from polydistill.students.generalist import GeneralistStudent
from polydistill.students.layout import FamilyLayout

__all__ = ["MorphSpec", "TrainedBody", "TokenStudent", "DescriptorStudent", "HistoryStudent",
           "JointStudent", "MORPH_KINDS", "morph_student", "morph_table"]


@dataclass(frozen=True)
class TrainedBody:
    """A body the student trained on: its name, layout and descriptor."""

    name: str
    layout: int
    """Index into :attr:`MorphSpec.layout`'s layouts."""
    descriptor: tuple[float, ...]


@dataclass(frozen=True)
class MorphSpec:
    """What a morphology student knows about its family (stored in its checkpoint)."""

    family: str
    params: tuple[str, ...]
    """Descriptor entries, in order (the family's parameter names)."""
    layout: FamilyLayout
    """Every layout of the family (over all its splits) and the padded observation."""
    bodies: tuple[TrainedBody, ...]
    """The training bodies."""
    action_low: tuple[float, ...]
    """Action bounds of the widest body (every joint of a family has the same bounds)."""
    action_high: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.bodies:
            raise ConfigError("a morphology student needs at least one training body")
        for b in self.bodies:
            if len(b.descriptor) != len(self.params) or not 0 <= b.layout < len(self.layout.layouts):
                raise ConfigError(f"training body {b.name!r}: descriptor of {len(b.descriptor)} values "
                                  f"(want {len(self.params)}) or layout {b.layout} out of range")
        if len(self.action_low) != self.layout.act_dim or len(self.action_high) != self.layout.act_dim:
            raise ConfigError(f"action bounds need {self.layout.act_dim} values")

    @property
    def n_desc(self) -> int:
        """Descriptor length."""
        return len(self.params)

    def layout_name(self, i: int) -> str:
        """Table name of layout ``i``: the family's name, with the joint count if it has several."""
        if len(self.layout.layouts) == 1:
            return self.family
        return f"{self.family}-{self.layout.layouts[i].joints}j"

    def body(self, name: str) -> TrainedBody:
        """The training body ``name`` (ObservationError naming the known ones)."""
        for b in self.bodies:
            if b.name == name:
                return b
        raise ObservationError(f"unknown body {name!r}; this student trained on "
                               f"{[b.name for b in self.bodies]} (pass body=DESCRIPTOR for another)")

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (inverse: :meth:`from_json`)."""
        return {"family": self.family, "params": list(self.params), "layouts": self.layout.to_json(),
                "bodies": [{"name": b.name, "layout": b.layout, "descriptor": list(b.descriptor)}
                           for b in self.bodies],
                "action_low": list(self.action_low), "action_high": list(self.action_high)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MorphSpec:
        """Inverse of :meth:`to_json`."""
        return cls(data["family"], tuple(data["params"]), FamilyLayout.from_json(data["layouts"]),
                   tuple(TrainedBody(b["name"], int(b["layout"]), tuple(float(x) for x in b["descriptor"]))
                         for b in data["bodies"]),
                   tuple(data["action_low"]), tuple(data["action_high"]))


def morph_table(spec: MorphSpec, kind: str) -> EmbodimentTable:
    """The student's token rows: one per layout, or for ``token`` one per training body."""
    used = sorted({b.layout for b in spec.bodies})
    layouts = used if kind == "token" else range(len(spec.layout.layouts))
    embs = []
    for i in layouts:
        j = spec.layout.layouts[i].joints
        embs.append(Embodiment(spec.layout_name(i), spec.layout.obs_dim, "continuous", j,
                               spec.action_low[:j], spec.action_high[:j]))
    tasks = [(b.name, spec.layout_name(b.layout)) for b in spec.bodies] if kind == "token" else None
    return EmbodimentTable(embs, tasks)


class _Morph:
    """What every morphology kind shares: metadata, deployment inputs, checks and export."""

    kind: ClassVar[str]
    spec: MorphSpec
    table: EmbodimentTable
    config: StudentConfig
    reads_body: ClassVar[bool] = True
    needs_descriptor: ClassVar[bool] = True
    """Acting needs a descriptor (``body=`` or a training body's name)."""
    any_layout: ClassVar[bool] = False
    """Drives layouts (joint counts) it never trained on."""

    # ----------------------------------------------------------------- the kind's hooks
    def metadata(self) -> dict[str, Any]:
        """Base metadata plus the family spec."""
        return {**super().metadata(), "morphology": self.spec.to_json()}  # type: ignore[misc]

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Student:
        """A fresh student of this kind from :meth:`metadata` output."""
        spec = MorphSpec.from_json(meta["morphology"])
        config = from_dict(StudentConfig, meta["student_config"])
        return cls(morph_table(spec, cls.kind), config, spec)  # type: ignore[call-arg,return-value]

    def _layout_of(self, n: int) -> int:
        li = self.spec.layout.by_obs_dim(n)
        if li is None:
            lens = {self.spec.layout_name(i): x.obs_dim for i, x in enumerate(self.spec.layout.layouts)}
            raise ObservationError(f"no {self.spec.family} body this student handles has observations of "
                                   f"length {n} (a joint count it cannot handle); it knows {lens}")
        return li

    def _descriptor(self, embodiment: str | None, body: Any, li: int, n: int) -> np.ndarray | None:
        """``(n, P)`` descriptors from ``body=`` or a training body's name (None: neither given)."""
        if embodiment is not None and body is not None:
            raise ObservationError("pass embodiment=NAME (a training body) or body=DESCRIPTOR, not both")
        if embodiment is not None:
            b = self.spec.body(embodiment)
            if b.layout != li:
                lays = self.spec.layout.layouts
                raise ObservationError(f"body {embodiment!r} has observations of length "
                                       f"{lays[b.layout].obs_dim}, got {lays[li].obs_dim}")
            return np.tile(np.asarray(b.descriptor, np.float32), (n, 1))
        if body is None:
            return None
        try:
            d = np.asarray(body, dtype=np.float64)
        except (TypeError, ValueError):
            raise ObservationError(f"body descriptor must be a real-valued array, got {body!r}") from None
        p = self.spec.n_desc
        if d.ndim == 1:
            d = np.tile(d, (n, 1))
        if d.ndim != 2 or d.shape != (n, p):
            raise ObservationError(f"body descriptor: expected shape ({p},) or ({n}, {p}) "
                                   f"({', '.join(self.spec.params)}), got {np.asarray(body).shape}")
        if not np.isfinite(d).all():
            raise ObservationError("body descriptor has a non-finite value")
        return d.astype(np.float32)

    def _row(self, li: int, embodiment: str | None, desc: np.ndarray | None) -> int:
        """Table row that drives layout ``li`` (ObservationError where this kind cannot)."""
        name = self.spec.layout_name(li)
        never = (f"this {self.kind} student never trained on a {self.spec.family} body with "
                 f"{self.spec.layout.layouts[li].joints} joints (only the joints kind drives new joint "
                 "counts)")
        if name not in self.table.body_index:
            raise ObservationError(never)
        if not self.any_layout and float(self.obs_count[self.table.body_id(name)]) == 0:  # type: ignore[attr-defined]
            raise ObservationError(never)
        return self.table.id(name) if not self.table.has_tasks else -1

    def inputs(self, padded: np.ndarray, desc: np.ndarray | None) -> Any:
        """The network input of padded raw observations (and descriptors)."""
        return {"obs": torch.from_numpy(padded.astype(np.float32)),
                "body": torch.from_numpy(np.ascontiguousarray(desc, dtype=np.float32))}

    def prepare(self, obs: Any, embodiment: str | None = None, task: str | None = None,
                body: Any = None) -> tuple[Any, torch.Tensor, bool]:
        """Validate a raw body observation (and its body) for the network.

        Args:
            obs: ``(obs_dim,)`` or ``(N, obs_dim)``: the body's own observation; its length
                says the body's joint count.
            embodiment: A training body's name.
            task: Not used (ObservationError if given).
            body: The body's descriptor ``(P,)`` or ``(N, P)`` (a body with no name).

        Raises:
            ObservationError: an observation length no body of the family has, a joint count
                this kind cannot drive, a wrong descriptor length, NaN, or no way to tell the
                body where the kind needs one.
        """
        no_task_tokens(task)
        x = np.asarray(obs) if not isinstance(obs, np.ndarray) else obs
        n = x.shape[-1] if x.ndim in (1, 2) else -1
        li = self._layout_of(int(n))
        layout = self.spec.layout.layouts[li]
        raw, single = obs_rows(obs, layout.obs_dim, f"a {self.spec.family} body")
        desc = self._descriptor(embodiment, body, li, raw.shape[0])
        if desc is None and self.needs_descriptor:
            raise ObservationError(f"this {self.kind} student needs the body: pass body=DESCRIPTOR "
                                   f"({', '.join(self.spec.params)}) or embodiment=NAME of a training body")
        row = self._row(li, embodiment, desc)
        padded = self.spec.layout.pad(raw, layout, np.float32)
        return self.inputs(padded, desc), torch.full((raw.shape[0],), row, dtype=torch.long), single

    def deploy_act(self, x: Any, emb: torch.Tensor, deterministic: bool) -> np.ndarray:
        """Env actions of prepared inputs (the body's own action length)."""
        a = self.act(x, emb, deterministic=deterministic).numpy()  # type: ignore[attr-defined]
        return self.table.unpad_action(a, int(emb[0]))

    def check_env(self, env: Any, embodiment: str | None = None) -> None:
        """Refuse an env no body of the family has the spaces of."""
        shape = space_shape(env.observation_space)
        known = sorted(x.obs_dim for x in self.spec.layout.layouts)
        if len(shape) != 1 or shape[0] not in known:
            need(env, f"observation length of a {self.spec.family} body", f"one of {known}", shape)
        li = self._layout_of(shape[0])
        need(env, "action shape", (self.spec.layout.layouts[li].joints,), space_shape(env.action_space))

    # ----------------------------------------------------------------- export
    def _export_layout(self, embodiment: str | None) -> tuple[int, str | None]:
        if embodiment is None:
            if len(self.spec.layout.layouts) == 1:
                return 0, None
            names = [self.spec.layout_name(i) for i in range(len(self.spec.layout.layouts))]
            raise ConfigError(f"export: pass embodiment= a layout {names} or a training body's name")
        for i in range(len(self.spec.layout.layouts)):
            if self.spec.layout_name(i) == embodiment:
                return i, None
        try:
            return self.spec.body(embodiment).layout, embodiment
        except ObservationError as exc:
            raise ConfigError(f"export: {exc}") from None

    def _export_row(self, embodiment: str | None) -> tuple[int, int]:
        """Table row and layout of an export (ConfigError where this kind cannot drive it)."""
        li, _ = self._export_layout(embodiment)
        try:
            return self._row(li, None, None), li
        except ObservationError as exc:
            raise ConfigError(f"export: {exc}") from None

    def export_spec(self, embodiment: str | None = None,
                    task: str | None = None) -> tuple[int, dict[str, Any], list[str]]:
        """``obs`` float32 ``(B, obs_dim)`` of one layout and ``body`` ``(B, P)`` -> ``action``."""
        no_task_tokens(task)
        row, li = self._export_row(embodiment)
        return row, {"obs": ((self.spec.layout.layouts[li].obs_dim,), torch.float32),
                     "body": ((self.spec.n_desc,), torch.float32)}, ["action"]

    def pad_tensor(self, obs: torch.Tensor, row: int) -> torch.Tensor:
        """Raw observations of row ``row``'s layout -> padded, as a matmul with a 0/1 matrix (exact)."""
        li = self._layout_of_row(row)
        layout = self.spec.layout.layouts[li]
        eye = self.spec.layout.pad(np.eye(layout.obs_dim), layout, np.float32)
        return obs.to(torch.float32) @ torch.from_numpy(eye)

    def _layout_of_row(self, row: int) -> int:
        name = self.table.embodiments[row].name
        return next(i for i in range(len(self.spec.layout.layouts)) if self.spec.layout_name(i) == name)

    def export_forward(self, emb_id: int, *inputs: torch.Tensor) -> Any:
        """Pad, act, clip, cut to the layout's actions."""
        obs = self.pad_tensor(inputs[0], emb_id)
        emb = torch.zeros(obs.shape[0], dtype=torch.long) + emb_id
        out = self({"obs": obs, "body": inputs[1].to(torch.float32)}, emb)  # type: ignore[operator]
        n = self.table.embodiments[emb_id].action_dim
        return self.clip_action(out.mean, emb)[:, :n]  # type: ignore[attr-defined]


class TokenStudent(_Morph, GeneralistStudent):
    """A one-hot token per training body (module docstring); a new body borrows the nearest token."""

    kind = "token"

    def __init__(self, table: EmbodimentTable, config: StudentConfig | None, spec: MorphSpec) -> None:
        self.spec = spec
        super().__init__(table, config)
        self._codes = np.array([b.descriptor for b in spec.bodies], dtype=np.float64)

    def _row(self, li: int, embodiment: str | None, desc: np.ndarray | None) -> int:
        """A training body's own token, or the token of the training body nearest to ``desc``."""
        super()._row(li, embodiment, desc)
        if embodiment is not None:
            return self.table.id(self.spec.layout_name(li), embodiment)
        assert desc is not None
        same = [i for i, b in enumerate(self.spec.bodies) if b.layout == li]
        d = np.linalg.norm(self._codes[same] - desc[0].astype(np.float64), axis=1)
        if not np.allclose(desc, desc[0]):
            raise ObservationError("a token student drives one body per call: pass one descriptor")
        return self.table.id(self.spec.layout_name(li), self.spec.bodies[same[int(np.argmin(d))]].name)

    def inputs(self, padded: np.ndarray, desc: np.ndarray | None) -> Any:
        """The padded observation alone (the token says the body)."""
        return torch.from_numpy(padded.astype(np.float32))

    def export_spec(self, embodiment: str | None = None,
                    task: str | None = None) -> tuple[int, dict[str, Any], list[str]]:
        """``obs`` float32 ``(B, obs_dim)`` -> ``action`` of one training body (its token)."""
        no_task_tokens(task)
        li, name = self._export_layout(embodiment)
        if name is None:
            raise ConfigError(f"export: a token student exports one training body's token; pass "
                              f"embodiment= one of {[b.name for b in self.spec.bodies]}")
        return (self.table.id(self.spec.layout_name(li), name),
                {"obs": ((self.spec.layout.layouts[li].obs_dim,), torch.float32)}, ["action"])

    def export_forward(self, emb_id: int, *inputs: torch.Tensor) -> Any:
        """Pad, act with the token, clip, cut."""
        obs = self.pad_tensor(inputs[0], emb_id)
        emb = torch.zeros(obs.shape[0], dtype=torch.long) + emb_id
        n = self.table.embodiments[emb_id].action_dim
        return self.clip_action(self(obs, emb).mean, emb)[:, :n]


class DescriptorStudent(_Morph, GeneralistStudent):
    """The body descriptor as an input beside the observation (module docstring)."""

    kind = "descriptor"
    obs_keys = ("obs", "body")

    def __init__(self, table: EmbodimentTable, config: StudentConfig | None, spec: MorphSpec) -> None:
        self.spec = spec
        super().__init__(table, config, extra_features=spec.n_desc)

    def batch_obs(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Padded observation and descriptor of a buffer batch."""
        return {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in self.obs_keys}

    def features(self, obs: dict[str, torch.Tensor], emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Trunk of normalized observation, layout token and descriptor."""
        x = obs["obs"].to(torch.float32)
        return self.trunk(torch.cat([self.normalize(x, emb), self.token_codes[emb].to(x.dtype),
                                     obs["body"].to(x.dtype)], dim=-1))


class HistoryStudent(_Morph, GeneralistStudent):
    """Infers the body from its last ``k`` observations and actions (module docstring).

    A history row is ``[padded observation, padded action, 1]`` (the last entry marks a real
    step: an episode's first steps see zero rows marked 0). An encoder MLP maps the normalized
    history to a latent that joins the observation in the trunk. Deployed, the student keeps
    the history itself (``recurrent``): call ``reset`` at episode starts.
    """

    kind = "history"
    obs_keys = ("obs", "hist")
    needs_descriptor = False
    recurrent = True
    latent: ClassVar[int] = 32

    def __init__(self, table: EmbodimentTable, config: StudentConfig | None, spec: MorphSpec) -> None:
        self.spec = spec
        super().__init__(table, config, extra_features=self.latent)
        act = ACTIVATIONS[self.config.activation]
        k, w = self.config.history, self.history_width
        self.encoder = nn.Sequential(nn.Linear(k * w, 128), act(), nn.Linear(128, self.latent), act())
        # training only: the latent regresses the body descriptor (StudentConfig.history_aux)
        self.body_head = nn.Linear(self.latent, spec.n_desc) if self.config.history_aux > 0 else None
        self._latent: torch.Tensor | None = None

    @property
    def history_width(self) -> int:
        """Entries of one history row."""
        return self.table.max_obs_dim + self.table.max_action_dim + 1

    def batch_obs(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Padded observation and history of a buffer batch."""
        return {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in self.obs_keys}

    def features(self, obs: dict[str, torch.Tensor], emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Trunk of normalized observation, layout token and the history's latent."""
        x, h = obs["obs"].to(torch.float32), obs["hist"].to(torch.float32)
        b, k, _ = h.shape
        d = self.table.max_obs_dim
        past = self.normalize(h[..., :d].reshape(b * k, d), emb.repeat_interleave(k)).reshape(b, k, d)
        valid = h[..., -1:]
        z = self.encoder(torch.cat([past * valid, h[..., d:]], dim=-1).reshape(b, -1))
        # kept for auxiliary_loss only in a training forward (the distiller's), never when acting
        self._latent = z if self.body_head is not None and self.training and torch.is_grad_enabled() else None
        return self.trunk(torch.cat([self.normalize(x, emb), self.token_codes[emb].to(x.dtype), z], dim=-1))

    def auxiliary_loss(self, batch: dict[str, np.ndarray]) -> torch.Tensor | None:
        """``history_aux`` x the mean squared error of the latent's descriptor prediction.

        Raises:
            TrainingError: if called without a training forward pass on this batch first, or on a
                batch without the ``body`` descriptors.
        """
        if self.body_head is None:
            return None
        z, self._latent = self._latent, None
        if z is None:
            raise TrainingError("auxiliary_loss needs this student's forward pass on the batch first "
                                "(in train mode, with gradients)")
        if "body" not in batch or len(batch["body"]) != z.shape[0]:
            got = len(batch["body"]) if "body" in batch else "no 'body' field"
            raise TrainingError(f"auxiliary_loss: expected the forward pass's {z.shape[0]} rows of 'body' "
                                f"descriptors, got {got}")
        target = torch.from_numpy(np.ascontiguousarray(batch["body"])).to(z.dtype)
        return self.config.history_aux * (self.body_head(z) - target).pow(2).mean()

    def initial_state(self, n: int) -> torch.Tensor:
        """An empty history for ``n`` episodes."""
        return torch.zeros(n, self.config.history, self.history_width)

    @staticmethod
    def push(history: torch.Tensor, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``history`` with its oldest row dropped and ``[obs, action, 1]`` appended."""
        row = torch.cat([obs.to(history.dtype), action.to(history.dtype),
                         torch.ones(obs.shape[0], 1, dtype=history.dtype)], dim=-1)
        return torch.cat([history[:, 1:], row.unsqueeze(1)], dim=1)

    def step(self, obs: dict[str, torch.Tensor], emb: torch.Tensor, state: torch.Tensor,
             first: torch.Tensor | None = None, deterministic: bool = True,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of ``B`` episodes: ``(actions, next history)`` (``first`` empties a history)."""
        if first is not None:
            state = state * (~first.to(torch.bool)).to(state.dtype).view(-1, 1, 1)
        a = self.act({"obs": obs["obs"], "hist": state}, emb, deterministic, generator)
        return a, self.push(state, obs["obs"], a)

    def inputs(self, padded: np.ndarray, desc: np.ndarray | None) -> Any:
        """The padded observation (the history is the student's state)."""
        return {"obs": torch.from_numpy(padded.astype(np.float32))}

    def export_spec(self, embodiment: str | None = None,
                    task: str | None = None) -> tuple[int, dict[str, Any], list[str]]:
        """``obs`` ``(B, obs_dim)`` and ``history`` ``(B, k, W)`` -> ``action`` and ``next_history``.

        Start an episode with a zero history; feed ``next_history`` back at the next step.
        """
        no_task_tokens(task)
        row, li = self._export_row(embodiment)
        return row, {"obs": ((self.spec.layout.layouts[li].obs_dim,), torch.float32),
                     "history": ((self.config.history, self.history_width), torch.float32)}, \
            ["action", "next_history"]

    def export_forward(self, emb_id: int, *inputs: torch.Tensor) -> Any:
        """Pad, act on the history, clip; the history advanced by this step."""
        obs = self.pad_tensor(inputs[0], emb_id)
        emb = torch.zeros(obs.shape[0], dtype=torch.long) + emb_id
        a, nxt = self.step({"obs": obs}, emb, inputs[1].to(torch.float32))
        return a[:, : self.table.embodiments[emb_id].action_dim], nxt


class _Block(nn.Module):
    """Pre-norm transformer block with a key mask (written out so it exports to ONNX plainly)."""

    def __init__(self, width: int, heads: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), act(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, T, W)``; ``bias`` ``(B, 1, 1, T)``: 0 for real tokens, -1e9 for absent ones."""
        b, t, w = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, h, w // h).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # softmax(q k^T / sqrt(d) + bias) v
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, w))
        return x + self.ff(self.ln2(x))


class JointStudent(_Morph, Student):
    """One token per joint plus a root token, a transformer over them (module docstring).

    A joint token reads the joint's angle and velocity (normalized with statistics pooled over
    every joint of every trained body), its place in the chain (``j``, ``J - 1 - j`` and ``J``,
    divided by 8: continuous, so a longer chain's joints look like known ones) and the body
    descriptor; the root token reads the root's positions, velocities and extras (pooled over
    layouts) and the descriptor. Each joint token's output gives that joint's action mean and
    log-std.
    """

    kind = "joints"
    obs_keys = ("obs", "body")
    any_layout = True

    def __init__(self, table: EmbodimentTable, config: StudentConfig | None, spec: MorphSpec) -> None:
        self.spec = spec
        super().__init__(table, config)
        del self.trunk, self.head
        cfg, lay = self.config, spec.layout
        per_row = [lay.slots(lay.layouts[self._layout_of_row(r)]) for r in range(len(table))]
        roots = {tuple(s["root"].tolist()) for s in per_row}
        if len(roots) != 1:
            raise ConfigError(f"joints student: the {spec.family} bodies' roots differ ({roots})")
        jmax = table.max_action_dim
        angle = torch.zeros(len(table), jmax, dtype=torch.long)
        vel = torch.zeros(len(table), jmax, dtype=torch.long)
        present = torch.zeros(len(table), jmax, dtype=torch.bool)
        place = torch.zeros(len(table), jmax, 3)
        for r, s in enumerate(per_row):
            j = len(s["angle"])
            angle[r, :j], vel[r, :j] = torch.from_numpy(s["angle"]), torch.from_numpy(s["velocity"])
            present[r, :j] = True
            idx = torch.arange(j, dtype=torch.float32)
            place[r, :j] = torch.stack([idx, j - 1 - idx, torch.full((j,), float(j))], -1) / 8.0
        self.register_buffer("root_slots", torch.tensor(sorted(roots)[0], dtype=torch.long), persistent=False)
        self.register_buffer("angle_slots", angle, persistent=False)
        self.register_buffer("vel_slots", vel, persistent=False)
        self.register_buffer("joint_present", present, persistent=False)
        self.register_buffer("joint_place", place, persistent=False)
        w, act, p = cfg.joint_width, ACTIVATIONS[cfg.activation], spec.n_desc
        self.root_in = nn.Linear(len(self.root_slots) + p, w)
        self.joint_in = nn.Linear(2 + 3 + p, w)
        self.blocks = nn.ModuleList(_Block(w, cfg.joint_heads, act) for _ in range(cfg.joint_layers))
        self.out_norm = nn.LayerNorm(w)
        self.joint_head = nn.Linear(w, 2)
        with torch.no_grad():  # small initial actions, as the dense head
            self.joint_head.weight.mul_(0.01)
            self.joint_head.bias.zero_()
        self.feature_dim = w

    def batch_obs(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Padded observation and descriptor of a buffer batch."""
        return {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in self.obs_keys}

    def _pooled(self) -> tuple[torch.Tensor, ...]:
        """Root-slot, joint-angle and joint-velocity statistics pooled over layouts and joints.

        Derived from the per-layout statistics (so a layout never trained on is driven with
        the pooled ones); recomputed when those change.
        """
        key = (self.obs_mean._version, self.obs_var._version, self.obs_count._version,
               self.obs_mean.data_ptr(), torch.is_inference_mode_enabled())
        cache = self.__dict__.get("_pool_cache")
        if cache is not None and cache[0] == key:
            return cache[1]
        with torch.no_grad():
            counts = self.obs_count.clamp(min=0)
            mean, second = self.obs_mean, self.obs_var + self.obs_mean ** 2

            def pool(slots: torch.Tensor, present: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
                # slots (L, S) per layout (or (S,) shared); weights: count x presence
                s = slots if slots.dim() == 2 else slots.expand(len(counts), -1)
                wts = counts[:, None].expand_as(s).to(mean.dtype)
                if present is not None:
                    wts = wts * present.to(mean.dtype)
                m1, m2 = mean.gather(1, s), second.gather(1, s)
                if present is not None:  # one statistic over every joint
                    tot = wts.sum()
                    if tot <= 0:
                        return torch.zeros(1, dtype=mean.dtype), torch.ones(1, dtype=mean.dtype)
                    mu = (wts * m1).sum() / tot
                    var = (wts * m2).sum() / tot - mu ** 2
                    return mu.reshape(1), torch.sqrt(var.clamp(min=0) + 1e-8).reshape(1)
                tot = wts.sum(0)
                ok = tot > 0
                div = tot.clamp(min=1e-12)
                mu = torch.where(ok, (wts * m1).sum(0) / div, torch.zeros_like(tot))
                var = torch.where(ok, (wts * m2).sum(0) / div - mu ** 2, torch.ones_like(tot))
                return mu, torch.sqrt(var.clamp(min=0) + 1e-8)

            rows = self.row_body  # table rows are layouts (one body each)
            body_rows = torch.zeros(len(self.table.bodies), dtype=torch.long)
            body_rows[rows] = torch.arange(len(rows))
            stats = (*pool(self.root_slots, None),
                     *pool(self.angle_slots[body_rows], self.joint_present[body_rows]),
                     *pool(self.vel_slots[body_rows], self.joint_present[body_rows]))
            stats = tuple(x.to(torch.float32) for x in stats)
        self.__dict__["_pool_cache"] = (key, stats)
        return stats

    def tokens(self, obs: dict[str, torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """Transformer outputs of the joint tokens ``(B, J, W)``."""
        x, body = obs["obs"].to(torch.float32), obs["body"].to(torch.float32)
        rm, rs, am, as_, vm, vs = self._pooled()
        clip = self.config.obs_clip
        root = torch.clamp((x[:, self.root_slots] - rm) / rs, -clip, clip)
        ang = torch.clamp((x.gather(1, self.angle_slots[emb]) - am) / as_, -clip, clip)
        vel = torch.clamp((x.gather(1, self.vel_slots[emb]) - vm) / vs, -clip, clip)
        j = ang.shape[1]
        desc = body.unsqueeze(1).expand(-1, j, -1)
        parts = [ang.unsqueeze(-1), vel.unsqueeze(-1), self.joint_place[emb], desc]
        joints = self.joint_in(torch.cat(parts, -1))
        h = torch.cat([self.root_in(torch.cat([root, body], -1)).unsqueeze(1), joints], dim=1)
        present = torch.cat([torch.ones_like(self.joint_present[emb][:, :1]), self.joint_present[emb]], 1)
        bias = torch.where(present, 0.0, -1e9).to(h.dtype)[:, None, None, :]
        for block in self.blocks:
            h = block(h, bias)
        return self.out_norm(h[:, 1:])

    def features(self, obs: dict[str, torch.Tensor], emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Per-joint head outputs flattened: ``(B, 2 J)`` means then log-stds."""
        out = self.joint_head(self.tokens(obs, emb))  # (B, J, 2)
        return torch.cat([out[..., 0], out[..., 1]], dim=-1)

    def output(self, features: torch.Tensor, emb: torch.Tensor) -> StudentOutput:
        """The joint heads already give means and log-stds."""
        return self.distribution(features, emb)


MORPH_KINDS: dict[str, type[Student]] = {"token": TokenStudent, "descriptor": DescriptorStudent,
                                         "history": HistoryStudent, "joints": JointStudent}
"""Morphology student classes by :attr:`StudentConfig.kind`."""


def morph_student(spec: MorphSpec, config: StudentConfig) -> Student:
    """The morphology student of ``config.kind`` for ``spec``.

    Raises:
        ConfigError: for an architecture other than ``dense`` (the morphology kinds are their
            own architectures).
    """
    if config.architecture != "dense":
        raise ConfigError(f"morphology students build their own networks; architecture must be dense, "
                          f"got {config.architecture!r}")
    cls = MORPH_KINDS[config.kind]
    return cls(morph_table(spec, config.kind), config, spec)  # type: ignore[call-arg]
