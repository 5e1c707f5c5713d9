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

__all__ = ["TeamTeacher", "ScriptedExpert", "JointTeacher"]


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


class JointTeacher:
    """A single-agent teacher of the whole robot as a team teacher (Multi-Agent MuJoCo).

    It reads the robot's state (the world's ``state()``: the single-agent env's observation)
    and splits its joint action among the agents with the world's ``split_action``; each
    agent's slice is zero-padded to that agent's action space (``PadAgents`` pads them to
    one), so it labels every live agent of a team at once.

    Args:
        teacher: A :class:`~polydistill.teachers.Teacher` of the single-agent env (or a path
            for :func:`~polydistill.teachers.load_teacher`).

    Raises:
        TeacherError: on a world without ``state()`` and ``split_action`` (not a MaMuJoCo robot).
    """

    def __init__(self, teacher: Any) -> None:
        from polydistill.teachers.base import Teacher, load_teacher

        self.teacher = teacher if isinstance(teacher, Teacher) else load_teacher(teacher)

    def __call__(self, env: Any, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        """The joint action of the robot's state, split among the live agents of ``obs``."""
        world = env.unwrapped
        if not (hasattr(world, "split_action") and hasattr(world, "state")):
            raise TeacherError(f"{type(world).__name__} has no joint view (state, split_action): a "
                               "JointTeacher drives a Multi-Agent MuJoCo robot")
        joint = self.teacher.act(np.asarray(world.state(), np.float32)[None])[0]
        space = world.joint_action_space
        split = world.split_action(np.clip(joint, space.low, space.high))
        out = {}
        for agent in obs:
            want = env.action_space(agent).shape[0]
            a = np.zeros(want, np.float32)
            a[: len(split[agent])] = split[agent]
            out[agent] = a
        return out
