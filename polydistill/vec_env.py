"""A synchronous vector env whose state can be saved without pickling the simulator.

Every episode of copy ``i`` starts from ``reset(seed=s)`` with ``s`` derived from
``(base_seed, i, episode number)``, and the actions since that reset are logged. The state of
all copies is then just the episode numbers and the action logs (a few kB), and
:meth:`ReplayVectorEnv.load_state_dict` rebuilds it by resetting with the same seed and
replaying the same actions. MuJoCo steps are deterministic on one machine, so the replayed
observations are bit-identical; they are checked against the saved ones, and a mismatch
raises :class:`~polydistill.errors.CheckpointError` instead of resuming silently from a
different state.

The log of a copy is bounded by its episode length (the TimeLimit of every shipped env);
``max_log`` guards envs without one.

Example:
    >>> import gymnasium as gym
    >>> from polydistill.vec_env import ReplayVectorEnv
    >>> venv = ReplayVectorEnv([lambda: gym.make("Pendulum-v1")] * 2, seed=0)
    >>> obs = venv.reset()
    >>> obs, rew, term, trunc = venv.step(venv.action_space_sample())
    >>> state = venv.state_dict()
    >>> twin = ReplayVectorEnv([lambda: gym.make("Pendulum-v1")] * 2, seed=0)
    >>> twin.load_state_dict(state)
    >>> bool((twin.obs == venv.obs).all())
    True

"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from polydistill.errors import CheckpointError, ConfigError, TrainingError

__all__ = ["ReplayVectorEnv", "episode_seed", "same_observations"]


def episode_seed(base_seed: int, env_index: int, episode: int) -> int:
    """Reset seed of episode ``episode`` of copy ``env_index`` (independent streams)."""
    ss = np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, env_index, episode])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def same_observations(a: Any, b: Any) -> bool:
    """Exact equality of observations: arrays, or (nested) dicts of arrays."""
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(same_observations(a[k], b[k]) for k in a)
    x, y = np.asarray(a), np.asarray(b)
    return x.shape == y.shape and bool(np.array_equal(x, y))


class ReplayVectorEnv:
    """``n`` env copies stepped in turn with same-step autoreset and replayable state.

    Attributes:
        obs: Current observations, ``(n, *obs_shape)``; after an episode ends this is already
            the first observation of the next one (as gymnasium's ``SAME_STEP`` autoreset).
        envs: The copies.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], seed: int = 0,
                 max_log: int = 100_000) -> None:
        if not env_fns:
            raise ConfigError("ReplayVectorEnv needs at least one env")
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.seed = int(seed)
        self.max_log = max_log
        self.episodes = np.zeros(self.num_envs, dtype=np.int64)
        self._log: list[list[np.ndarray]] = [[] for _ in self.envs]
        self.obs: Any = np.empty(0)

    def action_space_sample(self) -> np.ndarray:
        """One random action per copy (from the action space's own RNG)."""
        return np.stack([np.asarray(self.single_action_space.sample()) for _ in self.envs])

    def _reset_one(self, i: int) -> Any:
        obs, _ = self.envs[i].reset(seed=episode_seed(self.seed, i, int(self.episodes[i])))
        self._log[i] = []
        return obs

    @staticmethod
    def _stack(obs: list[Any]) -> Any:
        """Batch per-copy observations: one array, or a dict of arrays for Dict spaces."""
        if isinstance(obs[0], dict):
            return {k: np.stack([np.asarray(o[k]) for o in obs]) for k in obs[0]}
        return np.stack([np.asarray(o) for o in obs])

    def reset(self) -> Any:
        """Start episode 0 of every copy; returns the observations."""
        self.episodes[:] = 0
        self.obs = self._stack([self._reset_one(i) for i in range(self.num_envs)])
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
        for i, env in enumerate(self.envs):
            a = actions[i]
            o, r, te, tr, _ = env.step(a)
            rew[i], term[i], trunc[i] = r, te, tr
            if te or tr:
                self.episodes[i] += 1
                o = self._reset_one(i)
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
        """Episode numbers, action logs and current observations (numpy arrays + ints)."""
        obs = ({k: v.copy() for k, v in self.obs.items()} if isinstance(self.obs, dict)
               else self.obs.copy())
        return {
            "episodes": self.episodes.copy(),
            "actions": [np.stack(lg) if lg else np.zeros((0,), np.float32) for lg in self._log],
            "obs": obs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the saved state by seeded resets and action replay.

        Raises:
            CheckpointError: if the state is malformed or the replay does not reproduce the
                saved observations (the env is not deterministic under seeded reset).
        """
        episodes = np.asarray(state["episodes"], dtype=np.int64)
        actions = state["actions"]
        if episodes.shape != (self.num_envs,) or len(actions) != self.num_envs:
            raise CheckpointError(
                f"env state is for {episodes.shape[0] if episodes.ndim else '?'} copies, "
                f"this vector env has {self.num_envs}"
            )
        self.episodes = episodes.copy()
        obs = []
        for i, env in enumerate(self.envs):
            o = self._reset_one(i)
            for a in actions[i]:
                o, _, te, tr, _ = env.step(a)
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
