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

from polydistill.config import from_dict, to_dict
from polydistill.errors import ConfigError, ObservationError
from polydistill.students.base import (
    ACTIVATIONS,
    Student,
    StudentConfig,
    StudentOutput,
    need,
    no_task_tokens,
    space_shape,
)
from polydistill.students.embodiment import Embodiment, EmbodimentTable

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


class TeamStudent(Student):
    """Shared per-agent policy over deployable modalities, optionally with messages."""

    kind = "team"
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

    # ----------------------------------------------------------------- the kind's hooks
    def metadata(self) -> dict[str, Any]:
        """Base metadata plus the deployable modalities, their sizes and the message width."""
        return {**super().metadata(), "team_config": to_dict(self.team),
                "modality_sizes": list(self.modality_sizes)}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> TeamStudent:
        """A fresh team student from :meth:`metadata` output."""
        e = EmbodimentTable.from_json(meta["embodiments"]).embodiments[0]
        return cls(e.obs_dim, np.array(e.action_low), np.array(e.action_high),
                   from_dict(StudentConfig, meta["student_config"]),
                   from_dict(TeamConfig, meta["team_config"]), tuple(meta["modality_sizes"]))

    def prepare(self, obs: Any, embodiment: str | None = None, task: str | None = None
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor, bool]:
        """``{agent: {modality: array}}`` of the agents present -> one team of ``N`` agents.

        Raises:
            ObservationError: not a non-empty dict of agents, or an agent's modalities are
                missing, not deployable, of the wrong size or non-finite.
        """
        no_task_tokens(task)
        if not isinstance(obs, dict) or not obs:
            raise ObservationError(
                "a team student takes {agent_id: {modality: array}} for the agents present, got "
                f"{type(obs).__name__ if not isinstance(obs, dict) else 'an empty dict'}"
            )
        rows = []
        for agent, o in obs.items():
            try:
                row = flatten_modalities(o, self.team.modalities, self.modality_sizes)
            except ObservationError as exc:
                raise ObservationError(f"agent {agent!r}: {exc}") from None
            if not np.all(np.isfinite(row)):
                raise ObservationError(f"agent {agent!r}: observation has a non-finite value")
            rows.append(row)
        n = len(rows)
        x = {"obs": torch.from_numpy(np.stack(rows))[None], "present": torch.ones(1, n, dtype=torch.bool)}
        return x, torch.zeros(1, n, dtype=torch.long), False

    def deploy_act(self, x: Any, emb: torch.Tensor, deterministic: bool) -> np.ndarray:
        """Actions ``(N, A)`` of the one team ``x``."""
        return self.act(x, emb, deterministic=deterministic)[0].numpy()

    def finish(self, action: np.ndarray, single: bool, obs: Any) -> dict[str, np.ndarray]:
        """``{agent: action}`` in the order of ``obs``."""
        return {agent: action[k] for k, agent in enumerate(obs)}

    def check_env(self, env: Any, embodiment: str | None = None) -> None:
        """Refuse a ``ParallelEnv`` whose agents lack a deployable modality, or differ in size or actions."""
        agent = env.possible_agents[0]
        have = getattr(env.observation_space(agent), "spaces", {})
        mods = self.team.modalities
        need(env, "deployable modalities", list(mods), [m for m in mods if m in have])
        need(env, "modality sizes", list(self.modality_sizes),
             [int(np.prod(space_shape(have[m]))) for m in mods])
        self._check_actions(env, env.action_space(agent), 0)

    def export_spec(self, embodiment: str | None = None,
                    task: str | None = None) -> tuple[int, dict[str, Any], list[str]]:
        """Teams in, actions out (zeros for absent agents); batch and team size are dynamic.

        ``obs`` float32 ``(B, N, D)`` (deployable modalities in order) and ``present`` bool
        ``(B, N)`` -> ``action`` ``(B, N, A)``.
        """
        no_task_tokens(task)
        return 0, {"obs": (("agents", self.table.max_obs_dim), torch.float32),
                   "present": (("agents",), torch.bool)}, ["action"]

    def export_forward(self, emb_id: int, *inputs: torch.Tensor) -> torch.Tensor:
        """Every present agent's clipped action."""
        obs, present = inputs
        emb = torch.zeros_like(obs[:, :, 0], dtype=torch.long)
        action = self.clip_action(self({"obs": obs, "present": present}, emb).mean, emb)
        return action * present.unsqueeze(-1).to(action.dtype)
