"""The one labelling-and-mixing step of every setup.

Every visited state is labelled by the task's teacher, whatever policy acted. The teacher acts
with probability ``beta`` per copy (or agent) and step: 1 is behaviour cloning, 0 on-policy
distillation, in between DAgger. A :class:`StepAdapter` holds what differs between setups
(padding and tokens, observation groups and sequences, team stacking and presence); a
:class:`Rollout` owns one task's env copies, adapter and seeded streams, so a task collects
the same rows in this process or in a Ray worker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from polydistill.buffer import FieldSpec
from polydistill.collect.replay import ReplayVectorEnv
from polydistill.errors import ConfigError, TeacherError, TrainingError
from polydistill.students.base import Student
from polydistill.teachers import ActionTarget, clip_action

__all__ = ["StepAdapter", "RowStore", "Rollout", "RolloutTask", "RolloutResult", "collect_together",
           "label_fields"]


def label_fields(action_kind: str, n_actions: int, with_distribution: bool) -> dict[str, FieldSpec]:
    """Buffer fields of the teacher's labels: ``action`` (+ ``mean``/``log_std`` or ``logits``)."""
    vec = FieldSpec((n_actions,), "float32")
    if action_kind == "discrete":
        return {"action": FieldSpec((), "int64"), **({"logits": vec} if with_distribution else {})}
    return {"action": vec, **({"mean": vec, "log_std": vec} if with_distribution else {})}


class RowStore:
    """The rows one task collects in one round: preallocated arrays that grow when needed."""

    def __init__(self, fields: dict[str, FieldSpec], capacity: int) -> None:
        self.arrays = {k: np.zeros((max(1, capacity), *f.shape), f.dtype) for k, f in fields.items()}
        self.n = 0
        self.norm: list[np.ndarray] = []
        """Raw observations for the student's normalizer, one array per step."""

    def take(self, k: int) -> slice:
        """The next ``k`` rows (zero-filled), growing the arrays if they are full."""
        need = self.n + k
        cap = len(next(iter(self.arrays.values())))
        if need > cap:
            for key, a in self.arrays.items():
                grown = np.zeros((max(need, 2 * cap), *a.shape[1:]), a.dtype)
                grown[: self.n] = a[: self.n]
                self.arrays[key] = grown
        sl = slice(self.n, need)
        self.n = need
        return sl

    def add(self, rows: dict[str, np.ndarray]) -> None:
        """Append whole rows."""
        sl = self.take(len(next(iter(rows.values()))))
        for k, v in rows.items():
            self.arrays[k][sl] = v


class StepAdapter(ABC):
    """What one setup does differently in a vector step of one task (see the module docstring)."""

    name: str
    """Task name (error messages, metric keys)."""
    fields: dict[str, FieldSpec]
    """Layout of a buffer row."""
    action_space: gym.spaces.Space
    """Action space of one actor (for the teacher's sampled actions)."""
    always_act: bool = False
    """The student acts on every step even when the teacher surely acts (a recurrent student
    must advance its state)."""

    @abstractmethod
    def make_envs(self, n_envs: int, seed: int) -> ReplayVectorEnv:
        """The task's replayable env copies, seeded with ``seed``."""

    @abstractmethod
    def label(self, obs: Any) -> ActionTarget:
        """The teacher's targets for every copy's observation."""

    @abstractmethod
    def act(self, student: Student, obs: Any, deterministic: bool, generator: torch.Generator) -> np.ndarray:
        """The student's env actions for every copy."""

    @abstractmethod
    def record(self, out: RowStore, obs: Any, target: ActionTarget, use_teacher: np.ndarray | None,
               remaining: int) -> tuple[int, int]:
        """Store the step's rows (at most ``remaining`` labelled steps where a setup counts exactly).

        Returns:
            Labelled steps added and how many of them the teacher acted on.
        """

    def mix_shape(self, teacher_action: np.ndarray) -> tuple[int, ...]:
        """Shape of the teacher-or-student draw: one per copy (CAML: one per agent)."""
        return teacher_action.shape[:1]

    def check_obs(self, obs: Any) -> None:
        """Refuse non-finite observations before they reach the teacher or the buffer.

        Raises:
            TrainingError: naming the task.
        """
        for x in obs.values() if isinstance(obs, dict) else [obs]:
            if np.asarray(x).dtype.kind == "f" and not np.isfinite(x).all():
                raise TrainingError(f"env of task {self.name!r} returned a non-finite observation")

    def after_step(self, done: np.ndarray, action: np.ndarray | None = None) -> None:  # noqa: B027
        """Hook (most setups need nothing): every copy executed ``action``; those in ``done`` started anew."""

    def state_dict(self) -> dict[str, Any]:
        """Collection state beyond the env copies (e.g. a recurrent student's hidden state)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (a hook, like after_step)
        """Inverse of :meth:`state_dict`."""


@dataclass
class RolloutTask:
    """One task to collect: what the buffer calls it and how to build its adapter.

    ``adapter`` is called where the rollout lives (this process or a Ray worker), so it must
    be picklable by cloudpickle (closures are).
    """

    name: str
    task_id: int
    """Buffer partition."""
    emb_id: int
    """Embodiment whose normalizer statistics the task's observations update."""
    adapter: Callable[[], StepAdapter]
    seeds: tuple[int, int, int]
    """Seeds of the task's streams: mixing draws, student noise, env resets."""


@dataclass
class _Pass:
    """One task's progress through one round."""

    out: RowStore
    steps: int
    labelled: int = 0
    teacher_steps: int = 0
    returns: list[float] = field(default_factory=list)
    action: Any = None


@dataclass
class RolloutResult:
    """What one task collected in one round (contiguous arrays)."""

    rows: dict[str, np.ndarray]
    """Buffer rows, in collection order."""
    norm_obs: np.ndarray
    """Raw observations of those steps, for the student's normalizer."""
    labelled: int
    """Labelled steps (agent-steps for teams, steps for sequences)."""
    teacher_steps: int
    """Of those, the steps on which the teacher's action was executed."""
    returns: list[float]
    """Returns of the episodes that ended in this round."""
    record: dict[str, np.ndarray] | None = None
    """The round's steps as the dataset recorder keeps them (``record_dataset`` runs only;
    :class:`~polydistill.datasets.recorder.RoundRecorder`)."""


class Rollout:
    """One task's env copies, adapter and random streams; collects its share of every round.

    Everything random in a task's collection (mixing, student noise, env resets) comes from
    streams seeded by the task's own seeds. With ``record`` every vector step is also kept for
    the run's dataset (:mod:`polydistill.datasets.recorder`); recording draws no randomness.
    """

    def __init__(self, task: RolloutTask, n_envs: int, student_action: str = "mean",
                 teacher_action: str = "mean", record: bool = False) -> None:
        self.task = task
        self.adapter = task.adapter()
        self.student_action, self.teacher_action = student_action, teacher_action
        mix_seed, noise_seed, env_seed = task.seeds
        self.rng = np.random.default_rng(mix_seed)
        self.torch_gen = torch.Generator().manual_seed(noise_seed)
        self.venv = self.adapter.make_envs(n_envs, env_seed)
        self.venv.reset()
        self.ep_ret = np.zeros(n_envs)
        self.recorder = None
        if record:
            from polydistill.datasets.recorder import RoundRecorder

            self.recorder = RoundRecorder(n_envs)

    def _check(self, tgt: ActionTarget) -> None:
        for field_name in ("action", "mean", "log_std", "logits"):
            v = getattr(tgt, field_name)
            if v is not None and not np.isfinite(v).all():
                raise TeacherError(f"teacher of task {self.task.name!r} produced non-finite {field_name}")

    def _teacher_behaviour(self, tgt: ActionTarget) -> np.ndarray:
        if self.teacher_action == "sample" and tgt.kind == "gaussian":
            assert tgt.mean is not None and tgt.log_std is not None
            a = tgt.mean + np.exp(tgt.log_std) * self.rng.standard_normal(tgt.mean.shape)
            return clip_action(self.adapter.action_space, a)
        return tgt.action

    def collect(self, student: Student, steps: int, beta: float) -> RolloutResult:
        """Collect ``steps`` labelled steps; the teacher acts with probability ``beta``.

        A setup that stores whole team steps or sequences may collect a few more.
        """
        name = self.task.name
        return collect_together({name: self}, student, {name: steps}, beta)[name]

    def _start(self, steps: int) -> _Pass:
        if self.recorder is not None:
            self.recorder.begin()
        return _Pass(RowStore(self.adapter.fields, steps), steps)

    def _decide(self, student: Student, p: _Pass, beta: float) -> None:
        """Label the current observations, choose who acts, store the rows (no env step yet)."""
        ad = self.adapter
        obs = self.venv.obs
        ad.check_obs(obs)
        tgt = ad.label(obs)
        self._check(tgt)
        action = t_act = self._teacher_behaviour(tgt)
        use_t = None
        if beta < 1.0 or ad.always_act:
            s_act = ad.act(student, obs, self.student_action == "mean", self.torch_gen)
            use_t = self.rng.random(ad.mix_shape(t_act)) < beta
            action = np.where(use_t.reshape(use_t.shape + (1,) * (t_act.ndim - use_t.ndim)), t_act, s_act)
        if not np.all(np.isfinite(action)):
            raise TrainingError(f"non-finite action in task {self.task.name!r}; refusing to step")
        n, t = ad.record(p.out, obs, tgt, use_t, p.steps - p.labelled)
        p.labelled, p.teacher_steps, p.action = p.labelled + n, p.teacher_steps + t, action
        if self.recorder is not None:
            self.recorder.decide(obs, tgt, action, use_t, self.venv.seeds)

    def _advance(self, p: _Pass) -> None:
        """Step the env copies with the action :meth:`_decide` chose."""
        _, rew, term, trunc = self.venv.step(p.action)
        if self.recorder is not None:
            self.recorder.outcome(rew, term, trunc, self.venv.final_obs)
        done = term | trunc
        self.adapter.after_step(done, p.action)
        self.ep_ret += rew
        if done.any():
            p.returns.extend(self.ep_ret[done].tolist())
            self.ep_ret[done] = 0.0

    def _result(self, p: _Pass) -> RolloutResult:
        rows = {k: a[: p.out.n] for k, a in p.out.arrays.items()}
        norm = np.concatenate(p.out.norm) if p.out.norm else np.zeros((0, 0))
        record = self.recorder.finish(self.venv.obs) if self.recorder is not None else None
        return RolloutResult(rows, norm, p.labelled, p.teacher_steps, p.returns, record)

    def state_dict(self) -> dict[str, Any]:
        """RNG states, the env copies' replayable state, running returns and the adapter's state."""
        return {"rng": self.rng.bit_generator.state, "torch_gen": self.torch_gen.get_state(),
                "venv": self.venv.state_dict(), "ep_ret": self.ep_ret.copy(),
                "adapter": self.adapter.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (replays each env copy to its saved state)."""
        self.rng.bit_generator.state = state["rng"]
        self.torch_gen.set_state(state["torch_gen"])
        self.venv.load_state_dict(state["venv"])
        self.ep_ret = np.asarray(state["ep_ret"], dtype=np.float64).copy()
        self.adapter.load_state_dict(state["adapter"])

    def close(self) -> None:
        """Close the env copies."""
        self.venv.close()


@torch.inference_mode()
def collect_together(rollouts: dict[str, Rollout], student: Student, steps: dict[str, int],
                     beta: float) -> dict[str, RolloutResult]:
    """Collect ``steps[name]`` labelled steps of ``rollouts[name]``, all tasks advancing in lockstep.

    Each step first labels and acts for every unfinished task, then steps every task's env
    copies. A task's rows are the same as when it collects alone (its calls, streams and env
    copies are its own; only the order across tasks changes), so any grouping of tasks, in
    one process or over Ray workers, fills the buffer identically. The grouping is for
    speed: with one student call per task between two env steps, MuJoCo's memory traffic
    evicted the student's weights before every call; measured with 50 Meta-World tasks,
    back-to-back calls cut the student's share of collection by about half
    (``scripts/benchmark.py perf``, task growth).

    If one task's teacher, student or env raises, the round is lost: tasks before it in the
    step have already labelled (and drawn from their streams) without stepping, so do not
    checkpoint a collector after an exception from here.

    Raises:
        ConfigError: for a step count per rollout missing or negative, or beta outside [0, 1].
    """
    if set(steps) != set(rollouts) or any(int(s) < 0 for s in steps.values()):
        raise ConfigError(f"need one step count per rollout, each >= 0; got {dict(steps)} for "
                          f"rollouts {sorted(rollouts)}")
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(f"beta must be in [0, 1], got {beta}")
    student.eval()
    passes = {n: r._start(int(steps[n])) for n, r in rollouts.items()}
    active = [n for n, p in passes.items() if p.labelled < p.steps]
    while active:
        for n in active:
            rollouts[n]._decide(student, passes[n], beta)
        for n in active:
            rollouts[n]._advance(passes[n])
        active = [n for n in active if passes[n].labelled < passes[n].steps]
    return {n: rollouts[n]._result(p) for n, p in passes.items()}
