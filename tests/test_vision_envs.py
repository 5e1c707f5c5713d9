"""Vision tasks and observation-group wrappers."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import polydistill.envs  # noqa: F401
from polydistill.errors import ConfigError
from polydistill.wrappers.gymnasium import ObsGroups

pytestmark = pytest.mark.physics  # rerun on mujoco 3.3.0 in the second CI environment

IDS = ["polydistill/PointGoalVision-v0", "polydistill/ReachVision-v0"]


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id, size=32)
    check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("kwargs", [{}, {"size": 48, "frame_stack": 3}, {"pixels": False}])
def test_observations_stay_in_space(env_id: str, kwargs: dict) -> None:
    env = gym.make(env_id, **kwargs)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    for _ in range(30):
        obs, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
    if kwargs.get("pixels", True):
        assert obs["pixels"].dtype == np.uint8
        assert obs["pixels"].shape == (3 * kwargs.get("frame_stack", 1), kwargs.get("size", 64),
                                       kwargs.get("size", 64))
    else:
        assert "pixels" not in obs
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_rendering_is_deterministic_for_a_seed(env_id: str) -> None:
    def rollout(seed: int) -> list[np.ndarray]:
        env = gym.make(env_id, size=32)
        env.action_space.seed(0)
        obs, _ = env.reset(seed=seed)
        frames = [obs["pixels"]]
        for _ in range(10):
            obs, *_ = env.step(env.action_space.sample())
            frames.append(obs["pixels"])
        env.close()
        return frames

    a, b, c = rollout(5), rollout(5), rollout(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])  # another goal, another picture


@pytest.mark.parametrize("env_id", IDS)
def test_goal_is_in_privileged_group_not_in_proprio(env_id: str) -> None:
    env = gym.make(env_id, size=32)
    obs, _ = env.reset(seed=0)
    goal = env.unwrapped._goal
    np.testing.assert_allclose(obs["privileged"], goal)
    other, _ = env.reset(seed=1)
    assert not np.allclose(other["privileged"], goal)
    env.close()


def test_reward_rises_toward_the_goal() -> None:
    env = gym.make("polydistill/PointGoalVision-v0", pixels=False)
    obs, _ = env.reset(seed=0)
    ret_toward = 0.0
    for _ in range(100):
        d = obs["privileged"] - obs["proprio"][:2]
        obs, r, *_ = env.step(np.clip(5 * d - 0.5 * obs["proprio"][2:], -1, 1))
        ret_toward += r
    obs, _ = env.reset(seed=0)
    ret_away = sum(env.step(np.array([0.0, 0.0]))[1] for _ in range(100))
    assert ret_toward > 3 * ret_away and ret_toward > 50


def test_obs_groups_are_checked() -> None:
    env = gym.make("polydistill/PointGoalVision-v0", size=32)
    space = env.observation_space
    ObsGroups(("proprio", "privileged"), ("proprio", "pixels")).check(space)
    with pytest.raises(ConfigError, match="no group 'camera'"):
        ObsGroups(("proprio",), ("camera",)).check(space)
    with pytest.raises(ConfigError, match="privileged"):
        ObsGroups(("proprio",), ("proprio", "privileged")).check(space)
    with pytest.raises(ConfigError, match="Dict"):
        ObsGroups(("a",), ("b",)).check(gym.spaces.Box(0, 1, (2,)))
    env.close()


def test_bad_camera_and_size_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown camera 'nope'.*topdown"):
        gym.make("polydistill/PointGoalVision-v0", camera="nope")
    with pytest.raises(ConfigError, match="image size"):
        gym.make("polydistill/PointGoalVision-v0", size=4)


def test_missing_rendering_backend_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "PYOPENGL_PLATFORM")}
    code = ("import gymnasium as gym, polydistill.envs\n"
            "from polydistill.errors import ConfigError\n"
            "try:\n    gym.make('polydistill/PointGoalVision-v0')\n"
            "except ConfigError as e:\n    print('ERR', e)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ERR" in r.stdout and "MUJOCO_GL=egl" in r.stdout, r.stdout + r.stderr
