"""The run core: one DAgger round loop under every setup.

:meth:`DaggerRun.learn` reads like the algorithm::

    for round in rounds:
        beta = schedule(round)
        collector.collect(steps, beta, buffer)   # teacher labels every visited state
        distiller.train_round(buffer, updates)   # the student imitates the labels
        log to TensorBoard, evaluate every eval_every rounds, commit every checkpoint_every

A setup subclasses :class:`DaggerRun` and supplies what differs (its ``Config``, teachers,
student, buffer rows, rollout tasks, checkpoint metadata and evaluation). Threads, seeding,
Ray workers, TensorBoard, the progress bar, periodic evaluation and resumable commits are the
core's, so every setup has them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from polydistill.buffer import BufferConfig, DistillationBuffer, FieldSpec
from polydistill.collect.collector import Collector
from polydistill.collect.rollout import RolloutTask
from polydistill.config import from_dict, override, to_dict
from polydistill.deploy.checkpoint import DeployedStudent, save_student
from polydistill.distill.distiller import Distiller, DistillerConfig
from polydistill.distill.run_state import clear_run_state, latest_round, load_run_state, save_run_state
from polydistill.errors import CheckpointError, ConfigError, PolydistillError
from polydistill.evaluation.report import EvalOptions, TaskRow
from polydistill.students.base import Student, StudentConfig
from polydistill.utils import (
    global_rng_state,
    json_roundtrip,
    seed_everything,
    set_global_rng_state,
    spawn_seeds,
    split_evenly,
    split_weighted,
)
from polydistill.weights import check_weights

__all__ = ["BetaSchedule", "RunConfig", "DaggerRun", "check_same_config"]

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RunConfig:
    """What every DAgger run shares (setups subclass it and add their own fields)."""

    total_steps: int = 300_000
    """Labelled steps of collection in total, over all tasks and rounds (agent-steps for teams)."""
    rounds: int = 10
    """Collection rounds (DAgger iterations)."""
    n_envs: int = 8
    """Env copies per task."""
    updates_per_step: float = 0.1
    """Gradient updates per collected step."""
    beta: BetaSchedule = field(default_factory=BetaSchedule)
    """Teacher-acts probability per round (``constant`` 1.0 = behaviour cloning)."""
    student_action: Literal["mean", "sample"] = "mean"
    """How the student acts when it is the behaviour policy."""
    teacher_action: Literal["mean", "sample"] = "mean"
    """How the teacher acts when it is the behaviour policy (``sample`` injects its noise)."""
    student: StudentConfig = field(default_factory=StudentConfig)
    """Trunk and head of the student."""
    distiller: DistillerConfig = field(default_factory=DistillerConfig)
    """Loss and optimisation."""
    buffer: BufferConfig = field(default_factory=BufferConfig)
    """Distillation buffer."""
    workers: int = 0
    """Ray rollout actors that collect the tasks (spread round-robin; at most one per task); 0
    collects in this process. For a fixed seed both fill the buffer with the same rows."""
    ray_address: str | None = None
    """Ray cluster of the workers (default: ``RAY_ADDRESS``, else a new local instance)."""
    eval_every: int = 0
    """Evaluate the student every this many rounds (``eval/...`` scalars; 0: only when asked)."""
    eval_episodes: int = 5
    """Episodes per task of the periodic evaluation."""
    checkpoint_every: int = 1
    """Commit a resumable run state every this many rounds when the run has a ``run_dir``
    (0: only at the end). ``distill --resume`` continues from the latest commit."""
    seed: int = 0
    """Seed of everything (envs, sampling, initialisation)."""
    torch_threads: int = 1
    """torch intra-op threads (0: leave torch's default). Small networks run fastest on one
    thread and oversubscribed threads are 5-10x slower on a busy 2-core machine (measured)."""
    record_dataset: bool = field(default=False, metadata={"fingerprint": "if_set"})
    """Record every labelled step with its episode boundaries, rewards and the executed action
    under ``RUN/dataset/`` (one shard per round) for ``polydistill dataset export`` (Minari).
    Setups with flat observations only (generalist); needs a run folder."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        for key in ("total_steps", "rounds", "n_envs", "eval_episodes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{name}.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("updates_per_step", "workers", "eval_every", "checkpoint_every", "torch_threads"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{name}.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("student_action", "teacher_action"):
            if getattr(self, key) not in ("mean", "sample"):
                raise ConfigError(f"{name}.{key} must be 'mean' or 'sample', got {getattr(self, key)!r}")


def check_same_config(saved: Any, mine: Any, ignore: tuple[str, ...] = ()) -> None:
    """Refuse a run state written under another config (top-level keys in ``ignore`` may differ).

    Raises:
        CheckpointError: naming the keys that differ.
    """
    a, b = ({k: v for k, v in json_roundtrip(c or {}).items() if k not in ignore} for c in (saved, mine))
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise CheckpointError(f"run state was written by a run with another config (differs in {diff})")


class DaggerRun:
    """A DAgger distillation run (module docstring); setups subclass it.

    Args:
        config: The run's configuration (an instance of the setup's ``Config``).
        run_dir: Folder of resumable run states (``run_dir/checkpoints``), committed every
            ``config.checkpoint_every`` rounds; see :meth:`resume`.
        log_dir: TensorBoard folder (none: no TensorBoard logging).
        progress_bar: Show a tqdm bar over rounds.
    """

    Config: ClassVar[type[RunConfig]] = RunConfig
    setup: ClassVar[str] = ""
    """The setup's registry name (recorded in ``run.json`` and in the student's metadata)."""
    resume_may_differ: ClassVar[tuple[str, ...]] = ("workers", "ray_address")
    """Config keys a resumed run may change (where rows are collected does not change them)."""
    steps_per_row: int = 1
    """Labelled steps one buffer row holds (sequences hold several)."""
    single_stream: ClassVar[bool] = False
    """Seed the one task's streams from the run seed directly (else: one child seed per task)."""
    records_datasets: ClassVar[bool] = False
    """The setup supports ``record_dataset`` (flat observations; see :meth:`dataset_manifest`)."""

    def __init__(self, config: RunConfig, *, run_dir: str | Path | None = None,
                 log_dir: str | Path | None = None, progress_bar: bool = True) -> None:
        if not isinstance(config, self.Config):
            raise ConfigError(f"{type(self).__name__} needs a {self.Config.__name__}, "
                              f"got {type(config).__name__}")
        if config.record_dataset and not self.records_datasets:
            raise ConfigError(f"record_dataset: the {self.setup!r} setup does not record datasets "
                              "(supported: setups with flat observations, such as 'generalist')")
        if config.record_dataset and run_dir is None:
            raise ConfigError("record_dataset needs a run folder (run_dir) to write RUN/dataset into")
        self.config = config
        self.progress_bar = progress_bar
        self.checkpoint_dir = Path(run_dir) / "checkpoints" if run_dir is not None else None
        self.log_dir = log_dir
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        seed_everything(config.seed)
        self.prepare()
        # loading teachers (SB3's set_random_seed) may re-seed the global RNGs: seed again so
        # the student's initial weights depend on config.seed alone
        torch.manual_seed(config.seed)
        self.student = self.make_student()
        self.distiller = Distiller(self.student, self.distiller_config())
        if self.distiller.loss.needs_distribution:
            for task, kind in self.teacher_kinds().items():
                if kind == "deterministic":
                    raise ConfigError(
                        f"loss {self.distiller.loss_name!r} needs the teacher's action distribution, "
                        f"but the teacher of task {task!r} is deterministic; use a loss on actions "
                        "(mse or huber for continuous, categorical_ce for discrete actions)")
        elif config.student_action == "sample":
            raise ConfigError(f"student_action='sample' needs a loss that trains the student's std; "
                              f"{self.distiller.loss_name!r} does not (use forward_kl, taid, ...)")
        tasks = self.rollout_tasks()
        if config.total_steps < config.rounds * len(tasks):
            raise ConfigError(f"total_steps ({config.total_steps}) must be at least rounds x tasks "
                              f"({config.rounds} x {len(tasks)})")
        self.weights = self.task_weights()
        if self.weights is not None:
            # first the rounds (a task left with no steps says more than the buffer's rows would)
            check_weights(self.weights, len(tasks))
            for size in sorted(set(split_evenly(config.total_steps, config.rounds))):
                if min(split_weighted(size, self.weights)) < 1:
                    raise ConfigError(
                        f"total_steps ({config.total_steps}) gives a task of weight "
                        f"{min(self.weights):g} no steps in a round of {size}; raise total_steps or "
                        "the weight")
        self.buffer = DistillationBuffer(self.buffer_fields(), len(tasks), self.buffer_config(),
                                         seed=config.seed, weights=self.weights)
        self.recorder = None
        if config.record_dataset:
            from polydistill.datasets.recorder import DATASET_DIR, DatasetRecorder

            self.recorder = DatasetRecorder(Path(run_dir) / DATASET_DIR, {  # type: ignore[arg-type]
                "setup": self.setup, "n_envs": config.n_envs, "config": to_dict(config),
                **self.dataset_manifest()})
        self.collector = Collector(tasks, self.student, config.n_envs, config.student_action,
                                   config.teacher_action, config.workers, config.ray_address,
                                   record=config.record_dataset)
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            try:
                self.writer = SummaryWriter(str(log_dir))
            except BaseException:
                self.collector.close()
                raise
            self.writer.add_text("config", f"```\n{to_dict(config)}\n```")
        self.round = 0
        self.history: list[dict[str, float]] = []
        self.elapsed_s = 0.0
        """Wall time of the completed rounds (carried over a resume)."""

    # ------------------------------------------------------------------ what a setup supplies
    def prepare(self) -> None:
        """Load teachers and read the spaces the student is built from (before the student)."""

    def make_student(self) -> Student:
        """The untrained student (the global torch RNG is freshly seeded)."""
        raise NotImplementedError

    def buffer_fields(self) -> dict[str, FieldSpec]:
        """Layout of a buffer row."""
        raise NotImplementedError

    def rollout_tasks(self) -> list[RolloutTask]:
        """One rollout task per teacher (their adapters build env copies where they run)."""
        raise NotImplementedError

    def task_weights(self) -> list[float] | None:
        """Each rollout task's relative share of the steps, buffer rows and batch rows.

        ``None`` (the default): equal shares.
        """
        return None

    def teacher_kinds(self) -> dict[str, str]:
        """Each task's teacher's distribution kind (checked when the loss needs distributions)."""
        return {}

    def student_metadata(self) -> dict[str, Any]:
        """Setup metadata of the student checkpoint (what its evaluation needs)."""
        return {}

    def dataset_manifest(self) -> dict[str, Any]:
        """What a recorded dataset says about the run's tasks (``record_dataset`` setups).

        Returns:
            ``tasks`` (one dict per task index: ``name``, ``task_id``, ``emb_id``, ``env_id``,
            ``env_kwargs``, ``embodiment``, ``task``, ``teacher``) and ``table`` (the student's
            embodiment table: ``embodiments``, ``tasks``).
        """
        raise NotImplementedError

    def distiller_config(self) -> DistillerConfig:
        """The distiller's config (a setup may adapt it, e.g. batches counted in sequences)."""
        return self.config.distiller

    def buffer_config(self) -> BufferConfig:
        """The buffer's config (likewise)."""
        return self.config.buffer

    @classmethod
    def evaluate_student(cls, student: DeployedStudent, options: EvalOptions) -> list[TaskRow]:
        """The setup's evaluation of a loaded student (one row per task, teacher beside it)."""
        raise NotImplementedError

    @classmethod
    def flag_overrides(cls, flags: dict[str, Any]) -> dict[str, Any]:
        """Config overrides of the setup-specific ``distill`` flags given; ConfigError for others.

        ``flags`` holds those of ``env_id``, ``teacher``, ``suite`` and ``teachers_dir`` given.
        """
        if flags:
            given = ", ".join(f"--{k.replace('_', '-')}" for k in flags)
            raise ConfigError(f"{given} do not apply to a {cls.setup} recipe; use --set KEY=VALUE")
        return {}

    @classmethod
    def complete(cls, config: RunConfig) -> RunConfig:
        """Fill what the recipe may leave open (e.g. the shipped teacher)."""
        return config

    # ------------------------------------------------------------------ the core
    @classmethod
    def config_from(cls, recipe: Mapping[str, Any], flags: Mapping[str, Any] | None = None,
                    sets: Sequence[str] | Mapping[str, Any] = ()) -> RunConfig:
        """The config of ``recipe`` (config fields) with the setup's flags, then ``--set`` overrides.

        Raises:
            ConfigError: for an unknown key, a bad value or a flag this setup does not take.
        """
        cfg = from_dict(cls.Config, recipe, cls.Config.__name__)
        return cls.complete(override(override(cfg, cls.flag_overrides(dict(flags or {}))), sets))

    def task_seeds(self, n_tasks: int) -> list[tuple[int, int, int]]:
        """Seeds (mixing, student noise, env resets) of each task's streams."""
        if self.single_stream:
            mix, env, noise = spawn_seeds(self.config.seed, 3)
            return [(mix, noise, env)]
        return [tuple(spawn_seeds(s, 3)) for s in spawn_seeds(self.config.seed, n_tasks)]  # type: ignore[misc]

    @property
    def total_steps(self) -> int:
        """Labelled steps collected so far."""
        return self.collector.total_steps

    def deployed(self) -> DeployedStudent:
        """The student as deployment sees it (live weights: for evaluation during training)."""
        self.student.eval()
        return DeployedStudent(self.student, {"setup": self.setup, **self.student_metadata()})

    def evaluate(self, episodes: int | None = None, seed: int = 12345) -> dict[str, float]:
        """The student alone on every task: ``eval/return/<task>`` (and the setup's other figures)."""
        opts = EvalOptions(episodes=episodes or self.config.eval_episodes, seed=seed, with_teacher=False,
                           train_only=True)
        out = {}
        for r in self.evaluate_student(self.deployed(), opts):
            out[f"eval/return/{r.name}"] = r.student_return
            out.update({f"eval/{k}/{r.name}": v for k, v in r.extra.items() if v is not None})
        return out

    def learn(self, max_rounds: int | None = None) -> Student:
        """Run the remaining rounds (at most ``max_rounds`` of them); returns the student."""
        from tqdm.auto import tqdm

        cfg = self.config
        weights = self.weights or [1.0] * len(self.collector.tasks)
        steps = split_evenly(cfg.total_steps, cfg.rounds)
        updates = [int(round(cfg.updates_per_step * s)) for s in steps]
        bar = tqdm(total=cfg.rounds, initial=self.round, desc=f"distill ({self.setup})", unit="round",
                   disable=not self.progress_bar)
        t_start = time.perf_counter() - self.elapsed_s
        if self.round == 0 and self.checkpoint_dir is not None:
            clear_run_state(self.checkpoint_dir)  # a fresh run replaces an older one's commits
        if self.round == 0 and self.recorder is not None:
            self.recorder.start()  # likewise its recording
        stop = cfg.rounds if max_rounds is None else min(cfg.rounds, self.round + max_rounds)
        while self.round < stop:
            beta = cfg.beta.value(self.round, cfg.rounds)
            metrics = self.collector.collect(split_weighted(steps[self.round], weights), beta, self.buffer)
            if self.recorder is not None:
                self.recorder.write_round(self.round, self.collector.records)
            metrics.update(self.distiller.train_round(self.buffer, updates[self.round], max(1, sum(updates))))
            if "distill/samples_per_s" in metrics:  # labelled steps, not rows
                metrics["distill/samples_per_s"] *= self.steps_per_row
            metrics["distill/lr"] = self.distiller.optimizer.param_groups[0]["lr"]
            metrics["buffer/size"] = float(len(self.buffer))
            self.round += 1
            if cfg.eval_every and self.round % cfg.eval_every == 0:
                metrics.update(self.evaluate())
            self.elapsed_s = metrics["time/elapsed_s"] = time.perf_counter() - t_start
            env_steps = self.collector.total_steps
            if self.writer is not None:
                for k, v in metrics.items():
                    if np.isfinite(v):
                        self.writer.add_scalar(k, v, env_steps)
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
        """Save the student checkpoint with the setup, its metadata and the run's config."""
        return save_run_student(path, self, self.collector.total_steps, extra)

    # ------------------------------------------------------------------ resumable state
    def state_dict(self) -> dict[str, Any]:
        """The whole run at a round boundary.

        Config, progress, student, optimizer, buffer, RNGs and the collector (each task's RNG
        states and replayable env copies).
        """
        return {"config": to_dict(self.config), "round": self.round, "history": self.history,
                "student": self.student.state_dict(), "distiller": self.distiller.state_dict(),
                "buffer": {"state": self.buffer.state(), "data": dict(self.buffer.data)},
                "global_rng": global_rng_state(), "elapsed_s": self.elapsed_s,
                "collector": self.collector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`.

        Raises:
            CheckpointError: if the state belongs to a run with another config or an env does
                not replay identically (:meth:`resume` also reports a damaged state as one).
        """
        saved = state.get("config")
        try:  # fields added since the state was written take their defaults
            saved = to_dict(from_dict(type(self.config), saved))
        except Exception:  # noqa: BLE001  (an unreadable config is reported as different below)
            pass
        check_same_config(saved, to_dict(self.config), ignore=self.resume_may_differ)
        self.student.load_state_dict(state["student"])
        self.distiller.load_state_dict(state["distiller"])
        self.buffer.load_state(state["buffer"]["state"], state["buffer"]["data"])
        self.collector.load_state_dict(state["collector"])
        set_global_rng_state(state["global_rng"])  # after the env replays
        self.round = int(state["round"])
        self.history = list(state["history"])
        self.elapsed_s = float(state["elapsed_s"])

    def commit(self) -> Path | None:
        """Commit the run state under ``checkpoint_dir`` (no-op without one)."""
        if self.checkpoint_dir is None:
            return None
        return save_run_state(self.checkpoint_dir, self.round, self.state_dict())

    def resume(self) -> bool:
        """Continue from the latest commit; ``False`` if there is none (a fresh start).

        On CPU the resumed run ends with the same student, bit for bit, as an uninterrupted run.

        Raises:
            ConfigError: if the run was built without a run folder.
            CheckpointError: if the commit is damaged or belongs to another config.
        """
        if self.checkpoint_dir is None:
            raise ConfigError("resume() needs a run built with run_dir")
        if latest_round(self.checkpoint_dir) is None:
            return False
        _, state = load_run_state(self.checkpoint_dir)
        try:
            self.load_state_dict(state)
        except PolydistillError:
            raise  # typed errors (replay mismatch, dead worker, bad config) say what they are
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"run state in {str(self.checkpoint_dir)!r} is incomplete or "
                                  f"damaged: {exc!r}") from None
        if self.recorder is not None:  # shards written after the commit are collected again
            self.recorder.discard_from(self.round)
        if self.writer is not None:  # events written after the commit are purged
            from torch.utils.tensorboard import SummaryWriter

            self.writer.close()
            self.writer = SummaryWriter(str(self.log_dir), purge_step=self.collector.total_steps + 1)
        log.info("resumed at round %d/%d (%d steps)", self.round, self.config.rounds, self.total_steps)
        return True

    def close(self) -> None:
        """Close envs, workers and the logger."""
        self.collector.close()
        if self.writer is not None:
            self.writer.close()


def save_run_student(path: str | Path, run: Any, env_steps: int, extra: dict[str, Any] | None = None) -> Path:
    """Save a run's student with the metadata every run's checkpoint carries.

    Args:
        path: checkpoint file or folder (:func:`polydistill.deploy.checkpoint.save_student`).
        run: the run: its ``setup``, ``student``, ``config``, ``distiller`` and ``student_metadata()``.
        env_steps: labelled env steps the run collected.
        extra: more metadata (overrides the run's own keys).

    Returns:
        The checkpoint file.
    """
    meta = {"setup": run.setup, **run.student_metadata(), "config": to_dict(run.config),
            "env_steps": int(env_steps), "updates": run.distiller.updates, **(extra or {})}
    return save_student(path, run.student, meta)
