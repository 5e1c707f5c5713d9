"""PettingZoo ``ParallelEnv`` copies as one stable-baselines3 ``VecEnv`` (parameter sharing).

``M`` env copies of ``N`` agents become ``M * N`` vector slots, so one SB3 policy is shared
by every agent (the reduced-modality RL baseline of the CAML setup trains this way). Each
agent's observation is flattened from the modalities it may read. An agent that leaves
mid-episode ends its slot's episode (``done`` with ``terminal_observation``), then the slot
idles on zero observations and zero reward, its actions ignored, until the whole copy resets
(SuperSuit's "black death", without SuperSuit). No Python dict churn per slot beyond one dict
per copy and step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn

from polydistill.errors import ConfigError
from polydistill.students.team import flatten_modalities

__all__ = ["ParallelVecEnv", "sb3_team_policy"]


class ParallelVecEnv(VecEnv):
    """``M`` copies of a ``ParallelEnv`` as ``M * N`` SB3 vector slots over ``modalities``.

    Args:
        make: Builds one env copy (all copies must have the same ``possible_agents``).
        n_copies: Env copies ``M``.
        modalities: Modalities each agent's policy reads (flattened in this order).
        seed: Seed of the first reset (copy ``i`` gets ``seed + i``).

    Raises:
        ConfigError: if the agents' spaces differ or a modality is missing.
    """

    def __init__(self, make: Callable[[], Any], n_copies: int, modalities: Sequence[str],
                 seed: int = 0) -> None:
        if n_copies < 1:
            raise ConfigError(f"ParallelVecEnv: n_copies must be >= 1, got {n_copies}")
        self.envs = [make() for _ in range(n_copies)]
        self.agents = list(self.envs[0].possible_agents)
        self.modalities = tuple(modalities)
        space = self.envs[0].observation_space(self.agents[0])
        have = getattr(space, "spaces", {})
        missing = [m for m in self.modalities if m not in have]
        if missing:
            raise ConfigError(f"ParallelVecEnv: no modality {missing}; the env has {sorted(have)}")
        for a in self.agents:
            if repr(self.envs[0].observation_space(a)) != repr(space):
                raise ConfigError("ParallelVecEnv: agents' observation spaces differ; wrap with PadAgents")
        self.sizes = tuple(int(np.prod(space[m].shape)) for m in self.modalities)
        obs_space = spaces.Box(-np.inf, np.inf, (sum(self.sizes),), np.float32)
        super().__init__(n_copies * len(self.agents), obs_space, self.envs[0].action_space(self.agents[0]))
        self._seed = seed
        self._actions: np.ndarray | None = None
        self._live = np.zeros(self.num_envs, dtype=bool)

    def _slot(self, copy: int, agent: str) -> int:
        return copy * len(self.agents) + self.agents.index(agent)

    def _write(self, out: np.ndarray, copy: int, obs: dict[str, Any]) -> None:
        for agent, o in obs.items():
            out[self._slot(copy, agent)] = flatten_modalities({m: o[m] for m in self.modalities},
                                                              self.modalities, self.sizes)

    def reset(self) -> VecEnvObs:
        """Reset every copy (seeded on the first call)."""
        out = np.zeros((self.num_envs, *self.observation_space.shape), np.float32)
        for c, env in enumerate(self.envs):
            obs, _ = env.reset(seed=self._seed + c if self._seed is not None else None)
            self._write(out, c, obs)
            for a in env.agents:
                self._live[self._slot(c, a)] = True
        self._seed = None  # later resets continue each copy's RNG
        return out

    def step_async(self, actions: np.ndarray) -> None:
        """Store the slots' actions."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every copy with its live agents' actions; reset copies whose agents are all gone."""
        assert self._actions is not None
        n = self.num_envs
        obs_out = np.zeros((n, *self.observation_space.shape), np.float32)
        rewards = np.zeros(n, np.float32)
        dones = np.zeros(n, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(n)]
        for c, env in enumerate(self.envs):
            acts = {a: self._actions[self._slot(c, a)] for a in env.agents}
            obs, rew, term, trunc, info = env.step(acts)
            for a in acts:
                s = self._slot(c, a)
                rewards[s] = rew[a]
                infos[s] = dict(info.get(a, {}))
                if term[a] or trunc[a]:
                    dones[s] = True
                    self._live[s] = False
                    terminal = np.zeros(self.observation_space.shape, np.float32)
                    if a in obs:
                        terminal = flatten_modalities({m: obs[a][m] for m in self.modalities},
                                                      self.modalities, self.sizes)
                    infos[s]["terminal_observation"] = terminal
                    infos[s]["TimeLimit.truncated"] = bool(trunc[a] and not term[a])
            self._write(obs_out, c, {a: obs[a] for a in env.agents if a in obs})
            if not env.agents:  # the copy's episode is over: idle slots end theirs, then reset
                for k in range(len(self.agents)):
                    s = c * len(self.agents) + k
                    if not dones[s]:
                        dones[s] = True
                        infos[s]["terminal_observation"] = np.zeros(self.observation_space.shape, np.float32)
                        infos[s]["TimeLimit.truncated"] = True
                new, _ = env.reset()
                self._write(obs_out, c, new)
                for a in env.agents:
                    self._live[self._slot(c, a)] = True
        return obs_out, rewards, dones, infos

    def close(self) -> None:
        """Close every copy."""
        for env in self.envs:
            env.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """Attribute of the env copy behind each slot."""
        return [getattr(self.envs[i // len(self.agents)], attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set an attribute on the copies behind the slots."""
        for i in self._get_indices(indices):
            setattr(self.envs[i // len(self.agents)], attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        """Call a method of the copy behind each slot."""
        return [getattr(self.envs[i // len(self.agents)], method_name)(*args, **kwargs)
                for i in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        """PettingZoo copies are never Gymnasium-wrapped."""
        return [False for _ in self._get_indices(indices)]


def sb3_team_policy(model: Any, modalities: tuple[str, ...],
                    normalize: Callable[[np.ndarray], np.ndarray] | None = None) -> Any:
    """``act(env, obs)`` of an SB3 policy shared by every agent, on its ``modalities``, then ``normalize``."""

    def act(env: Any, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        x = np.stack([flatten_modalities({m: obs[a][m] for m in modalities}, modalities) for a in obs])
        a, _ = model.predict(x if normalize is None else normalize(x), deterministic=True)
        return {agent: a[k] for k, agent in enumerate(obs)}

    return act
