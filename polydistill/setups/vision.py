"""Privileged teacher -> vision student.

The teacher reads ``proprio + privileged`` (a flat vector, as it was trained); the student reads
``proprio + pixels`` through :class:`~polydistill.wrappers.gymnasium.ObsGroups`, checked once at
start. Pixels are stored as uint8 in the bounded buffer (memory-mapped with
``buffer.storage: disk``). A recurrent student (``vision.recurrent_size > 0``) trains on stored
sequences with burn-in and acts with its state through each episode.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydistill.buffer import BufferConfig, FieldSpec
from polydistill.collect.replay import ReplayVectorEnv
from polydistill.collect.rollout import RolloutTask, RowStore, StepAdapter, label_fields
from polydistill.config import override
from polydistill.deploy.checkpoint import DeployedStudent
from polydistill.distill.distiller import DistillerConfig
from polydistill.distill.run import DaggerRun, RunConfig
from polydistill.errors import ConfigError, TeacherError
from polydistill.evaluation.episodes import EvalResult, evaluate
from polydistill.evaluation.report import EvalOptions, TaskRow, ratio, refuse_generalist_options
from polydistill.setups import Setup, register_setup
from polydistill.students import Student, VisionConfig, VisionStudent
from polydistill.teachers import ActionTarget, Teacher, check_teacher_fits, load_teacher
from polydistill.utils import agents_dir, make_env
from polydistill.wrappers.gymnasium import ObsGroups, flatten_groups

__all__ = ["VisionDistillConfig", "VisionRun", "VisionAdapter", "SequenceAdapter", "SHIPPED_TEACHERS"]

SHIPPED_TEACHERS = {"polydistill/PointGoalVision-v0": "point-goal-vision",
                    "polydistill/ReachVision-v0": "reach-vision"}
"""Vision env id -> its shipped privileged teacher in ``agents/teachers``."""


@dataclass(frozen=True)
class VisionDistillConfig(RunConfig):
    """A privileged-teacher -> vision-student run."""

    env_id: str = "polydistill/PointGoalVision-v0"
    """A Dict-observation env with the groups named below."""
    teacher: str = ""
    """SB3 teacher (zip or folder) trained on the concatenated ``teacher_groups`` (empty: the
    shipped one of ``env_id``)."""
    teacher_groups: tuple[str, ...] = ("proprio", "privileged")
    """Groups the teacher reads, concatenated in this order."""
    student_groups: tuple[str, ...] = ("proprio", "pixels")
    """Groups the student reads; ``("proprio",)`` is the blind control."""
    privileged_groups: tuple[str, ...] = ("privileged",)
    """Groups the student must never read."""
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"size": 64})
    """``gymnasium.make`` arguments (image size, frame stack)."""
    vision: VisionConfig = field(default_factory=VisionConfig)
    """Image encoder (and optional GRU core)."""
    seq_len: int = 16
    """Recurrent students only (``vision.recurrent_size > 0``): steps per training sequence."""
    burn_in: int = 4
    """Recurrent students only: leading steps of a sequence that only warm the state up (no
    loss) unless an episode starts there. Sequences overlap by this much, so every labelled
    step is trained on once."""
    total_steps: int = 40_000
    rounds: int = 8
    distiller: DistillerConfig = field(default_factory=lambda: DistillerConfig(batch_size=256))
    buffer: BufferConfig = field(default_factory=lambda: BufferConfig(capacity=40_000))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.burn_in < self.seq_len:
            raise ConfigError(
                f"VisionDistillConfig: need 0 <= burn_in < seq_len, got burn_in={self.burn_in}, "
                f"seq_len={self.seq_len}"
            )


class VisionAdapter(StepAdapter):
    """A feed-forward vision student's step: teacher on its groups, student on its own."""

    def __init__(self, config: VisionDistillConfig, teacher: Teacher, groups: ObsGroups,
                 fields: dict[str, FieldSpec]) -> None:
        self.name, self.config = config.env_id.split("/")[-1], config
        self.teacher, self.groups = teacher, groups
        self.fields, self.action_space = fields, teacher.action_space

    def make_envs(self, n_envs: int, seed: int) -> ReplayVectorEnv:
        """``n_envs`` copies of the vision env (pixels rendered)."""
        c = self.config
        self._emb = torch.zeros(n_envs, dtype=torch.long)
        return ReplayVectorEnv([lambda: make_env(c.env_id, c.env_kwargs)] * n_envs, seed=seed)

    def label(self, obs: dict[str, np.ndarray]) -> ActionTarget:
        """The privileged teacher on its flattened groups."""
        return self.teacher.action_dist(self.groups.teacher_obs(obs))

    def inputs(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The student's view of a batch (never a privileged group)."""
        view = self.groups.student_obs(obs)
        return {"proprio": torch.as_tensor(view["proprio"], dtype=torch.float32),
                **({"pixels": torch.as_tensor(view["pixels"])} if "pixels" in view else {})}

    def act(self, student: Student, obs: dict[str, np.ndarray], deterministic: bool,
            generator: torch.Generator) -> np.ndarray:
        """The student's actions."""
        a = student.act(self.inputs(obs), self._emb, deterministic=deterministic, generator=generator)
        return a.numpy().astype(np.float64)

    def rows(self, obs: dict[str, np.ndarray], target: ActionTarget) -> dict[str, np.ndarray]:
        """Buffer rows of every copy."""
        if "mean" in self.fields and (target.mean is None or target.log_std is None):
            raise TeacherError("the privileged teacher gave no distribution but the buffer stores one")
        a = target.action
        rows = {"proprio": obs["proprio"].astype(np.float32), "emb": np.zeros(len(a), np.int64),
                "mask": np.ones(a.shape, bool), "action": a.astype(np.float32)}
        if "mean" in self.fields:
            rows.update(mean=target.mean.astype(np.float32), log_std=target.log_std.astype(np.float32))  # type: ignore[union-attr]
        if "pixels" in self.fields:
            rows["pixels"] = obs["pixels"]
        return rows

    def record(self, out: RowStore, obs: dict[str, np.ndarray], target: ActionTarget,
               use_teacher: np.ndarray | None, remaining: int) -> tuple[int, int]:
        """Exactly ``min(n_envs, remaining)`` rows."""
        k = min(len(target.action), remaining)
        out.add({key: v[:k] for key, v in self.rows(obs, target).items()})
        out.norm.append(obs["proprio"][:k])
        return k, k if use_teacher is None else int(use_teacher[:k].sum())


class SequenceAdapter(VisionAdapter):
    """A recurrent student's step: it carries its state, rows are overlapping sequences."""

    always_act = True

    def make_envs(self, n_envs: int, seed: int) -> ReplayVectorEnv:
        """The env copies, a zero state per copy and an empty window."""
        self._state = torch.zeros(n_envs, self.config.vision.recurrent_size)
        self._first = np.ones(n_envs, dtype=bool)
        self._window: deque[dict[str, np.ndarray]] = deque(maxlen=self.config.seq_len)
        self._since = self._draws = self._teacher_draws = 0
        return super().make_envs(n_envs, seed)

    def act(self, student: Student, obs: dict[str, np.ndarray], deterministic: bool,
            generator: torch.Generator) -> np.ndarray:
        """One step of the student's state on every copy."""
        mine, self._state = student.step(self.inputs(obs), self._emb, self._state,  # type: ignore[operator]
                                         torch.from_numpy(self._first), deterministic, generator)
        return mine.numpy().astype(np.float64)

    def record(self, out: RowStore, obs: dict[str, np.ndarray], target: ActionTarget,
               use_teacher: np.ndarray | None, remaining: int) -> tuple[int, int]:
        """Every ``seq_len - burn_in`` steps, one sequence per copy (burn-in steps masked)."""
        c = self.config
        rows = self.rows(obs, target)
        rows["first"] = self._first.copy()
        self._window.append(rows)
        out.norm.append(rows["proprio"])
        self._since += 1
        stride, n = c.seq_len - c.burn_in, len(self._first)
        self._draws += n
        self._teacher_draws += n if use_teacher is None else int(use_teacher.sum())
        labelled = teacher = 0
        if len(self._window) == c.seq_len and self._since >= stride:
            k = min(n, -(-remaining // stride))
            seq = {key: np.stack([w[key][:k] for w in self._window], axis=1) for key in rows}
            # burn-in steps carry no loss unless the state is exact there (episode began)
            started = np.logical_or.accumulate(seq["first"], axis=1)
            seq["mask"] &= (started | (np.arange(c.seq_len) >= c.burn_in)[None, :])[:, :, None]
            out.add(seq)
            labelled = k * stride  # the teacher's share of the draws since the last sequences:
            teacher = round(labelled * self._teacher_draws / self._draws)
            self._since = self._draws = self._teacher_draws = 0
        return labelled, teacher

    def after_step(self, done: np.ndarray, action: np.ndarray | None = None) -> None:
        """Copies whose episode ended start the next one from a fresh state."""
        self._first = done.copy()

    def state_dict(self) -> dict[str, Any]:
        """Hidden states, episode-start flags, the open window of steps."""
        return {"hidden": self._state.clone(), "first": self._first.copy(), "window": list(self._window),
                "since": self._since, "draws": [self._draws, self._teacher_draws]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self._state = state["hidden"].clone()
        self._first = np.asarray(state["first"], dtype=bool).copy()
        self._window = deque(state["window"], maxlen=self.config.seq_len)
        self._since = int(state["since"])
        self._draws, self._teacher_draws = (int(x) for x in state["draws"])


class VisionRun(DaggerRun):
    """DAgger from a privileged teacher into a (vision or blind) student.

    Args:
        config: The run's configuration.
        teacher: The privileged teacher (default: loaded from ``config.teacher``).
        **kwargs: ``run_dir``, ``log_dir``, ``progress_bar`` (see :class:`DaggerRun`).
    """

    Config = VisionDistillConfig
    setup = "vision"
    single_stream = True
    config: VisionDistillConfig

    def __init__(self, config: VisionDistillConfig, teacher: Teacher | None = None, **kwargs: Any) -> None:
        self.teacher = teacher  # type: ignore[assignment]
        super().__init__(config, **kwargs)

    def prepare(self) -> None:
        """Check the groups against the env, load and check the teacher."""
        c = self.config
        self.groups = ObsGroups(c.teacher_groups, c.student_groups, c.privileged_groups)
        env = make_env(c.env_id, c.env_kwargs)
        try:
            self.groups.check(env.observation_space)
            self.space = env.observation_space.spaces
        finally:
            env.close()
        if self.teacher is None:
            if not c.teacher:
                raise ConfigError("VisionDistillConfig.teacher: path of the privileged teacher is required")
            self.teacher = load_teacher(c.teacher)
        from gymnasium import spaces

        probe = make_env(c.env_id, {**c.env_kwargs, "pixels": False})
        try:
            t_dim = sum(self.space[k].shape[0] for k in c.teacher_groups)
            check_teacher_fits(self.teacher, spaces.Box(-np.inf, np.inf, (t_dim,)), probe.action_space,
                               "privileged teacher")
            self._probe_obs, _ = probe.reset(seed=0)
        finally:
            probe.close()

    def make_student(self) -> VisionStudent:
        """The CNN + proprioception student (no image path for the blind control)."""
        c, act = self.config, self.teacher.action_space
        pixels = tuple(self.space["pixels"].shape) if "pixels" in c.student_groups else None
        return VisionStudent(self.space["proprio"].shape[0], act.low, act.high, pixels,  # type: ignore[attr-defined]
                             c.student, c.vision)

    @property
    def steps_per_row(self) -> int:  # type: ignore[override]
        """1, or (recurrent) the ``seq_len - burn_in`` new steps of a sequence."""
        return self.config.seq_len - self.config.burn_in if self.config.vision.recurrent_size else 1

    def distiller_config(self) -> DistillerConfig:
        """Batches counted in labelled steps (sequences for a recurrent student)."""
        d = self.config.distiller
        return override(d, {"batch_size": max(1, round(d.batch_size / self.steps_per_row))}) \
            if self.steps_per_row > 1 else d

    def buffer_config(self) -> BufferConfig:
        """Capacity counted in labelled steps."""
        b = self.config.buffer
        return override(b,
                        {"capacity": -(-b.capacity // self.steps_per_row)}) if self.steps_per_row > 1 else b

    def buffer_fields(self) -> dict[str, FieldSpec]:
        """Proprioception, pixels (uint8), labels; ``(seq_len, ...)`` sequences when recurrent."""
        a = len(self.teacher.action_space.low)  # type: ignore[attr-defined]
        fields = {"proprio": FieldSpec(self.space["proprio"].shape, "float32"), "emb": FieldSpec((), "int64"),
                  "mask": FieldSpec((a,), "bool"),
                  **label_fields("continuous", a, self.distiller.loss.needs_distribution)}
        if "pixels" in self.config.student_groups:
            fields["pixels"] = FieldSpec(self.space["pixels"].shape, "uint8")
        if self.student.recurrent:
            fields["first"] = FieldSpec((), "bool")
            fields = {k: FieldSpec((self.config.seq_len, *f.shape), f.dtype) for k, f in fields.items()}
        return fields

    def rollout_tasks(self) -> list[RolloutTask]:
        """The one env of the run."""
        cls = SequenceAdapter if self.student.recurrent else VisionAdapter
        make = functools.partial(cls, self.config, self.teacher, self.groups, self.buffer_fields())
        return [RolloutTask(self.config.env_id.split("/")[-1], 0, 0, make, self.task_seeds(1)[0])]

    def teacher_kinds(self) -> dict[str, str]:
        """The teacher's distribution on the env's first observation."""
        obs = self.groups.teacher_obs(self._probe_obs)[None]
        return {self.config.env_id.split("/")[-1]: self.teacher.action_dist(obs).kind}

    def student_metadata(self) -> dict[str, Any]:
        """Env, its kwargs, both views and the teacher: what evaluation needs."""
        c = self.config
        return {"env_id": c.env_id, "env_kwargs": dict(c.env_kwargs),
                "student_groups": list(c.student_groups),
                "teacher_groups": list(c.teacher_groups), "teacher": c.teacher}

    def evaluate_policy(self, episodes: int = 10, seed: int = 100_000) -> EvalResult:
        """The student acting alone (deterministic mean action, its state carried through episodes)."""
        return _student_episodes(self.deployed(), episodes, seed)

    def evaluate_teacher(self, episodes: int = 10, seed: int = 100_000) -> EvalResult:
        """The privileged teacher on the same seeds."""
        return _teacher_episodes(self.teacher, self.student_metadata(), episodes, seed)

    @classmethod
    def evaluate_student(cls, student: DeployedStudent, options: EvalOptions) -> list[TaskRow]:
        """The student on its groups vs the privileged teacher, same seeds."""
        meta, o = student.metadata, options
        refuse_generalist_options(o, "vision")
        s = _student_episodes(student, o.episodes, o.seed)
        path = o.teacher or meta.get("teacher")
        with_teacher = o.with_teacher and path
        t = _teacher_episodes(load_teacher(path), meta, o.episodes, o.seed) if with_teacher else None
        t_mean, t_std = (None, None) if t is None else (t.mean_return, t.std_return)
        name = meta["env_id"].split("/")[-1]
        if o.video:
            from polydistill.evaluation.video import record_vision_gif

            record_vision_gif(student, Path(o.video) / f"{name}.gif", seed=o.seed)
        return [TaskRow(name, "train", "vision", t_mean, s.mean_return, ratio(s.mean_return, t_mean),
                        t_std, s.std_return, episodes=len(s.returns))]

    @classmethod
    def flag_overrides(cls, flags: dict[str, Any]) -> dict[str, Any]:
        """``--teacher`` names the privileged teacher."""
        teacher = flags.pop("teacher", None)
        super().flag_overrides(flags)
        return {"teacher": teacher} if teacher else {}

    @classmethod
    def complete(cls, config: VisionDistillConfig) -> VisionDistillConfig:  # type: ignore[override]
        """The shipped teacher of a shipped env when the recipe names none.

        Raises:
            ConfigError: for another env without a teacher.
        """
        if config.teacher:
            return config
        if config.env_id not in SHIPPED_TEACHERS:
            raise ConfigError(f"no shipped teacher for {config.env_id!r}: pass --teacher PATH")
        return override(config, {"teacher": str(agents_dir() / "teachers" / SHIPPED_TEACHERS[config.env_id])})


def _student_episodes(student: DeployedStudent, episodes: int, seed: int) -> EvalResult:
    meta = student.metadata
    keys = meta.get("student_groups", ["proprio", "pixels"])
    student.reset()
    return evaluate(meta["env_id"], lambda obs: student.predict({k: obs[k] for k in keys}),
                    n_episodes=episodes,
                    seed=seed, env_kwargs=meta.get("env_kwargs", {}), on_episode_end=student.reset)


def _teacher_episodes(teacher: Teacher, meta: dict[str, Any], episodes: int, seed: int) -> EvalResult:
    groups = meta.get("teacher_groups", ["proprio", "privileged"])
    return evaluate(meta["env_id"], lambda obs: teacher.act(flatten_groups(obs, groups)), n_episodes=episodes,
                    seed=seed, env_kwargs={**meta.get("env_kwargs", {}), "pixels": False})


register_setup(Setup("vision", VisionRun, benchmark="polydistill.bench.vision:run"))
