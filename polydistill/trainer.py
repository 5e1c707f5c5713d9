"""The distillation runner: owns envs, collector, buffer, distiller, logger and checkpoints.

``DistillTrainer.learn()`` reads like the algorithm::

    for round in rounds:
        beta = schedule(round)
        collect(steps, beta)            # teacher / student / mixed behaviour, teacher labels
        repeat updates_per_round:
            distiller.update(buffer.sample(batch_size))
        log, evaluate, checkpoint
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from polydistill.buffer import BufferConfig, DistillationBuffer
from polydistill.checkpoint import save_student
from polydistill.collector import BetaSchedule, Collector, CollectTask, buffer_fields
from polydistill.config import to_dict
from polydistill.distiller import Distiller, DistillerConfig
from polydistill.embodiment import Embodiment, EmbodimentTable
from polydistill.errors import ConfigError, SpaceMismatchError
from polydistill.evaluation import evaluate, make_env
from polydistill.run_state import ResumableRun
from polydistill.student import GeneralistStudent, StudentConfig
from polydistill.teacher import Teacher, check_teacher_fits, load_teacher
from polydistill.utils import (
    agents_dir,
    seed_everything,
    split_evenly,
)

__all__ = ["TaskConfig", "DistillConfig", "DistillTrainer", "student_act_fn", "default_teachers_dir"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskConfig:
    """One task to distil: an env and the teacher that labels it."""

    name: str
    """Unique task name (report rows, metric keys)."""
    env_id: str
    """Gymnasium id."""
    teacher: str
    """Path of an SB3 zip, or of a folder holding ``model.zip`` (+ ``vecnormalize.pkl``)."""
    embodiment: str | None = None
    """Body type; tasks on one body share a student token. Defaults to ``env_id``."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra ``gymnasium.make`` arguments."""


@dataclass(frozen=True)
class DistillConfig:
    """A whole distillation run (every field can be set from a recipe or ``--set``)."""

    suite: str | None = "locomotion"
    """Distil the training split of this suite (ignored when ``tasks`` is given)."""
    teachers_dir: str | None = None
    """Folder with one ``<task>/model.zip`` per suite task (default: the shipped teachers)."""
    tasks: tuple[TaskConfig, ...] = ()
    """Explicit tasks; overrides ``suite``."""
    total_steps: int = 300_000
    """Environment steps of collection in total, over all tasks and rounds."""
    rounds: int = 10
    """Collection rounds (DAgger iterations)."""
    n_envs: int = 8
    """Env copies per task."""
    workers: int = 0
    """Ray rollout actors that collect the tasks (spread round-robin); 0 collects in this
    process. For a fixed seed both fill the buffer with the same rows."""
    ray_address: str | None = None
    """Ray cluster of the workers (default: ``RAY_ADDRESS``, else a new local instance)."""
    updates_per_step: float = 0.1
    """Gradient updates per collected env step."""
    beta: BetaSchedule = field(default_factory=BetaSchedule)
    """Teacher-acts probability per round (``constant`` 1.0 = behaviour cloning)."""
    student_action: Literal["mean", "sample"] = "mean"
    """How the student acts when it is the behaviour policy."""
    teacher_action: Literal["mean", "sample"] = "mean"
    """How the teacher acts when it is the behaviour policy (``sample`` injects its noise)."""
    student: StudentConfig = field(default_factory=StudentConfig)
    """Student architecture."""
    distiller: DistillerConfig = field(default_factory=DistillerConfig)
    """Loss and optimisation."""
    buffer: BufferConfig = field(default_factory=BufferConfig)
    """Distillation buffer."""
    eval_every: int = 0
    """Evaluate the student every this many rounds (0: only when asked)."""
    checkpoint_every: int = 1
    """Commit a resumable run state every this many rounds when the trainer has a
    ``run_dir`` (0: only at the end). ``distill --resume`` continues from the latest commit."""
    eval_episodes: int = 5
    """Episodes per task of the periodic evaluation."""
    seed: int = 0
    """Seed of everything (envs, sampling, initialisation)."""
    torch_threads: int = 1
    """torch intra-op threads (0: leave torch's default). Small MLPs run fastest on one thread
    and oversubscribed threads are 5-10x slower on a busy 2-core machine (measured)."""

    def __post_init__(self) -> None:
        if self.total_steps < 1 or self.rounds < 1 or self.n_envs < 1:
            raise ConfigError("total_steps, rounds and n_envs must all be >= 1")
        if self.updates_per_step < 0:
            raise ConfigError(f"updates_per_step must be >= 0, got {self.updates_per_step}")
        if self.student_action not in ("mean", "sample") or self.teacher_action not in ("mean", "sample"):
            raise ConfigError("student_action and teacher_action must be 'mean' or 'sample'")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.eval_every < 0 or self.eval_episodes < 1:
            raise ConfigError(
                f"need eval_every >= 0 and eval_episodes >= 1, got {self.eval_every}, {self.eval_episodes}"
            )


def default_teachers_dir() -> Path:
    """Folder of the teachers shipped with polydistill (``agents/teachers``)."""
    return agents_dir() / "teachers"


def resolve_tasks(config: DistillConfig) -> tuple[TaskConfig, ...]:
    """The explicit tasks, or the training split of ``config.suite`` with teachers on disk."""
    if config.tasks:
        return config.tasks
    if config.suite is None:
        raise ConfigError("DistillConfig needs either tasks or a suite")
    from polydistill.envs import get_suite

    root = Path(config.teachers_dir) if config.teachers_dir else default_teachers_dir()
    return tuple(
        TaskConfig(t.name, t.env_id, str(root / t.name), t.embodiment, dict(t.kwargs))
        for t in get_suite(config.suite) if t.split == "train"
    )


def student_act_fn(student: GeneralistStudent, emb_id: int) -> Any:
    """An ``act(obs_batch) -> env actions`` function of the student for one embodiment."""
    table = student.table

    @torch.inference_mode()
    def act(obs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(table.pad_obs(obs, emb_id))
        emb = torch.full((obs.shape[0],), emb_id, dtype=torch.long)
        return table.unpad_action(student.act(x, emb).numpy(), emb_id)

    return act


class DistillTrainer(ResumableRun):
    """Builds every component from a :class:`DistillConfig` and runs :meth:`learn`."""

    resume_may_differ = ("workers", "ray_address")  # where rows are collected does not change them

    def __init__(self, config: DistillConfig, log_dir: str | Path | None = None,
                 teachers: dict[str, Teacher] | None = None, progress_bar: bool = True,
                 run_dir: str | Path | None = None) -> None:
        """Build the run.

        Args:
            config: The run's configuration.
            log_dir: TensorBoard folder (none: no TensorBoard logging).
            teachers: Teachers by task name, overriding the paths in the config.
            progress_bar: Show a tqdm bar over rounds.
            run_dir: Folder of resumable run states (``run_dir/checkpoints``), committed every
                ``config.checkpoint_every`` rounds; see :meth:`resume`.
        """
        import polydistill.envs  # noqa: F401  (registers ids)

        self.config = config
        self.progress_bar = progress_bar
        self.checkpoint_dir = Path(run_dir) / "checkpoints" if run_dir is not None else None
        self.log_dir = log_dir
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        seed_everything(config.seed)
        self.tasks = resolve_tasks(config)
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"task names must be unique, got {names}")
        self.teachers: dict[str, Teacher] = {}
        embodiments: dict[str, Embodiment] = {}
        for t in self.tasks:
            env = make_env(t.env_id, t.env_kwargs)
            teacher = (teachers or {}).get(t.name) or load_teacher(t.teacher)
            check_teacher_fits(teacher, env.observation_space, env.action_space, f"task {t.name!r}")
            emb_name = t.embodiment or t.env_id
            emb = Embodiment.from_spaces(emb_name, env.observation_space, env.action_space)
            env.close()
            if emb_name in embodiments and embodiments[emb_name] != emb:
                raise SpaceMismatchError(
                    f"tasks of embodiment {emb_name!r} disagree on spaces: {embodiments[emb_name]} "
                    f"vs {emb}"
                )
            embodiments[emb_name] = emb
            self.teachers[t.name] = teacher
        self.table = EmbodimentTable(list(embodiments.values()))
        # Loading SB3 teachers re-seeds the global RNGs (SB3 set_random_seed): seed again so the
        # student's initial weights depend on config.seed alone.
        torch.manual_seed(config.seed)
        self.student = GeneralistStudent(self.table, config.student)
        self.distiller = Distiller(self.student, config.distiller)
        with_dist = self.distiller.loss.needs_distribution
        if config.student_action == "sample" and not with_dist:
            raise ConfigError(
                f"student_action='sample' needs a loss that trains the student's std; "
                f"{self.distiller.loss_name!r} does not (use forward_kl, taid, ...)"
            )
        if with_dist:
            self._check_teachers_have_distributions()
        self.buffer = DistillationBuffer(buffer_fields(self.table, with_dist), len(self.tasks),
                                         config.buffer, seed=config.seed)
        self.collector = Collector(
            [CollectTask(t.name, t.env_id, self.teachers[t.name],
                         self.table.id(t.embodiment or t.env_id), i, dict(t.env_kwargs))
             for i, t in enumerate(self.tasks)],
            self.student, n_envs=config.n_envs, seed=config.seed,
            student_action=config.student_action, teacher_action=config.teacher_action,
            with_distribution=with_dist, workers=config.workers, ray_address=config.ray_address,
        )
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))
            self.writer.add_text("config", f"```\n{to_dict(config)}\n```")
        self.round = 0
        self.history: list[dict[str, float]] = []
        self.elapsed_s = 0.0
        """Wall time of the completed rounds (carried over a resume)."""

    # ------------------------------------------------------------------ resumable state
    def state_dict(self) -> dict[str, Any]:
        """The whole run at a round boundary.

        That is: student, optimizer, buffer (rows, cursors, RNG), collector (RNGs, env action
        logs), global RNGs, history and config.
        """
        return {**self._core_state(), "elapsed_s": self.elapsed_s,
                "collector": self.collector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`.

        Raises:
            CheckpointError: if the state belongs to a run with another config or an env does
                not replay identically (:meth:`resume` also reports a damaged state as one).
        """
        self._load_core_state(state)
        self.collector.load_state_dict(state["collector"])
        self.elapsed_s = float(state["elapsed_s"])

    def _after_resume(self) -> None:
        """Reopen TensorBoard at the resumed step: events written after the commit are purged."""
        if self.writer is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer.close()
            self.writer = SummaryWriter(str(self.log_dir), purge_step=self.collector.total_steps + 1)
        log.info("resumed at round %d/%d (%d env steps)", self.round, self.config.rounds,
                 self.collector.total_steps)

    def _check_teachers_have_distributions(self) -> None:
        for t in self.tasks:
            env = make_env(t.env_id, t.env_kwargs)
            obs, _ = env.reset(seed=0)
            env.close()
            kind = self.teachers[t.name].action_dist(np.asarray(obs)[None]).kind
            if kind == "deterministic":
                raise ConfigError(
                    f"loss {self.distiller.loss_name!r} needs the teacher's action distribution, "
                    f"but the teacher of task {t.name!r} is deterministic; use a loss on actions "
                    "(mse or huber for continuous, categorical_ce for discrete actions)"
                )

    def quota(self, round_idx: int) -> list[int]:
        """Env steps each task collects in round ``round_idx``; they sum to ``total_steps``.

        Remainders go to the first rounds and tasks, so any two runs with the same
        ``total_steps`` collect exactly the same number of labelled steps.
        """
        cfg = self.config
        return split_evenly(split_evenly(cfg.total_steps, cfg.rounds)[round_idx], len(self.tasks))

    def updates_in_round(self, round_idx: int) -> int:
        """Gradient updates after round ``round_idx`` (``updates_per_step`` x its steps)."""
        return int(round(self.config.updates_per_step * sum(self.quota(round_idx))))

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in metrics.items():
                if np.isfinite(v):
                    self.writer.add_scalar(k, v, step)

    def evaluate(self, episodes: int | None = None, seed: int = 12345) -> dict[str, float]:
        """Mean return of the student on every task (``eval/return/<task>``)."""
        out = {}
        self.student.eval()
        for t in self.tasks:
            act = student_act_fn(self.student, self.table.id(t.embodiment or t.env_id))
            res = evaluate(t.env_id, act, n_episodes=episodes or self.config.eval_episodes,
                           seed=seed, env_kwargs=t.env_kwargs)
            out[f"eval/return/{t.name}"] = res.mean_return
        return out

    def learn(self, max_rounds: int | None = None) -> GeneralistStudent:
        """Run the remaining rounds (at most ``max_rounds`` of them); returns the student."""
        from tqdm.auto import tqdm

        cfg = self.config
        if cfg.total_steps < cfg.rounds * len(self.tasks):
            raise ConfigError(
                f"total_steps ({cfg.total_steps}) must be at least rounds x tasks "
                f"({cfg.rounds} x {len(self.tasks)})"
            )
        total_updates = max(1, sum(self.updates_in_round(r) for r in range(cfg.rounds)))
        bar = tqdm(total=cfg.rounds, initial=self.round, desc="distill", unit="round",
                   disable=not self.progress_bar)
        t_start = time.perf_counter() - self.elapsed_s
        self._start_or_continue()
        stop = cfg.rounds if max_rounds is None else min(cfg.rounds, self.round + max_rounds)
        while self.round < stop:
            beta = cfg.beta.value(self.round, cfg.rounds)
            metrics = self.collector.collect(self.quota(self.round), beta, self.buffer)
            env_steps = self.collector.total_steps
            metrics.update(self.distiller.train_round(
                self.buffer, self.updates_in_round(self.round), total_updates))
            metrics["distill/lr"] = self.distiller.optimizer.param_groups[0]["lr"]
            metrics["buffer/size"] = float(len(self.buffer))
            self.round += 1
            if cfg.eval_every and self.round % cfg.eval_every == 0:
                metrics.update(self.evaluate())
            self.elapsed_s = metrics["time/elapsed_s"] = time.perf_counter() - t_start
            self._log(metrics, env_steps)
            self.history.append({"round": float(self.round), "env_steps": float(env_steps), **metrics})
            bar.set_postfix(beta=f"{beta:.2f}", loss=f"{metrics.get('distill/loss', float('nan')):.4f}",
                            agree=f"{metrics.get('distill/teacher_agreement', float('nan')):.2f}")
            bar.update(1)
            log.debug("round %d: %s", self.round, metrics)
            every = cfg.checkpoint_every
            if self.round in (cfg.rounds, stop) or (every and self.round % every == 0):
                self.commit()
        bar.close()
        if self.writer is not None:
            self.writer.flush()
        return self.student

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Save the student checkpoint with the run's tasks and config in its metadata."""
        meta = {
            "tasks": [{"name": t.name, "env_id": t.env_id, "embodiment": t.embodiment or t.env_id,
                       "env_kwargs": dict(t.env_kwargs)} for t in self.tasks],
            "distill_config": to_dict(self.config),
            "env_steps": self.collector.total_steps,
            "updates": self.distiller.updates,
            **(extra or {}),
        }
        return save_student(path, self.student, meta)

    def close(self) -> None:
        """Close envs and the logger."""
        self.collector.close()
        if self.writer is not None:
            self.writer.close()
