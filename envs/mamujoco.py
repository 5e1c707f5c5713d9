"""Multi-Agent MuJoCo (Farama's ``gymnasium-robotics``, ``mamujoco_v1``) as a polydistill world.

One robot is split into agents that each drive some of its joints (``agent_conf``, e.g.
HalfCheetah ``2x3``: two agents of three joints) and see the joints within ``agent_obsk``
hops of their own. :class:`MaMuJoCoEnv` presents it through the modality interface of the
other multi-agent worlds, so the CAML wrappers (:mod:`polydistill.wrappers.pettingzoo`),
``TeamStudent`` and the DAgger machinery take it as they are:

Observation (every agent): ``Dict`` of modalities
    - ``local`` ``Box((d_agent,), float32)``: MaMuJoCo's own observation of the agent (its
      joints and their ``agent_obsk`` neighbourhood): what a decentralised agent deploys with;
      ``d_agent`` may differ between agents (:class:`~polydistill.wrappers.pettingzoo.PadAgents`
      pads them to one).
    - ``global`` ``Box((d_state,), float32)``: the whole robot's state, MaMuJoCo's ``state()``:
      the single-agent Gymnasium env's observation (``HalfCheetah-v5``: 17 values). Training-only,
      the auxiliary modality: a joint teacher reads it.
    - ``id`` ``Box(0, 1, (n_agents,), float32)``: the agent's one-hot index; every agent knows
      which limb it drives, so one set of shared weights can drive them all.

Action (agent ``i``): ``Box(-1, 1, (k_i,))``, the agent's slice of the robot's action. The
joint action of a single-agent teacher maps to the agents' slices with
:meth:`MaMuJoCoEnv.split_action` (MaMuJoCo's own mapping) and back with
:meth:`MaMuJoCoEnv.join_actions`.

Reward: the robot's reward, the same for every agent (a fully cooperative team); episodes end
for every agent at once (the robot falls or 1,000 steps pass). ``infos[agent]`` holds the
single-agent env's info.

Needs the extra: ``pip install -e ".[mamujoco]"``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from polydistill.errors import ConfigError

__all__ = ["MaMuJoCoEnv", "SCENARIOS", "joint_env_id"]

SCENARIOS: dict[str, tuple[str, str]] = {
    "HalfCheetah-2x3": ("HalfCheetah", "2x3"),
    "HalfCheetah-6x1": ("HalfCheetah", "6x1"),
    "Walker2d-2x3": ("Walker2d", "2x3"),
    "Ant-2x4": ("Ant", "2x4"),
}
"""The scenarios the benchmark reports: name -> (MaMuJoCo scenario, agent_conf)."""


def joint_env_id(scenario: str) -> str:
    """The single-agent Gymnasium env of a MaMuJoCo scenario (its joint teacher's env)."""
    return f"{scenario}-v5"


def _mamujoco() -> Any:
    try:
        from gymnasium_robotics import mamujoco_v1
    except ImportError as exc:
        raise ConfigError("Multi-Agent MuJoCo needs the extra: pip install -e \".[mamujoco]\" "
                          f"({exc})") from None
    return mamujoco_v1


def _without_contact_forces(mamujoco: Any, scenario: str, agent_obsk: int) -> list[list[str]]:
    """MaMuJoCo's default local categories of ``scenario`` without ``cfrc_ext``.

    MaMuJoCo indexes its agents' observations into the single-agent state, so a state built
    without contact forces (``include_cfrc_ext_in_observation=False``) cannot feed the default
    categories of Ant (``qpos``, ``qvel``, ``cfrc_ext``).
    """
    holder = type("_Obsk", (), {"agent_obsk": agent_obsk})()  # the one attribute the method reads
    defaults = mamujoco.parallel_env._generate_local_categories(holder, scenario)
    return [[c for c in cats if c != "cfrc_ext"] for cats in defaults]


class MaMuJoCoEnv(ParallelEnv):
    """A MaMuJoCo robot as a team of agents with ``local``, ``global`` and ``id`` modalities.

    Args:
        scenario: MaMuJoCo scenario (``HalfCheetah``, ``Walker2d``, ``Ant``, ...).
        agent_conf: Its partition into agents (``2x3``, ``6x1``, ``2x4``, ...).
        agent_obsk: Joint hops each agent observes beyond its own (0: its own joints only).
        render_mode: ``rgb_array`` for offscreen frames (``render()``), or None.
        **kwargs: Passed to MaMuJoCo (``local_categories``, ``global_categories``) and on to the
            single-agent Gymnasium env. With ``include_cfrc_ext_in_observation=False`` (Ant, as its
            joint teacher is trained) the agents' default local categories lose ``cfrc_ext`` too,
            since the state no longer holds them.

    Raises:
        ConfigError: without the extra, or for a scenario or partition MaMuJoCo does not have.

    Example:
        >>> from polydistill.envs import make_parallel
        >>> env = make_parallel("mamujoco_v0", scenario="HalfCheetah", agent_conf="2x3")  # doctest: +SKIP
        >>> obs, infos = env.reset(seed=0)  # doctest: +SKIP
        >>> sorted(obs["agent_0"])  # doctest: +SKIP
        ['global', 'id', 'local']
    """

    metadata = {"name": "mamujoco_v0", "render_modes": ["rgb_array"], "is_parallelizable": True}

    def __init__(self, scenario: str = "HalfCheetah", agent_conf: str = "2x3", agent_obsk: int = 1,
                 render_mode: str | None = None, **kwargs: Any) -> None:
        if not isinstance(agent_obsk, int) or agent_obsk < 0:
            raise ConfigError(f"agent_obsk must be an int >= 0, got {agent_obsk!r}")
        mamujoco = _mamujoco()
        if kwargs.get("include_cfrc_ext_in_observation") is False and "local_categories" not in kwargs:
            kwargs["local_categories"] = _without_contact_forces(mamujoco, scenario, agent_obsk)
        try:
            self.env = mamujoco.parallel_env(scenario, agent_conf, agent_obsk=agent_obsk,
                                             render_mode=render_mode, **kwargs)
        except ConfigError:
            raise
        except Exception as exc:  # MaMuJoCo raises bare Exception / NotImplementedError / KeyError
            raise ConfigError(f"MaMuJoCo has no scenario {scenario!r} with agent_conf {agent_conf!r} "
                              f"({type(exc).__name__}: {exc}); the benchmark's: {list(SCENARIOS)}") from None
        self.scenario, self.agent_conf, self.agent_obsk = scenario, agent_conf, agent_obsk
        self.render_mode = render_mode
        self.possible_agents = list(self.env.possible_agents)
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        single = self.env.single_agent_env
        self._state_dim = int(single.observation_space.shape[0])
        self._joint_space = single.action_space

    # ----------------------------------------------------------------- spaces
    @functools.cache  # noqa: B019 (PettingZoo's idiom: one space object per agent)
    def observation_space(self, agent: str) -> spaces.Dict:
        """``local``, ``global`` and ``id`` of ``agent`` (module docstring)."""
        self._check_agent(agent)
        d = int(self.env.observation_space(agent).shape[0])
        n = len(self.possible_agents)
        return spaces.Dict({
            "local": spaces.Box(-np.inf, np.inf, (d,), np.float32),
            "global": spaces.Box(-np.inf, np.inf, (self._state_dim,), np.float32),
            "id": spaces.Box(0.0, 1.0, (n,), np.float32),
        })

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Box:
        """The agent's slice of the robot's action."""
        self._check_agent(agent)
        inner = self.env.action_space(agent)
        low, high = inner.low.astype(np.float32), inner.high.astype(np.float32)
        return spaces.Box(low, high, inner.shape, np.float32)

    @property
    def joint_action_space(self) -> spaces.Box:
        """The single-agent robot's action space (what a joint teacher outputs)."""
        return self._joint_space

    # ----------------------------------------------------------------- the joint view
    def state(self) -> np.ndarray:
        """The whole robot's state: the single-agent env's observation (float32)."""
        return np.asarray(self.env.state(), dtype=np.float32)

    def split_action(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """A joint action of the robot -> each agent's slice (MaMuJoCo's own mapping).

        Raises:
            ConfigError: for a joint action of the wrong shape or with a non-finite value.
        """
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self._joint_space.shape or not np.isfinite(a).all():
            raise ConfigError("split_action: expected a finite joint action of shape "
                              f"{self._joint_space.shape}, got shape {a.shape}")
        return {k: v.astype(np.float32) for k, v in self.env.map_global_action_to_local_actions(a).items()}

    def join_actions(self, actions: dict[str, np.ndarray]) -> np.ndarray:
        """Every agent's action -> the robot's joint action (the inverse of :meth:`split_action`)."""
        self._check_actions(actions, self.possible_agents)
        return np.asarray(self.env.map_local_actions_to_global_action(
            {k: np.asarray(v, dtype=np.float64) for k, v in actions.items()}), dtype=np.float32)

    # ----------------------------------------------------------------- PettingZoo API
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        """Reset the robot (``seed`` seeds the single-agent env, as Gymnasium does)."""
        local, infos = self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        return self._observations(local), {a: dict(infos[a]) for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Step the robot with every live agent's slice.

        Raises:
            ConfigError: for actions missing a live agent, naming a dead or unknown one, of
                the wrong shape, or with a non-finite value.
        """
        self._check_actions(actions, self.agents)
        clean = {}
        for a, act in actions.items():
            x = np.asarray(act, dtype=np.float64)
            space = self.action_space(a)
            if x.shape != space.shape or not np.isfinite(x).all():
                raise ConfigError(f"step: {a!r} needs a finite action of shape {space.shape}, "
                                  f"got shape {x.shape}")
            clean[a] = np.clip(x, space.low, space.high)
        local, rewards, terms, truncs, infos = self.env.step(clean)
        live = list(self.agents)
        obs = self._observations(local, live)
        out = ({a: obs[a] for a in live}, {a: float(rewards[a]) for a in live},
               {a: bool(terms[a]) for a in live}, {a: bool(truncs[a]) for a in live},
               {a: dict(infos[a]) for a in live})
        if any(out[2].values()) or any(out[3].values()):
            self.agents = []
        return out

    def render(self) -> np.ndarray | None:
        """An RGB frame of the robot (``render_mode="rgb_array"``), else None."""
        return self.env.render() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        """Close the robot's env."""
        self.env.close()

    # ----------------------------------------------------------------- helpers
    def _observations(self, local: dict[str, np.ndarray], agents: list[str] | None = None
                      ) -> dict[str, dict[str, np.ndarray]]:
        state = self.state()
        n = len(self.possible_agents)
        out = {}
        for a in agents if agents is not None else self.agents:
            ident = np.zeros(n, np.float32)
            ident[self._index[a]] = 1.0
            out[a] = {"local": np.asarray(local[a], dtype=np.float32), "global": state.copy(), "id": ident}
        return out

    def _check_agent(self, agent: str) -> None:
        if agent not in self._index:
            raise ConfigError(f"unknown agent {agent!r}; this env has {self.possible_agents}")

    @staticmethod
    def _check_actions(actions: dict[str, Any], agents: list[str]) -> None:
        missing = [a for a in agents if a not in actions]
        extra = [a for a in actions if a not in agents]
        if missing or extra:
            raise ConfigError(f"expected actions for exactly the agents {agents}; missing {missing}, "
                              f"not live {extra}")
