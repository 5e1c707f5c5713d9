"""A tiny world where distillation leaves room for RL: a point on a line, a timid teacher.

The point starts at a random ``x`` in [-1, 1] and moves by ``0.1 * a`` per step (``a`` in
[-1, 1]); the reward is ``-|x|`` after the move, for 30 steps. The best policy runs at full
speed to 0 (a return of about -1.4 from |x| = 0.5); the teacher closes only 20% of the gap per
step (about -2.4), so a student that copies it has a clear way up that PPO finds quickly.
The observation is ``[x, 1]`` (a constant feature, so two bodies can differ in width).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "polydistill-test/Reach1D-v0"
WIDE_ENV_ID = "polydistill-test/Reach1DWide-v0"


class Reach1D(gym.Env):
    """Drive a point on a line to 0 (module docstring); ``extra`` appends constant observations."""

    def __init__(self, extra: int = 0) -> None:
        self.extra = int(extra)
        self.observation_space = gym.spaces.Box(-2.0, 2.0, (2 + self.extra,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.x = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self.x, 1.0] + [0.5] * self.extra, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-1.0, 1.0))
        return self._obs(), {}

    def step(self, action: np.ndarray):
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        self.x = float(np.clip(self.x + 0.1 * a, -2.0, 2.0))
        return self._obs(), -abs(self.x), False, False, {}


def timid_teacher(obs: np.ndarray) -> np.ndarray:
    """Close 20% of the gap per step: ``a = -2 x`` (the point moves ``0.1 a``)."""
    return np.clip(-2.0 * np.asarray(obs)[..., :1], -1.0, 1.0)


for _id, _extra in ((ENV_ID, 0), (WIDE_ENV_ID, 2)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=Reach1D, max_episode_steps=30, kwargs={"extra": _extra})
