"""The collector: every task's :class:`~polydistill.collect.rollout.Rollout`, here or in Ray workers.

With ``workers == 0`` every task's rollout lives in this process; with ``workers > 0`` they
are spread round-robin over that many Ray actors (:class:`polydistill.collect.ray.RolloutPool`),
which receive the student's weights at the start of every round and return their rows. Both
paths run the same :meth:`Rollout.collect` with the same per-task seeds, so for a fixed seed
they fill the buffer with the same rows.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from polydistill.buffer import DistillationBuffer
from polydistill.collect.rollout import Rollout, RolloutTask, collect_together
from polydistill.errors import CheckpointError, ConfigError
from polydistill.students.base import Student

__all__ = ["Collector"]


class Collector:
    """Runs every task's rollouts and writes their teacher-labelled rows to a buffer.

    Args:
        tasks: The tasks to collect.
        student: The student that acts when beta < 1 (weights broadcast to Ray workers).
        n_envs: Env copies per task.
        student_action: ``mean`` or ``sample`` when the student acts.
        teacher_action: ``mean`` or ``sample`` when the teacher acts.
        workers: Ray rollout actors (0: collect in this process).
        ray_address: Ray cluster to join (default: ``RAY_ADDRESS``, else a local one).
        record: Also keep every vector step for the run's dataset: after each
            :meth:`collect`, :attr:`records` holds the round's steps by task index.
    """

    def __init__(self, tasks: list[RolloutTask], student: Student, n_envs: int = 8,
                 student_action: str = "mean", teacher_action: str = "mean", workers: int = 0,
                 ray_address: str | None = None, record: bool = False) -> None:
        if not tasks:
            raise ConfigError("a collector needs at least one task")
        if workers < 0:
            raise ConfigError(f"workers must be >= 0, got {workers}")
        self.student = student
        self.tasks = list(tasks)
        self.total_steps = 0
        self.records: dict[int, dict[str, np.ndarray]] = {}
        """The latest round's recorded steps by task index (``record`` only)."""
        args: dict[str, Any] = dict(n_envs=n_envs, student_action=student_action,
                                    teacher_action=teacher_action, record=record)
        self.pool = None
        self.rollouts: dict[str, Rollout] = {}
        if workers:
            from polydistill.collect.ray import RolloutPool

            self.pool = RolloutPool(self.tasks, student, workers, ray_address, **args)
        else:
            try:
                for t in self.tasks:
                    self.rollouts[t.name] = Rollout(t, **args)
            except BaseException:
                self.close()  # the copies already built
                raise

    def close(self) -> None:
        """Close every env (and the Ray workers)."""
        for r in self.rollouts.values():
            r.close()
        if self.pool is not None:
            self.pool.close()

    def state_dict(self) -> dict[str, Any]:
        """The step count and each task's replayable state (no simulator pickling)."""
        tasks = (self.pool.state_dict() if self.pool is not None
                 else {n: r.state_dict() for n, r in self.rollouts.items()})
        return {"total_steps": self.total_steps, "tasks": tasks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (replays each env copy to its saved state).

        Raises:
            CheckpointError: if the saved tasks differ or an env does not replay identically.
        """
        saved, mine = set(state["tasks"]), {t.name for t in self.tasks}
        if saved != mine:
            raise CheckpointError(f"run state holds tasks {sorted(saved)}, this run has {sorted(mine)}")
        self.total_steps = int(state["total_steps"])
        if self.pool is not None:
            self.pool.load_state_dict(state["tasks"])
        else:
            for n, r in self.rollouts.items():
                r.load_state_dict(state["tasks"][n])

    def collect(self, steps_per_task: int | list[int], beta: float,
                buffer: DistillationBuffer) -> dict[str, float]:
        """Collect ``steps_per_task[i]`` labelled steps of task ``i``; the teacher acts w.p. ``beta``.

        One count instead of a list collects that many for every task.

        Rows are written task by task, in task order; the student's observation statistics are
        updated with the round's observations after the round (acting within a round uses
        fixed statistics).

        Returns:
            Metrics: ``collect/steps_per_s``, ``collect/teacher_frac``, ``collect/beta``,
            ``collect/steps`` and ``rollout/ep_return/<task>``: the mean return of the episodes
            that ended during this round, under this round's behaviour policy.
        """
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"beta must be in [0, 1], got {beta}")
        quota = [steps_per_task] * len(self.tasks) if isinstance(steps_per_task,
                                                                 int) else list(steps_per_task)
        if len(quota) != len(self.tasks) or min(quota) < 0:
            raise ConfigError(f"need one non-negative step count per task, got {steps_per_task}")
        quotas = {t.name: int(q) for t, q in zip(self.tasks, quota, strict=True)}
        t0 = time.perf_counter()
        if self.pool is not None:
            results = self.pool.collect(quotas, beta)
        else:
            results = collect_together(self.rollouts, self.student, quotas, beta)
        dt = time.perf_counter() - t0
        labelled = teacher_steps = 0
        metrics: dict[str, float] = {}
        self.records = {}
        for t in self.tasks:
            res = results[t.name]
            if res.record is not None:
                self.records[t.task_id] = res.record
            buffer.add(t.task_id, res.rows)
            if len(res.norm_obs):
                self.student.update_normalizer(res.norm_obs, t.emb_id)
            labelled, teacher_steps = labelled + res.labelled, teacher_steps + res.teacher_steps
            if res.returns:
                metrics[f"rollout/ep_return/{t.name}"] = float(np.mean(res.returns))
        self.total_steps += labelled
        frac = teacher_steps / max(labelled, 1)
        return {"collect/steps_per_s": labelled / dt, "collect/teacher_frac": frac, "collect/beta": beta,
                "collect/steps": float(labelled), **metrics}
