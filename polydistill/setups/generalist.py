"""Generalist setup: specialist teachers, one per task or embodiment, into one student.

Spaces differ per embodiment: observations are zero-padded to the widest one and paired with
an embodiment token, actions are predicted at the widest width and masked (the COMPASS
pattern; :class:`~polydistill.students.GeneralistStudent`). The default suite is
``locomotion-sizes`` with the shipped teachers (``agents/distill.yaml``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydistill.buffer import LOGIT_PAD, FieldSpec
from polydistill.collect.replay import ReplayVectorEnv
from polydistill.collect.rollout import RolloutTask, RowStore, StepAdapter, label_fields
from polydistill.deploy.checkpoint import DeployedStudent
from polydistill.distill.run import DaggerRun, RunConfig
from polydistill.envs import DEFAULT_SUITE
from polydistill.errors import ConfigError, SpaceMismatchError, TeacherError
from polydistill.evaluation.report import EvalOptions, EvalTask, TaskRow, evaluate_student, suite_eval_tasks
from polydistill.setups import Setup, register_setup
from polydistill.setups.morphology import family_member_teacher
from polydistill.students import Embodiment, EmbodimentTable, GeneralistStudent, Student, student_for
from polydistill.teachers import ActionTarget, Teacher, check_teacher_fits, load_teacher
from polydistill.utils import agents_dir, make_env
from polydistill.weights import check_weight, uneven_weights

__all__ = ["TaskConfig", "GeneralistConfig", "GeneralistRun", "GeneralistAdapter", "default_teachers_dir",
           "generalist_fields"]


@dataclass(frozen=True)
class TaskConfig:
    """One task to distil: an env and the teacher that labels it."""

    name: str
    """Unique task name (report rows, metric keys)."""
    env_id: str
    """Gymnasium id."""
    teacher: str
    """Path of an SB3 zip, of a folder holding ``model.zip`` (+ ``vecnormalize.pkl``), or an
    import path ``"package.module:Name"`` (a class made with no arguments, or a function, whose
    ``get_action(obs)`` or ``__call__(obs)`` gives the action; see
    :func:`~polydistill.teachers.load_teacher`)."""
    embodiment: str | None = None
    """Body type; tasks on one body share its spaces and observation statistics (default: ``env_id``)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra ``gymnasium.make`` arguments."""
    task: str | None = None
    """Task token. When any task of a run sets one, the student gets task tokens beside the
    embodiment token (many tasks on one body, e.g. Meta-World); tasks without one use their
    ``name``. Without any, there is one token per embodiment."""
    weight: float = 1.0
    """Relative share of the run: of each round's env steps, of the buffer's rows and of every
    batch's rows (equal weights: an even split). The loss is still averaged per task
    (``distiller.balance_tasks``): a heavier task is fit on more data, not pulled harder."""

    def __post_init__(self) -> None:
        check_weight(self.name, self.weight)


@dataclass(frozen=True)
class GeneralistConfig(RunConfig):
    """A generalist run: every field can be set from a recipe or ``--set``."""

    suite: str | None = DEFAULT_SUITE
    """Distil the training split of this suite (ignored when ``tasks`` is given)."""
    teachers_dir: str | None = None
    """Folder with one ``<task>/model.zip`` per suite task (default: the shipped teachers)."""
    tasks: tuple[TaskConfig, ...] = ()
    """Explicit tasks; overrides ``suite``."""
    success_key: str | None = None
    """``info`` key of the envs' success flag (Meta-World: ``success``): evaluation then reports
    each task's success rate (``eval/success/<task>``) beside its return."""


def default_teachers_dir() -> Path:
    """Folder of the teachers shipped with polydistill (``agents/teachers``)."""
    return agents_dir() / "teachers"


def resolve_tasks(config: GeneralistConfig) -> tuple[TaskConfig, ...]:
    """The explicit tasks, or the training split of ``config.suite`` with teachers on disk."""
    if config.tasks:
        return config.tasks
    if config.suite is None:
        raise ConfigError("GeneralistConfig needs either tasks or a suite")
    from polydistill.envs import get_suite

    root = Path(config.teachers_dir) if config.teachers_dir else default_teachers_dir()
    return tuple(TaskConfig(t.name, t.env_id, str(root / t.teacher_name), t.embodiment, dict(t.kwargs),
                            weight=t.weight)
                 for t in get_suite(config.suite) if t.split == "train")


def generalist_fields(table: EmbodimentTable, with_distribution: bool) -> dict[str, FieldSpec]:
    """Buffer rows of a table's students: padded observation, token, action mask, labels."""
    return {"obs": FieldSpec((table.max_obs_dim,), "float32"), "emb": FieldSpec((), "int64"),
            "mask": FieldSpec((table.max_action_dim,), "bool"),
            **label_fields(table.action_kind, table.max_action_dim, with_distribution)}


def task_token(table: EmbodimentTable, task: TaskConfig) -> str | None:
    """The task token of ``task`` in ``table`` (None where the table has none)."""
    return (task.task or task.name) if table.has_tasks else None


def task_metadata(task: TaskConfig, token: str | None) -> dict[str, Any]:
    """How a student checkpoint (and a recorded dataset) names one task: env, body, token, teacher."""
    return {"name": task.name, "env_id": task.env_id, "embodiment": task.embodiment or task.env_id,
            "env_kwargs": dict(task.env_kwargs), "teacher": task.teacher or None, "task": token,
            "weight": float(task.weight)}


class GeneralistAdapter(StepAdapter):
    """One task's step: flat observations padded to the table's width, with the task's token."""

    def __init__(self, task: TaskConfig, teacher: Teacher, table: EmbodimentTable, emb_id: int,
                 fields: dict[str, FieldSpec]) -> None:
        self.name, self.task, self.teacher, self.table = task.name, task, teacher, table
        self.fields, self.e = fields, emb_id
        self.action_space = teacher.action_space
        body = table.embodiments[emb_id]
        self.obs_dim, self.act_dim = body.obs_dim, body.action_dim
        self.discrete = table.action_kind == "discrete"
        self.mask = table.action_mask[emb_id]

    def make_envs(self, n_envs: int, seed: int) -> ReplayVectorEnv:
        """``n_envs`` copies of the task's env."""
        self._emb = torch.full((n_envs,), self.e, dtype=torch.long)
        return ReplayVectorEnv([lambda: make_env(self.task.env_id, self.task.env_kwargs)] * n_envs, seed=seed)

    def label(self, obs: np.ndarray) -> ActionTarget:
        """One batched teacher call."""
        return self.teacher.action_dist(obs)

    def act(self, student: Student, obs: np.ndarray, deterministic: bool,
            generator: torch.Generator) -> np.ndarray:
        """The student's actions of the task's embodiment (padding cut; the fast path when deterministic)."""
        if deterministic:
            return student.policy(self.e)(torch.from_numpy(obs.astype(np.float32))).numpy()  # type: ignore[operator]
        padded = torch.from_numpy(self.table.pad_obs(obs, self.e))
        a = student.act(padded, self._emb, deterministic=deterministic, generator=generator).numpy()
        return self.table.unpad_action(a, self.e)

    def record(self, out: RowStore, obs: np.ndarray, target: ActionTarget, use_teacher: np.ndarray | None,
               remaining: int) -> tuple[int, int]:
        """Exactly ``min(n_envs, remaining)`` padded rows."""
        k = min(len(obs), remaining)
        sl, r, a = out.take(k), out.arrays, self.act_dim
        r["obs"][sl, : self.obs_dim] = obs[:k]
        r["emb"][sl] = self.e
        r["mask"][sl] = self.mask
        dist = ("logits",) if self.discrete else ("mean", "log_std")
        if dist[0] in r and any(getattr(target, f) is None for f in dist):
            raise TeacherError(f"the teacher of task {self.name!r} gave no distribution but the buffer "
                               "stores one")
        if self.discrete:
            r["action"][sl] = target.action[:k]
            if "logits" in r:
                r["logits"][sl] = LOGIT_PAD
                r["logits"][sl, : target.logits.shape[1]] = target.logits[:k]  # type: ignore[union-attr]
        else:
            r["action"][sl, :a] = target.action[:k]
            if "mean" in r:
                r["mean"][sl, :a] = target.mean[:k]  # type: ignore[index]
                r["log_std"][sl, :a] = target.log_std[:k]  # type: ignore[index]
        out.norm.append(obs[:k])
        return k, k if use_teacher is None else int(use_teacher[:k].sum())


class GeneralistRun(DaggerRun):
    """DAgger from one specialist teacher per task into one generalist student.

    Args:
        config: The run's configuration.
        teachers: Teachers by task name, overriding the paths in the config.
        **kwargs: ``run_dir``, ``log_dir``, ``progress_bar`` (see :class:`DaggerRun`).
    """

    Config = GeneralistConfig
    setup = "generalist"
    records_datasets = True
    config: GeneralistConfig

    def __init__(self, config: GeneralistConfig, teachers: dict[str, Teacher] | None = None,
                 **kwargs: Any) -> None:
        self._given = teachers or {}
        super().__init__(config, **kwargs)

    def run_tasks(self) -> tuple[TaskConfig, ...]:
        """The tasks to distil (the config's; a dataset run takes its dataset's)."""
        return resolve_tasks(self.config)

    def prepare(self) -> None:
        """Resolve the tasks, load and check their teachers, build the embodiment table."""
        import polydistill.envs  # noqa: F401  (registers ids)

        self.tasks = self.run_tasks()
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"task names must be unique, got {names}")
        self.teachers: dict[str, Teacher] = {}
        embodiments: dict[str, Embodiment] = {}
        for t in self.tasks:
            env = make_env(t.env_id, t.env_kwargs)
            teacher = (self._given.get(t.name)
                       or load_teacher(t.teacher, env.observation_space, env.action_space))
            teacher = family_member_teacher(teacher, env)  # a family teacher labels any member
            check_teacher_fits(teacher, env.observation_space, env.action_space, f"task {t.name!r}")
            name = t.embodiment or t.env_id
            emb = Embodiment.from_spaces(name, env.observation_space, env.action_space)
            env.close()
            if name in embodiments and embodiments[name] != emb:
                raise SpaceMismatchError(
                    f"tasks of embodiment {name!r} disagree on spaces: {embodiments[name]} vs {emb}")
            embodiments[name] = emb
            self.teachers[t.name] = teacher
        task_tokens = [(t.task or t.name, t.embodiment or t.env_id) for t in self.tasks]
        self.table = EmbodimentTable(list(embodiments.values()),
                                     task_tokens if any(t.task for t in self.tasks) else None)

    def make_student(self) -> GeneralistStudent:
        """One network over the table, of the configured architecture."""
        return student_for(self.table, self.config.student)

    def buffer_fields(self) -> dict[str, FieldSpec]:
        """Padded observation, token, action mask and the teacher's labels."""
        return generalist_fields(self.table, self.distiller.loss.needs_distribution)

    def rollout_tasks(self) -> list[RolloutTask]:
        """One rollout per task, with its own seeds."""
        fields = self.buffer_fields()
        seeds = self.task_seeds(len(self.tasks))
        out = []
        for i, t in enumerate(self.tasks):
            e = self.table.id(t.embodiment or t.env_id, task_token(self.table, t))
            make = functools.partial(GeneralistAdapter, t, self.teachers[t.name], self.table, e, fields)
            out.append(RolloutTask(t.name, i, e, make, seeds[i]))
        return out

    def task_weights(self) -> list[float] | None:
        """The tasks' weights, or ``None`` where all are equal (an even split)."""
        return uneven_weights([t.weight for t in self.tasks])

    def teacher_kinds(self) -> dict[str, str]:
        """Each teacher's distribution on its env's first observation."""
        kinds = {}
        for t in self.tasks:
            env = make_env(t.env_id, t.env_kwargs)
            obs, _ = env.reset(seed=0)
            env.close()
            kinds[t.name] = self.teachers[t.name].action_dist(np.asarray(obs)[None]).kind
        return kinds

    def dataset_manifest(self) -> dict[str, Any]:
        """Each task's env, token row and teacher, and the embodiment table (``record_dataset``)."""
        meta = GeneralistRun.student_metadata(self)  # not a subclass's additions
        for i, task in enumerate(meta["tasks"]):
            task.update(task_id=i, emb_id=self.table.id(task["embodiment"], task["task"]))
        return {**meta, "table": {"embodiments": self.table.to_json(), "tasks": self.table.tasks_json()}}

    def student_metadata(self) -> dict[str, Any]:
        """The tasks (env, token, kwargs, teacher) and the suite they came from."""
        return {"tasks": [task_metadata(t, task_token(self.table, t)) for t in self.tasks],
                "suite": None if self.config.tasks else self.config.suite,
                "success_key": self.config.success_key}

    @classmethod
    def evaluate_student(cls, student: DeployedStudent, options: EvalOptions) -> list[TaskRow]:
        """Student vs teacher per task: ``env_id``, a suite (train and held-out), or the student's tasks.

        Raises:
            ConfigError: if ``env_id`` is given for a multi-embodiment student without a token.
        """
        o, meta = options, student.metadata
        if o.task is not None and not o.env_id:
            raise ConfigError("--task goes with --env-id (the student's own tasks carry their task tokens)")
        suite = o.suite or (None if o.train_only else meta.get("suite"))
        if o.env_id:
            emb = o.embodiment or (student.embodiments[0] if len(student.embodiments) == 1 else None)
            if emb is None:
                raise ConfigError(f"--embodiment is required: the student knows {student.embodiments}")
            tasks = [EvalTask(o.env_id.split("/")[-1], o.env_id, emb, "train", o.teacher, task=o.task)]
        elif suite:
            tasks = suite_eval_tasks(suite, o.teachers_dir or default_teachers_dir())
        else:
            tasks = [EvalTask(t["name"], t["env_id"], t["embodiment"], "train", t.get("teacher"),
                              tuple(sorted(t["env_kwargs"].items())), t.get("task"))
                     for t in meta.get("tasks", [])]
        tasks = [dataclasses.replace(
            t, teacher=t.teacher if o.with_teacher else None,
            env_kwargs=tuple(sorted({**dict(t.env_kwargs), **dict(o.env_kwargs)}.items()))) for t in tasks]
        rows = evaluate_student(student, tasks, episodes=o.episodes, seed=o.seed,
                                success_key=o.success_key or meta.get("success_key"))
        if o.video:
            from polydistill.evaluation.video import record_gif

            for t in tasks:
                record_gif(student, t, Path(o.video) / f"{t.name}.gif", seed=o.seed)
        return rows

    @classmethod
    def flag_overrides(cls, flags: dict[str, Any]) -> dict[str, Any]:
        """``--env-id`` with ``--teacher`` (one task), ``--suite``, ``--teachers-dir``."""
        env_id, teacher = flags.pop("env_id", None), flags.pop("teacher", None)
        if env_id or teacher:
            if not (env_id and teacher):
                raise ConfigError("--env-id and --teacher go together")
            flags["tasks"] = [{"name": env_id.split("/")[-1], "env_id": env_id, "teacher": teacher}]
        return flags


register_setup(Setup("generalist", GeneralistRun, benchmark="polydistill.bench.generalist:run"))
