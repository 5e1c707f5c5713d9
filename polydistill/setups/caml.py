"""Collaborative auxiliary-modality learning (CAML) on PettingZoo: teacher -> per-agent students.

The teacher acts on what *all* agents sense (the world's scripted expert with
``knowledge="shared"``); students read only their own deployable modalities and learn by DAgger
on their joint rollouts, every live agent labelled. ``teacher="own"`` is the single-agent
auxiliary-modality baseline. Rows are team steps ``(N, D)`` with a presence mask, so agents
that leave stop being labelled and message-passing students train on real teams.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from polydistill.buffer import BufferConfig, FieldSpec
from polydistill.collect.replay import ReplayParallelEnv
from polydistill.collect.rollout import RolloutTask, RowStore, StepAdapter
from polydistill.deploy.checkpoint import DeployedStudent
from polydistill.distill.distiller import DistillerConfig
from polydistill.distill.run import DaggerRun, RunConfig
from polydistill.envs._base import ExpertWorld
from polydistill.errors import ConfigError, TeacherError, TrainingError
from polydistill.evaluation.episodes import TeamResult, evaluate_team
from polydistill.evaluation.report import EvalOptions, TaskRow, ratio, refuse_generalist_options
from polydistill.setups import Setup, register_setup
from polydistill.students import Student, TeamConfig, TeamStudent, flatten_modalities
from polydistill.teachers import ActionTarget, JointTeacher, ScriptedExpert, TeamTeacher

__all__ = ["CamlConfig", "CamlRun", "TeamAdapter", "team_policy", "team_teacher"]


@dataclass(frozen=True)
class CamlConfig(RunConfig):
    """A CAML distillation run on one multi-agent env (``total_steps`` counts agent-steps)."""

    env: str = "intersection_v0"
    """Name from ``polydistill.envs.list_parallel_envs()``."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments (e.g. ``n_agents``)."""
    teacher: str = "shared"
    """What the scripted teacher knows: ``shared`` (CAML: all agents' sensing), ``own`` (the
    single-agent auxiliary-modality baseline) or ``full`` (an oracle); or the folder of a
    learned team teacher (PPO with parameter sharing on the shared view:
    :class:`~polydistill.teachers.PolicyTeamTeacher`, e.g. ``teachers/caml-intersection``); or
    the path of a joint teacher (an SB3 teacher of the single-agent robot, for Multi-Agent MuJoCo:
    :class:`~polydistill.teachers.JointTeacher`)."""
    pad_agents: bool = False
    """Wrap the env in :class:`~polydistill.wrappers.pettingzoo.PadAgents` (agents whose
    observation or action sizes differ, e.g. MaMuJoCo's HalfCheetah 6x1)."""
    team: TeamConfig = field(default_factory=TeamConfig)
    """Deployable modalities and messages."""
    total_steps: int = 100_000
    rounds: int = 8
    updates_per_step: float = 0.05
    distiller: DistillerConfig = field(default_factory=lambda: DistillerConfig(batch_size=64))
    """Loss and optimisation; ``batch_size`` counts team steps."""
    buffer: BufferConfig = field(default_factory=lambda: BufferConfig(capacity=50_000))
    """Bounded buffer of team steps."""


class TeamAdapter(StepAdapter):
    """A team step: every copy's live agents stacked into ``(N, D)`` slots with presence."""

    always_act = True  # the students act and the mix is drawn on every step, as CAML runs always have

    def __init__(self, name: str, make: Callable[[], Any], teacher: TeamTeacher, modalities: tuple[str, ...],
                 sizes: tuple[int, ...], fields: dict[str, FieldSpec], action_space: Any) -> None:
        self.name, self.make, self.teacher, self.fields = name, make, teacher, fields
        self.modalities, self.sizes, self.action_space = modalities, sizes, action_space
        self._seen: tuple[Any, np.ndarray, np.ndarray] | None = None

    def make_envs(self, n_envs: int, seed: int) -> ReplayParallelEnv:
        """``n_envs`` copies of the env."""
        self.venv = ReplayParallelEnv([self.make] * n_envs, seed=seed)
        self.agents = self.venv.agents
        return self.venv

    def _teams(self, obs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Observations ``(C, N, D)`` and presence ``(C, N)`` of every copy's team (cached per step)."""
        if self._seen is not None and self._seen[0] is obs:
            return self._seen[1], self._seen[2]
        x = np.zeros((len(obs), len(self.agents), sum(self.sizes)), np.float32)
        present = np.zeros(x.shape[:2], bool)
        for i, o in enumerate(obs):
            for k, agent in enumerate(self.agents):
                if agent in o:
                    x[i, k] = flatten_modalities({m: o[agent][m] for m in self.modalities}, self.modalities,
                                                 self.sizes)
                    present[i, k] = True
        self._seen = (obs, x, present)
        return x, present

    def check_obs(self, obs: list[dict[str, Any]]) -> None:
        """Refuse non-finite deployable observations."""
        if not np.isfinite(self._teams(obs)[0]).all():
            raise TrainingError(f"env of task {self.name!r} returned a non-finite observation")

    def label(self, obs: list[dict[str, Any]]) -> ActionTarget:
        """The teacher's actions ``(C, N, A)`` (zeros for absent slots)."""
        labels = np.zeros((len(obs), len(self.agents), self.fields["action"].shape[-1]), np.float32)
        for i, (env, o) in enumerate(zip(self.venv.envs, obs, strict=True)):
            for agent, a in self.teacher(env, o).items():
                labels[i, self.venv.slot[agent]] = a
        return ActionTarget("deterministic", labels)

    def act(self, student: Student, obs: list[dict[str, Any]], deterministic: bool,
            generator: torch.Generator) -> np.ndarray:
        """Every team's actions ``(C, N, A)``."""
        x, present = self._teams(obs)
        emb = torch.zeros(x.shape[:2], dtype=torch.long)
        return student.act({"obs": torch.from_numpy(x), "present": torch.from_numpy(present)}, emb,
                           deterministic=deterministic, generator=generator).numpy()

    def mix_shape(self, teacher_action: np.ndarray) -> tuple[int, ...]:
        """One draw per agent slot."""
        return teacher_action.shape[:2]

    def record(self, out: RowStore, obs: list[dict[str, Any]], target: ActionTarget,
               use_teacher: np.ndarray | None, remaining: int) -> tuple[int, int]:
        """Every copy's team step (whole teams: the agent-step budget may be overshot)."""
        x, present = self._teams(obs)
        labels = target.action
        out.add({"obs": x, "present": present, "emb": np.zeros(present.shape, np.int64),
                 "mask": np.repeat(present[..., None], labels.shape[-1], -1), "action": labels})
        out.norm.append(x[present])
        n = int(present.sum())
        return n, n if use_teacher is None else int((use_teacher & present).sum())


class CamlRun(DaggerRun):
    """DAgger from the shared-knowledge teacher into per-agent students (module docstring).

    Args:
        config: The run.
        make_env: Builds one env copy; default ``make_parallel(config.env, **config.env_kwargs)``.
            Any PettingZoo ``ParallelEnv`` with ``Dict`` observations holding the deployable
            modalities plugs in here (wrap flat ones in ``ModalityGroups``, add ``SharedView``
            for a teacher that reads everyone's data).
        teacher: A :class:`~polydistill.teachers.TeamTeacher`: any ``act(env, obs)`` giving the
            teacher's actions for the live agents (it may read every modality of ``obs`` and
            the env); default: the world's :class:`~polydistill.teachers.ScriptedExpert` with
            ``config.teacher`` knowledge.
        **kwargs: ``run_dir``, ``log_dir``, ``progress_bar`` (see :class:`DaggerRun`).

    Raises:
        TeacherError: if no ``teacher`` is given and the env has no scripted expert.
        ConfigError: if the env lacks a deployable modality.
    """

    Config = CamlConfig
    setup = "caml"
    single_stream = True
    config: CamlConfig

    def __init__(self, config: CamlConfig, make_env: Callable[[], Any] | None = None,
                 teacher: TeamTeacher | None = None, **kwargs: Any) -> None:
        self._custom_env = make_env is not None
        self._make = make_env or functools.partial(_make_parallel, config.env, config.env_kwargs,
                                                   config.pad_agents)
        self.teacher = teacher or team_teacher(config.teacher)
        super().__init__(config, **kwargs)

    def prepare(self) -> None:
        """Read the agents, modalities and action space; check the teacher can act."""
        probe = self._make()
        try:
            self._read_spaces(probe)
        finally:
            probe.close()

    def _read_spaces(self, probe: Any) -> None:
        c = self.config
        if isinstance(self.teacher, ScriptedExpert) and not isinstance(probe.unwrapped, ExpertWorld):
            raise TeacherError(f"env {c.env!r} has no scripted expert (expert_actions): "
                               "pass teacher=act(env, obs)")
        self.agents = list(probe.possible_agents)
        space = probe.observation_space(self.agents[0])
        have = getattr(space, "spaces", {})
        missing = [m for m in c.team.modalities if m not in have]
        if missing:
            raise ConfigError(f"CamlConfig.team.modalities: {c.env!r} has no modality {missing}; "
                              f"it has {sorted(have)}")
        self.sizes = tuple(int(np.prod(space[m].shape)) for m in c.team.modalities)
        self.action_space = probe.action_space(self.agents[0])

    def make_student(self) -> TeamStudent:
        """One network shared by every agent."""
        c, a = self.config, self.action_space
        return TeamStudent(sum(self.sizes), a.low, a.high, c.student, c.team, self.sizes)

    def buffer_fields(self) -> dict[str, FieldSpec]:
        """Team steps: ``(N, D)`` observations, presence, tokens, masks, actions."""
        n, d, a = len(self.agents), sum(self.sizes), self.action_space.shape[0]
        return {"obs": FieldSpec((n, d), "float32"), "present": FieldSpec((n,), "bool"),
                "emb": FieldSpec((n,), "int64"), "mask": FieldSpec((n, a), "bool"),
                "action": FieldSpec((n, a), "float32")}

    def rollout_tasks(self) -> list[RolloutTask]:
        """The one env of the run."""
        c = self.config
        make = functools.partial(TeamAdapter, c.env, self._make, self.teacher, tuple(c.team.modalities),
                                 self.sizes, self.buffer_fields(), self.action_space)
        return [RolloutTask(c.env, 0, 0, make, self.task_seeds(1)[0])]

    def teacher_kinds(self) -> dict[str, str]:
        """Team teachers give actions, not distributions."""
        return {self.config.env: "deterministic"}

    def student_metadata(self) -> dict[str, Any]:
        """The env, its kwargs, what the teacher knew, and whether the env was a custom one."""
        return {"env": self.config.env, "env_kwargs": dict(self.config.env_kwargs),
                "teacher": self.config.teacher, "pad_agents": self.config.pad_agents,
                "custom_env": self._custom_env}

    def evaluate(self, episodes: int | None = None, seed: int = 12345) -> dict[str, float]:
        """The students alone on this run's env (a custom ``make_env`` included)."""
        r = self.evaluate_policy(episodes or self.config.eval_episodes, seed)
        return {f"eval/return/{self.config.env}": r.mean_return, f"eval/accident_rate/{self.config.env}":
                r.accident_rate}

    def _env(self, env_kwargs: dict[str, Any]) -> Callable[[], Any]:
        if not env_kwargs:
            return self._make
        if self._custom_env:
            raise ConfigError("this run uses a custom make_env: env kwargs cannot rebuild it")
        return functools.partial(_make_parallel, self.config.env, {**self.config.env_kwargs, **env_kwargs},
                                 self.config.pad_agents)

    def evaluate_policy(self, episodes: int = 20, seed: int = 100_000, **env_kwargs: Any) -> TeamResult:
        """The students acting alone on their deployable modalities (``env_kwargs``: e.g. ``n_agents=5``)."""
        return evaluate_team(self._env(env_kwargs), team_policy(self.deployed()), episodes, seed)

    def evaluate_teacher(self, episodes: int = 20, seed: int = 100_000, **env_kwargs: Any) -> TeamResult:
        """The teacher on the same seeds."""
        return evaluate_team(self._env(env_kwargs), self.teacher, episodes, seed)

    @classmethod
    def evaluate_student(cls, student: DeployedStudent, options: EvalOptions) -> list[TaskRow]:
        """Students on their deployable modalities vs the scripted teacher: return and accidents.

        Raises:
            ConfigError: for a student of a custom env (``make_env``), which its metadata cannot
                rebuild: evaluate it with :func:`~polydistill.evaluation.evaluate_team`.
        """
        meta, o = student.metadata, options
        refuse_generalist_options(o, "caml")
        if meta.get("custom_env"):
            raise ConfigError(f"this team student was distilled on a custom env (make_env=...), not "
                              f"the shipped {meta['env']!r}: evaluate it with "
                              "polydistill.evaluation.evaluate_team")
        make = functools.partial(_make_parallel, meta["env"], meta.get("env_kwargs", {}),
                                 bool(meta.get("pad_agents", False)))
        s = evaluate_team(make, team_policy(student), o.episodes, o.seed)
        t = evaluate_team(make, team_teacher(meta.get("teacher", "shared")), o.episodes, o.seed) \
            if o.with_teacher else None
        t_ret, t_std = (None, None) if t is None else (t.mean_return, t.std_return)
        extra = {"accident_rate": s.accident_rate,
                 "teacher_accident_rate": None if t is None else t.accident_rate}
        return [TaskRow(meta["env"], "train", "team", t_ret, s.mean_return, ratio(s.mean_return, t_ret),
                        t_std, s.std_return, extra=extra, episodes=len(s.returns))]


def team_policy(student: DeployedStudent) -> TeamTeacher:
    """``act(env, obs)`` of a team student: each live agent acts on its deployable modalities only."""
    mods = student.student.team.modalities  # type: ignore[attr-defined]
    return lambda env, obs: student.predict({a: {m: o[m] for m in mods} for a, o in obs.items()})


def team_teacher(spec: str) -> TeamTeacher:
    """The team teacher a config names.

    A scripted expert's knowledge, a learned team teacher's folder (``train-teacher
    --parallel-env``) or a joint teacher's path.
    """
    from polydistill.teachers.team import PolicyTeamTeacher, read_team_manifest
    from polydistill.utils import shipped_path

    if spec in ("shared", "own", "full"):
        return ScriptedExpert(spec)  # type: ignore[arg-type]
    path = shipped_path(spec)
    if not path.exists():
        raise ConfigError(f"CamlConfig.teacher: expected shared, own, full, the path of a learned team "
                          f"teacher or of a joint teacher (an SB3 folder or zip), got {spec!r}")
    if path.is_dir() and read_team_manifest(path) is not None:
        return PolicyTeamTeacher.load(path)
    return JointTeacher(str(path))


def _make_parallel(name: str, kwargs: dict[str, Any], pad_agents: bool = False) -> Any:
    from polydistill.envs import make_parallel
    from polydistill.wrappers.pettingzoo import PadAgents

    env = make_parallel(name, **kwargs)
    return PadAgents(env) if pad_agents else env


register_setup(Setup("caml", CamlRun, benchmark="polydistill.bench.caml:run"))
