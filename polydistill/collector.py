"""Vectorized collection: a teacher / student / beta-mixed behaviour policy, teacher-labelled.

Every visited state is labelled by its task's teacher (one batched forward pass per vector
step), whatever policy chose the action that was executed. With ``beta = 1`` the teacher acts
(behaviour cloning data), with ``beta = 0`` the student acts (on-policy distillation as in
rsl_rl), and in between each env picks the teacher with probability ``beta`` at each step
(DAgger).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from polydistill.buffer import DistillationBuffer, FieldSpec
from polydistill.embodiment import EmbodimentTable
from polydistill.errors import CheckpointError, ConfigError, TeacherError, TrainingError
from polydistill.evaluation import make_env
from polydistill.student import GeneralistStudent
from polydistill.teacher import ActionTarget, Teacher, clip_action
from polydistill.utils import spawn_seeds
from polydistill.vec_env import ReplayVectorEnv

__all__ = ["BetaSchedule", "CollectTask", "Collector", "buffer_fields"]


@dataclass(frozen=True)
class BetaSchedule:
    """Probability that the teacher (not the student) acts, per collection round."""

    kind: Literal["constant", "linear", "exponential"] = "exponential"
    """``constant``: always ``start``; ``linear``: ``start`` to ``end`` over ``rounds``;
    ``exponential``: ``start * decay**round``, floored at ``end``."""
    start: float = 1.0
    """Beta of round 0."""
    end: float = 0.0
    """Final / minimum beta."""
    decay: float = 0.5
    """Per-round factor of the exponential schedule."""
    rounds: int | None = None
    """Rounds of the linear ramp (default: all the run's rounds)."""

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "linear", "exponential"):
            raise ConfigError(
                f"BetaSchedule.kind: unknown {self.kind!r}; valid: constant, linear, exponential"
            )
        for name in ("start", "end", "decay"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"BetaSchedule.{name} must be in [0, 1], got {v}")
        if self.rounds is not None and self.rounds < 1:
            raise ConfigError(f"BetaSchedule.rounds must be >= 1, got {self.rounds}")

    def value(self, round_idx: int, total_rounds: int | None = None) -> float:
        """Beta of round ``round_idx`` (0-based) of a run of ``total_rounds`` rounds."""
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            ramp = self.rounds or max(1, (total_rounds or 2) - 1)
            frac = min(1.0, round_idx / ramp)
            return self.start + (self.end - self.start) * frac
        return max(self.end, self.start * self.decay**round_idx)


@dataclass
class CollectTask:
    """One task being collected: its env copies, its teacher and its place in the table."""

    name: str
    env_id: str
    teacher: Teacher
    emb_id: int
    task_id: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)


def buffer_fields(table: EmbodimentTable, with_distribution: bool) -> dict[str, FieldSpec]:
    """Fields the collector writes for students of ``table``."""
    a = table.max_action_dim
    fields = {
        "obs": FieldSpec((table.max_obs_dim,), "float32"),
        "emb": FieldSpec((), "int64"),
        "mask": FieldSpec((a,), "bool"),
    }
    if table.action_kind == "discrete":
        fields["action"] = FieldSpec((), "int64")
        if with_distribution:
            fields["logits"] = FieldSpec((a,), "float32")
    else:
        fields["action"] = FieldSpec((a,), "float32")
        if with_distribution:
            fields["mean"] = FieldSpec((a,), "float32")
            fields["log_std"] = FieldSpec((a,), "float32")
    return fields


@dataclass
class TaskRollout:
    """What one task collected in one round (preallocated, contiguous arrays)."""

    rows: dict[str, np.ndarray]
    """Buffer rows, one per labelled step, in collection order."""
    raw_obs: np.ndarray
    """The unpadded observations of those steps (for the student's normalizer)."""
    teacher_steps: int
    """Steps on which the teacher's action was executed."""
    returns: list[float]
    """Returns of the episodes that ended in this round."""


class TaskRunner:
    """One task's env copies, teacher and RNG streams; collects its share of every round.

    Everything random in a task's collection (mixing, student noise, env resets) comes from
    streams seeded by the task's own seed, so a task collects the same rows whether it runs
    in this process or in a Ray rollout worker beside other tasks.
    """

    def __init__(self, task: CollectTask, table: EmbodimentTable, fields: dict[str, FieldSpec],
                 n_envs: int, seed: int, student_action: str = "mean",
                 teacher_action: str = "mean") -> None:
        self.task = task
        self.table = table
        self.fields = fields
        self.n_envs = n_envs
        self.student_action = student_action
        self.teacher_action = teacher_action
        mix_seed, noise_seed, env_seed = spawn_seeds(seed, 3)
        self.rng = np.random.default_rng(mix_seed)
        self.torch_gen = torch.Generator().manual_seed(noise_seed)
        make_env(task.env_id, task.env_kwargs).close()  # validates id and kwargs with a clear error
        self.venv = ReplayVectorEnv(
            [lambda: make_env(task.env_id, task.env_kwargs) for _ in range(n_envs)], seed=env_seed)
        self.obs = self.venv.reset()
        self.ep_ret = np.zeros(n_envs)
        e = task.emb_id
        self._emb = torch.full((n_envs,), e, dtype=torch.long)
        self._act_dim = table.embodiments[e].action_dim
        self._obs_dim = table.embodiments[e].obs_dim

    def _alloc(self, steps: int) -> dict[str, np.ndarray]:
        rows = {k: np.zeros((steps, *f.shape), dtype=np.dtype(f.dtype)) for k, f in self.fields.items()}
        rows["emb"][:] = self.task.emb_id
        rows["mask"][:] = self.table.action_mask[self.task.emb_id]
        if "logits" in rows:
            rows["logits"][:] = -1e9
        return rows

    def _check_target(self, tgt: ActionTarget) -> None:
        for field_name in ("action", "mean", "log_std", "logits"):
            v = getattr(tgt, field_name)
            if v is not None and not np.isfinite(v).all():
                raise TeacherError(f"teacher of task {self.task.name!r} produced non-finite {field_name}")

    @torch.inference_mode()
    def collect(self, student: GeneralistStudent, steps: int, beta: float) -> TaskRollout:
        """Collect exactly ``steps`` labelled steps; the teacher acts with probability ``beta``.

        Per vector step: one batched teacher forward (labels), one batched student forward
        (when it may act), one step of every env copy; rows go straight into preallocated
        arrays.
        """
        n, a, name = self.n_envs, self._act_dim, self.task.name
        rows = self._alloc(steps)
        raw = np.zeros((steps, self._obs_dim), dtype=np.float64)
        discrete = self.table.action_kind == "discrete"
        teacher = self.task.teacher
        returns: list[float] = []
        teacher_steps = written = 0
        while written < steps:
            k = min(n, steps - written)
            obs = self.obs
            if not np.isfinite(obs).all():
                raise TrainingError(f"env of task {name!r} returned a non-finite observation")
            tgt = teacher.action_dist(obs)
            self._check_target(tgt)
            sl = slice(written, written + k)
            raw[sl] = obs[:k]
            rows["obs"][sl, : self._obs_dim] = obs[:k]
            if discrete:
                rows["action"][sl] = tgt.action[:k]
                if "logits" in rows:
                    if tgt.logits is None:
                        raise TeacherError("teacher gave no distribution but the buffer stores one")
                    rows["logits"][sl, : tgt.logits.shape[1]] = tgt.logits[:k]
            else:
                rows["action"][sl, :a] = tgt.action[:k]
                if "mean" in rows:
                    if tgt.mean is None or tgt.log_std is None:
                        raise TeacherError("teacher gave no distribution but the buffer stores one")
                    rows["mean"][sl, :a] = tgt.mean[:k]
                    rows["log_std"][sl, :a] = tgt.log_std[:k]
            t_act = self._teacher_behaviour(tgt)
            if beta >= 1.0:
                action = t_act
                teacher_steps += k
            else:
                padded = self.table.pad_obs(obs, self.task.emb_id)
                s_act = student.act(torch.from_numpy(padded), self._emb,
                                    deterministic=self.student_action == "mean",
                                    generator=self.torch_gen).numpy()
                mine = self.table.unpad_action(s_act, self.task.emb_id)
                use_t = self.rng.random(n) < beta
                teacher_steps += int(use_t[:k].sum())
                action = np.where(use_t if mine.ndim == 1 else use_t[:, None], t_act, mine)
            if not np.isfinite(action).all():
                raise TrainingError(f"non-finite action in task {name!r}; refusing to step")
            self.obs, rew, term, trunc = self.venv.step(action)
            self.ep_ret += rew
            done = term | trunc
            if done.any():
                returns.extend(self.ep_ret[done].tolist())
                self.ep_ret[done] = 0.0
            written += k
        return TaskRollout(rows, raw, teacher_steps, returns)

    def _teacher_behaviour(self, tgt: ActionTarget) -> np.ndarray:
        if self.teacher_action == "sample" and tgt.kind == "gaussian":
            assert tgt.mean is not None and tgt.log_std is not None
            a = tgt.mean + np.exp(tgt.log_std) * self.rng.standard_normal(tgt.mean.shape)
            return clip_action(self.task.teacher.action_space, a)
        return tgt.action

    def state_dict(self) -> dict[str, Any]:
        """RNG states, the env copies' replayable state and the running episode returns."""
        return {"rng": self.rng.bit_generator.state, "torch_gen": self.torch_gen.get_state(),
                "venv": self.venv.state_dict(), "ep_ret": self.ep_ret.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (replays each env copy to its saved state)."""
        self.rng.bit_generator.state = state["rng"]
        self.torch_gen.set_state(state["torch_gen"])
        self.venv.load_state_dict(state["venv"])
        self.obs = self.venv.obs
        self.ep_ret = np.asarray(state["ep_ret"], dtype=np.float64).copy()

    def close(self) -> None:
        """Close the env copies."""
        self.venv.close()


class Collector:
    """Runs behaviour policies in vector envs and writes teacher-labelled rows to a buffer.

    With ``workers == 0`` every task's :class:`TaskRunner` lives in this process; with
    ``workers > 0`` they are spread over that many Ray actors
    (:class:`polydistill.distributed.RolloutWorker`), which receive the student's weights at
    the start of every round and return their rows. Both paths run the same
    :meth:`TaskRunner.collect` with the same per-task seeds, so for a fixed seed they fill the
    buffer with the same rows.
    """

    def __init__(
        self,
        tasks: list[CollectTask],
        student: GeneralistStudent,
        n_envs: int = 8,
        seed: int = 0,
        student_action: Literal["mean", "sample"] = "mean",
        teacher_action: Literal["mean", "sample"] = "mean",
        with_distribution: bool = False,
        workers: int = 0,
        ray_address: str | None = None,
    ) -> None:
        """Build the runners (locally, or in ``workers`` Ray actors).

        Args:
            tasks: The tasks to collect.
            student: The student that acts when beta < 1 (weights broadcast to Ray workers).
            n_envs: Env copies per task.
            seed: Seed of every task's streams.
            student_action: ``mean`` or ``sample`` when the student acts.
            teacher_action: ``mean`` or ``sample`` when the teacher acts.
            with_distribution: Store the teacher's distribution (for KL-type losses).
            workers: Ray rollout actors (0: collect in this process).
            ray_address: Ray cluster to join (default: ``RAY_ADDRESS``, else a local one).
        """
        if not tasks:
            raise ConfigError("a collector needs at least one task")
        if workers < 0:
            raise ConfigError(f"workers must be >= 0, got {workers}")
        self.student = student
        self.table = student.table
        self.fields = buffer_fields(self.table, with_distribution)
        self.tasks = list(tasks)
        self.total_steps = 0
        seeds = spawn_seeds(seed, len(tasks))
        args = dict(table=self.table, fields=self.fields, n_envs=n_envs,
                    student_action=student_action, teacher_action=teacher_action)
        self.pool = None
        self.runners: dict[str, TaskRunner] = {}
        if workers:
            from polydistill.distributed import RolloutPool

            self.pool = RolloutPool(self.tasks, seeds, student, workers, ray_address, **args)
        else:
            self.runners = {t.name: TaskRunner(t, seed=s, **args) for t, s in zip(tasks, seeds, strict=True)}

    def close(self) -> None:
        """Close every env (and the Ray workers)."""
        for r in self.runners.values():
            r.close()
        if self.pool is not None:
            self.pool.close()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to collect exactly what this one would.

        That is: the step count and each task's RNG states and replayable env state (no
        simulator pickling).
        """
        tasks = (self.pool.state_dict() if self.pool is not None
                 else {n: r.state_dict() for n, r in self.runners.items()})
        return {"total_steps": self.total_steps, "tasks": tasks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (replays each env copy to its saved state).

        Raises:
            CheckpointError: if the saved tasks differ or an env does not replay identically.
        """
        saved = set(state["tasks"])
        mine = {t.name for t in self.tasks}
        if saved != mine:
            raise CheckpointError(f"run state holds tasks {sorted(saved)}, this run has {sorted(mine)}")
        self.total_steps = int(state["total_steps"])
        if self.pool is not None:
            self.pool.load_state_dict(state["tasks"])
        else:
            for n, r in self.runners.items():
                r.load_state_dict(state["tasks"][n])

    def collect(self, steps_per_task: int | list[int], beta: float,
                buffer: DistillationBuffer) -> dict[str, float]:
        """Collect exactly ``steps_per_task`` labelled steps per task; the teacher acts w.p. ``beta``.

        ``steps_per_task`` is one count for every task or a list with one per task. Rows are
        written task by task, in task order; the student's observation statistics are updated
        with the round's observations after the round (acting within a round uses fixed
        statistics).

        Returns:
            Metrics: ``collect/steps_per_s``, ``collect/teacher_frac``, and
            ``rollout/ep_return/<task>``: the mean return of the episodes that ended during this
            round, under this round's behaviour policy.
        """
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"beta must be in [0, 1], got {beta}")
        quota = (list(steps_per_task) if isinstance(steps_per_task, list | tuple)
                 else [int(steps_per_task)] * len(self.tasks))
        if len(quota) != len(self.tasks) or min(quota) < 0:
            raise ConfigError(f"need one non-negative step count per task, got {quota}")
        quotas = {t.name: q for t, q in zip(self.tasks, quota, strict=True)}
        t0 = time.perf_counter()
        if self.pool is not None:
            results = self.pool.collect(quotas, beta)
        else:
            results = {n: r.collect(self.student, quotas[n], beta) for n, r in self.runners.items()}
        dt = time.perf_counter() - t0
        teacher_steps = 0
        metrics: dict[str, float] = {}
        for t in self.tasks:
            res = results[t.name]
            buffer.add(t.task_id, res.rows)
            if len(res.raw_obs):
                self.student.update_normalizer(res.raw_obs, t.emb_id)
            teacher_steps += res.teacher_steps
            if res.returns:
                metrics[f"rollout/ep_return/{t.name}"] = float(np.mean(res.returns))
        steps = sum(quota)
        self.total_steps += steps
        return {"collect/steps_per_s": steps / dt, "collect/teacher_frac": teacher_steps / max(steps, 1),
                "collect/beta": beta, "collect/steps": float(steps), **metrics}
