"""What the shipped multi-agent worlds share, and the contract the CAML path relies on.

:class:`PosedWorld` and :class:`ExpertWorld` are the protocols a ``ParallelEnv`` (its
``unwrapped``) meets for :class:`~polydistill.wrappers.pettingzoo.SharedView`'s relative poses
and for :class:`~polydistill.teachers.ScriptedExpert`; :class:`HomogeneousParallelEnv`, the base
of the shipped worlds, declares both.
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from polydistill.errors import ConfigError

Knowledge = Literal["shared", "own", "full"]
"""What a scripted expert knows: every agent's sensing (``shared``), one agent's (``own``), or
everything (``full``, an oracle)."""


@runtime_checkable
class PosedWorld(Protocol):
    """A multi-agent world that can say where each agent is."""

    def agent_pose(self, agent: str) -> np.ndarray:
        """Pose of ``agent`` (any fixed-length vector; relative poses are differences)."""
        ...


@runtime_checkable
class ExpertWorld(PosedWorld, Protocol):
    """A world with a scripted privileged expert: what the CAML setup needs of an env.

    Besides these methods, ``step`` reports ``infos[agent]["collision"]`` (bool) for every
    agent, which the team evaluation counts as accidents.
    """

    def expert_actions(self, knowledge: Knowledge = "shared") -> dict[str, np.ndarray]:
        """The expert's action for every live agent, knowing what ``knowledge`` says."""
        ...


class HomogeneousParallelEnv(ParallelEnv):
    """A ``ParallelEnv`` whose agents all share ``_obs_space`` and ``_act_space``.

    Subclasses set ``possible_agents``, ``_index`` (agent -> row), ``_obs_space`` and
    ``_act_space``, and implement the :class:`ExpertWorld` methods; unknown agent ids raise
    :class:`~polydistill.ConfigError`.
    """

    possible_agents: list[str]
    agents: list[str]
    _index: dict[str, int]
    _obs_space: spaces.Space
    _act_space: spaces.Space

    @functools.cache  # noqa: B019 (PettingZoo's idiom: one space object per agent)
    def observation_space(self, agent: str) -> spaces.Space:
        """The same observation space (a ``Dict`` of modalities) for every agent."""
        self._check_agent(agent)
        return self._obs_space

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Space:
        """The same action space for every agent."""
        self._check_agent(agent)
        return self._act_space

    def _check_actions(self, actions: dict[str, Any]) -> None:
        """Every live agent, and only they, must have an action."""
        missing = [a for a in self.agents if a not in actions]
        extra = [a for a in actions if a not in self.agents]
        if missing or extra:
            raise ConfigError(
                f"step: expected actions for exactly the live agents {self.agents}; missing "
                f"{missing}, not live {extra}"
            )

    def _check_agent(self, agent: str) -> None:
        if agent not in self._index:
            raise ConfigError(f"unknown agent {agent!r}; this env has {self.possible_agents}")

    @abstractmethod
    def agent_pose(self, agent: str) -> np.ndarray:
        """Pose of ``agent`` (see :class:`PosedWorld`)."""

    @abstractmethod
    def expert_actions(self, knowledge: Knowledge = "shared") -> dict[str, np.ndarray]:
        """The scripted expert's actions for the live agents (see :class:`ExpertWorld`)."""
