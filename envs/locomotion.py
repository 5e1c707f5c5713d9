"""MuJoCo embodiments of the default suite, with morphology and task variants.

Four bodies whose observation and action spaces all differ, built on Gymnasium's v5 MuJoCo
models. Each accepts ``length``, ``mass`` and ``gear`` scale factors
(:class:`~polydistill.envs.morphology.Morphology`) that are applied to the MJCF before it is
compiled, so every variant is a real rigid-body model (inertias recomputed), not a reward hack.

==========================  ==========  ==========  =============================================
class                       obs dim     action dim  reward
==========================  ==========  ==========  =============================================
``MorphHopperEnv``          11          3           forward velocity + alive bonus - control cost
``HalfCheetahVelEnv``       17 + 1      6           ``1 - |v - v_target|`` - control cost
``MorphSwimmerEnv``         8           2           forward velocity - control cost
``MorphDoublePendulumEnv``  9           1           alive bonus - distance/velocity penalties
==========================  ==========  ==========  =============================================

``HalfCheetahVelEnv`` is the task-variant body: one morphology, a family of tasks indexed by the
target velocity, which is appended to the observation so one policy can serve them all.

Version history:
    v0: initial release (Gymnasium v5 models, MuJoCo >= 3.2).
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.inverted_double_pendulum_v5 import InvertedDoublePendulumEnv
from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv
from gymnasium.spaces import Box

from polydistill.envs.morphology import Morphology, build_model
from polydistill.errors import ConfigError

__all__ = ["MorphHopperEnv", "HalfCheetahVelEnv", "MorphSwimmerEnv", "MorphDoublePendulumEnv"]


class _MorphMixin:
    """Overrides Gymnasium's model loading to compile the MJCF with a morphology applied."""

    _morphology: Morphology
    fullpath: str
    width: int
    height: int

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = build_model(self.fullpath, self._morphology)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)


class MorphHopperEnv(_MorphMixin, HopperEnv):
    """Gymnasium's Hopper-v5 with scalable morphology.

    The healthy height band scales with ``length`` so a longer-legged hopper is not judged
    by the nominal body's height.

    Example:
        >>> import gymnasium as gym, polydistill.envs  # doctest: +SKIP
        >>> env = gym.make("polydistill/Hopper-v0", mass=1.3)  # doctest: +SKIP
    """

    def __init__(
        self, length: float = 1.0, mass: float = 1.0, gear: float = 1.0, **kwargs: Any
    ) -> None:
        self._morphology = Morphology(length=length, mass=mass, gear=gear)
        kwargs.setdefault("healthy_z_range", (0.7 * length, float("inf")))
        HopperEnv.__init__(self, **kwargs)
        utils.EzPickle.__init__(self, length, mass, gear, **kwargs)


class MorphSwimmerEnv(_MorphMixin, SwimmerEnv):
    """Gymnasium's Swimmer-v5 with scalable morphology."""

    def __init__(
        self, length: float = 1.0, mass: float = 1.0, gear: float = 1.0, **kwargs: Any
    ) -> None:
        self._morphology = Morphology(length=length, mass=mass, gear=gear)
        SwimmerEnv.__init__(self, **kwargs)
        utils.EzPickle.__init__(self, length, mass, gear, **kwargs)


class MorphDoublePendulumEnv(_MorphMixin, InvertedDoublePendulumEnv):
    """Gymnasium's InvertedDoublePendulum-v5 with scalable mass and gear.

    ``length`` is fixed at 1: the upstream termination test uses the tip's absolute height.
    """

    def __init__(self, mass: float = 1.0, gear: float = 1.0, length: float = 1.0,
                 **kwargs: Any) -> None:
        if length != 1.0:
            raise ConfigError(
                f"DoublePendulum supports mass and gear variants only (its termination test uses "
                f"the tip's absolute height); got length={length!r}"
            )
        self._morphology = Morphology(mass=mass, gear=gear)
        InvertedDoublePendulumEnv.__init__(self, **kwargs)
        utils.EzPickle.__init__(self, mass, gear, **kwargs)


class HalfCheetahVelEnv(_MorphMixin, HalfCheetahEnv):
    """HalfCheetah that must run at a target velocity (a task family on one body).

    Observation: Gymnasium's 17 HalfCheetah-v5 features followed by ``target_velocity``.
    Reward: ``1 - |v_x - target_velocity| - ctrl_cost_weight * |a|^2`` per step (the linear
    tracking penalty of the classic cheetah-vel task, shifted so that a perfect 1000-step episode
    scores just under 1000 and a competent policy's return is positive).
    ``info`` carries ``x_velocity``, ``reward_tracking`` and ``reward_ctrl``.
    """

    def __init__(
        self,
        target_velocity: float = 1.0,
        length: float = 1.0,
        mass: float = 1.0,
        gear: float = 1.0,
        ctrl_cost_weight: float = 0.05,
        **kwargs: Any,
    ) -> None:
        if not np.isfinite(target_velocity) or abs(target_velocity) > 10.0:
            raise ConfigError(
                f"target_velocity must be finite with |v| <= 10 m/s, got {target_velocity!r}"
            )
        self._target_velocity = float(target_velocity)
        self._morphology = Morphology(length=length, mass=mass, gear=gear)
        HalfCheetahEnv.__init__(self, ctrl_cost_weight=ctrl_cost_weight, **kwargs)
        utils.EzPickle.__init__(
            self, target_velocity, length, mass, gear, ctrl_cost_weight, **kwargs
        )
        n = self.observation_space.shape[0] + 1
        self.observation_space = Box(low=-np.inf, high=np.inf, shape=(n,), dtype=np.float64)

    @property
    def target_velocity(self) -> float:
        """The velocity (m/s along x) this task rewards."""
        return self._target_velocity

    def _get_obs(self) -> np.ndarray:
        return np.append(super()._get_obs(), self._target_velocity)

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        tracking = 1.0 - abs(x_velocity - self._target_velocity)
        ctrl_cost = self.control_cost(action)
        return tracking - ctrl_cost, {"reward_tracking": tracking, "reward_ctrl": -ctrl_cost}
