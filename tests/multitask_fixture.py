"""A tiny multi-task world for the tests: two tasks on one point body that differ only by task.

``toward`` drives the point to the goal, ``away`` to the mirrored goal; both see the same
observation ``[x, y, gx, gy]``, so only a task token tells them apart. ``info["success"]`` is
true within 0.1 of the target. The experts (objects with ``get_action`` and plain functions)
act with a gain that overshoots the action bounds, so clipping matters.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "polydistill-test/PointTask-v0"


class PointTaskEnv(gym.Env):
    """A point in the plane reaching (``toward``) or mirroring (``away``) a random goal."""

    def __init__(self, task: str = "toward") -> None:
        if task not in ("toward", "away"):
            raise ValueError(f"task must be toward or away, got {task!r}")
        self.sign = 1.0 if task == "toward" else -1.0
        self.observation_space = gym.spaces.Box(-2.0, 2.0, (4,), np.float64)
        self.action_space = gym.spaces.Box(-0.2, 0.2, (2,), np.float32)
        self.state = np.zeros(4)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        goal = self.np_random.uniform(-1.0, 1.0, 2)
        self.state = np.concatenate([np.zeros(2), goal])
        return self.state.copy(), {"success": False}

    def step(self, action: np.ndarray):
        a = np.clip(np.asarray(action, dtype=np.float64), -0.2, 0.2)
        self.state[:2] = np.clip(self.state[:2] + a, -2.0, 2.0)
        dist = float(np.linalg.norm(self.state[:2] - self.sign * self.state[2:]))
        return self.state.copy(), -dist, False, False, {"success": dist < 0.1}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=PointTaskEnv, max_episode_steps=25)


def _expert(obs: np.ndarray, sign: float) -> np.ndarray:
    err = sign * obs[..., 2:] - obs[..., :2]
    return err * np.where(np.abs(err) > 0.25, 5.0, 1.0)  # far away: overshoots the bounds (+-0.2)


class TowardExpert:
    """Meta-World-style scripted policy: ``get_action`` of one observation."""

    def get_action(self, obs: np.ndarray) -> np.ndarray:
        assert obs.shape == (4,), "called per row"
        return _expert(obs, 1.0)


class AwayExpert:
    """The ``away`` task's expert."""

    def get_action(self, obs: np.ndarray) -> np.ndarray:
        assert obs.shape == (4,), "called per row"
        return _expert(obs, -1.0)


def toward_batch(obs: np.ndarray) -> np.ndarray:
    """A batch function: ``(N, 4) -> (N, 2)``."""
    return _expert(obs, 1.0)


def toward_one(obs: np.ndarray) -> np.ndarray:
    """A function of one observation (fails on a batch)."""
    if obs.ndim != 1:
        raise ValueError("one observation at a time")
    return _expert(obs, 1.0)


NOT_A_POLICY = 42
