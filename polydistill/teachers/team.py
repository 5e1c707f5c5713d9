"""Teachers of multi-agent teams: they label every live agent of one ``ParallelEnv`` copy.

A single-agent :class:`~polydistill.teachers.Teacher` maps an observation batch to actions; a
team teacher may also read the env itself (a scripted expert reads the simulator's privileged
state), so it maps ``(env, {agent: obs})`` to ``{agent: action}``. Like every teacher it is
frozen.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from polydistill.envs._base import ExpertWorld, Knowledge
from polydistill.errors import ConfigError, TeacherError

__all__ = ["TeamTeacher", "ScriptedExpert", "JointTeacher", "PolicyTeamTeacher", "TEAM_TEACHER_KIND"]

TEAM_TEACHER_KIND = "polydistill.team_teacher"
"""``kind`` of a learned team teacher's ``manifest.json``."""


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


class PolicyTeamTeacher:
    """A learned policy shared by every agent, reading the team's collaborative view.

    The teacher of a CAML world trained by PPO with parameter sharing
    (``polydistill train-teacher --parallel-env NAME``): each live agent's observation is
    extended with :class:`~polydistill.wrappers.pettingzoo.SharedView` over ``shared_view``
    (every agent's readings of those modalities, who is present, who is "me", relative poses),
    flattened over ``modalities`` and fed to one frozen SB3 policy.

    Args:
        teacher: The SB3 policy (an :class:`~polydistill.teachers.SB3Teacher`, observation
            statistics included).
        modalities: What the policy reads, flattened in this order (``shared/...`` names
            included).
        shared_view: The modalities the shared view stacks (empty: none, the agents' own).

    Raises:
        TeacherError: if ``modalities`` is empty.
    """

    def __init__(self, teacher: Any, modalities: Sequence[str], shared_view: Sequence[str] = ()) -> None:
        self.teacher = teacher
        self.modalities = tuple(modalities)
        self.shared_view = tuple(shared_view)
        if not self.modalities:
            raise TeacherError("PolicyTeamTeacher: expected the modalities the policy reads, got none")
        self._views: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    @classmethod
    def load(cls, path: str | Path) -> PolicyTeamTeacher:
        """Load a team teacher folder (``manifest.json``, ``model.zip``, ``vecnormalize.pkl``).

        Raises:
            TeacherError: if the folder holds no team teacher.
        """
        from polydistill.teachers.sb3 import SB3Teacher

        folder = Path(path)
        manifest = read_team_manifest(folder)
        if manifest is None:
            raise TeacherError(f"expected a team teacher folder (manifest.json of kind "
                               f"{TEAM_TEACHER_KIND!r}, model.zip), got {str(path)!r}")
        return cls(SB3Teacher.load(folder / "model.zip"), manifest["obs_groups"],
                   manifest.get("shared_view", ()))

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the per-env view cache (Ray ships teachers to rollout workers)."""
        return {k: v for k, v in self.__dict__.items() if k != "_views"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore, with an empty view cache."""
        self.__dict__.update(state)
        self._views = weakref.WeakKeyDictionary()

    def _view(self, env: Any) -> Any:
        from polydistill.wrappers.pettingzoo import SharedView

        view = self._views.get(env)
        if view is None:
            view = self._views[env] = SharedView(env, self.shared_view)
        return view

    def observations(self, env: Any, obs: dict[str, Any]) -> np.ndarray:
        """The policy's inputs ``(agents, D)`` for the live agents of ``obs``, in its order.

        Raises:
            TeacherError: if an agent lacks a modality the policy reads.
        """
        from polydistill.students.team import flatten_modalities

        if self.shared_view and obs and not all(m in o for o in obs.values() for m in self.modalities):
            obs = self._view(env).observations(obs)
        rows = []
        for agent, o in obs.items():
            missing = [m for m in self.modalities if m not in o]
            if missing:
                raise TeacherError(f"team teacher reads {list(self.modalities)}; agent {agent!r} has no "
                                   f"{missing} (it has {sorted(o)})")
            rows.append(flatten_modalities({m: o[m] for m in self.modalities}, self.modalities))
        return np.stack(rows).astype(np.float32)

    def __call__(self, env: Any, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Every live agent's action (deterministic), from its view of the team.

        Raises:
            SpaceMismatchError: if the view does not fit the policy (e.g. a team of another size
                than the teacher trained with: its shared view has another width).
        """
        if not obs:
            return {}
        actions = self.teacher.act(self.observations(env, obs))
        return {agent: actions[k] for k, agent in enumerate(obs)}


def read_team_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of a learned team teacher in ``folder``, or ``None`` if it holds none."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TeacherError(f"unreadable teacher manifest {str(path)!r}: {exc}") from exc
    return manifest if isinstance(manifest, dict) and manifest.get("kind") == TEAM_TEACHER_KIND else None
