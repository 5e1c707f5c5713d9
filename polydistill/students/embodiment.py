"""The embodiment table: how one student routes many observation/action spaces (COMPASS-style).

Each embodiment gets a token id. Observations are zero-padded to the widest embodiment and
paired with a one-hot token; actions are predicted at the widest width and masked, so padded
action dimensions never reach an env. This module needs only NumPy (no gymnasium) so deployed
students can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from polydistill.errors import ConfigError, ObservationError

__all__ = ["Embodiment", "EmbodimentTable", "UNSEEN_TASK"]

UNSEEN_TASK = "<unseen>"
"""The task name that selects a body's token with an all-zero task code: a task the student
never saw (zero-shot evaluation)."""


@dataclass(frozen=True)
class Embodiment:
    """One body type the student can drive."""

    name: str
    """Unique name (e.g. ``hopper``); selects the token at inference."""
    obs_dim: int
    """Length of the flat observation vector."""
    action_kind: Literal["continuous", "discrete"]
    """Box actions (Gaussian head) or Discrete actions (categorical head)."""
    action_dim: int
    """Action vector length (continuous) or number of actions (discrete)."""
    action_low: tuple[float, ...] | None = None
    """Lower action bounds (continuous); actions are clipped to them."""
    action_high: tuple[float, ...] | None = None
    """Upper action bounds (continuous)."""

    def __post_init__(self) -> None:
        if self.obs_dim < 1 or self.action_dim < 1:
            raise ConfigError(
                f"embodiment {self.name!r}: obs_dim and action_dim must be >= 1, "
                f"got {self.obs_dim} and {self.action_dim}"
            )
        if self.action_kind == "continuous":
            for b in (self.action_low, self.action_high):
                if b is None or len(b) != self.action_dim:
                    raise ConfigError(
                        f"embodiment {self.name!r}: continuous actions need low/high bounds of "
                        f"length {self.action_dim}"
                    )

    @classmethod
    def from_spaces(cls, name: str, observation_space: Any, action_space: Any) -> Embodiment:
        """Build from Gymnasium spaces (flat Box observations; Box or Discrete actions).

        Raises:
            ConfigError: for any other space type.
        """
        # Class names, not isinstance: this module must not import gymnasium (deployment).
        obs_kind, act_kind = type(observation_space).__name__, type(action_space).__name__
        obs_shape = getattr(observation_space, "shape", None)
        if obs_kind != "Box" or obs_shape is None or len(obs_shape) != 1:
            raise ConfigError(
                f"embodiment {name!r}: expected a flat Box observation space, got {observation_space}"
            )
        if act_kind == "Discrete":
            if int(getattr(action_space, "start", 0)) != 0:
                raise ConfigError(
                    f"embodiment {name!r}: Discrete actions must start at 0, got {action_space}"
                )
            return cls(name, int(obs_shape[0]), "discrete", int(action_space.n))
        act_shape = getattr(action_space, "shape", None)
        if act_kind != "Box" or act_shape is None or len(act_shape) != 1:
            raise ConfigError(
                f"embodiment {name!r}: expected a flat Box or a Discrete action space, got {action_space}"
            )
        return cls(
            name, int(obs_shape[0]), "continuous", int(act_shape[0]),
            tuple(float(x) for x in action_space.low), tuple(float(x) for x in action_space.high),
        )

class EmbodimentTable:
    """The student's token rows, with the padding/masking arithmetic shared by all users.

    Without ``tasks`` there is one row (token) per embodiment, as in COMPASS. With ``tasks``
    (many tasks on one body, e.g. Meta-World's Sawyer) there is one row per task plus one
    :data:`UNSEEN_TASK` row per body, and a row's code is its body's one-hot followed by its
    task's one-hot (zeros for the unseen row), so the task token is distinct from the
    embodiment. ``embodiments[row]`` is the row's body either way; observation statistics are
    kept per body (:attr:`row_body`).

    Args:
        embodiments: The distinct bodies.
        tasks: ``(task, embodiment name)`` pairs, or None for one token per body. Task names are
            unique across bodies (a task code names one task of one body).
    """

    def __init__(self, embodiments: Sequence[Embodiment],
                 tasks: Sequence[tuple[str, str]] | None = None) -> None:
        if not embodiments:
            raise ConfigError("an embodiment table needs at least one embodiment")
        names = [e.name for e in embodiments]
        if len(set(names)) != len(names):
            raise ConfigError(f"embodiment names must be unique, got {names}")
        kinds = {e.action_kind for e in embodiments}
        if len(kinds) > 1:
            raise ConfigError(
                "one student cannot mix continuous and discrete action embodiments: "
                + ", ".join(f"{e.name}={e.action_kind}" for e in embodiments)
            )
        self.bodies: tuple[Embodiment, ...] = tuple(embodiments)
        self.body_index = {e.name: i for i, e in enumerate(self.bodies)}
        self.task_names: tuple[str, ...] = ()
        if tasks is None:
            rows = [(i, None) for i in range(len(self.bodies))]
        else:
            task_list = [(str(t), str(b)) for t, b in tasks]
            tnames = [t for t, _ in task_list]
            if not task_list or len(set(tnames)) != len(tnames) or UNSEEN_TASK in tnames:
                raise ConfigError(f"task tokens need unique task names (not {UNSEEN_TASK!r}), got {tnames}")
            for t, b in task_list:
                if b not in self.body_index:
                    raise ConfigError(f"task {t!r} names embodiment {b!r}; known: {names}")
            idle = sorted(set(names) - {b for _, b in task_list})
            if idle:
                raise ConfigError(f"with task tokens every embodiment needs a task; {idle} have none")
            self.task_names = tuple(tnames)
            rows = [(self.body_index[b], t) for t, b in task_list]
            rows += [(i, UNSEEN_TASK) for i in range(len(self.bodies))]
        self.row_tasks: tuple[str | None, ...] = tuple(t for _, t in rows)
        self.row_body = np.array([b for b, _ in rows], dtype=np.int64)
        self.embodiments: tuple[Embodiment, ...] = tuple(self.bodies[b] for b, _ in rows)
        self.index = {(self.embodiments[i].name, t): i for i, t in enumerate(self.row_tasks)}
        nb, nt = len(self.bodies), len(self.task_names)
        self.codes = np.zeros((len(rows), nb + nt), dtype=np.float32)
        """Token code of each row: body one-hot, then task one-hot (identity without tasks)."""
        for i, (b, t) in enumerate(rows):
            self.codes[i, b] = 1.0
            if t is not None and t != UNSEEN_TASK:
                self.codes[i, nb + self.task_names.index(t)] = 1.0
        self.action_kind: str = embodiments[0].action_kind
        self.max_obs_dim = max(e.obs_dim for e in embodiments)
        self.max_action_dim = max(e.action_dim for e in embodiments)
        n, a = len(rows), self.max_action_dim
        self.action_mask = np.zeros((n, a), dtype=bool)  # (rows, A)
        self.action_low = np.zeros((n, a), dtype=np.float32)
        self.action_high = np.zeros((n, a), dtype=np.float32)
        for i, e in enumerate(self.embodiments):
            self.action_mask[i, : e.action_dim] = True
            if e.action_kind == "continuous":
                self.action_low[i, : e.action_dim] = e.action_low
                self.action_high[i, : e.action_dim] = e.action_high
        bounded = np.isfinite(self.action_low) & np.isfinite(self.action_high)
        half = np.where(bounded, (self.action_high - self.action_low) / 2, 1.0)
        # Per-dimension scale used to balance losses across embodiments of different ranges.
        self.action_scale = np.where(self.action_mask & (half > 0), half, 1.0).astype(np.float32)

    @property
    def has_tasks(self) -> bool:
        """Whether rows are tasks (task tokens) rather than bodies."""
        return bool(self.task_names)

    @property
    def code_dim(self) -> int:
        """Length of a token code."""
        return int(self.codes.shape[1])

    def __len__(self) -> int:
        return len(self.embodiments)

    def __getitem__(self, name: str) -> Embodiment:
        return self.bodies[self.body_id(name)]

    @property
    def names(self) -> list[str]:
        """Embodiment names in token order."""
        return [e.name for e in self.bodies]

    def body_id(self, name: str) -> int:
        """Index of body ``name`` (its observation statistics)."""
        try:
            return self.body_index[name]
        except KeyError:
            raise ObservationError(f"unknown embodiment {name!r}; this student knows {self.names}") from None

    def tasks_of(self, name: str) -> list[str]:
        """The task tokens of body ``name`` (empty without task tokens)."""
        return [t for e, t in zip(self.embodiments, self.row_tasks, strict=True)
                if e.name == name and t not in (None, UNSEEN_TASK)]

    def id(self, name: str, task: str | None = None) -> int:
        """Token row of body ``name`` (and ``task``, for a table with task tokens).

        Raises:
            ObservationError: for an unknown body or task, a task without task tokens, or no
                task where the table has task tokens (the messages list the known names).
        """
        self.body_id(name)
        if not self.has_tasks:
            if task is not None:
                raise ObservationError(f"this student has no task tokens; got task={task!r}")
            return self.index[(name, None)]
        if task is None:
            raise ObservationError(f"this student has task tokens; pass task=NAME (embodiment {name!r} "
                                   f"knows {self.tasks_of(name)}, or {UNSEEN_TASK!r} for an unseen task)")
        try:
            return self.index[(name, task)]
        except KeyError:
            raise ObservationError(f"unknown task {task!r} of embodiment {name!r}; known: "
                                   f"{self.tasks_of(name)} (or {UNSEEN_TASK!r})") from None

    def pad_obs(self, obs: np.ndarray, emb_id: int) -> np.ndarray:
        """Zero-pad a batch ``(N, obs_dim)`` of one embodiment to ``(N, max_obs_dim)``.

        Raises:
            ObservationError: if the batch is not ``(N, obs_dim)`` for that embodiment.
        """
        e = self.embodiments[emb_id]
        if obs.ndim != 2 or obs.shape[1] != e.obs_dim:
            raise ObservationError(
                f"observation for {e.name!r}: expected shape (N, {e.obs_dim}), got {obs.shape}"
            )
        out = np.zeros((obs.shape[0], self.max_obs_dim), dtype=np.float32)
        out[:, : obs.shape[1]] = obs
        return out

    def unpad_action(self, action: np.ndarray, emb_id: int) -> np.ndarray:
        """Keep only the embodiment's real action dims of ``(N, max_action_dim)``, clipped."""
        e = self.embodiments[emb_id]
        if e.action_kind == "discrete":
            return action
        a = action[:, : e.action_dim]
        return np.clip(a, self.action_low[emb_id, : e.action_dim],
                       self.action_high[emb_id, : e.action_dim])

    def to_json(self) -> list[dict[str, Any]]:
        """JSON-safe description of the bodies (stored in checkpoints; tasks: :meth:`tasks_json`)."""
        return [asdict(e) for e in self.bodies]

    def tasks_json(self) -> list[list[str]] | None:
        """The ``(task, embodiment)`` pairs of the task tokens (None without them)."""
        if not self.has_tasks:
            return None
        return [[t, self.embodiments[i].name] for i, t in enumerate(self.row_tasks) if t != UNSEEN_TASK]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]], tasks: list[list[str]] | None = None) -> EmbodimentTable:
        """Inverse of :meth:`to_json` (and :meth:`tasks_json`)."""
        embs = []
        for d in data:
            d = dict(d)
            for k in ("action_low", "action_high"):
                if d.get(k) is not None:
                    d[k] = tuple(d[k])
            embs.append(Embodiment(**d))
        return cls(embs, None if tasks is None else [(t, b) for t, b in tasks])
