"""Vision tasks: the goal is visible to a camera but absent from proprioception.

Each env's raw observation is flat: ``proprio`` first, then the ``privileged`` goal. The
registered ids (``make_vision_env``) wrap it into groups ``proprio``, ``privileged`` and
``pixels`` (a top-down camera, uint8 ``(3, size, size)``), so a teacher can act on
``proprio + privileged`` and a student on ``proprio + pixels``.

=============================  ============================  ==================  ==============
env id                         proprio (student + teacher)   privileged (teacher) reward / step
=============================  ============================  ==================  ==============
``polydistill/PointGoalVision-v0``  agent x, y, vx, vy        goal x, y           ``exp(-d / 0.1)``
``polydistill/ReachVision-v0``      cos/sin of 2 joints, 2 joint velocities   target x, y   ``exp(-d / 0.05)``
=============================  ============================  ==================  ==============

``d`` is the distance between the agent (or fingertip) and the goal, which is redrawn at every
reset. Episodes last 100 steps; returns lie in [0, 100]. A student that sees only
proprioception cannot know where the goal is (it is not in its observation) and must read it
from the pixels; the ``blind`` control of the vision benchmark measures exactly that.

Version history:
    v0: initial release.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.spaces import Box

__all__ = ["PointGoalEnv", "ReachEnv", "make_vision_env"]

ASSETS = Path(__file__).parent / "assets"


class _GoalEnv(MujocoEnv, utils.EzPickle):
    """Shared mechanics: a mocap goal redrawn at reset, a distance reward, fixed horizon."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"]}
    xml: str = ""
    goal_body = "goal"
    effector = "agent"
    n_proprio = 4
    reward_scale = 0.1
    frame_skip = 2

    def __init__(self, **kwargs: Any) -> None:
        utils.EzPickle.__init__(self, **kwargs)
        n = self.n_proprio + 2
        self.metadata = {k: v for k, v in type(self).metadata.items() if k != "render_fps"}
        MujocoEnv.__init__(self, str(ASSETS / self.xml), self.frame_skip,
                           observation_space=Box(-np.inf, np.inf, (n,), np.float64), **kwargs)
        self.metadata["render_fps"] = int(np.round(1.0 / self.dt))
        self._goal = np.zeros(2)

    def _effector_xy(self) -> np.ndarray:
        return self.data.body(self.effector).xpos[:2].copy()

    def _distance(self) -> float:
        return float(np.linalg.norm(self._effector_xy() - self._goal))

    def _sample_goal(self) -> np.ndarray:
        raise NotImplementedError

    def _proprio(self) -> np.ndarray:
        raise NotImplementedError

    def _get_obs(self) -> np.ndarray:
        return np.concatenate([self._proprio(), self._goal])

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the action for ``frame_skip`` physics steps; reward the closeness to the goal."""
        self.do_simulation(action, self.frame_skip)
        d = self._distance()
        reward = float(np.exp(-d / self.reward_scale))
        return self._get_obs(), reward, False, False, {"distance": d, "reward_goal": reward}

    def reset_model(self) -> np.ndarray:
        """Randomize the start and draw a new goal."""
        self._reset_body()
        self._goal = self._sample_goal()
        self.data.mocap_pos[0, :2] = self._goal
        return self._get_obs()

    def _reset_body(self) -> None:
        raise NotImplementedError


class PointGoalEnv(_GoalEnv):
    """A point mass in a walled 1 m arena that must reach a goal disc."""

    xml = "point_goal.xml"
    n_proprio = 4
    reward_scale = 0.1

    def _proprio(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[:2], self.data.qvel[:2]])

    def _reset_body(self) -> None:
        qpos = self.np_random.uniform(-0.4, 0.4, size=2)
        self.set_state(qpos, np.zeros(2))

    def _sample_goal(self) -> np.ndarray:
        while True:
            g = self.np_random.uniform(-0.4, 0.4, size=2)
            if np.linalg.norm(g - self.data.qpos[:2]) > 0.25:
                return g


class ReachEnv(_GoalEnv):
    """Gymnasium's two-link Reacher arm; the target is seen by the camera, not sensed."""

    xml = "reach.xml"
    effector = "fingertip"
    n_proprio = 6
    reward_scale = 0.05

    def _proprio(self) -> np.ndarray:
        theta = self.data.qpos[:2]
        return np.concatenate([np.cos(theta), np.sin(theta), self.data.qvel[:2]])

    def _reset_body(self) -> None:
        qpos = self.init_qpos + self.np_random.uniform(-0.1, 0.1, size=self.model.nq)
        qvel = self.init_qvel + self.np_random.uniform(-0.005, 0.005, size=self.model.nv)
        self.set_state(qpos, qvel)

    def _sample_goal(self) -> np.ndarray:
        while True:
            g = self.np_random.uniform(-0.2, 0.2, size=2)
            if 0.05 < np.linalg.norm(g) < 0.2:
                return g


_CLASSES = {"point_goal": PointGoalEnv, "reach": ReachEnv}


def make_vision_env(task: str, size: int = 64, frame_stack: int = 1, pixels: bool = True,
                    camera: str = "topdown", **kwargs: Any) -> Any:
    """Build a vision task with its observation groups (entry point of the registered ids).

    Args:
        task: ``point_goal`` or ``reach``.
        size: Camera image width and height in pixels.
        frame_stack: Frames stacked along channels (``3 * frame_stack`` channels).
        pixels: Render the camera group (False: ``proprio`` and ``privileged`` only, e.g. to
            train the privileged teacher fast).
        camera: MuJoCo camera name.
        **kwargs: Passed to the MuJoCo env (e.g. ``render_mode``).
    """
    from polydistill.errors import ConfigError
    from polydistill.wrappers.gymnasium import FrameStackKey, PixelObservation, SplitObservation

    if task not in _CLASSES:
        raise ConfigError(f"unknown vision task {task!r}; valid: {sorted(_CLASSES)}")
    env = _CLASSES[task](**kwargs)
    n = env.n_proprio
    env = SplitObservation(env, {"proprio": (0, n), "privileged": (n, n + 2)})
    if pixels:
        env = PixelObservation(env, camera=camera, width=size, height=size)
        if frame_stack > 1:
            env = FrameStackKey(env, "pixels", frame_stack)
    return env
