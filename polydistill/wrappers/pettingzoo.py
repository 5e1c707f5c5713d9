"""PettingZoo ``ParallelEnv`` wrappers for collaborative auxiliary-modality learning (CAML).

Each wrapper overrides one thing and works on any conforming ``ParallelEnv`` (the shipped
``polydistill.envs.make_parallel(...)`` worlds, ``mpe2``'s, your own):

- :class:`ModalityGroups`: a flat ``Box`` observation becomes a ``Dict`` of named modalities
  (index ranges of the vector), e.g. ``{"self": (0, 4), "landmarks": (4, 10)}``;
- :class:`SharedView`: the centralized training view: every agent also receives all agents'
  modalities stacked over ``possible_agents`` (``shared/<modality>``), who is present
  (``shared/present``), who it is (``shared/is_me``), and where the others are
  (``shared/rel_pose``) when the env provides ``agent_pose(agent)``;
- :class:`SelectModalities`: keep only the deployable modalities (what a student gets at test);
- :class:`ModalityDropout`: zero whole modalities at random while training;
- :class:`PadAgents`: pad agents whose spaces differ to a common one.

Agents that leave mid-episode simply stop appearing in the dicts; shared views mark them
absent. Bad specs fail once, at construction, with a :class:`~polydistill.ConfigError` that
names the agent, the key and what the env has.

Example:
    >>> from polydistill.envs import make_parallel
    >>> from polydistill.wrappers.pettingzoo import SelectModalities, SharedView
    >>> env = make_parallel("intersection_v0")
    >>> teacher_env = SharedView(env, modalities=("state", "lidar"))
    >>> student_env = SelectModalities(make_parallel("intersection_v0"), keep=("state", "camera"))
    >>> sorted(student_env.observation_space("vehicle_0").spaces)
    ['camera', 'state']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper

from polydistill.envs._base import PosedWorld
from polydistill.errors import ConfigError

__all__ = ["ParallelObservationWrapper", "ModalityGroups", "SharedView", "SelectModalities",
           "ModalityDropout", "PadAgents", "SHARED_PREFIX"]

SHARED_PREFIX = "shared/"
"""Keys of :class:`SharedView` data start with this; they are training-only by construction."""


class ParallelObservationWrapper(BaseParallelWrapper):
    """Base: subclasses override :meth:`observations` (all agents' at once) and the space."""

    def __init__(self, env: ParallelEnv) -> None:
        super().__init__(env)
        self._spaces: dict[str, spaces.Space] = {}

    def observation_space(self, agent: str) -> spaces.Space:
        """The wrapped observation space of ``agent`` (one object per agent).

        Raises:
            ConfigError: for an agent id the env does not have.
        """
        if agent not in self._spaces:
            _check_agent(self.env, agent)
            self._spaces[agent] = self.space(agent, self.env.observation_space(agent))
        return self._spaces[agent]

    def space(self, agent: str, inner: spaces.Space) -> spaces.Space:
        """The wrapped space of ``agent`` given the inner one (default: unchanged)."""
        return inner

    def observations(self, obs: dict[str, Any]) -> dict[str, Any]:
        """Map the observations of the agents present this step."""
        raise NotImplementedError

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Reset the env and map its observations."""
        obs, infos = self.env.reset(seed=seed, options=options)
        return self.observations(obs), infos

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Step the env and map its observations."""
        obs, rew, term, trunc, infos = self.env.step(actions)
        return self.observations(obs), rew, term, trunc, infos


def _check_agent(env: ParallelEnv, agent: str) -> None:
    if agent not in env.possible_agents:
        raise ConfigError(f"unknown agent {agent!r}; this env has {list(env.possible_agents)}")


def _require_modalities(env: ParallelEnv, names: Sequence[str], wrapper: str) -> None:
    """Every agent of ``env`` has a ``Dict`` observation holding all of ``names``."""
    for agent in env.possible_agents:
        have = _dict_space(env, agent, wrapper).spaces
        missing = [k for k in names if k not in have]
        if missing:
            raise ConfigError(f"{wrapper}: agent {agent!r} has no modality {missing}; it has {sorted(have)}")


def _dict_space(env: ParallelEnv, agent: str, wrapper: str) -> spaces.Dict:
    space = env.observation_space(agent)
    if not isinstance(space, spaces.Dict):
        raise ConfigError(
            f"{wrapper}: agent {agent!r} has a {type(space).__name__} observation; expected a Dict of "
            "modalities (wrap the env in ModalityGroups first)"
        )
    return space


class ModalityGroups(ParallelObservationWrapper):
    """Split each agent's flat ``Box`` observation into named modalities.

    Args:
        env: A ``ParallelEnv`` with flat ``Box`` observations.
        spec: ``{modality: (start, stop)}`` for every agent, or a callable ``agent -> spec``
            for agents whose observations differ. Ranges may overlap and need not cover all.

    Raises:
        ConfigError: if a range is empty or reaches past an agent's observation size.

    Example:
        >>> from mpe2 import simple_spread_v3
        >>> env = ModalityGroups(simple_spread_v3.parallel_env(N=3),
        ...                      {"self": (0, 4), "landmarks": (4, 10), "others": (10, 14)})
        >>> env.observation_space("agent_0")["landmarks"].shape
        (6,)
    """

    def __init__(self, env: ParallelEnv,
                 spec: Mapping[str, Sequence[int]] | Callable[[str], Mapping[str, Sequence[int]]]
                 ) -> None:
        super().__init__(env)
        self._spec: dict[str, dict[str, tuple[int, int]]] = {}
        for agent in env.possible_agents:
            space = env.observation_space(agent)
            if not isinstance(space, spaces.Box) or len(space.shape) != 1:
                raise ConfigError(
                    f"ModalityGroups: agent {agent!r} needs a flat Box observation, got {space}"
                )
            raw = spec(agent) if callable(spec) else spec
            if not raw:
                raise ConfigError(f"ModalityGroups: empty modality spec for agent {agent!r}")
            ranges = {}
            for name, rng in raw.items():
                start, stop = (int(x) for x in rng)
                if not 0 <= start < stop <= space.shape[0]:
                    raise ConfigError(
                        f"ModalityGroups: modality {name!r} of agent {agent!r} spans [{start}, {stop}) but "
                        f"the observation has {space.shape[0]} entries"
                    )
                ranges[name] = (start, stop)
            self._spec[agent] = ranges

    def space(self, agent: str, inner: spaces.Space) -> spaces.Dict:
        """``Dict`` of the ranges' sub-boxes."""
        assert isinstance(inner, spaces.Box)
        return spaces.Dict({k: spaces.Box(inner.low[a:b], inner.high[a:b], dtype=inner.dtype)
                            for k, (a, b) in self._spec[agent].items()})

    def observations(self, obs: dict[str, Any]) -> dict[str, Any]:
        """Slice every present agent's vector."""
        return {agent: {k: np.asarray(o[a:b]) for k, (a, b) in self._spec[agent].items()}
                for agent, o in obs.items()}


class SharedView(ParallelObservationWrapper):
    """Centralized training view: each agent also gets every agent's modalities.

    Adds to each agent's ``Dict`` observation, for the modalities in ``modalities`` (default:
    all), ``shared/<modality>`` of shape ``(len(possible_agents), *shape)`` (zeros for agents
    absent this step), ``shared/present`` ``(N,)``, ``shared/is_me`` (one-hot of the receiving
    agent, ``(N,)``) and, if the env has ``agent_pose(agent) -> array``, ``shared/rel_pose``
    ``(N, P)`` (pose of each agent minus the receiver's). All agents must share the
    modality's space (pad them first with :class:`PadAgents`).

    Raises:
        ConfigError: if a modality is missing for some agent or its space differs by agent.
    """

    def __init__(self, env: ParallelEnv, modalities: Sequence[str] | None = None) -> None:
        super().__init__(env)
        agents = list(env.possible_agents)
        first = _dict_space(env, agents[0], "SharedView")
        self.modalities = tuple(modalities) if modalities is not None else tuple(first.spaces)
        for agent in agents:
            space = _dict_space(env, agent, "SharedView")
            for m in self.modalities:
                if m not in space.spaces:
                    raise ConfigError(
                        f"SharedView: agent {agent!r} has no modality {m!r}; it has {sorted(space.spaces)}"
                    )
                if not isinstance(space[m], spaces.Box):
                    raise ConfigError(f"SharedView: modality {m!r} of agent {agent!r} must be a Box, "
                                      f"got {space[m]}")
                if space[m] != first[m]:
                    raise ConfigError(
                        f"SharedView: modality {m!r} differs between agents ({space[m]} vs {first[m]}); "
                        "pad them with PadAgents first"
                    )
        clash = set(self.modalities) & {"present", "is_me", "rel_pose"}
        if clash:
            raise ConfigError(f"SharedView: modality names {sorted(clash)} are reserved; rename them")
        self._n = len(agents)
        self._row = {a: i for i, a in enumerate(agents)}
        world = env.unwrapped
        self._pose = world.agent_pose if isinstance(world, PosedWorld) else None
        self._pose_dim = len(self._pose(agents[0])) if self._pose is not None else 0

    def space(self, agent: str, inner: spaces.Space) -> spaces.Dict:
        """Own modalities plus the stacked ``shared/...`` ones."""
        assert isinstance(inner, spaces.Dict)
        out = dict(inner.spaces)
        for m in self.modalities:
            box = inner[m]
            assert isinstance(box, spaces.Box)
            low = np.broadcast_to(np.minimum(box.low, 0), (self._n, *box.shape))
            high = np.broadcast_to(np.maximum(box.high, 0), (self._n, *box.shape))
            out[SHARED_PREFIX + m] = spaces.Box(low, high, dtype=box.dtype)
        out[SHARED_PREFIX + "present"] = spaces.Box(0.0, 1.0, (self._n,), np.float32)
        out[SHARED_PREFIX + "is_me"] = spaces.Box(0.0, 1.0, (self._n,), np.float32)
        if self._pose_dim:
            out[SHARED_PREFIX + "rel_pose"] = spaces.Box(-np.inf, np.inf, (self._n, self._pose_dim),
                                                         np.float32)
        return spaces.Dict(out)

    def observations(self, obs: dict[str, Any]) -> dict[str, Any]:
        """Stack the present agents' modalities and add them to every agent's observation."""
        if not obs:
            return obs
        any_agent = next(iter(obs))
        space = self.observation_space(any_agent)
        present = np.zeros(self._n, dtype=np.float32)
        stacks = {m: np.zeros(space[SHARED_PREFIX + m].shape, space[SHARED_PREFIX + m].dtype)
                  for m in self.modalities}
        poses = np.zeros((self._n, self._pose_dim), np.float32)
        for agent, o in obs.items():
            r = self._row[agent]
            present[r] = 1.0
            for m in self.modalities:
                stacks[m][r] = o[m]
            if self._pose_dim:
                poses[r] = self._pose(agent)  # type: ignore[misc]
        out = {}
        for agent, o in obs.items():
            r = self._row[agent]
            me = np.zeros(self._n, dtype=np.float32)
            me[r] = 1.0
            shared = {SHARED_PREFIX + m: stacks[m].copy() for m in self.modalities}
            shared[SHARED_PREFIX + "present"] = present.copy()
            shared[SHARED_PREFIX + "is_me"] = me
            if self._pose_dim:
                shared[SHARED_PREFIX + "rel_pose"] = (poses - poses[r]) * present[:, None]
            out[agent] = {**o, **shared}
        return out


class SelectModalities(ParallelObservationWrapper):
    """Keep only the modalities in ``keep`` (what a deployed student may read).

    Raises:
        ConfigError: if an agent lacks one of ``keep`` (the message lists what it has).
    """

    def __init__(self, env: ParallelEnv, keep: Sequence[str]) -> None:
        super().__init__(env)
        if not keep:
            raise ConfigError("SelectModalities: keep at least one modality")
        self.keep = tuple(keep)
        _require_modalities(env, self.keep, "SelectModalities")

    def space(self, agent: str, inner: spaces.Space) -> spaces.Dict:
        """The kept sub-``Dict``."""
        assert isinstance(inner, spaces.Dict)
        return spaces.Dict({k: inner[k] for k in self.keep})

    def observations(self, obs: dict[str, Any]) -> dict[str, Any]:
        """Drop every other modality."""
        return {agent: {k: o[k] for k in self.keep} for agent, o in obs.items()}


class ModalityDropout(ParallelObservationWrapper):
    """Zero each of ``modalities`` independently with probability ``p`` (per agent and step).

    The draw is seeded by ``reset(seed=...)`` (and ``seed`` at construction), so runs repeat.

    Raises:
        ConfigError: for ``p`` outside [0, 1] or a modality some agent lacks.
    """

    def __init__(self, env: ParallelEnv, p: float, modalities: Sequence[str],
                 seed: int | None = None) -> None:
        super().__init__(env)
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"ModalityDropout: p must be in [0, 1], got {p}")
        self.p, self.modalities = float(p), tuple(modalities)
        _require_modalities(env, self.modalities, "ModalityDropout")
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Reseed the dropout draw with ``seed`` (if given), then reset."""
        if seed is not None:
            self._rng = np.random.default_rng([seed, 0xD0])
        return super().reset(seed=seed, options=options)

    def observations(self, obs: dict[str, Any]) -> dict[str, Any]:
        """Zero the dropped modalities."""
        out = {}
        for agent in sorted(obs):
            o = dict(obs[agent])
            for m in self.modalities:
                if self._rng.random() < self.p:
                    o[m] = np.zeros_like(o[m])
            out[agent] = o
        return {a: out[a] for a in obs}


class PadAgents(ParallelObservationWrapper):
    """Pad agents whose observation (and ``Box`` action) sizes differ to one common space.

    Flat ``Box`` observations are zero-padded to the longest; ``Dict`` observations key by key
    (1-D boxes; a modality an agent lacks is all zeros). ``Box`` actions are padded too and cut
    back to each agent's own size before they reach the env; ``Discrete`` actions must already
    agree.

    Raises:
        ConfigError: for spaces it cannot pad (images of different shapes, mixed kinds).
    """

    def __init__(self, env: ParallelEnv) -> None:
        super().__init__(env)
        agents = list(env.possible_agents)
        obs_spaces = {a: env.observation_space(a) for a in agents}
        self._dict = all(isinstance(s, spaces.Dict) for s in obs_spaces.values())
        if not self._dict and not all(isinstance(s, spaces.Box) and len(s.shape) == 1
                                      for s in obs_spaces.values()):
            raise ConfigError("PadAgents: observations must all be flat Boxes or all Dicts of flat Boxes")
        keys = sorted({k for s in obs_spaces.values() for k in (s.spaces if self._dict else ("",))})
        self._width: dict[str, int] = {}
        for k in keys:
            boxes = [s[k] if self._dict else s for s in obs_spaces.values()
                     if not self._dict or k in s.spaces]
            if not all(isinstance(b, spaces.Box) and len(b.shape) == 1 for b in boxes):
                raise ConfigError(f"PadAgents: modality {k!r} must be a flat Box for every agent")
            self._width[k] = max(b.shape[0] for b in boxes)
        acts = {a: env.action_space(a) for a in agents}
        if all(isinstance(s, spaces.Box) and len(s.shape) == 1 for s in acts.values()):
            n = max(s.shape[0] for s in acts.values())
            low = np.full(n, np.inf, np.float32)
            high = np.full(n, -np.inf, np.float32)
            for s in acts.values():
                low[: s.shape[0]] = np.minimum(low[: s.shape[0]], s.low)
                high[: s.shape[0]] = np.maximum(high[: s.shape[0]], s.high)
            self._act: spaces.Space | None = spaces.Box(low, high, dtype=np.float32)
        elif len({repr(s) for s in acts.values()}) == 1:
            self._act = None
        else:
            raise ConfigError(f"PadAgents: cannot pad action spaces {set(map(repr, acts.values()))}")

    def _union(self, key: str) -> spaces.Box:
        """One padded box for ``key`` covering every agent's bounds (and the zero padding)."""
        w = self._width[key]
        low, high, dtype = np.zeros(w), np.zeros(w), None
        for a in self.env.possible_agents:
            s = self.env.observation_space(a)
            box = s.spaces.get(key) if self._dict else s
            if isinstance(box, spaces.Box):
                n = box.shape[0]
                low[:n] = np.minimum(low[:n], box.low)
                high[:n] = np.maximum(high[:n], box.high)
                dtype = np.result_type(dtype, box.dtype) if dtype is not None else box.dtype
        return spaces.Box(low.astype(dtype), high.astype(dtype), dtype=dtype)

    def space(self, agent: str, inner: spaces.Space) -> spaces.Space:
        """The same padded space for every agent (widest size, bounds covering all agents')."""
        if not self._dict:
            return self._union("")
        return spaces.Dict({k: self._union(k) for k in self._width})

    def action_space(self, agent: str) -> spaces.Space:
        """The padded action space (shared by all agents)."""
        _check_agent(self.env, agent)
        return self._act if self._act is not None else self.env.action_space(agent)

    def observations(self, obs: dict[str, Any]) -> dict[str, Any]:
        """Zero-pad every agent's observation."""
        out = {}
        for agent, o in obs.items():
            space = self.observation_space(agent)
            if not self._dict:
                v = np.zeros(space.shape, space.dtype)
                v[: len(o)] = o
                out[agent] = v
                continue
            padded = {}
            for k in self._width:
                v = np.zeros(space[k].shape, space[k].dtype)
                if k in o:
                    v[: len(o[k])] = o[k]
                padded[k] = v
            out[agent] = padded
        return out

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Cut padded ``Box`` actions back to each agent's size, then step."""
        if self._act is not None:
            actions = {a: np.asarray(x)[: self.env.action_space(a).shape[0]] for a, x in actions.items()}
        return super().step(actions)
