"""A whole setup in one module: the "add a setup" example of docs/architecture.md.

One Gymnasium env (Pendulum), a scripted damping teacher, the generalist's step adapter and
student. Registering it makes ``polydistill distill --recipe toy.yaml`` (``setup: toy``),
``distill --resume``, ``evaluate`` and ``benchmark toy`` work with no change elsewhere.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polydistill.bench.stats import finish_report, interval_stats
from polydistill.buffer import BufferConfig, FieldSpec
from polydistill.collect.rollout import RolloutTask
from polydistill.distill.run import DaggerRun, RunConfig
from polydistill.evaluation.episodes import evaluate
from polydistill.evaluation.report import EvalOptions, TaskRow, ratio
from polydistill.setups import Setup, register_setup
from polydistill.setups.generalist import GeneralistAdapter, TaskConfig, generalist_fields
from polydistill.students import Embodiment, EmbodimentTable, GeneralistStudent
from polydistill.teachers import CallableTeacher
from polydistill.utils import make_env


@dataclass(frozen=True)
class ToyConfig(RunConfig):
    """A toy run: the shared fields, two of its own, and smaller defaults."""

    env_id: str = "Pendulum-v1"
    """A Gymnasium env with a flat observation whose third entry is an angular velocity."""
    gain: float = 1.0
    """The scripted teacher's damping gain: ``a = clip(-gain * obs[2])``."""
    total_steps: int = 1200
    rounds: int = 3
    n_envs: int = 2
    updates_per_step: float = 0.2
    buffer: BufferConfig = field(default_factory=lambda: BufferConfig(capacity=2000))


def damping(gain: float, obs: np.ndarray) -> np.ndarray:
    """The scripted teacher: brake the pendulum's swing."""
    return np.clip(-gain * obs[:, 2:3], -2.0, 2.0)


class ToyRun(DaggerRun):
    """DAgger from the damping teacher into a one-embodiment student."""

    Config = ToyConfig
    setup = "toy"
    config: ToyConfig

    def prepare(self) -> None:
        env = make_env(self.config.env_id)
        self.teacher = CallableTeacher(functools.partial(damping, self.config.gain), env.observation_space,
                                       env.action_space)
        self.table = EmbodimentTable([Embodiment.from_spaces("toy", env.observation_space, env.action_space)])
        env.close()

    def make_student(self) -> GeneralistStudent:
        return GeneralistStudent(self.table, self.config.student)

    def buffer_fields(self) -> dict[str, FieldSpec]:
        return generalist_fields(self.table, self.distiller.loss.needs_distribution)

    def rollout_tasks(self) -> list[RolloutTask]:
        task = TaskConfig("toy", self.config.env_id, teacher="scripted")
        make = functools.partial(GeneralistAdapter, task, self.teacher, self.table, 0, self.buffer_fields())
        return [RolloutTask("toy", 0, 0, make, self.task_seeds(1)[0])]

    def student_metadata(self) -> dict[str, Any]:
        return {"env_id": self.config.env_id, "gain": self.config.gain}

    @classmethod
    def evaluate_student(cls, student: Any, options: EvalOptions) -> list[TaskRow]:
        meta = student.metadata
        s = evaluate(meta["env_id"], student.predict, n_episodes=options.episodes, seed=options.seed)
        t = evaluate(meta["env_id"], functools.partial(damping, meta["gain"]), n_episodes=options.episodes,
                     seed=options.seed).mean_return if options.with_teacher else None
        return [TaskRow("toy", "train", "toy", t, s.mean_return, ratio(s.mean_return, t))]


def benchmark(options: Any) -> dict[str, Any]:
    """Student return per seed, with rliable's IQM and bootstrap CI."""
    returns = []
    for seed in range(options.seeds):
        run = ToyRun(ToyConfig(seed=seed), progress_bar=False)
        run.learn()
        run.close()
        returns.append(ToyRun.evaluate_student(run.deployed(), EvalOptions(episodes=options.episodes or 2,
                                                                           with_teacher=False))[0].student_return)
    stats = interval_stats(returns)
    return finish_report({"setup": "toy", "returns": returns, "stats": stats},
                         f"toy: IQM {stats['iqm']:.1f} over {options.seeds} seeds", options.out)


register_setup(Setup("toy", ToyRun, benchmark=benchmark))
