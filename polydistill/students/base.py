"""The student network every kind builds on, and the registry of student kinds.

The observation is normalized with its embodiment's running statistics, zero-padded to the
widest embodiment and paired with a one-hot token (COMPASS); the head gives a diagonal Gaussian
over the widest action vector (or masked logits), padded dims masked. A *kind* is a subclass
with a ``kind`` name; it owns its metadata round trip, deployment input checks, space check and
export spec, so checkpoints and exports never branch on it. torch + NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from polydistill.config import from_dict, to_dict
from polydistill.errors import CheckpointError, ConfigError, ObservationError, SpaceMismatchError
from polydistill.students.embodiment import EmbodimentTable

__all__ = ["StudentConfig", "StudentOutput", "Student", "ACTIVATIONS", "STUDENT_KINDS", "student_class"]

STUDENT_KINDS: dict[str, type[Student]] = {}
"""Student kinds by name; a subclass with a ``kind`` registers itself when it is defined."""


def student_class(kind: Any) -> type[Student]:
    """The registered student class of ``kind``.

    Raises:
        CheckpointError: for a kind nobody registered (the message lists the known ones).
    """
    import polydistill.students  # noqa: F401  (registers the built-in kinds)

    if kind not in STUDENT_KINDS:
        raise CheckpointError(f"unknown student kind {kind!r}; known: {sorted(STUDENT_KINDS)}")
    return STUDENT_KINDS[kind]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU,
}


@dataclass(frozen=True)
class StudentConfig:
    """Trunk and head of a student (every kind)."""

    hidden: tuple[int, ...] = (256, 256)
    """Widths of the hidden layers of the shared trunk."""
    activation: Literal["elu", "relu", "tanh", "gelu", "silu"] = "elu"
    """Hidden activation."""
    log_std_min: float = -5.0
    """Lower clamp of the predicted log standard deviation."""
    log_std_max: float = 1.0
    """Upper clamp of the predicted log standard deviation."""
    obs_clip: float = 10.0
    """Normalized observations are clipped to ``[-obs_clip, obs_clip]``."""
    architecture: Literal["dense", "multihead", "moe"] = "dense"
    """Generalist students: ``dense`` (one MLP), ``multihead`` (shared trunk, one head per
    token) or ``moe`` (experts mixed by a router over token and observation). The last two
    scale their widths to the dense network's parameter count (within 10%)."""
    experts: int = 4
    """Experts of a ``moe`` student."""
    kind: Literal["token", "descriptor", "history", "joints"] = "token"
    """Morphology setup: how the student knows which body it drives. ``token``: a one-hot per
    training body; ``descriptor``: the body descriptor as an input; ``history``: the last
    :attr:`history` observations and actions (no descriptor, RMA); ``joints``: one token per
    joint with the descriptor, a transformer over tokens (bodies with other joint counts share
    every weight). Other setups use their own token and ignore it."""
    history: int = 16
    """``history`` kind: steps of observation-action history the student reads."""
    history_aux: float = field(default=0.0, metadata={"fingerprint": "if_set"})
    """``history`` kind: weight of an auxiliary loss that asks the history's latent to predict
    the body descriptor (known in training, never read when acting: RMA's adaptation module
    regresses the privileged extrinsics the same way). ``0``: no auxiliary head."""
    joint_width: int = 64
    """``joints`` kind: width of a joint token."""
    joint_layers: int = 2
    """``joints`` kind: transformer blocks."""
    joint_heads: int = 4
    """``joints`` kind: attention heads (must divide :attr:`joint_width`)."""

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"StudentConfig.hidden must be positive widths, got {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"StudentConfig.activation: unknown {self.activation!r}; "
                f"valid: {', '.join(ACTIVATIONS)}"
            )
        if not self.log_std_min < self.log_std_max:
            raise ConfigError("StudentConfig.log_std_min must be below log_std_max")
        if not self.obs_clip > 0:
            raise ConfigError(f"StudentConfig.obs_clip must be > 0, got {self.obs_clip}")
        if self.architecture not in ("dense", "multihead", "moe"):
            raise ConfigError(f"StudentConfig.architecture: expected dense, multihead or moe, "
                              f"got {self.architecture!r}")
        if self.experts < 2:
            raise ConfigError(f"StudentConfig.experts must be >= 2, got {self.experts}")
        if self.kind not in ("token", "descriptor", "history", "joints"):
            raise ConfigError(f"StudentConfig.kind: expected token, descriptor, history or joints, "
                              f"got {self.kind!r}")
        if not (np.isfinite(self.history_aux) and self.history_aux >= 0):
            raise ConfigError(f"StudentConfig.history_aux must be finite and >= 0, got {self.history_aux}")
        if self.history_aux > 0 and self.kind != "history":
            raise ConfigError(f"StudentConfig.history_aux applies to kind 'history', got kind {self.kind!r} "
                              f"with history_aux={self.history_aux}")
        for name in ("history", "joint_width", "joint_layers", "joint_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"StudentConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.joint_width % self.joint_heads:
            raise ConfigError(f"StudentConfig.joint_heads ({self.joint_heads}) must divide joint_width "
                              f"({self.joint_width})")


@dataclass
class StudentOutput:
    """Action distribution parameters for a batch (padded to the widest embodiment)."""

    mean: torch.Tensor | None = None
    """(B, A) Gaussian mean in env units."""
    log_std: torch.Tensor | None = None
    """(B, A) Gaussian log-std."""
    logits: torch.Tensor | None = None
    """(B, n) categorical logits; invalid actions are ``-inf``-masked."""


class Student(nn.Module):
    """One policy network for all embodiments of ``table``; kinds subclass it (module docstring)."""

    kind: ClassVar[str] = ""
    """Registry name, stored in checkpoints (``""``: an abstract base, not registered)."""
    obs_keys: tuple[str, ...] = ("obs",)
    """Buffer fields this student reads (see :meth:`batch_obs`)."""
    recurrent: bool = False
    """Whether the student carries a state between steps (:meth:`step`)."""
    reads_body: ClassVar[bool] = False
    """Whether :meth:`prepare` takes ``body=`` (a body descriptor: the morphology kinds)."""
    architecture: ClassVar[str] = "dense"
    """The :attr:`StudentConfig.architecture` this class builds."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            STUDENT_KINDS[cls.kind] = cls

    def __init__(self, table: EmbodimentTable, config: StudentConfig | None = None,
                 extra_features: int = 0) -> None:
        super().__init__()
        self.table = table
        self.config = config or StudentConfig()
        if self.config.architecture != self.architecture:
            raise ConfigError(f"{type(self).__name__} builds architecture {self.architecture!r}, the config "
                              f"asks for {self.config.architecture!r}")
        e, d, a = table.code_dim, table.max_obs_dim, table.max_action_dim
        self.discrete = table.action_kind == "discrete"
        act = ACTIVATIONS[self.config.activation]
        layers: list[nn.Module] = []
        width = d + e + extra_features  # padded obs + token code (+ e.g. image features)
        for h in self.config.hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.feature_dim = width
        self.head = nn.Linear(width, a if self.discrete else 2 * a)
        with torch.no_grad():  # small initial actions, moderate initial std
            self.head.weight.mul_(0.01)
            self.head.bias.zero_()
        # Observation statistics per body (float64 for exact, order-independent updates).
        b = len(table.bodies)
        self.register_buffer("obs_mean", torch.zeros(b, d, dtype=torch.float64))
        self.register_buffer("obs_var", torch.ones(b, d, dtype=torch.float64))
        self.register_buffer("obs_count", torch.zeros(b, dtype=torch.float64))
        # Derived from the table (rebuilt from the metadata, so not part of the weights).
        self.register_buffer("row_body", torch.from_numpy(table.row_body), persistent=False)
        self.register_buffer("token_codes", torch.from_numpy(table.codes), persistent=False)
        self.register_buffer("action_mask", torch.tensor(table.action_mask))
        self.register_buffer("action_low", torch.tensor(table.action_low))
        self.register_buffer("action_high", torch.tensor(table.action_high))
        self.register_buffer("action_scale", torch.tensor(table.action_scale))

    # ----------------------------------------------------------------- normalization
    @torch.no_grad()
    def update_normalizer(self, obs: np.ndarray, emb_id: int) -> None:
        """Fold a raw batch ``(N, obs_dim)`` of token row ``emb_id`` into its body's statistics.

        Raises:
            ObservationError: for a batch of the wrong shape or with non-finite values (they
                would poison the statistics for good).
        """
        dim = self.table.embodiments[emb_id].obs_dim
        if obs.ndim != 2 or obs.shape[1] != dim:
            raise ObservationError(f"normalizer update: expected shape (N, {dim}), got {obs.shape}")
        if obs.shape[0] == 0:
            return
        if not np.all(np.isfinite(obs)):
            raise ObservationError("normalizer update: observations contain NaN or inf")
        x = torch.tensor(obs, dtype=torch.float64)  # a copy: arrays from Ray are read-only
        n = float(x.shape[0])
        emb_id = int(self.table.row_body[emb_id])
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)
        count = self.obs_count[emb_id]
        mean, var = self.obs_mean[emb_id, :dim], self.obs_var[emb_id, :dim]
        tot = count + n
        delta = b_mean - mean
        new_mean = mean + delta * n / tot
        m2 = var * count + b_var * n + delta.pow(2) * count * n / tot
        self.obs_mean[emb_id, :dim] = new_mean
        self.obs_var[emb_id, :dim] = m2 / tot
        self.obs_count[emb_id] = tot

    def _norm_stats(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of every embodiment in ``dtype``, recomputed only when they change.

        Keyed by the buffers' storage and version counters (a new buffer from ``.to()`` or
        ``load_state_dict(assign=True)`` has new storage; every in-place update bumps the
        version), so a changed statistic is never served from the cache. Profiled,
        recomputing them per call was a third of the student's forward time in collection.
        """
        key = (self.obs_mean.data_ptr(), self.obs_var.data_ptr(), self.obs_mean._version,
               self.obs_var._version, self.obs_mean.device, dtype, torch.is_inference_mode_enabled())
        cache = self.__dict__.get("_norm_cache")
        if cache is None or cache[0] != key:
            with torch.no_grad():
                stats = (self.obs_mean.to(dtype), torch.sqrt(self.obs_var + 1e-8).to(dtype))
            cache = (key, stats)
            self.__dict__["_norm_cache"] = cache
        return cache[1]

    def normalize(self, obs: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Normalize padded raw observations ``(B, D)`` with each row's body statistics."""
        mean, std = self._norm_stats(obs.dtype)
        clip, body = self.config.obs_clip, self.row_body[emb]
        return torch.clamp((obs - mean[body]) / std[body], -clip, clip)

    # ----------------------------------------------------------------- network
    def batch_obs(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        """The student's input from a buffer batch."""
        return torch.from_numpy(np.ascontiguousarray(batch["obs"]))

    def auxiliary_loss(self, batch: dict[str, np.ndarray]) -> torch.Tensor | None:
        """An extra training loss on ``batch``, added to the distillation loss (``None``: none).

        Called by the distiller right after this student's forward pass on the same batch, so
        a kind may reuse what that pass computed.
        """
        del batch
        return None

    def features(self, obs: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Trunk features ``(B, H)`` of padded raw observations ``(B, D)`` and token ids ``(B,)``."""
        token = self.token_codes[emb].to(obs.dtype)
        return self.trunk(torch.cat([self.normalize(obs, emb), token], dim=-1))

    def forward(self, obs: torch.Tensor, emb: torch.Tensor) -> StudentOutput:  # type: ignore[override]
        """Action distribution of padded raw observations ``(B, D)`` with token ids ``(B,)``."""
        return self.output(self.features(obs, emb), emb)

    def output(self, features: torch.Tensor, emb: torch.Tensor) -> StudentOutput:
        """Action distribution from trunk (or core) features ``(..., H)`` and token ids ``(...)``."""
        return self.distribution(self.head(features), emb)

    def distribution(self, out: torch.Tensor, emb: torch.Tensor) -> StudentOutput:
        """Raw head outputs ``(..., A or 2A)`` -> masked logits, or mean and clamped log-std."""
        mask = self.action_mask[emb]
        if self.discrete:
            return StudentOutput(logits=out.masked_fill(~mask, float("-inf")))
        mean, log_std = out.chunk(2, dim=-1)
        log_std = log_std.clamp(self.config.log_std_min, self.config.log_std_max)
        return StudentOutput(mean=mean * mask, log_std=log_std * mask)

    def act(self, obs: torch.Tensor, emb: torch.Tensor, deterministic: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions ``(B, A)`` (continuous: clipped to bounds, padded dims 0) or ``(B,)`` ids."""
        return self.action_from(self.forward(obs, emb), emb, deterministic, generator)

    def action_from(self, out: StudentOutput, emb: torch.Tensor, deterministic: bool = True,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions of a computed :class:`StudentOutput` (see :meth:`act`)."""
        if self.discrete:
            assert out.logits is not None
            if deterministic:
                return out.logits.argmax(-1)
            probs = torch.softmax(out.logits, -1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        assert out.mean is not None and out.log_std is not None
        a = out.mean
        if not deterministic:
            noise = torch.randn(a.shape, generator=generator, dtype=a.dtype)
            a = a + noise * out.log_std.exp()
        return self.clip_action(a, emb)

    def clip_action(self, action: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Clip padded continuous actions ``(B, A)`` to each row's bounds; padded dims -> 0."""
        low, high = self.action_low[emb], self.action_high[emb]
        return torch.maximum(torch.minimum(action, high), low) * self.action_mask[emb]

    # ----------------------------------------------------------------- the kind's hooks
    def metadata(self) -> dict[str, Any]:
        """JSON-safe description that :meth:`from_metadata` rebuilds this student from."""
        out = {"student": self.kind, "student_config": to_dict(self.config),
               "embodiments": self.table.to_json()}
        if self.table.has_tasks:
            out["task_tokens"] = self.table.tasks_json()
        return out

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Student:
        """A fresh (untrained) student of this kind from :meth:`metadata` output."""
        return cls(EmbodimentTable.from_json(meta["embodiments"], meta.get("task_tokens")),  # type: ignore[call-arg]
                   from_dict(StudentConfig, meta["student_config"]))

    def prepare(self, obs: Any, embodiment: str | None = None,
                task: str | None = None) -> tuple[Any, torch.Tensor, bool]:
        """Validate a deployment observation: (network input, token ids, was one row), or ObservationError."""
        raise NotImplementedError

    def deploy_act(self, x: Any, emb: torch.Tensor, deterministic: bool) -> np.ndarray:
        """Env actions of prepared inputs (padding removed)."""
        a = self.act(x, emb, deterministic=deterministic).numpy()
        return self.table.unpad_action(a, int(emb.reshape(-1)[0]))

    def finish(self, action: np.ndarray, single: bool, obs: Any) -> Any:
        """What ``predict`` returns for ``obs``: one action, or the batch."""
        return action[0] if single else action

    def check_env(self, env: Any, embodiment: str | None = None) -> None:
        """Raise SpaceMismatchError for an env whose spaces are not the ones the student was trained for."""
        raise NotImplementedError

    def export_spec(self, embodiment: str | None = None,
                    task: str | None = None) -> tuple[int, dict[str, ExportInput], list[str]]:
        """What the exported graph of ``embodiment`` (and ``task``) takes and gives (row, inputs, outputs)."""
        raise NotImplementedError

    def export_forward(self, emb_id: int, *inputs: torch.Tensor) -> Any:
        """Raw inputs of :meth:`export_spec` -> env actions, as :meth:`prepare` + ``predict`` compute them."""
        raise NotImplementedError

    def export_module(self, embodiment: str | None = None,
                      task: str | None = None) -> tuple[nn.Module, list[str], list[str]]:
        """An exportable module mapping raw inputs to env actions, with input and output names."""
        e, inputs, outputs = self.export_spec(embodiment, task)
        return _Export(self, e), list(inputs), outputs

    def example_inputs(self, embodiment: str | None = None, batch: int = 2, agents: int = 3,
                       seed: int = 0, task: str | None = None) -> tuple[torch.Tensor, ...]:
        """Random inputs of the right shapes and dtypes for :meth:`export_module`."""
        g, out = torch.Generator().manual_seed(seed), []
        for shape, dtype in self.export_spec(embodiment, task)[1].values():
            size = (batch, *(agents if d == "agents" else d for d in shape))
            out.append(torch.randn(size, generator=g) if dtype == torch.float32 else
                       torch.ones(size, dtype=dtype) if dtype == torch.bool else
                       torch.randint(0, 256, size, generator=g, dtype=dtype))
        return tuple(out)

    def dynamic_axes(self, embodiment: str | None = None,
                     task: str | None = None) -> dict[str, dict[int, str]]:
        """ONNX dynamic axes: the batch, and the team size where an input has one."""
        _, inputs, outputs = self.export_spec(embodiment, task)
        team = any("agents" in shape for shape, _ in inputs.values())
        return {name: {0: "batch", **({1: "agents"} if team else {})} for name in [*inputs, *outputs]}

    def _check_actions(self, env: Any, act: Any, e: int) -> None:
        """Refuse an action space other than embodiment ``e``'s (kind, size and bounds)."""
        emb = self.table.embodiments[e]
        if emb.action_kind == "discrete":
            need(env, f"number of actions of {emb.name!r}", emb.action_dim, int(getattr(act, "n", -1)))
            return
        need(env, f"action shape of {emb.name!r}", (emb.action_dim,), space_shape(act))
        bounds = (list(emb.action_low or ()), list(emb.action_high or ()))
        got = (np.asarray(act.low, float).tolist(), np.asarray(act.high, float).tolist())
        if not np.allclose(bounds, got, atol=1e-6):
            need(env, f"action bounds of {emb.name!r}", bounds, got)


ExportInput = tuple[tuple[Any, ...], torch.dtype]
"""Shape of one row of an exported input (``"agents"``: a dynamic team axis) and its dtype."""


class _Export(nn.Module):
    """A student's :meth:`Student.export_forward` as a module (tracing needs one holding the student)."""

    def __init__(self, student: Student, emb_id: int) -> None:
        super().__init__()
        self.student, self.emb_id = student, emb_id

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.student.export_forward(self.emb_id, *inputs)


def no_task_tokens(task: str | None) -> None:
    """Refuse a ``task`` for a kind without task tokens (ObservationError)."""
    if task is not None:
        raise ObservationError(f"this student has no task tokens; got task={task!r}")


def space_shape(space: Any) -> tuple[int, ...]:
    """A space's shape as a tuple (``()`` when it has none)."""
    return tuple(getattr(space, "shape", None) or ())


def need(env: Any, what: str, expected: Any, got: Any) -> None:
    """Raise :class:`SpaceMismatchError` unless ``expected == got``."""
    if expected != got:
        raise SpaceMismatchError(
            f"{what}: the student expects {expected}, the env {getattr(env, 'spec', None) or env!s} "
            f"has {got}"
        )


def obs_rows(obs: Any, dim: int, name: str) -> tuple[np.ndarray, bool]:
    """``obs`` as a finite real ``(N, dim)`` array, and whether it was one row ``(dim,)``.

    Raises:
        ObservationError: not array-like or real-valued, another shape, an empty batch, or a
            non-finite value (naming ``name`` and what was expected).
    """
    try:
        x = np.asarray(obs)
    except Exception as exc:  # ragged lists and the like
        raise ObservationError(f"observation is not array-like: {exc}") from None
    if x.dtype == object or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ObservationError(f"observation for {name} must be a real-valued array, got dtype {x.dtype}")
    single = x.ndim == 1
    x = x[None] if single else x
    if x.ndim != 2 or x.shape[1] != dim:
        raise ObservationError(f"observation for {name}: expected shape ({dim},) or (N, {dim}), "
                               f"got {np.asarray(obs).shape}")
    if x.shape[0] == 0:
        raise ObservationError(f"observation batch for {name} is empty")
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0].tolist()
        raise ObservationError(f"observation for {name} has a non-finite value at index {bad}")
    return x, single
