"""Distillation rows of a dataset: what behaviour cloning on it trains on.

Whether the episodes come from a run's recording (:func:`recorded_rows`) or from a Minari
dataset (:func:`polydistill.datasets.minari_io.load_dataset`), they become rows through the
same :class:`RowsBuilder`, in the generalist buffer's layout (padded ``obs``, token ``emb``,
action ``mask``, the teacher's labels ``action`` + ``mean``/``log_std`` or ``logits``). One row
per labelled step: an episode of ``T`` steps gives ``T`` rows (its final observation is never
labelled). So an export followed by an import gives the rows of the recording, array for array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.buffer import LOGIT_PAD, FieldSpec
from polydistill.errors import ConfigError, ObservationError
from polydistill.students import EmbodimentTable
from polydistill.weights import check_weight

__all__ = ["DatasetTask", "DatasetRows", "RowsBuilder", "recorded_rows", "manifest_table", "run_info",
           "LOGIT_PAD"]


@dataclass(frozen=True)
class DatasetTask:
    """One task of a dataset: its buffer partition, token row and (where known) env and teacher."""

    name: str
    emb_id: int
    """Token row of the embodiment table."""
    embodiment: str
    env_id: str | None = None
    """Gymnasium id (None: the dataset does not say; evaluation and DAgger then need ``--env-id``)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    """Task token (tables with task tokens)."""
    teacher: str | None = None
    """The teacher that labelled it (None: the labels are the dataset's own actions)."""
    weight: float = 1.0
    """The task's weight in the run that recorded it (1 where the dataset does not say)."""


@dataclass
class DatasetRows:
    """Every labelled row of a dataset, by task (the index is the buffer partition)."""

    table: EmbodimentTable
    tasks: list[DatasetTask]
    rows: list[dict[str, np.ndarray]]
    """Per task: ``obs`` (N, max_obs_dim) float32, ``emb`` int64, ``mask`` bool, ``action`` and,
    where the labels carry a distribution, ``mean``/``log_std`` or ``logits``."""
    raw_obs: list[np.ndarray]
    """Per task: the unpadded observations (N, obs_dim) as stored (for the normalizer)."""
    teacher_labels: bool
    """The labels are a teacher's (polydistill datasets); else the dataset's own actions."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """Where the rows came from (dataset ids and paths, or the run folder)."""
    run: dict[str, Any] = field(default_factory=dict)
    """What a polydistill dataset records about its run (config, suite, success key, versions)."""

    @property
    def n_rows(self) -> int:
        """Rows over all tasks."""
        return int(sum(len(r["emb"]) for r in self.rows))

    @property
    def distribution(self) -> str | None:
        """``gaussian`` or ``categorical`` where every task's rows carry one, else None."""
        if all("mean" in r and "log_std" in r for r in self.rows):
            return "gaussian"
        if all("logits" in r for r in self.rows):
            return "categorical"
        return None

    def buffer_rows(self, fields: dict[str, FieldSpec]) -> list[dict[str, np.ndarray]]:
        """Each task's rows restricted to the buffer's ``fields``.

        Raises:
            ConfigError: if the buffer needs label fields the dataset does not have (a loss on
                distributions for a dataset of actions).
        """
        out = []
        for t, r in zip(self.tasks, self.rows, strict=True):
            missing = sorted(set(fields) - set(r))
            if missing:
                what = ("a teacher's action distribution" if any(m in ("mean", "log_std", "logits")
                                                                 for m in missing) else str(missing))
                have = "the teacher's actions only" if self.teacher_labels else "actions only"
                raise ConfigError(f"the loss needs {what} (fields {missing}), but task {t.name!r} of the "
                                  f"dataset has {have}; use a loss on actions (mse, huber, categorical_ce)")
            out.append({k: r[k] for k in fields})
        return out


class RowsBuilder:
    """Collects episodes task by task and turns them into :class:`DatasetRows`.

    Args:
        table: The embodiment table of the rows.
        tasks: The tasks (index = task id).
    """

    def __init__(self, table: EmbodimentTable, tasks: list[DatasetTask]) -> None:
        self.table, self.tasks = table, tasks
        self._parts: list[dict[str, list[np.ndarray]]] = [{} for _ in tasks]
        self._label_keys: list[set[str] | None] = [None] * len(tasks)

    def add_episode(self, task: int, observations: np.ndarray, labels: dict[str, np.ndarray]) -> None:
        """Add the rows of one episode: its first ``T`` observations and their ``T`` labels.

        Args:
            task: Task index.
            observations: ``(T + 1, width)`` (``width`` >= the embodiment's obs_dim; padding cut).
            labels: ``action`` ``(T, >= action_dim)`` or ``(T,)`` for discrete actions, and
                optionally ``mean``/``log_std`` or ``logits`` of the same length.

        Raises:
            ObservationError: for lengths or widths that do not fit the embodiment.
        """
        if not 0 <= task < len(self.tasks):
            raise ObservationError(f"task index {task} is not one of the dataset's {len(self.tasks)} tasks")
        t = self.tasks[task]
        e = self.table.embodiments[t.emb_id]
        obs = np.asarray(observations)
        n = len(obs) - 1
        if obs.ndim != 2 or obs.shape[1] < e.obs_dim or n < 0:
            raise ObservationError(f"task {t.name!r}: observations must be (T + 1, {e.obs_dim}), got "
                                   f"{obs.shape}")
        keys = set(labels)
        if self._label_keys[task] is None:
            self._label_keys[task] = keys
        elif self._label_keys[task] != keys:
            raise ObservationError(f"task {t.name!r}: episodes disagree on label fields "
                                   f"({sorted(keys)} vs {sorted(self._label_keys[task] or ())})")
        part = self._parts[task]
        raw = obs[:n, : e.obs_dim]
        part.setdefault("raw", []).append(raw)
        padded = np.zeros((n, self.table.max_obs_dim), np.float32)
        padded[:, : e.obs_dim] = raw
        part.setdefault("obs", []).append(padded)
        part.setdefault("emb", []).append(np.full(n, t.emb_id, np.int64))
        part.setdefault("mask", []).append(np.repeat(self.table.action_mask[t.emb_id][None], n, 0))
        width = self.table.max_action_dim
        for k, v in labels.items():
            v = np.asarray(v)
            if len(v) != n:
                raise ObservationError(f"task {t.name!r}: label {k!r} has {len(v)} rows for {n} steps")
            if k == "action" and e.action_kind == "discrete":
                part.setdefault(k, []).append(v.reshape(n).astype(np.int64))
                continue
            if v.ndim != 2 or v.shape[1] < e.action_dim:
                raise ObservationError(f"task {t.name!r}: label {k!r} must be (T, {e.action_dim}), got "
                                       f"{v.shape}")
            out = np.full((n, width), LOGIT_PAD if k == "logits" else 0.0, np.float32)
            out[:, : e.action_dim] = v[:, : e.action_dim]
            part.setdefault(k, []).append(out)

    def build(self, teacher_labels: bool, sources: list[dict[str, Any]] | None = None,
              run: dict[str, Any] | None = None) -> DatasetRows:
        """The rows collected so far.

        Raises:
            ConfigError: if a task has no rows.
        """
        rows, raws = [], []
        for t, part in zip(self.tasks, self._parts, strict=True):
            if not part.get("emb"):
                raise ConfigError(f"task {t.name!r} of the dataset has no labelled step")
            raws.append(np.concatenate(part.pop("raw")))
            rows.append({k: np.concatenate(v) for k, v in part.items()})
        return DatasetRows(self.table, list(self.tasks), rows, raws, teacher_labels, sources or [], run or {})


def manifest_table(info: dict[str, Any]) -> tuple[EmbodimentTable, list[DatasetTask]]:
    """The embodiment table and tasks a recording's manifest (or a dataset's metadata) records.

    Raises:
        ConfigError: if they are missing or malformed.
    """
    try:
        table = EmbodimentTable.from_json(info["table"]["embodiments"], info["table"].get("tasks"))
        tasks = [DatasetTask(t["name"], int(t["emb_id"]), t["embodiment"], t.get("env_id"),
                             dict(t.get("env_kwargs") or {}), t.get("task"), t.get("teacher"),
                             float(t.get("weight", 1.0)))
                 for t in sorted(info["tasks"], key=lambda t: int(t["task_id"]))]
        for t in tasks:
            check_weight(t.name, t.weight)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"the dataset's task and embodiment table are missing or malformed: "
                          f"{exc!r}") from None
    if [int(t["task_id"]) for t in sorted(info["tasks"], key=lambda t: int(t["task_id"]))] != list(
            range(len(tasks))):
        raise ConfigError("the dataset's task ids must be 0..n-1")
    return table, tasks


def run_info(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a dataset keeps about the run that recorded it."""
    return {k: manifest.get(k) for k in ("setup", "config", "suite", "success_key", "n_envs", "versions")}


def recorded_rows(run: str | Path) -> DatasetRows:
    """The rows of a run's recording (``RUN/dataset``), in the order an export writes them.

    Raises:
        ConfigError: if the folder is not a run recorded with ``record_dataset``.
    """
    from polydistill.datasets.recorder import iter_episodes, read_recording

    rec = read_recording(run)
    table, tasks = manifest_table(rec.manifest)
    builder = RowsBuilder(table, tasks)
    for t in range(len(tasks)):
        for ep in iter_episodes(rec, t):
            builder.add_episode(t, ep.observations, ep.labels)
    return builder.build(True, [{"run": str(Path(run))}], run_info(rec.manifest))

