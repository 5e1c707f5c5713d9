"""Morphology setup: one privileged family teacher into a student that drives unseen bodies.

A body family (:mod:`polydistill.envs.families`) has a teacher trained with domain
randomisation over its training bodies, reading the body descriptor (privileged, as the vision
setup's simulator state). Every training body is one rollout task: its env is the body's own,
the teacher labels each state from the padded observation plus the descriptor, and the
student (``student.kind``: ``token``, ``descriptor``, ``history`` or ``joints``; see
:mod:`polydistill.students.morphology`) reads what its kind reads. Evaluation drives every body
of every split (training, held-out inside the ranges, held-out outside them) and reports the
student's return over the yardstick: the better of the family teacher (given the true
descriptor) and the body's own specialist where one exists.

Recipe::

    setup: morphology
    family: hopper
    student: {kind: descriptor}
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from polydistill.buffer import FieldSpec
from polydistill.collect.replay import ReplayVectorEnv
from polydistill.collect.rollout import RolloutTask, RowStore, StepAdapter, label_fields
from polydistill.deploy.checkpoint import DeployedStudent
from polydistill.distill.run import DaggerRun, RunConfig
from polydistill.errors import ConfigError, ObservationError
from polydistill.evaluation.episodes import EvalResult, evaluate
from polydistill.evaluation.report import EvalOptions, TaskRow, ratio, refuse_generalist_options
from polydistill.setups import Setup, register_setup
from polydistill.students import Student
from polydistill.students.morphology import HistoryStudent, MorphSpec, TrainedBody, morph_student
from polydistill.teachers import ActionTarget, Teacher, check_teacher_fits, load_teacher
from polydistill.utils import agents_dir, make_env

log = logging.getLogger(__name__)

__all__ = ["MorphologyConfig", "MorphologyRun", "MorphologyAdapter", "FamilyBody", "family_bodies",
           "evaluate_bodies", "body_yardsticks", "default_family_teacher", "FamilyTeacherView",
           "family_member_teacher"]


@dataclass(frozen=True)
class MorphologyConfig(RunConfig):
    """A morphology run: every field can be set from a recipe or ``--set``."""

    family: str = "hopper"
    """Body family (``hopper``, ``halfcheetah``, ``swimmer``, ``cheetah-vel``)."""
    teacher: str | None = None
    """The family teacher (default: the shipped ``agents/teachers/<family>-family``)."""
    bodies: tuple[str, ...] = ()
    """Names of the bodies to distil (default: the family's training split)."""
    specialists_dir: str | None = None
    """Folder of ``<body name>/model.zip`` specialists, the yardsticks where they exist
    (default: the shipped teachers, ``agents/teachers``)."""
    extra_bodies: int = field(default=0, metadata={"fingerprint": "if_set"})
    """Bodies drawn inside the training ranges (:meth:`~polydistill.envs.families.BodyFamily.pool`,
    named ``<family>-pool-<i>``) that the student trains on besides ``bodies``: the privileged
    teacher labels any body, so the student sees the ranges densely instead of at 16 points."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.extra_bodies < 0:
            raise ConfigError(f"extra_bodies must be >= 0, got {self.extra_bodies}")


@dataclass(frozen=True)
class FamilyBody:
    """One named body of a family."""

    name: str
    split: str
    params: dict[str, float]


def family_bodies(family: str) -> dict[str, FamilyBody]:
    """Every named body of ``family``: its training split, then the held-out ones."""
    from polydistill.envs.families import SPLIT_SIZES, get_family

    fam = get_family(family)
    return {n: FamilyBody(n, sp, b) for sp in SPLIT_SIZES
            for n, b in zip(fam.body_names(sp), fam.split(sp), strict=True)}  # type: ignore[arg-type]


def default_family_teacher(family: str) -> Path:
    """Where the shipped teacher of ``family`` lives."""
    return agents_dir() / "teachers" / f"{family}-family"


def _family_spec(family: str, bodies: list[FamilyBody]) -> MorphSpec:
    from polydistill.envs.families import body_layout, family_layout, get_family

    fam, lay = get_family(family), family_layout(family)
    for b in bodies:  # a custom body may have a layout no split has
        if body_layout(family, b.params) not in lay.layouts:
            raise ConfigError(f"body {b.name!r} has a layout the family's splits do not")
    env = make_env(fam.family_env_id)
    low, high = env.action_space.low, env.action_space.high  # type: ignore[attr-defined]
    env.close()
    trained = tuple(TrainedBody(b.name, lay.index(body_layout(family, b.params)),
                                tuple(float(x) for x in fam.descriptor(b.params))) for b in bodies)
    return MorphSpec(family, tuple(fam.param_names), lay, trained, tuple(float(x) for x in low),
                     tuple(float(x) for x in high))


class FamilyTeacherView(Teacher):
    """The family teacher acting on one body's raw observations (padding and descriptor added).

    A :class:`~polydistill.teachers.Teacher` whose spaces are the body's own, so anything that
    takes a teacher (a generalist task, evaluation) can use a family teacher on one member.
    """

    def __init__(self, teacher: Teacher, family: str, params: dict[str, float]) -> None:
        from polydistill.envs.families import body_layout, family_layout, get_family

        self.teacher, self.layout = teacher, body_layout(family, params)
        self.family = family_layout(family)
        # members of an observed family carry their descriptor already: nothing is appended
        fam = get_family(family)
        self.descriptor = np.zeros(0) if fam.observed else fam.descriptor(params)
        self.n_act = self.layout.joints
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.layout.obs_dim,), np.float64)
        space = teacher.action_space
        self.action_space = gym.spaces.Box(space.low[: self.n_act], space.high[: self.n_act],  # type: ignore[attr-defined]
                                           dtype=space.dtype)  # type: ignore[arg-type]

    def observe(self, obs: np.ndarray) -> np.ndarray:
        """The teacher's observation: the padded body observation and the descriptor."""
        obs = np.asarray(obs, dtype=np.float64)
        pad = self.family.pad(obs, self.layout)
        desc = np.broadcast_to(self.descriptor, (*obs.shape[:-1], self.descriptor.size))
        return np.concatenate([pad, desc], -1)

    def action_dist(self, obs: np.ndarray) -> ActionTarget:
        """The teacher's labels cut to this body's joints."""
        t = self.teacher.action_dist(self.observe(self._check_obs(obs)))
        cut = {f: (None if getattr(t, f) is None else getattr(t, f)[:, : self.n_act])
               for f in ("action", "mean", "log_std")}
        return ActionTarget(t.kind, **cut)  # type: ignore[arg-type]


def family_member_teacher(teacher: Teacher, env: gym.Env) -> Teacher:
    """``teacher`` as it labels ``env``.

    A family teacher on a member of its family is viewed through :class:`FamilyTeacherView`;
    anything else is returned as it is.
    """
    from polydistill.envs.families import get_family

    inner = env.unwrapped
    family, body = getattr(inner, "family", None), getattr(inner, "body", None)
    if not isinstance(family, str) or not isinstance(body, dict):
        return teacher
    from polydistill.envs.families import family_layout

    fam = get_family(family)
    width = family_layout(family).obs_dim + (0 if fam.observed else len(fam.params))  # the family env's obs
    fits = tuple(teacher.observation_space.shape) == (width,)  # type: ignore[union-attr]
    return FamilyTeacherView(teacher, family, body) if fits else teacher


def morph_fields(student: Student, with_distribution: bool) -> dict[str, FieldSpec]:
    """Buffer rows of a morphology student.

    Padded observation, descriptor, layout or token row, action mask, labels (and the history,
    for the ``history`` kind).
    """
    t = student.table
    n_desc = student.spec.n_desc  # type: ignore[attr-defined]
    out = {"obs": FieldSpec((t.max_obs_dim,), "float32"), "body": FieldSpec((n_desc,), "float32"),
           "emb": FieldSpec((), "int64"), "mask": FieldSpec((t.max_action_dim,), "bool"),
           **label_fields("continuous", t.max_action_dim, with_distribution)}
    if isinstance(student, HistoryStudent):
        out["hist"] = FieldSpec((student.config.history, student.history_width), "float32")
    return out


class MorphologyAdapter(StepAdapter):
    """One body's step: the teacher reads padded observation + descriptor, the student its kind's input."""

    def __init__(self, family: str, body: FamilyBody, teacher: Teacher, student_kind: str, history: int,
                 spec: MorphSpec, row: int, mask: np.ndarray, fields: dict[str, FieldSpec]) -> None:
        from polydistill.envs.families import get_family

        self.name, self.body, self.fields = body.name, body, fields
        self.env_id = get_family(family).env_id
        self.view = FamilyTeacherView(teacher, family, body.params)
        self.spec, self.row, self.mask, self.kind, self.k = spec, row, mask, student_kind, history
        self.n_act = self.view.n_act
        self.action_space = gym.spaces.Box(np.array(spec.action_low[: self.n_act], np.float32),
                                           np.array(spec.action_high[: self.n_act], np.float32))
        self.desc = self.view.descriptor.astype(np.float32)
        self.width = spec.layout.obs_dim + spec.layout.act_dim + 1
        self.hist = np.zeros((0, history, self.width), np.float32)
        self.last = np.zeros((0, spec.layout.obs_dim), np.float32)

    def make_envs(self, n_envs: int, seed: int) -> ReplayVectorEnv:
        """``n_envs`` copies of the body's env."""
        self._emb = torch.full((n_envs,), self.row, dtype=torch.long)
        self.hist = np.zeros((n_envs, self.k, self.width), np.float32)
        kwargs = {"body": dict(self.body.params)}
        return ReplayVectorEnv([lambda: make_env(self.env_id, kwargs)] * n_envs, seed=seed)

    def _padded(self, obs: np.ndarray) -> np.ndarray:
        return self.spec.layout.pad(np.asarray(obs), self.view.layout, np.float32)

    def _inputs(self, padded: np.ndarray) -> Any:
        x = torch.from_numpy(padded)
        if self.kind == "token":
            return x
        if self.kind == "history":
            return {"obs": x, "hist": torch.from_numpy(self.hist)}
        return {"obs": x, "body": torch.from_numpy(np.tile(self.desc, (len(padded), 1)))}

    def label(self, obs: np.ndarray) -> ActionTarget:
        """The family teacher's labels of the body's observations."""
        return self.view.action_dist(obs)

    def act(self, student: Student, obs: np.ndarray, deterministic: bool,
            generator: torch.Generator) -> np.ndarray:
        """The student's actions, cut to the body's joints."""
        a = student.act(self._inputs(self._padded(obs)), self._emb, deterministic=deterministic,
                        generator=generator).numpy()
        return a[:, : self.n_act]

    def record(self, out: RowStore, obs: np.ndarray, target: ActionTarget, use_teacher: np.ndarray | None,
               remaining: int) -> tuple[int, int]:
        """``min(n_envs, remaining)`` rows; the step's observations are kept for the history."""
        padded = self._padded(obs)
        self.last = padded
        k = min(len(obs), remaining)
        sl, r, a = out.take(k), out.arrays, self.n_act
        r["obs"][sl] = padded[:k]
        r["body"][sl] = self.desc
        r["emb"][sl] = self.row
        r["mask"][sl] = self.mask
        if "hist" in r:
            r["hist"][sl] = self.hist[:k]
        r["action"][sl, :a] = target.action[:k]
        if "mean" in r:
            r["mean"][sl, :a] = target.mean[:k]  # type: ignore[index]
            r["log_std"][sl, :a] = target.log_std[:k]  # type: ignore[index]
        out.norm.append(padded[:k])
        return k, k if use_teacher is None else int(use_teacher[:k].sum())

    def after_step(self, done: np.ndarray, action: np.ndarray | None = None) -> None:
        """Append ``[observation, executed action, 1]`` to each copy's history; empty ended ones."""
        if self.kind != "history" or action is None:
            return
        row = np.zeros((len(done), self.width), np.float32)
        row[:, : self.spec.layout.obs_dim] = self.last
        row[:, self.spec.layout.obs_dim: self.spec.layout.obs_dim + self.n_act] = action
        row[:, -1] = 1.0
        self.hist = np.concatenate([self.hist[:, 1:], row[:, None]], axis=1)
        self.hist[done] = 0.0

    def state_dict(self) -> dict[str, Any]:
        """The histories and the last observations."""
        return {"hist": self.hist.copy(), "last": self.last.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.hist = np.array(state["hist"], np.float32)
        self.last = np.array(state["last"], np.float32)


class MorphologyRun(DaggerRun):
    """DAgger from one family teacher into one morphology-aware student (module docstring)."""

    Config = MorphologyConfig
    setup = "morphology"
    config: MorphologyConfig

    def __init__(self, config: MorphologyConfig, teacher: Teacher | None = None, **kwargs: Any) -> None:
        self._given = teacher
        super().__init__(config, **kwargs)

    def prepare(self) -> None:
        """Resolve the bodies, load and check the family teacher, build the family spec."""
        import polydistill.envs  # noqa: F401  (registers ids)
        from polydistill.envs.families import get_family

        cfg = self.config
        fam = get_family(cfg.family)
        named = family_bodies(cfg.family)
        names = list(cfg.bodies) or fam.body_names("train")
        unknown = [n for n in names if n not in named]
        if unknown or len(set(names)) != len(names):
            raise ConfigError(f"bodies must be distinct names of {cfg.family} bodies; unknown: {unknown} "
                              f"(known: {list(named)})")
        pool = fam.pool(cfg.extra_bodies)
        self.bodies = [named[n] for n in names] + [
            FamilyBody(f"{cfg.family}-pool-{i:03d}", "train", b) for i, b in enumerate(pool)]
        env = make_env(fam.family_env_id)
        if self._given is not None:
            self.teacher = self._given
        else:
            path = cfg.teacher or default_family_teacher(cfg.family)
            if not Path(path).exists():
                raise ConfigError(f"no family teacher at {str(path)!r}; train one with `polydistill "
                                  f"train-teacher --env-id {fam.family_env_id} --out {path}`")
            self.teacher = load_teacher(str(path), env.observation_space, env.action_space)
        check_teacher_fits(self.teacher, env.observation_space, env.action_space, f"family {cfg.family!r}")
        env.close()
        self.spec = _family_spec(cfg.family, self.bodies)

    def make_student(self) -> Student:
        """The student of ``student.kind`` over the family spec."""
        return morph_student(self.spec, self.config.student)

    def buffer_fields(self) -> dict[str, FieldSpec]:
        """Padded observation, descriptor, row, mask and labels (+ history)."""
        return morph_fields(self.student, self.distiller.loss.needs_distribution)

    def _row(self, body: TrainedBody) -> int:
        name = self.spec.layout_name(body.layout)
        t = self.student.table
        return t.id(name, body.name) if t.has_tasks else t.id(name)

    def rollout_tasks(self) -> list[RolloutTask]:
        """One rollout per body, with its own seeds."""
        fields, seeds, out = self.buffer_fields(), self.task_seeds(len(self.bodies)), []
        for i, (b, tb) in enumerate(zip(self.bodies, self.spec.bodies, strict=True)):
            row = self._row(tb)
            make = functools.partial(MorphologyAdapter, self.config.family, b, self.teacher,
                                     self.config.student.kind, self.config.student.history, self.spec, row,
                                     self.student.table.action_mask[row], fields)
            out.append(RolloutTask(b.name, i, row, make, seeds[i]))
        return out

    def teacher_kinds(self) -> dict[str, str]:
        """The family teacher's distribution on a family observation."""
        from polydistill.envs.families import get_family

        env = make_env(get_family(self.config.family).family_env_id)
        obs, _ = env.reset(seed=0)
        env.close()
        kind = self.teacher.action_dist(np.asarray(obs)[None]).kind
        return {b.name: kind for b in self.bodies}

    def student_metadata(self) -> dict[str, Any]:
        """Family, bodies, teacher and specialists (what evaluation needs)."""
        cfg = self.config
        return {"family": cfg.family, "bodies": [b.name for b in self.bodies],
                "teacher": str(cfg.teacher or default_family_teacher(cfg.family)),
                "specialists_dir": cfg.specialists_dir}

    @classmethod
    def evaluate_student(cls, student: DeployedStudent, options: EvalOptions) -> list[TaskRow]:
        """Every body of the family (or the trained ones): student vs the yardstick, same seeds."""
        refuse_generalist_options(options, "morphology")
        meta, o = student.metadata, options
        named = family_bodies(meta["family"])
        trained = set(meta.get("bodies") or [])
        bodies = [b for b in named.values() if b.name in trained or not o.train_only]
        teacher = (o.teacher or meta.get("teacher")) if o.with_teacher else None
        spec_dir = meta.get("specialists_dir") or str(agents_dir() / "teachers")
        return evaluate_bodies(student, meta["family"], bodies, o.episodes, o.seed, teacher,
                               spec_dir if o.with_teacher else None)

    @classmethod
    def flag_overrides(cls, flags: dict[str, Any]) -> dict[str, Any]:
        """``--teacher`` names the family teacher."""
        teacher = flags.pop("teacher", None)
        super().flag_overrides(flags)
        return {"teacher": teacher} if teacher else {}


def _student_act(student: DeployedStudent, desc: np.ndarray) -> Any:
    if student.student.kind == "history":
        return lambda o: student.predict(o)
    return lambda o: student.predict(o, body=desc)


def body_yardsticks(family: str, bodies: list[FamilyBody], episodes: int = 10, seed: int = 100_000,
                    teacher: str | Teacher | None = None, specialists_dir: str | None = None,
                    cache: dict[str, EvalResult] | None = None) -> dict[str, dict[str, EvalResult]]:
    """Per body, the family teacher given the true descriptor and the body's specialist.

    Args:
        family: The family.
        bodies: The bodies.
        episodes: Episodes per body and policy.
        seed: First evaluation seed (the students' seeds, so every policy meets the same starts).
        teacher: The family teacher (path or object); None: not measured.
        specialists_dir: Folder of ``<body name>/model.zip`` specialists; a body without one
            has no ``specialist`` entry.
        cache: ``{key: EvalResult}`` reused across calls (teachers are frozen).

    Returns:
        ``{body name: {"family_teacher": EvalResult, "specialist": EvalResult}}`` (what exists).
    """
    from polydistill.envs.families import get_family

    fam = get_family(family)
    loaded = load_teacher(str(teacher)) if isinstance(teacher, str | Path) else teacher
    cache = {} if cache is None else cache
    out: dict[str, dict[str, EvalResult]] = {}
    for b in bodies:
        kwargs, got = {"body": dict(b.params)}, {}
        if loaded is not None:
            key = repr(("family", str(teacher), family, b.name, episodes, seed))
            if key not in cache:
                view = FamilyTeacherView(loaded, family, b.params)
                cache[key] = evaluate(fam.env_id, view.act, n_episodes=episodes, seed=seed, env_kwargs=kwargs)
            got["family_teacher"] = cache[key]
        path = Path(specialists_dir) / b.name if specialists_dir else None
        if path is not None and (path / "model.zip").is_file():
            key = repr(("specialist", str(path), episodes, seed))
            if key not in cache:
                cache[key] = evaluate(fam.env_id, load_teacher(str(path)).act, n_episodes=episodes, seed=seed,
                                      env_kwargs=kwargs)
            got["specialist"] = cache[key]
        out[b.name] = got
    return out


def evaluate_bodies(student: DeployedStudent, family: str, bodies: list[FamilyBody], episodes: int = 10,
                    seed: int = 100_000, teacher: str | Teacher | None = None,
                    specialists_dir: str | None = None, cache: dict[str, EvalResult] | None = None
                    ) -> list[TaskRow]:
    """The student on each body (by descriptor; the history kind by its history), with the yardstick.

    The yardstick is the better of the family teacher given the body's true descriptor and the
    body's specialist, where one exists (:func:`body_yardsticks`, same arguments); ``extra``
    keeps both returns. A body the student cannot drive (a joint count it never trained on,
    for every kind but ``joints``) gets a NaN return and no ratio.
    """
    from polydistill.envs.families import get_family

    fam = get_family(family)
    yard = body_yardsticks(family, bodies, episodes, seed, teacher, specialists_dir, cache)
    rows = []
    for b in bodies:
        desc = fam.descriptor(b.params)
        hook = student.reset if student.recurrent else None
        if hook is not None:
            student.reset()
        try:
            s = evaluate(fam.env_id, _student_act(student, desc), n_episodes=episodes, seed=seed,
                         env_kwargs={"body": dict(b.params)}, on_episode_end=hook)
        except ObservationError as exc:  # a joint count this kind cannot drive: a row without a return
            log.info("%s: %s", b.name, exc)
            s = EvalResult()
        known = yard[b.name]
        best = max(known, key=lambda k: known[k].mean_return) if known else None
        y = known[best] if best else None
        figures = {k: (known[k].mean_return if k in known else None)
                   for k in ("family_teacher", "specialist")}
        y_ret = None if y is None else y.mean_return
        rows.append(TaskRow(b.name, b.split, student.student.kind, y_ret, s.mean_return,
                            ratio(s.mean_return, y_ret) if s.returns else None,
                            None if y is None else y.std_return, s.std_return, figures))
    return rows


register_setup(Setup("morphology", MorphologyRun, benchmark="polydistill.bench.morphology:run"))
