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

__all__ = ["Embodiment", "EmbodimentTable"]


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
    """Ordered set of embodiments with the padding/masking arithmetic shared by all users."""

    def __init__(self, embodiments: Sequence[Embodiment]) -> None:
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
        self.embodiments: tuple[Embodiment, ...] = tuple(embodiments)
        self.index = {e.name: i for i, e in enumerate(self.embodiments)}
        self.action_kind: str = embodiments[0].action_kind
        self.max_obs_dim = max(e.obs_dim for e in embodiments)
        self.max_action_dim = max(e.action_dim for e in embodiments)
        n, a = len(embodiments), self.max_action_dim
        self.action_mask = np.zeros((n, a), dtype=bool)  # (E, A)
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

    def __len__(self) -> int:
        return len(self.embodiments)

    def __getitem__(self, name: str) -> Embodiment:
        return self.embodiments[self.id(name)]

    @property
    def names(self) -> list[str]:
        """Embodiment names in token order."""
        return [e.name for e in self.embodiments]

    def id(self, name: str) -> int:
        """Token id of ``name``.

        Raises:
            ObservationError: if ``name`` is not in the table (lists the known names).
        """
        try:
            return self.index[name]
        except KeyError:
            raise ObservationError(
                f"unknown embodiment {name!r}; this student knows {self.names}"
            ) from None

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
        """JSON-safe description (stored in checkpoints)."""
        return [asdict(e) for e in self.embodiments]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]]) -> EmbodimentTable:
        """Inverse of :meth:`to_json`."""
        embs = []
        for d in data:
            d = dict(d)
            for k in ("action_low", "action_high"):
                if d.get(k) is not None:
                    d[k] = tuple(d[k])
            embs.append(Embodiment(**d))
        return cls(embs)
