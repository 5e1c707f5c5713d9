"""Teachers of multi-agent teams: they label every live agent of one ``ParallelEnv`` copy.

A single-agent :class:`~polydistill.teachers.Teacher` maps an observation batch to actions; a
team teacher may also read the env itself (a scripted expert reads the simulator's privileged
state), so it maps ``(env, {agent: obs})`` to ``{agent: action}``. Like every teacher it is
frozen.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from polydistill.envs._base import ExpertWorld, Knowledge
from polydistill.errors import ConfigError, TeacherError

__all__ = ["TeamTeacher", "ScriptedExpert"]


@runtime_checkable
class TeamTeacher(Protocol):
    """A frozen policy for the live agents of one multi-agent env copy: any ``act(env, obs)``."""

    def __call__(self, env: Any, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Actions of the live agents, whose observations are ``obs``."""
        ...


class ScriptedExpert:
    """The world's own privileged expert (:class:`~polydistill.envs._base.ExpertWorld`): a team teacher.

    Args:
        knowledge: ``shared`` (the CAML teacher: what any agent senses), ``own`` (the
            single-agent auxiliary-modality teacher) or ``full`` (an oracle).
    """

    def __init__(self, knowledge: Knowledge = "shared") -> None:
        if knowledge not in ("shared", "own", "full"):
            raise ConfigError(f"ScriptedExpert.knowledge: expected shared, own or full, got {knowledge!r}")
        self.knowledge = knowledge

    def __call__(self, env: Any, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        """The expert's actions, computed by the (unwrapped) world."""
        world = env.unwrapped
        if not isinstance(world, ExpertWorld):
            raise TeacherError(f"{type(world).__name__} has no scripted expert (expert_actions, agent_pose): "
                               "pass teacher=act(env, obs)")
        return world.expert_actions(self.knowledge)
