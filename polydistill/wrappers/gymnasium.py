"""Observation-group wrappers: one job each, one overridden method each (Gymnasium style).

They turn an env's observation into a ``Dict`` of named groups (``proprio``, ``privileged``,
``pixels``, ...), so a privileged teacher and a camera-based student can read different groups
of the same env, routed by an :class:`ObsGroups` spec that is checked once.

Example:
    >>> import gymnasium as gym
    >>> import polydistill.envs
    >>> from polydistill.wrappers.gymnasium import ObsGroups
    >>> env = gym.make("polydistill/PointGoalVision-v0", size=32)
    >>> sorted(env.observation_space.spaces)
    ['pixels', 'privileged', 'proprio']
    >>> groups = ObsGroups(teacher=("proprio", "privileged"), student=("proprio", "pixels"),
    ...                    privileged=("privileged",))
    >>> groups.check(env.observation_space)
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from polydistill.errors import ConfigError, ObservationError

__all__ = ["SeedTaskChoice", "SplitObservation", "PrivilegedObservation", "PixelObservation", "FrameStackKey",
           "ConcatGroups", "ObsGroups", "flatten_groups"]


class SeedTaskChoice(gym.Wrapper):
    """Seed the env's generator *before* an inner wrapper draws the episode's task on reset.

    Meta-World's ``RandomTaskSelectWrapper`` picks an episode's goal before the reset seed
    reaches the env, so every copy's first episode got the goal of the construction seed
    (measured: 5 of 10 evaluation episodes over 5 copies shared one goal). With this wrapper,
    ``reset(seed=s)`` draws the goal from ``s``: distinct, reproducible first episodes.
    :func:`polydistill.utils.make_env` applies it to ``Meta-World/`` ids.
    """

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """Seed the generator, then reset through the inner wrappers (which reseed it again)."""
        if seed is not None:
            self.unwrapped.np_random = gym.utils.seeding.np_random(seed)[0]
        return self.env.reset(seed=seed, options=options)


class SplitObservation(gym.ObservationWrapper):
    """Split a flat ``Box`` observation into named groups by index ranges.

    Example:
        >>> env = SplitObservation(base_env, {"proprio": (0, 6), "privileged": (6, 10)})  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, groups: dict[str, tuple[int, int]]) -> None:
        super().__init__(env)
        box = env.observation_space
        if not isinstance(box, spaces.Box) or len(box.shape) != 1:
            raise ConfigError(f"SplitObservation needs a flat Box observation, got {box}")
        for name, (lo, hi) in groups.items():
            if not 0 <= lo < hi <= box.shape[0]:
                raise ConfigError(
                    f"group {name!r}: range [{lo}, {hi}) does not fit an observation of {box.shape[0]}"
                )
        self.groups = dict(groups)
        self.observation_space = spaces.Dict({
            k: spaces.Box(box.low[lo:hi], box.high[lo:hi], dtype=box.dtype)
            for k, (lo, hi) in self.groups.items()
        })

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        """Slice the flat observation into its groups."""
        return {k: observation[lo:hi] for k, (lo, hi) in self.groups.items()}


class PrivilegedObservation(gym.ObservationWrapper):
    """Add a group computed from the simulator (quantities a real robot would not sense).

    ``fn(unwrapped_env) -> np.ndarray`` reads e.g. a target position, object poses, contact
    forces or terrain parameters from the MuJoCo model/data.
    """

    def __init__(self, env: gym.Env, fn: Callable[[Any], np.ndarray], dim: int,
                 key: str = "privileged") -> None:
        super().__init__(env)
        if not isinstance(env.observation_space, spaces.Dict):
            raise ConfigError("PrivilegedObservation wraps a Dict-observation env (use SplitObservation)")
        if key in env.observation_space.spaces:
            raise ConfigError(f"observation already has a group {key!r}")
        self.fn, self.key = fn, key
        self.observation_space = spaces.Dict({
            **env.observation_space.spaces,
            key: spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float64),
        })

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Append the privileged group."""
        value = np.asarray(self.fn(self.env.unwrapped), dtype=np.float64)
        return {**observation, self.key: value}


def _check_gl_backend() -> None:
    if os.environ.get("MUJOCO_GL") is None and not os.environ.get("DISPLAY"):
        raise ConfigError(
            "MuJoCo offscreen rendering needs a GL backend and no display is present: set "
            "MUJOCO_GL=egl (works without a GPU) or MUJOCO_GL=osmesa (needs libosmesa6) before "
            "Python imports mujoco"
        )


class PixelObservation(gym.ObservationWrapper):
    """Add a camera image rendered offscreen by MuJoCo as a uint8 ``(3, height, width)`` group.

    Shadows, reflections, skybox and haze are switched off and multisampling disabled, which
    makes software rendering about 10-20x faster (measured ~25 -> ~470 frames/s at 64x64).
    """

    def __init__(self, env: gym.Env, camera: str, width: int = 64, height: int = 64,
                 key: str = "pixels") -> None:
        super().__init__(env)
        if not isinstance(env.observation_space, spaces.Dict):
            raise ConfigError("PixelObservation wraps a Dict-observation env (use SplitObservation)")
        if not (8 <= width <= 1024 and 8 <= height <= 1024):
            raise ConfigError(f"image size must be within 8..1024 pixels, got {width}x{height}")
        _check_gl_backend()
        import mujoco

        model = env.unwrapped.model
        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        if camera not in names:
            raise ConfigError(f"unknown camera {camera!r}; this model has cameras {names}")
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.camera, self.key = camera, key
        try:
            self.renderer = mujoco.Renderer(model, height=height, width=width)
        except Exception as exc:  # no GL context: say what to install or set
            raise ConfigError(
                f"cannot create a MuJoCo renderer ({exc}). Set MUJOCO_GL=egl, or MUJOCO_GL=osmesa "
                "with libosmesa6 installed, before Python imports mujoco"
            ) from exc
        opt = self.renderer.scene.flags
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_HAZE):
            opt[flag] = 0
        self.observation_space = spaces.Dict({
            **env.observation_space.spaces,
            key: spaces.Box(0, 255, shape=(3, height, width), dtype=np.uint8),
        })

    def render_pixels(self) -> np.ndarray:
        """The current camera image, ``(3, H, W)`` uint8."""
        u = self.env.unwrapped
        self.renderer.update_scene(u.data, camera=self.camera)
        return np.ascontiguousarray(self.renderer.render().transpose(2, 0, 1))

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Append the rendered image."""
        return {**observation, self.key: self.render_pixels()}

    def close(self) -> None:
        """Free the GL context."""
        self.renderer.close()
        super().close()


class FrameStackKey(gym.Wrapper):
    """Stack the last ``k`` values of one image group along channels: ``(k * C, H, W)``."""

    def __init__(self, env: gym.Env, key: str = "pixels", k: int = 3) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Dict) or key not in space.spaces:
            raise ConfigError(f"FrameStackKey: no group {key!r} in {space}")
        if k < 1:
            raise ConfigError(f"FrameStackKey: k must be >= 1, got {k}")
        box = space.spaces[key]
        self.key, self.k = key, k
        self.frames: deque[np.ndarray] = deque(maxlen=k)
        c, h, w = box.shape
        self.observation_space = spaces.Dict({
            **space.spaces, key: spaces.Box(0, 255, shape=(k * c, h, w), dtype=np.uint8),
        })

    def _stacked(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**obs, self.key: np.concatenate(list(self.frames), axis=0)}

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Fill the stack with copies of the first frame."""
        obs, info = self.env.reset(**kwargs)
        for _ in range(self.k):
            self.frames.append(obs[self.key])
        return self._stacked(obs), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Push the newest frame."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.frames.append(obs[self.key])
        return self._stacked(obs), reward, terminated, truncated, info


class ConcatGroups(gym.ObservationWrapper):
    """Flatten chosen vector groups into one ``Box`` (e.g. the teacher's view for SB3)."""

    def __init__(self, env: gym.Env, keys: Sequence[str]) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Dict):
            raise ConfigError(f"ConcatGroups needs a Dict observation space, got {space}")
        missing = [k for k in keys if k not in space.spaces]
        if missing:
            raise ConfigError(f"ConcatGroups: no group(s) {missing}; the env has {sorted(space.spaces)}")
        boxes = [space.spaces[k] for k in keys]
        if any(len(b.shape) != 1 for b in boxes):
            raise ConfigError("ConcatGroups concatenates flat vector groups only (not images)")
        self.keys = tuple(keys)
        self.observation_space = spaces.Box(
            np.concatenate([b.low for b in boxes]).astype(np.float64),
            np.concatenate([b.high for b in boxes]).astype(np.float64), dtype=np.float64,
        )

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Concatenate the chosen groups."""
        return flatten_groups(observation, self.keys)


@dataclass(frozen=True)
class ObsGroups:
    """Which observation groups the teacher and the student read (checked once, at start)."""

    teacher: tuple[str, ...]
    """Groups the (privileged) teacher reads, concatenated flat in this order."""
    student: tuple[str, ...]
    """Groups the student reads (images stay images)."""
    privileged: tuple[str, ...] = ("privileged",)
    """Groups the student must never see."""

    def check(self, space: gym.spaces.Space) -> None:
        """Refuse unknown groups and a student that would read a privileged group.

        Raises:
            ConfigError: naming the offending group and the available ones.
        """
        if not isinstance(space, spaces.Dict):
            raise ConfigError(f"observation groups need a Dict observation space, got {space}")
        have = sorted(space.spaces)
        for role, keys in (("teacher", self.teacher), ("student", self.student)):
            if not keys:
                raise ConfigError(f"obs_groups.{role} is empty")
            for k in keys:
                if k not in space.spaces:
                    raise ConfigError(f"obs_groups.{role}: no group {k!r}; the env has {have}")
        leak = sorted(set(self.student) & set(self.privileged))
        if leak:
            raise ConfigError(f"obs_groups.student would read privileged group(s) {leak}")

    def student_obs(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The student's view: only its groups."""
        return {k: obs[k] for k in self.student}

    def teacher_obs(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The teacher's view: its groups flattened and concatenated (batched or not)."""
        return flatten_groups(obs, self.teacher)


def flatten_groups(obs: dict[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """Concatenate groups along the last axis (``(N, d)`` batches or single ``(d,)``)."""
    try:
        return np.concatenate([np.asarray(obs[k], dtype=np.float64) for k in keys], axis=-1)
    except KeyError as exc:
        raise ObservationError(f"observation lacks group {exc.args[0]!r}; has {sorted(obs)}") from None
