"""Where a body's observation keeps what, and how a family pads its bodies to one width.

Used by the env side (:mod:`polydistill.envs.families`, to build a family teacher's
observation) and by deployed morphology students (to pad a raw body observation the same way),
so it needs only NumPy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from polydistill.errors import ConfigError

__all__ = ["BodyLayout", "FamilyLayout"]


@dataclass(frozen=True)
class BodyLayout:
    """Where a body's observation keeps what (Gymnasium's v5 order).

    ``[root positions, joint angles, root velocities, joint velocities, extra]``, where
    ``extra`` is e.g. a target velocity. Every hinge of these bodies is actuated, in joint
    order, so action ``j`` drives joint ``j``.
    """

    root_pos: int
    joints: int
    root_vel: int
    extra: int = 0

    def __post_init__(self) -> None:
        if min(self.root_pos, self.joints, self.root_vel, self.extra) < 0 or self.joints < 1:
            raise ConfigError(f"a body layout needs >= 1 joint and no negative sizes, got {self}")

    @property
    def obs_dim(self) -> int:
        """Length of the body's own observation."""
        return self.root_pos + 2 * self.joints + self.root_vel + self.extra

    @classmethod
    def of_env(cls, env: Any) -> BodyLayout:
        """Read the layout of a Gymnasium v5 MuJoCo env (its ``observation_structure``)."""
        u = env.unwrapped
        st, n = u.observation_structure, int(env.observation_space.shape[0])
        j = int(u.model.nu)
        return cls(int(st["qpos"]) - j, j, int(st["qvel"]) - j, n - int(st["qpos"]) - int(st["qvel"]))


@dataclass(frozen=True)
class FamilyLayout:
    """A family's padded observation.

    Positions, velocities and extras are each padded to the largest body of the family over
    all its splits, so a slot means the same quantity on every body.
    """

    layouts: tuple[BodyLayout, ...]
    """The distinct layouts, fewest joints first."""

    def __post_init__(self) -> None:
        if not self.layouts:
            raise ConfigError("a family layout needs at least one body layout")
        if len({x.obs_dim for x in self.layouts}) != len(self.layouts):
            raise ConfigError(f"two layouts of one family have one observation length: {self.layouts}")

    @property
    def n_pos(self) -> int:
        """Position slots."""
        return max(x.root_pos + x.joints for x in self.layouts)

    @property
    def n_vel(self) -> int:
        """Velocity slots."""
        return max(x.root_vel + x.joints for x in self.layouts)

    @property
    def n_extra(self) -> int:
        """Extra slots."""
        return max(x.extra for x in self.layouts)

    @property
    def obs_dim(self) -> int:
        """Length of a padded observation."""
        return self.n_pos + self.n_vel + self.n_extra

    @property
    def act_dim(self) -> int:
        """Actions of the body with the most joints."""
        return max(x.joints for x in self.layouts)

    def index(self, layout: BodyLayout) -> int:
        """Position of ``layout`` in :attr:`layouts` (ConfigError if it is not the family's)."""
        if layout not in self.layouts:
            raise ConfigError(f"layout {layout} is not one of the family's {list(self.layouts)}")
        return self.layouts.index(layout)

    def by_obs_dim(self, n: int) -> int | None:
        """Index of the layout whose observations have length ``n`` (None: no such body)."""
        return next((i for i, x in enumerate(self.layouts) if x.obs_dim == n), None)

    def pad(self, obs: np.ndarray, layout: BodyLayout, dtype: Any = np.float64) -> np.ndarray:
        """Observations ``(..., layout.obs_dim)`` of one body -> ``(..., obs_dim)`` padded."""
        p, v = layout.root_pos + layout.joints, layout.root_vel + layout.joints
        out = np.zeros((*obs.shape[:-1], self.obs_dim), dtype)
        out[..., :p] = obs[..., :p]
        out[..., self.n_pos: self.n_pos + v] = obs[..., p: p + v]
        out[..., self.n_pos + self.n_vel: self.n_pos + self.n_vel + layout.extra] = obs[..., p + v:]
        return out

    def slots(self, layout: BodyLayout) -> dict[str, np.ndarray]:
        """Padded-slot indices of ``layout``'s quantities.

        ``root`` (positions, velocities, extras), ``angle`` and ``velocity`` (one per joint,
        in joint order).
        """
        n_pv = self.n_pos + self.n_vel
        root = [*range(layout.root_pos), *range(self.n_pos, self.n_pos + layout.root_vel),
                *range(n_pv, n_pv + layout.extra)]
        return {"root": np.array(root, dtype=np.int64),
                "angle": np.arange(layout.root_pos, layout.root_pos + layout.joints),
                "velocity": np.arange(self.n_pos + layout.root_vel,
                                      self.n_pos + layout.root_vel + layout.joints)}

    def to_json(self) -> list[dict[str, int]]:
        """JSON-safe form (inverse: :meth:`from_json`)."""
        return [asdict(x) for x in self.layouts]

    @classmethod
    def from_json(cls, data: list[dict[str, int]]) -> FamilyLayout:
        """Inverse of :meth:`to_json`."""
        return cls(tuple(BodyLayout(**d) for d in data))
