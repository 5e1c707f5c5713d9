"""Per-agent students for the multi-agent (CAML) setup (torch + NumPy only, loads without envs).

One network is shared by every agent (parameter sharing). It reads an agent's *deployable*
modalities only, flattened in a fixed order. With ``message_dim > 0`` each agent also
broadcasts a message computed from its own deployable modalities and receives the mean of the
other present agents' messages, which works for any number of agents; with ``message_dim = 0``
(the ``alone`` mode) an agent's action depends on its own observation and nothing else.

Batches are teams: observations ``(B, N, D)`` with a ``present`` mask ``(B, N)`` (agents that
left, or slots beyond the team size, are absent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from polydistill.embodiment import Embodiment, EmbodimentTable
from polydistill.errors import ConfigError, ObservationError
from polydistill.student import ACTIVATIONS, GeneralistStudent, StudentConfig, StudentOutput

__all__ = ["TeamConfig", "TeamStudent", "flatten_modalities"]


@dataclass(frozen=True)
class TeamConfig:
    """What a deployed agent reads and whether agents exchange messages."""

    modalities: tuple[str, ...] = ("state", "camera")
    """Deployable modalities, flattened in this order."""
    message_dim: int = 0
    """Width of the message each agent broadcasts (0: agents act alone, no data from others)."""

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ConfigError("TeamConfig.modalities: name at least one deployable modality")
        if self.message_dim < 0:
            raise ConfigError(f"TeamConfig.message_dim must be >= 0, got {self.message_dim}")


def flatten_modalities(obs: dict[str, Any], modalities: tuple[str, ...],
                       sizes: tuple[int, ...] | None = None) -> np.ndarray:
    """One agent's deployable modalities as a flat float32 vector, in ``modalities`` order.

    Raises:
        ObservationError: if a modality is missing, one that is not deployable is present, or a
            size differs from ``sizes``.
    """
    if not isinstance(obs, dict):
        raise ObservationError(
            f"an agent's observation must be a dict of modalities, got {type(obs).__name__}"
        )
    missing = [m for m in modalities if m not in obs]
    extra = sorted(set(obs) - set(modalities))
    if missing or extra:
        raise ObservationError(
            f"expected exactly the deployable modalities {list(modalities)}; missing {missing}, "
            f"not deployable {extra}"
        )
    parts = [np.asarray(obs[m], dtype=np.float32).reshape(-1) for m in modalities]
    if sizes is not None:
        for m, p, n in zip(modalities, parts, sizes, strict=True):
            if p.size != n:
                raise ObservationError(f"modality {m!r}: expected {n} values, got {p.size}")
    return np.concatenate(parts)


class TeamStudent(GeneralistStudent):
    """Shared per-agent policy over deployable modalities, optionally with messages."""

    obs_keys = ("obs", "present")

    def __init__(self, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 config: StudentConfig | None = None, team: TeamConfig | None = None,
                 modality_sizes: tuple[int, ...] | None = None) -> None:
        table = EmbodimentTable([Embodiment("agent", obs_dim, "continuous", len(action_low),
                                            tuple(map(float, action_low)),
                                            tuple(map(float, action_high)))])
        super().__init__(table, config)
        self.team = team or TeamConfig()
        self.modality_sizes = tuple(modality_sizes) if modality_sizes else (obs_dim,)
        if sum(self.modality_sizes) != obs_dim:
            raise ConfigError(f"modality sizes {self.modality_sizes} do not add up to obs_dim {obs_dim}")
        m = self.team.message_dim
        if m:
            act = ACTIVATIONS[self.config.activation]
            self.message = nn.Sequential(nn.Linear(self.feature_dim, m), nn.Tanh())
            self.fuse = nn.Sequential(nn.Linear(self.feature_dim + m, self.feature_dim), act())

    def batch_obs(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """``obs`` ``(B, N, D)`` and ``present`` ``(B, N)`` tensors of a buffer batch."""
        return {k: torch.from_numpy(np.ascontiguousarray(batch[k])) for k in self.obs_keys}

    def forward(self, obs: dict[str, torch.Tensor], emb: torch.Tensor) -> StudentOutput:  # type: ignore[override]
        """Action distributions ``(B, N, A)`` of teams ``obs["obs"]`` ``(B, N, D)``."""
        x, present = obs["obs"].to(torch.float32), obs["present"].to(torch.float32)
        b, n, d = x.shape
        h = self.features(x.reshape(b * n, d), emb.reshape(-1)).reshape(b, n, -1)
        if self.team.message_dim:
            msg = self.message(h) * present.unsqueeze(-1)
            others = msg.sum(1, keepdim=True) - msg  # everyone's but one's own
            count = (present.sum(1, keepdim=True) - present).clamp_min(1).unsqueeze(-1)
            h = self.fuse(torch.cat([h, others / count], dim=-1))
        return self.output(h, emb)

    def act(self, obs: dict[str, torch.Tensor], emb: torch.Tensor,  # type: ignore[override]
            deterministic: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions ``(B, N, A)`` of teams (absent agents' rows are meaningless)."""
        return self.action_from(self.forward(obs, emb), emb, deterministic, generator)
