"""Synchronous vector envs whose state is saved without pickling the simulator.

Each copy's episode starts from ``reset(seed=s)`` and the actions since are logged; a saved
state (seeds and logs, a few kB) is rebuilt by resetting with the same seeds and replaying the
actions, and the replayed observations must equal the saved ones bit for bit (else
:class:`~polydistill.errors.CheckpointError`). :class:`ReplayVectorEnv` holds Gymnasium envs,
:class:`ReplayParallelEnv` PettingZoo ``ParallelEnv`` copies stepped with joint actions.

Example:
    >>> import gymnasium as gym
    >>> from polydistill.collect.replay import ReplayVectorEnv
    >>> venv = ReplayVectorEnv([lambda: gym.make("Pendulum-v1")] * 2, seed=0)
    >>> obs = venv.reset()
    >>> obs, rew, term, trunc = venv.step(venv.action_space_sample())
    >>> twin = ReplayVectorEnv([lambda: gym.make("Pendulum-v1")] * 2, seed=0)
    >>> twin.load_state_dict(venv.state_dict())
    >>> bool((twin.obs == venv.obs).all())
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from polydistill.errors import CheckpointError, ConfigError, TrainingError

__all__ = ["ReplayVectorEnv", "ReplayParallelEnv", "episode_seed", "same_observations"]


def episode_seed(base_seed: int, env_index: int, episode: int) -> int:
    """Reset seed of episode ``episode`` of copy ``env_index`` (independent streams)."""
    ss = np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, env_index, episode])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def same_observations(a: Any, b: Any) -> bool:
    """Exact equality of observations: arrays, or (nested) lists and dicts of arrays."""
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(same_observations, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(same_observations(a[k], b[k]) for k in a)
    x, y = np.asarray(a), np.asarray(b)
    return x.shape == y.shape and bool(np.array_equal(x, y))


class ReplayVectorEnv:
    """``n`` env copies stepped in turn with same-step autoreset and replayable state.

    Attributes:
        obs: Current observations, ``(n, *obs_shape)``; after an episode ends this is already
            the first observation of the next one (as gymnasium's ``SAME_STEP`` autoreset).
        final_obs: The last observation of each copy whose episode ended in the latest
            :meth:`step` (copy index -> observation; empty when none ended).
        envs: The copies.
    """

    def __init__(self, env_fns: Sequence[Callable[[], Any]], seed: int = 0,
                 max_log: int = 100_000) -> None:
        if not env_fns:
            raise ConfigError(f"{type(self).__name__} needs at least one env")
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.seed = int(seed)
        self.max_log = max_log
        self.episodes = np.zeros(self.num_envs, dtype=np.int64)
        self.seeds = [0] * self.num_envs
        """Reset seed of each copy's current episode."""
        self._log: list[list[np.ndarray]] = [[] for _ in self.envs]
        self.obs: Any = np.empty(0)
        self.final_obs: dict[int, Any] = {}

    @property
    def single_action_space(self) -> gym.spaces.Space:
        """The action space of one copy."""
        return self.envs[0].action_space

    def action_space_sample(self) -> np.ndarray:
        """One random action per copy (from the action space's own RNG)."""
        return np.stack([np.asarray(self.single_action_space.sample()) for _ in self.envs])

    def _next_seed(self, i: int) -> int:
        return episode_seed(self.seed, i, int(self.episodes[i]))

    def _reset_one(self, i: int, seed: int) -> Any:
        self.seeds[i] = seed
        self._log[i] = []
        return self.envs[i].reset(seed=seed)[0]

    def _step_one(self, i: int, action: np.ndarray) -> tuple[Any, float, bool, bool]:
        o, r, te, tr, _ = self.envs[i].step(action)
        return o, float(r), bool(te), bool(tr)

    def _stack(self, obs: list[Any]) -> Any:
        """Batch per-copy observations: one array, or a dict of arrays for Dict spaces."""
        if isinstance(obs[0], dict):
            return {k: np.stack([np.asarray(o[k]) for o in obs]) for k in obs[0]}
        return np.stack([np.asarray(o) for o in obs])

    def reset(self) -> Any:
        """Start episode 0 of every copy; returns the observations."""
        self.episodes[:] = 0
        self.obs = self._stack([self._reset_one(i, self._next_seed(i)) for i in range(self.num_envs)])
        return self.obs

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """Step every copy; a finished copy starts its next seeded episode at once.

        Returns:
            ``(obs, reward, terminated, truncated)``, each batched over the copies.
        """
        if len(actions) != self.num_envs:
            raise ConfigError(f"expected {self.num_envs} actions, got {len(actions)}")
        n = self.num_envs
        rew = np.zeros(n)
        term = np.zeros(n, dtype=bool)
        trunc = np.zeros(n, dtype=bool)
        new_obs = []
        self.final_obs = {}
        for i in range(n):
            a = actions[i]
            o, rew[i], term[i], trunc[i] = self._step_one(i, a)
            if term[i] or trunc[i]:
                self.final_obs[i] = o
                self.episodes[i] += 1
                o = self._reset_one(i, self._next_seed(i))
            else:
                if len(self._log[i]) >= self.max_log:
                    raise TrainingError(
                        f"env copy {i} ran {self.max_log} steps without an episode end; give the "
                        "env a TimeLimit (max_episode_steps) so its state stays replayable"
                    )
                self._log[i].append(np.array(a, copy=True))
            new_obs.append(o)
        self.obs = self._stack(new_obs)  # new arrays: callers may keep the previous ones
        return self.obs, rew, term, trunc

    def state_dict(self) -> dict[str, Any]:
        """Episode numbers and seeds, action logs and current observations."""
        return {
            "episodes": self.episodes.copy(), "seeds": list(self.seeds),
            "actions": [np.stack(lg) if lg else np.zeros((0,), np.float32) for lg in self._log],
            "obs": copy_observations(self.obs),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the saved state by seeded resets and action replay.

        Raises:
            CheckpointError: if the state is malformed or the replay does not reproduce the
                saved observations (the env is not deterministic under seeded reset).
        """
        episodes = np.asarray(state["episodes"], dtype=np.int64)
        actions, seeds = state["actions"], list(state["seeds"])
        if episodes.shape != (self.num_envs,) or len(actions) != self.num_envs or len(seeds) != self.num_envs:
            raise CheckpointError(
                f"env state is for {episodes.shape[0] if episodes.ndim else '?'} copies, "
                f"this vector env has {self.num_envs}"
            )
        self.episodes = episodes.copy()
        obs = []
        for i in range(self.num_envs):
            o = self._reset_one(i, int(seeds[i]))
            for a in actions[i]:
                o, _, te, tr = self._step_one(i, a)
                if te or tr:
                    raise CheckpointError(f"replaying env copy {i}: the episode ended early; the "
                                          "env is not deterministic under seeded reset")
                self._log[i].append(np.array(a, copy=True))
            obs.append(o)
        self.obs = self._stack(obs)
        if not same_observations(self.obs, state["obs"]):
            raise CheckpointError(
                "replayed env observations differ from the saved ones: the env is not "
                "deterministic under seeded reset + the same actions, so the run cannot resume "
                "bit-identically"
            )

    def close(self) -> None:
        """Close every copy."""
        for env in self.envs:
            env.close()


class ReplayParallelEnv(ReplayVectorEnv):
    """``n`` PettingZoo ``ParallelEnv`` copies stepped with joint actions, replayable.

    ``step`` takes actions ``(n, len(possible_agents), ...)`` (one row per agent slot; rows of
    agents that left are ignored) and returns per copy the mean over the episode's agents of
    the step's rewards, so a copy's summed reward is its team return. A copy's episode ends
    when no agent is left; ``obs[i]`` is copy ``i``'s ``{agent: observation}`` of its live
    agents.
    """

    def __init__(self, env_fns: Sequence[Callable[[], Any]], seed: int = 0,
                 max_log: int = 100_000) -> None:
        super().__init__(env_fns, seed, max_log)
        self.agents = list(self.envs[0].possible_agents)
        self.slot = {a: k for k, a in enumerate(self.agents)}
        """Row of each agent in the joint actions."""
        self._team = [1] * self.num_envs
        self._rng = np.random.default_rng(self.seed)

    @property
    def single_action_space(self) -> gym.spaces.Space:
        """The action space of one agent."""
        return self.envs[0].action_space(self.agents[0])

    def _next_seed(self, i: int) -> int:
        return int(self._rng.integers(1 << 31))

    def _reset_one(self, i: int, seed: int) -> Any:
        obs = super()._reset_one(i, seed)
        self._team[i] = max(1, len(self.envs[i].agents))
        return {a: obs[a] for a in self.envs[i].agents}

    def _step_one(self, i: int, action: np.ndarray) -> tuple[Any, float, bool, bool]:
        env = self.envs[i]
        obs, rew, _, _, _ = env.step({a: action[self.slot[a]] for a in env.agents})
        return {a: obs[a] for a in env.agents}, sum(rew.values()) / self._team[i], not env.agents, False

    def _stack(self, obs: list[Any]) -> list[Any]:
        return list(obs)

    def state_dict(self) -> dict[str, Any]:
        """The base state plus the seed stream's state."""
        return {**super().state_dict(), "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replay every copy (see :meth:`ReplayVectorEnv.load_state_dict`), then the seed stream."""
        super().load_state_dict(state)
        self._rng.bit_generator.state = state["rng"]


def copy_observations(obs: Any) -> Any:
    """A deep copy of (nested lists and dicts of) observation arrays."""
    if isinstance(obs, dict):
        return {k: copy_observations(v) for k, v in obs.items()}
    if isinstance(obs, list):
        return [copy_observations(v) for v in obs]
    return np.array(obs, copy=True)
