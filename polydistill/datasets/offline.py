"""Distil a student from a dataset: behaviour cloning on its rows, then optional DAgger on top.

``polydistill distill --dataset DIR`` builds a :class:`DatasetConfig` and runs
:func:`make_dataset_run`'s result:

- :class:`OfflineRun` (``dagger: false``, the default): behaviour cloning on the dataset's rows
  alone. No env and no teacher are needed: a dataset made by someone else trains a student
  from its actions; a polydistill dataset from its teacher's labels (and distributions, so
  the KL losses work).
- :class:`DatasetRun` (``dagger: true``, or ``--steps N``): the same behaviour cloning, then
  ``rounds`` DAgger rounds of ``total_steps`` labelled steps in all, in the tasks' envs with
  their teachers (the dataset's, or ``--env-id`` / ``--teacher`` for a single-task dataset).
  It is a :class:`~polydistill.setups.generalist.GeneralistRun`: commits, ``--resume``, Ray
  workers and TensorBoard work as in any run; the default ``beta`` is ``constant 0`` (the
  behaviour-cloned student acts from the first round).

The buffer is enlarged to hold every dataset row (``buffer.capacity`` is a floor). Either way
the result is a generalist student checkpoint whose metadata records the dataset source.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydistill.buffer import BufferConfig, DistillationBuffer
from polydistill.config import to_dict
from polydistill.datasets.rows import DatasetRows
from polydistill.deploy.checkpoint import DeployedStudent
from polydistill.distill.distiller import Distiller
from polydistill.distill.run import BetaSchedule, save_run_student
from polydistill.errors import ConfigError, SpaceMismatchError
from polydistill.evaluation.report import EvalOptions, TaskRow
from polydistill.setups.generalist import (
    GeneralistConfig,
    GeneralistRun,
    TaskConfig,
    generalist_fields,
    task_metadata,
)
from polydistill.students import Student, student_for
from polydistill.teachers import Teacher
from polydistill.utils import make_env, seed_everything
from polydistill.weights import capacity_for, check_weights, uneven_weights

__all__ = ["DatasetConfig", "OfflineRun", "DatasetRun", "make_dataset_run", "dataset_config",
           "behaviour_cloning_updates"]

log = logging.getLogger(__name__)

BC_CHUNKS = 20
"""Behaviour cloning reports its progress (bar, TensorBoard) this many times."""
MIN_AUTO_UPDATES = 2000
"""Fewest behaviour-cloning updates ``bc_epochs`` gives: on 10,000 rows of the shipped pendulum
teacher, 800 updates left a student that drops the poles (return ratio 0.06), 1,000 one that
balances them (0.999), measured with batch 512."""


@dataclass(frozen=True)
class DatasetConfig(GeneralistConfig):
    """A distillation from a dataset (module docstring); every field can be set with ``--set``."""

    dataset: str = ""
    """Minari dataset(s): one dataset's folder, its ``data`` folder, or a folder holding several
    (all of one polydistill export, or datasets made elsewhere: one task each)."""
    bc_epochs: float = 50.0
    """Passes over the dataset's rows in behaviour cloning (updates = epochs x rows / batch size,
    at least 2,000)."""
    bc_updates: int = 0
    """Gradient updates of behaviour cloning; > 0 overrides ``bc_epochs``."""
    dagger: bool = False
    """After behaviour cloning, run ``rounds`` DAgger rounds of ``total_steps`` labelled steps
    with the tasks' teachers (``--steps N`` sets it)."""
    env_id: str | None = None
    """Single-task datasets: the env of evaluation and DAgger (default: the dataset's env)."""
    teacher: str | None = None
    """Single-task datasets: the teacher of DAgger and the yardstick of evaluation (default: the
    teacher that labelled a polydistill dataset)."""
    suite: str | None = None
    total_steps: int = 50_000
    rounds: int = 5
    beta: BetaSchedule = field(default_factory=lambda: BetaSchedule(kind="constant", start=0.0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.dataset:
            raise ConfigError("DatasetConfig.dataset: expected the folder of a Minari dataset, got nothing")
        if self.tasks or self.suite or self.teachers_dir:
            raise ConfigError("a dataset run takes its tasks from the dataset: drop tasks, suite and "
                              "teachers_dir (use env_id / teacher for a single-task dataset)")
        if not self.bc_epochs > 0 and self.bc_updates < 1:
            raise ConfigError(f"DatasetConfig: need bc_epochs > 0 or bc_updates >= 1, got {self.bc_epochs} "
                              f"and {self.bc_updates}")
        if self.bc_updates < 0:
            raise ConfigError(f"DatasetConfig.bc_updates must be >= 0, got {self.bc_updates}")


def dataset_config(dataset: str, recipe: str | None = None, flags: dict[str, Any] | None = None,
                   sets: dict[str, Any] | None = None) -> DatasetConfig:
    """The config of ``distill --dataset``: a generalist recipe's fields, the flags, then ``--set``.

    Raises:
        ConfigError: for a recipe of another setup, or a bad key or value.
    """
    from polydistill.config import from_dict, override
    from polydistill.setups import read_recipe

    fields: dict[str, Any] = {}
    if recipe:
        setup, fields = read_recipe(recipe)
        if not issubclass(setup.run, GeneralistRun):
            raise ConfigError(f"--dataset distils a generalist student; recipe {recipe!r} is for the "
                              f"{setup.name!r} setup")
    cfg = from_dict(DatasetConfig, {**fields, "dataset": dataset}, "DatasetConfig")
    return override(cfg, {**(flags or {}), **(sets or {})})


def behaviour_cloning_updates(config: DatasetConfig, rows: int) -> int:
    """Gradient updates of the behaviour-cloning phase for a dataset of ``rows`` rows."""
    if config.bc_updates > 0:
        return config.bc_updates
    return max(MIN_AUTO_UPDATES, math.ceil(config.bc_epochs * rows / config.distiller.batch_size))


def dataset_tasks(config: DatasetConfig, data: DatasetRows) -> tuple[TaskConfig, ...]:
    """The dataset's tasks as a generalist run's (``env_id`` / ``teacher`` overriding a single task's).

    Raises:
        ConfigError: for ``env_id`` / ``teacher`` with a multi-task dataset.
    """
    tasks = data.tasks
    if (config.env_id or config.teacher) and len(tasks) != 1:
        raise ConfigError(f"--env-id / --teacher apply to a single-task dataset; this one has tasks "
                          f"{[t.name for t in tasks]}")
    return tuple(TaskConfig(t.name, config.env_id or t.env_id or "", config.teacher or t.teacher or "",
                            t.embodiment, dict(t.env_kwargs) if not config.env_id else {}, t.task,
                            weight=t.weight)
                 for t in tasks)


def check_env_spaces(data: DatasetRows, tasks: tuple[TaskConfig, ...]) -> None:
    """Refuse envs whose spaces differ from the dataset's embodiments.

    Raises:
        SpaceMismatchError: naming the task, what the dataset holds and what the env gives.
    """
    from polydistill.students import Embodiment

    for t, dt in zip(tasks, data.tasks, strict=True):
        env = make_env(t.env_id, t.env_kwargs)
        try:
            got = Embodiment.from_spaces(dt.embodiment, env.observation_space, env.action_space)
        finally:
            env.close()
        want = data.table.embodiments[dt.emb_id]
        if got != want:
            raise SpaceMismatchError(f"task {t.name!r}: the dataset holds {want}, env {t.env_id!r} gives "
                                     f"{got}")


def dataset_weights(data: DatasetRows) -> list[float] | None:
    """The tasks' weights as the recording run had them (``None`` where all are equal)."""
    return uneven_weights([t.weight for t in data.tasks])


def _buffer_config(config: DatasetConfig, data: DatasetRows) -> BufferConfig:
    """The config's buffer, with a capacity whose partitions hold every task's rows."""
    weights = check_weights(dataset_weights(data), len(data.tasks))
    need = capacity_for([len(r["emb"]) for r in data.rows], weights)
    if need > config.buffer.capacity:
        log.info("buffer capacity raised from %d to %d to hold every dataset row", config.buffer.capacity,
                 need)
        return dataclasses.replace(config.buffer, capacity=need)
    return config.buffer


def _fill(buffer: DistillationBuffer, student: Student, data: DatasetRows) -> None:
    """Every dataset row into the buffer (partition = task), the observations into the normalizer."""
    for i, rows in enumerate(data.buffer_rows(buffer.fields)):
        buffer.add(i, rows)
        student.update_normalizer(np.asarray(data.raw_obs[i], np.float64), data.tasks[i].emb_id)


def _dataset_meta(config: DatasetConfig, data: DatasetRows, updates: int) -> dict[str, Any]:
    return {"path": str(Path(config.dataset).resolve()), "sources": data.sources, "rows": data.n_rows,
            "teacher_labels": data.teacher_labels, "distribution": data.distribution,
            "bc_updates": updates, "run": data.run.get("run"), "dagger": config.dagger}


def _run_fields(config: DatasetConfig, data: DatasetRows) -> dict[str, Any]:
    """The recorded run's suite (its held-out tasks for ``evaluate``) and success key."""
    return {"suite": None if config.env_id else data.run.get("suite"),
            "success_key": config.success_key or data.run.get("success_key")}


def _train_bc(distiller: Distiller, buffer: DistillationBuffer, n_updates: int, writer: Any,
              progress_bar: bool) -> dict[str, float]:
    """``n_updates`` updates on buffer batches (lr cosine over them); the last chunk's metrics."""
    from tqdm.auto import tqdm

    metrics: dict[str, float] = {}
    done = 0
    t0 = time.perf_counter()
    with tqdm(total=n_updates, desc="behaviour cloning", unit="update", disable=not progress_bar) as bar:
        for k in range(BC_CHUNKS):
            n = (n_updates * (k + 1)) // BC_CHUNKS - done
            if n <= 0:
                continue
            metrics = distiller.train_round(buffer, n, n_updates)
            done += n
            if writer is not None:
                for key, v in metrics.items():
                    if np.isfinite(v) and key.startswith("distill/"):
                        writer.add_scalar("bc/" + key.split("/", 1)[1], v, done)
            bar.set_postfix(loss=f"{metrics.get('distill/loss', float('nan')):.4f}")
            bar.update(n)
    metrics["time/bc_s"] = time.perf_counter() - t0
    return metrics


class OfflineRun:
    """Behaviour cloning on a dataset's rows (no env, no teacher); see the module docstring.

    Args:
        config: The run's configuration (``dagger`` false).
        data: The rows (default: loaded from ``config.dataset``).
        run_dir: Unused (the run commits nothing: it is one phase); accepted like every run's.
        log_dir: TensorBoard folder (``bc/*`` scalars over updates).
        progress_bar: Show tqdm bars.
    """

    setup = "generalist"

    def __init__(self, config: DatasetConfig, data: DatasetRows | None = None, *,
                 run_dir: str | Path | None = None, log_dir: str | Path | None = None,
                 progress_bar: bool = True) -> None:
        if not isinstance(config, DatasetConfig):
            raise ConfigError(f"OfflineRun needs a DatasetConfig, got {type(config).__name__}")
        if config.dagger:
            raise ConfigError("dagger: true collects in envs; use DatasetRun (make_dataset_run picks it)")
        if config.record_dataset:
            raise ConfigError("record_dataset records collection, and behaviour cloning on a dataset "
                              "collects nothing; add DAgger rounds (--steps N) to record them")
        self.config, self.progress_bar = config, progress_bar
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        seed_everything(config.seed)
        if data is None:
            from polydistill.datasets.minari_io import load_dataset

            data = load_dataset(config.dataset, progress_bar)
        self.data = data
        self.tasks = dataset_tasks(config, data)
        if config.env_id:
            check_env_spaces(data, self.tasks)
        torch.manual_seed(config.seed)
        self.student = student_for(data.table, config.student)
        self.distiller = Distiller(self.student, config.distiller)
        fields = generalist_fields(data.table, self.distiller.loss.needs_distribution)
        self.buffer = DistillationBuffer(fields, len(data.tasks), _buffer_config(config, data),
                                         seed=config.seed, weights=dataset_weights(data))
        _fill(self.buffer, self.student, data)
        self.updates = behaviour_cloning_updates(config, data.n_rows)
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))
            self.writer.add_text("config", f"```\n{to_dict(config)}\n```")
        self.history: list[dict[str, float]] = []
        self.round = 0

    @property
    def total_steps(self) -> int:
        """Labelled steps collected (none: the rows come from the dataset)."""
        return 0

    def resume(self) -> bool:
        """Nothing to resume (behaviour cloning commits nothing): always ``False``."""
        return False

    @classmethod
    def evaluate_student(cls, student: DeployedStudent, options: EvalOptions) -> list[TaskRow]:
        """The generalist's evaluation (:meth:`GeneralistRun.evaluate_student`)."""
        return GeneralistRun.evaluate_student(student, options)

    def learn(self, max_rounds: int | None = None) -> Student:
        """Behaviour cloning on every row; returns the student (``max_rounds`` is ignored)."""
        metrics = _train_bc(self.distiller, self.buffer, self.updates, self.writer, self.progress_bar)
        self.history.append({"round": 0.0, "env_steps": 0.0, "bc/updates": float(self.updates),
                             "buffer/size": float(len(self.buffer)), **metrics})
        if self.writer is not None:
            self.writer.flush()
        return self.student

    def student_metadata(self) -> dict[str, Any]:
        """The generalist's metadata: tasks with an env (evaluation), suite, success key, dataset."""
        return {"tasks": [task_metadata(t, t.task) for t in self.tasks if t.env_id],
                **_run_fields(self.config, self.data),
                "dataset": _dataset_meta(self.config, self.data, self.updates)}

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Save the student checkpoint (a generalist one; its metadata records the dataset)."""
        return save_run_student(path, self, 0, extra)

    def close(self) -> None:
        """Close the logger."""
        if self.writer is not None:
            self.writer.close()


class DatasetRun(GeneralistRun):
    """Behaviour cloning on a dataset, then DAgger rounds with the tasks' teachers (module docstring).

    Args:
        config: The run's configuration (``dagger`` true).
        teachers: Teachers by task name, overriding the dataset's.
        data: The rows (default: loaded from ``config.dataset``).
        **kwargs: ``run_dir``, ``log_dir``, ``progress_bar`` (as
            :class:`~polydistill.distill.run.DaggerRun` takes them).
    """

    Config = DatasetConfig
    config: DatasetConfig

    def __init__(self, config: DatasetConfig, teachers: dict[str, Teacher] | None = None,
                 data: DatasetRows | None = None, **kwargs: Any) -> None:
        if isinstance(config, DatasetConfig) and not config.dagger:
            raise ConfigError("DatasetRun runs DAgger on top of behaviour cloning: set dagger: true "
                              "(or use OfflineRun)")
        self.data = data  # type: ignore[assignment]
        self._bc_done = False
        super().__init__(config, teachers, **kwargs)

    def run_tasks(self) -> tuple[TaskConfig, ...]:
        """The dataset's tasks; each needs an env and a teacher for DAgger."""
        if self.data is None:
            from polydistill.datasets.minari_io import load_dataset

            self.data = load_dataset(self.config.dataset, self.progress_bar)
        tasks = dataset_tasks(self.config, self.data)
        for t in tasks:
            if not (t.env_id and (t.teacher or t.name in self._given)):
                raise ConfigError(f"DAgger on task {t.name!r} needs its env and teacher; the dataset names "
                                  f"env {t.env_id or None!r} and teacher {t.teacher or None!r} "
                                  "(give --env-id and --teacher for a single-task dataset)")
        return tasks

    def prepare(self) -> None:
        """Load the dataset and the teachers; the envs' spaces must be the dataset's."""
        super().prepare()
        mine, theirs = self.table, self.data.table
        if (mine.to_json(), mine.tasks_json()) != (theirs.to_json(), theirs.tasks_json()):
            raise SpaceMismatchError(f"the dataset's embodiments {theirs.to_json()} differ from the envs' "
                                     f"{mine.to_json()}")
        self.bc_updates = behaviour_cloning_updates(self.config, self.data.n_rows)

    def buffer_config(self) -> BufferConfig:
        """The config's buffer, enlarged to hold every dataset row."""
        return _buffer_config(self.config, self.data)

    def learn(self, max_rounds: int | None = None) -> Student:
        """Behaviour cloning first (a fresh run), then the DAgger rounds (at most ``max_rounds``).

        The DAgger rounds' learning rate starts its cosine anew (updates count from 0 again).
        """
        if self.round == 0 and not self._bc_done:
            _fill(self.buffer, self.student, self.data)
            metrics = _train_bc(self.distiller, self.buffer, self.bc_updates, self.writer, self.progress_bar)
            self.history.append({"round": 0.0, "env_steps": 0.0, "bc/updates": float(self.bc_updates),
                                 "buffer/size": float(len(self.buffer)), **metrics})
            self.distiller.updates = 0
            self._bc_done = True
        return super().learn(max_rounds)

    def student_metadata(self) -> dict[str, Any]:
        """The generalist's metadata and the dataset source."""
        meta = _dataset_meta(self.config, self.data, self.bc_updates)
        return {**super().student_metadata(), **_run_fields(self.config, self.data), "dataset": meta}


def make_dataset_run(config: DatasetConfig, **kwargs: Any) -> OfflineRun | DatasetRun:
    """:class:`DatasetRun` when ``config.dagger``, else :class:`OfflineRun`."""
    return DatasetRun(config, **kwargs) if config.dagger else OfflineRun(config, **kwargs)
