"""Vectorized collection: a teacher / student / beta-mixed behaviour policy, teacher-labelled.

Every visited state is labelled by its task's teacher (one batched forward pass per vector
step), whatever policy chose the action that was executed. With ``beta = 1`` the teacher acts
(behaviour cloning data), with ``beta = 0`` the student acts (on-policy distillation as in
rsl_rl), and in between each env picks the teacher with probability ``beta`` at each step
(DAgger).
"""

from __future__ import annotations

import time
from collections import deque
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


class _Runtime:
    def __init__(self, task: CollectTask, n_envs: int, seed: int) -> None:
        self.task = task
        make_env(task.env_id, task.env_kwargs).close()  # validates id and kwargs with a clear error
        self.venv = ReplayVectorEnv(
            [lambda: make_env(task.env_id, task.env_kwargs) for _ in range(n_envs)], seed=seed)
        self.obs = self.venv.reset()
        self.ep_ret = np.zeros(n_envs)
        self.ep_len = np.zeros(n_envs, dtype=np.int64)
        self.returns: deque[float] = deque(maxlen=100)

    def state_dict(self) -> dict[str, Any]:
        return {"venv": self.venv.state_dict(), "ep_ret": self.ep_ret.copy(),
                "ep_len": self.ep_len.copy(), "returns": list(self.returns)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.venv.load_state_dict(state["venv"])
        self.obs = self.venv.obs
        self.ep_ret = np.asarray(state["ep_ret"], dtype=np.float64).copy()
        self.ep_len = np.asarray(state["ep_len"], dtype=np.int64).copy()
        self.returns = deque(state["returns"], maxlen=100)


class Collector:
    """Runs behaviour policies in vector envs and writes teacher-labelled rows to a buffer."""

    def __init__(
        self,
        tasks: list[CollectTask],
        student: GeneralistStudent,
        n_envs: int = 8,
        seed: int = 0,
        student_action: Literal["mean", "sample"] = "mean",
        teacher_action: Literal["mean", "sample"] = "mean",
    ) -> None:
        if not tasks:
            raise ConfigError("a collector needs at least one task")
        self.student = student
        self.table = student.table
        self.student_action = student_action
        self.teacher_action = teacher_action
        mix_seed, noise_seed, env_seed = spawn_seeds(seed, 3)
        self.rng = np.random.default_rng(mix_seed)
        self.torch_gen = torch.Generator().manual_seed(noise_seed)
        self.runtimes = [_Runtime(t, n_envs, env_seed + 1000 * i) for i, t in enumerate(tasks)]
        self.n_envs = n_envs
        self.total_steps = 0

    def close(self) -> None:
        """Close every env."""
        for rt in self.runtimes:
            rt.venv.close()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to collect exactly what this one would.

        That is: RNG states, the step count, and each env copy's replayable state (no
        simulator pickling).
        """
        return {"rng": self.rng.bit_generator.state, "torch_gen": self.torch_gen.get_state(),
                "total_steps": self.total_steps,
                "tasks": {rt.task.name: rt.state_dict() for rt in self.runtimes}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (replays each env copy to its saved state).

        Raises:
            CheckpointError: if the saved tasks differ or an env does not replay identically.
        """
        saved = set(state["tasks"])
        mine = {rt.task.name for rt in self.runtimes}
        if saved != mine:
            raise CheckpointError(f"run state holds tasks {sorted(saved)}, this run has {sorted(mine)}")
        self.rng.bit_generator.state = state["rng"]
        self.torch_gen.set_state(state["torch_gen"])
        self.total_steps = int(state["total_steps"])
        for rt in self.runtimes:
            rt.load_state_dict(state["tasks"][rt.task.name])

    def _write(self, buffer: DistillationBuffer, rt: _Runtime, padded: np.ndarray,
               tgt: ActionTarget, n: int) -> None:
        """Write the first ``n`` rows of a vector step."""
        e = rt.task.emb_id
        padded = padded[:n]
        a = self.table.max_action_dim
        rows: dict[str, np.ndarray] = {
            "obs": padded,
            "emb": np.full(n, e, dtype=np.int64),
            "mask": np.broadcast_to(self.table.action_mask[e], (n, a)),
        }
        def first(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else x[:n]

        if self.table.action_kind == "discrete":
            rows["action"] = np.asarray(tgt.action, dtype=np.int64)[:n]
            if "logits" in buffer.fields:
                rows["logits"] = self._pad(first(tgt.logits), n, a, fill=-1e9)
        else:
            rows["action"] = self._pad(first(tgt.action), n, a)
            if "mean" in buffer.fields:
                rows["mean"] = self._pad(first(tgt.mean), n, a)
                rows["log_std"] = self._pad(first(tgt.log_std), n, a)
        buffer.add(rt.task.task_id, rows)

    @staticmethod
    def _pad(x: np.ndarray | None, n: int, a: int, fill: float = 0.0) -> np.ndarray:
        out = np.full((n, a), fill, dtype=np.float32)
        if x is None:
            raise TeacherError("teacher gave no distribution but the buffer stores one")
        out[:, : x.shape[1]] = x
        return out

    @torch.inference_mode()
    def collect(self, steps_per_task: int | list[int], beta: float,
                buffer: DistillationBuffer) -> dict[str, float]:
        """Collect exactly ``steps_per_task`` labelled steps per task; the teacher acts w.p. ``beta``.

        ``steps_per_task`` is one count for every task or a list with one per task. The
        student's observation statistics are updated with the round's observations after the
        round (so acting within a round uses fixed statistics).

        Returns:
            Metrics: ``collect/steps_per_s``, ``collect/teacher_frac``, and
            ``rollout/ep_return/<task>``: the mean return of the episodes that ended during this
            round, under this round's behaviour policy.
        """
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"beta must be in [0, 1], got {beta}")
        n = self.n_envs
        quota = (list(steps_per_task) if isinstance(steps_per_task, list | tuple)
                 else [int(steps_per_task)] * len(self.runtimes))
        if len(quota) != len(self.runtimes) or min(quota) < 0:
            raise ConfigError(f"need one non-negative step count per task, got {quota}")
        written = [0] * len(self.runtimes)
        seen_obs: list[list[np.ndarray]] = [[] for _ in self.runtimes]
        for rt in self.runtimes:
            rt.returns.clear()
        teacher_steps = 0
        t0 = time.perf_counter()
        emb = torch.as_tensor(np.repeat([rt.task.emb_id for rt in self.runtimes], n))
        vsteps = max(-(-q // n) for q in quota)  # ceil
        for _ in range(vsteps):
            padded = [self.table.pad_obs(rt.obs, rt.task.emb_id) for rt in self.runtimes]
            if beta < 1.0:
                s_act = self.student.act(
                    torch.as_tensor(np.concatenate(padded)), emb,
                    deterministic=self.student_action == "mean", generator=self.torch_gen,
                ).numpy()
            for i, rt in enumerate(self.runtimes):
                k = min(n, quota[i] - written[i])
                if k <= 0:
                    continue
                if not np.all(np.isfinite(rt.obs)):
                    raise TrainingError(f"env of task {rt.task.name!r} returned a non-finite observation")
                tgt = rt.task.teacher.action_dist(rt.obs)
                for field_name in ("action", "mean", "log_std", "logits"):
                    v = getattr(tgt, field_name)
                    if v is not None and not np.all(np.isfinite(v)):
                        raise TeacherError(
                            f"teacher of task {rt.task.name!r} produced non-finite {field_name}"
                        )
                self._write(buffer, rt, padded[i], tgt, k)
                written[i] += k
                seen_obs[i].append(rt.obs[:k])
                t_act = self._teacher_behaviour(rt, tgt)
                if beta >= 1.0:
                    action = t_act
                    teacher_steps += k
                else:
                    mine = self.table.unpad_action(s_act[i * n:(i + 1) * n], rt.task.emb_id)
                    use_t = self.rng.random(n) < beta
                    teacher_steps += int(use_t[:k].sum())
                    if mine.ndim == 1:
                        action = np.where(use_t, t_act, mine)
                    else:
                        action = np.where(use_t[:, None], t_act, mine)
                if not np.all(np.isfinite(action)):
                    raise TrainingError(f"non-finite action in task {rt.task.name!r}; refusing to step")
                rt.obs, rew, term, trunc = rt.venv.step(action)
                rt.ep_ret += rew
                rt.ep_len += 1
                done = term | trunc
                if done.any():
                    rt.returns.extend(rt.ep_ret[done].tolist())
                    rt.ep_ret[done] = 0.0
                    rt.ep_len[done] = 0
        for i, rt in enumerate(self.runtimes):
            if seen_obs[i]:
                self.student.update_normalizer(np.concatenate(seen_obs[i]), rt.task.emb_id)
        steps = sum(written)
        self.total_steps += steps
        dt = time.perf_counter() - t0
        metrics = {"collect/steps_per_s": steps / dt,
                   "collect/teacher_frac": teacher_steps / max(steps, 1),
                   "collect/beta": beta, "collect/steps": float(steps)}
        for rt in self.runtimes:
            if rt.returns:
                metrics[f"rollout/ep_return/{rt.task.name}"] = float(np.mean(rt.returns))
        return metrics

    def _teacher_behaviour(self, rt: _Runtime, tgt: ActionTarget) -> np.ndarray:
        if self.teacher_action == "sample" and tgt.kind == "gaussian":
            assert tgt.mean is not None and tgt.log_std is not None
            a = tgt.mean + np.exp(tgt.log_std) * self.rng.standard_normal(tgt.mean.shape)
            return clip_action(rt.task.teacher.action_space, a)
        return tgt.action
