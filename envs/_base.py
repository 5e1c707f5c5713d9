"""What the shipped multi-agent worlds share: one observation and one action space for all agents."""

from __future__ import annotations

import functools
from typing import Any

from gymnasium import spaces
from pettingzoo import ParallelEnv

from polydistill.errors import ConfigError


class HomogeneousParallelEnv(ParallelEnv):
    """A ``ParallelEnv`` whose agents all share ``_obs_space`` and ``_act_space``.

    Subclasses set ``possible_agents``, ``_index`` (agent -> row), ``_obs_space`` and
    ``_act_space``; unknown agent ids raise :class:`~polydistill.ConfigError`.
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
