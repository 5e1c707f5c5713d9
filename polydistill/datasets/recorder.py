"""Recording a run's labelled data faithfully, episode boundaries included (``record_dataset``).

The distillation buffer is bounded and keeps neither rewards nor episode boundaries, and a
DAgger round ends mid-episode (each task's env copies carry on into the next round). A run
with ``record_dataset: true`` therefore records, beside the buffer, every vector step of every
task's env copies:

- :class:`RoundRecorder` lives in each task's :class:`~polydistill.collect.rollout.Rollout`
  (in this process or in a Ray worker) and stacks one round's steps: the observation, the
  teacher's labels (action; mean and log-std, or logits, where the teacher has a
  distribution), the action actually executed and who chose it (teacher or student), reward,
  terminated, truncated, the episode's reset seed, and each ended episode's final observation
  (taken before the same-step autoreset replaces it).
- :class:`DatasetRecorder` writes them on the learner's side, one ``round-NNNNNN.npz`` shard per
  round (every task inside, keys ``"<task index>/<field>"``), atomically, next to a
  ``manifest.json`` (tasks, embodiment table, config, versions) under ``RUN/dataset/``.
- :func:`read_recording` checks the shards (every round present, each round starting where
  the previous one stopped) and :func:`iter_episodes` cuts them into episodes: ``T + 1``
  observations, ``T`` actions; an episode still open when the recording ends is cut there as
  truncated, its final observation the env's current one (listed as ``cut``).

Nothing here needs Minari; :mod:`polydistill.datasets.minari_io` turns episodes into datasets.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.errors import CheckpointError, ConfigError
from polydistill.utils import atomic_write_bytes, atomic_write_json, json_roundtrip, library_versions

__all__ = ["RoundRecorder", "DatasetRecorder", "Recording", "RecordedEpisode", "read_recording",
           "iter_episodes", "DATASET_DIR", "LABEL_FIELDS"]

DATASET_DIR = "dataset"
"""Folder of a run's recording (``RUN/dataset``)."""
FORMAT = "polydistill.recording"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_SHARD = re.compile(r"^round-(\d{6})\.npz$")

LABEL_FIELDS = ("action", "mean", "log_std", "logits")
"""Teacher label fields (``ActionTarget`` attributes), stored as ``label_<field>`` where present."""
_STEP_FIELDS = ("obs", "action", "teacher_acted", "reward", "terminated", "truncated", "seed")


class RoundRecorder:
    """One task's steps of one round, stacked per vector step (see the module docstring).

    Args:
        n_envs: Env copies of the task.
    """

    def __init__(self, n_envs: int) -> None:
        self.n_envs = n_envs
        self.begin()

    def begin(self) -> None:
        """Start a round."""
        self._steps: dict[str, list[np.ndarray]] = {}
        self._final: list[np.ndarray] = []
        self._final_at: list[tuple[int, int]] = []

    def _put(self, key: str, value: Any) -> None:
        self._steps.setdefault(key, []).append(np.array(value, copy=True))

    def decide(self, obs: np.ndarray, target: Any, action: np.ndarray, use_teacher: np.ndarray | None,
               seeds: list[int]) -> None:
        """Record the labelled observations and the executed actions of one vector step.

        Args:
            obs: Raw observations ``(n_envs, obs_dim)``.
            target: The teacher's :class:`~polydistill.teachers.ActionTarget` for them.
            action: The actions about to be executed.
            use_teacher: Per copy, whether the teacher's action was executed (None: all were).
            seeds: Reset seed of each copy's current episode.
        """
        self._put("obs", obs)
        for f in LABEL_FIELDS:
            v = getattr(target, f)
            if v is not None:
                self._put(f"label_{f}", v)
        self._put("action", action)
        self._put("teacher_acted", np.ones(self.n_envs, bool) if use_teacher is None
                  else np.asarray(use_teacher, bool).reshape(self.n_envs))
        self._put("seed", np.asarray(seeds, np.int64))

    def outcome(self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                final_obs: dict[int, Any]) -> None:
        """Record the env step's outcome and the final observation of each ended episode."""
        step = len(self._steps["obs"]) - 1
        self._put("reward", np.asarray(reward, np.float64))
        self._put("terminated", terminated)
        self._put("truncated", truncated)
        for i, o in sorted(final_obs.items()):
            self._final.append(np.array(o, copy=True))
            self._final_at.append((step, i))

    def finish(self, next_obs: np.ndarray) -> dict[str, np.ndarray]:
        """The round as arrays ``(steps, n_envs, ...)``, then starts the next round.

        Besides the step fields: ``final_obs`` / ``final_at`` (step, copy) of the episodes that
        ended, and ``next_obs``, each copy's current observation (where the next round starts).
        """
        out = {k: np.stack(v) for k, v in self._steps.items()}
        next_obs = np.asarray(next_obs)
        out["final_obs"] = (np.stack(self._final) if self._final
                            else np.zeros((0, *next_obs.shape[1:]), next_obs.dtype))
        out["final_at"] = np.asarray(self._final_at, np.int64).reshape(-1, 2)
        out["next_obs"] = np.array(next_obs, copy=True)
        self.begin()
        return out


class DatasetRecorder:
    """Writes a run's recording under ``RUN/dataset`` (the learner's side; module docstring).

    Args:
        folder: ``RUN/dataset``.
        manifest: What the run records about itself (setup, config, tasks, embodiment table).
    """

    def __init__(self, folder: str | Path, manifest: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.manifest = manifest

    def start(self) -> None:
        """A fresh run: remove an older recording, write the manifest.

        Raises:
            ConfigError: if the folder exists and is not a polydistill recording (never
                delete what the run did not write, e.g. a Minari export named ``dataset``).
        """
        if self.folder.exists():
            if any(self.folder.iterdir()) and not _is_recording(self.folder):
                raise ConfigError(f"{str(self.folder)!r} exists and is not a polydistill recording (no "
                                  f"{MANIFEST} of format {FORMAT}); record into another run folder or "
                                  "move it away")
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        atomic_write_json(self.folder / MANIFEST, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                                   "versions": library_versions(), **self.manifest})

    def discard_from(self, round_idx: int) -> None:
        """Remove shards of rounds ``>= round_idx`` (written after the commit a run resumes from)."""
        if not (self.folder / MANIFEST).is_file():
            raise CheckpointError(f"the run records a dataset but {str(self.folder / MANIFEST)!r} is "
                                  "missing; its recording cannot be continued")
        for p in self.folder.glob("round-*.npz"):
            m = _SHARD.match(p.name)
            if m and int(m.group(1)) >= round_idx:
                p.unlink()

    def write_round(self, round_idx: int, records: dict[int, dict[str, np.ndarray]]) -> Path:
        """Write round ``round_idx`` (records by task index) as one shard, atomically."""
        arrays = {f"{t}/{k}": v for t, rec in records.items() for k, v in rec.items()}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path = self.folder / f"round-{round_idx:06d}.npz"
        atomic_write_bytes(path, buf.getvalue())
        return path


@dataclass
class Recording:
    """A run's recording, read back: the manifest and each task's steps over all rounds."""

    path: Path
    manifest: dict[str, Any]
    tasks: dict[int, dict[str, np.ndarray]]
    """By task index: the step fields ``(steps, n_envs, ...)``, ``label_*`` fields,
    ``final_obs`` / ``final_at`` (step index over the whole run, copy) and ``next_obs``."""
    rounds: int


@dataclass
class RecordedEpisode:
    """One episode of one env copy, as Minari stores it (``T`` steps, ``T + 1`` observations)."""

    task: int
    """Task index of the run."""
    copy: int
    """Env copy."""
    seed: int
    """The episode's reset seed (``env.reset(seed=seed)`` then ``actions`` replays it)."""
    observations: np.ndarray
    """``(T + 1, obs_dim)``: the last one is the final observation."""
    actions: np.ndarray
    """Executed actions ``(T, ...)``."""
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    labels: dict[str, np.ndarray]
    """The teacher's labels of the first ``T`` observations, by field (``action``, ``mean``, ...)."""
    teacher_acted: np.ndarray
    """``(T,)``: whether the teacher's action was executed (else the student's)."""
    cut: bool
    """The recording ended inside this episode: it is cut there, marked truncated."""


def _dataset_dir(path: Path) -> Path:
    """``RUN/dataset`` of a run folder (or the recording folder itself)."""
    if (path / MANIFEST).is_file():
        return path
    return path / DATASET_DIR


def read_recording(run: str | Path) -> Recording:
    """Read and check the recording of a run folder (``RUN`` or ``RUN/dataset``).

    Raises:
        ConfigError: if the folder is not a run, or the run was made without ``record_dataset``.
        CheckpointError: if the recording is damaged, has a gap, or does not continue from one
            round to the next.
    """
    run = Path(run)
    if not run.is_dir():
        raise ConfigError(f"{str(run)!r} is not a folder; expected a distill run folder")
    folder = _dataset_dir(run)
    if not (folder / MANIFEST).is_file():
        if (run / "run.json").is_file():
            raise ConfigError(f"run {str(run)!r} was made without the recorder: distil with "
                              "--set record_dataset=true to record its data for export")
        raise ConfigError(f"{str(run)!r} is not a distill run folder (no run.json, no "
                          f"{DATASET_DIR}/{MANIFEST})")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{str(folder / MANIFEST)!r} is unreadable: {exc}") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{str(folder / MANIFEST)!r}: expected {FORMAT} v{FORMAT_VERSION}, got "
                              f"{manifest.get('format')} v{manifest.get('format_version')}")
    _check_same_run(folder.parent / "run.json", manifest)
    shards = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _SHARD.match(p.name)))
    if not shards:
        raise ConfigError(f"the recording in {str(folder)!r} holds no round yet")
    if [r for r, _ in shards] != list(range(len(shards))):
        raise CheckpointError(f"the recording in {str(folder)!r} has a gap: rounds "
                              f"{[r for r, _ in shards]}")
    parts: dict[int, list[dict[str, np.ndarray]]] = {}
    n_tasks = len(manifest.get("tasks") or [])
    for _, p in shards:
        by_task: dict[int, dict[str, np.ndarray]] = {}
        try:
            with np.load(p, allow_pickle=False) as z:
                for key in z.files:
                    t, _, field = key.partition("/")
                    by_task.setdefault(int(t), {})[field] = z[key]
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"recording shard {str(p)!r} is unreadable: {exc}") from None
        if set(by_task) != set(range(n_tasks)):
            raise CheckpointError(f"recording shard {str(p)!r}: expected tasks {list(range(n_tasks))} (the "
                                  f"manifest's), got {sorted(by_task)}")
        for t, rec in by_task.items():
            parts.setdefault(t, []).append(rec)
    tasks = {t: _join(t, recs, folder) for t, recs in sorted(parts.items())}
    return Recording(folder, manifest, tasks, len(shards))


def _is_recording(folder: Path) -> bool:
    """Whether ``folder`` holds a recording's manifest (what :meth:`DatasetRecorder.start` may replace)."""
    try:
        return json.loads((folder / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_same_run(run_file: Path, manifest: dict[str, Any]) -> None:
    """Refuse a recording left by an earlier run in the folder (``run.json`` holds another config).

    Raises:
        ConfigError: naming the config keys that differ.
    """
    if not run_file.is_file():
        return  # a run made from Python: no run.json to compare with
    try:
        config = json.loads(run_file.read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return
    from polydistill.distill.run import DaggerRun

    movable = DaggerRun.resume_may_differ  # where rows are collected; a resume may change them
    a, b = ({k: v for k, v in json_roundtrip(c or {}).items() if k not in movable}
            for c in (config, manifest.get("config")))
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise ConfigError(f"the recording in {str(run_file.parent / DATASET_DIR)!r} was made by an earlier "
                          f"run in this folder (config differs in {diff}); distil again with "
                          "--set record_dataset=true to record this run")


def _join(task: int, recs: list[dict[str, np.ndarray]], folder: Path) -> dict[str, np.ndarray]:
    """One task's rounds joined along the step axis (``final_at`` shifted to run-wide steps)."""
    missing = [f for f in _STEP_FIELDS + ("final_obs", "final_at", "next_obs") if f not in recs[0]]
    if missing:
        raise CheckpointError(f"recording in {str(folder)!r}: task {task} lacks {missing}")
    for r in range(1, len(recs)):
        if not np.array_equal(recs[r]["obs"][0], recs[r - 1]["next_obs"]):
            raise CheckpointError(f"recording in {str(folder)!r}: round {r} of task {task} does not "
                                  f"start where round {r - 1} stopped")
    out: dict[str, np.ndarray] = {}
    step_keys = [k for k in recs[0] if k not in ("final_obs", "final_at", "next_obs")]
    for k in step_keys:
        out[k] = np.concatenate([rec[k] for rec in recs])
    offsets = np.cumsum([0] + [len(rec["obs"]) for rec in recs[:-1]])
    out["final_obs"] = np.concatenate([rec["final_obs"] for rec in recs])
    out["final_at"] = np.concatenate([rec["final_at"] + [off, 0]
                                      for rec, off in zip(recs, offsets, strict=True)])
    out["next_obs"] = recs[-1]["next_obs"]
    n = len(out["obs"])
    if any(len(v) != n for k, v in out.items() if k in step_keys):
        raise CheckpointError(f"recording in {str(folder)!r}: task {task}'s fields differ in length")
    return out


def iter_episodes(rec: Recording, task: int) -> Iterator[RecordedEpisode]:
    """Episodes of one task, copy by copy, each copy's in the order they ran."""
    d = rec.tasks[task]
    done = d["terminated"] | d["truncated"]
    final = {(int(s), int(c)): i for i, (s, c) in enumerate(d["final_at"])}
    labels = [k for k in d if k.startswith("label_")]
    for c in range(done.shape[1]):
        start = 0
        ends = np.flatnonzero(done[:, c]).tolist()
        cut_end = len(done) - 1
        if not ends or ends[-1] != cut_end:
            ends.append(cut_end)
        for end in ends:
            sl = slice(start, end + 1)
            ended = bool(done[end, c])
            if ended:
                if (end, c) not in final:
                    raise CheckpointError(f"recording in {str(rec.path)!r}: task {task} copy {c} ended an "
                                          f"episode at step {end} without a final observation")
                last = d["final_obs"][final[(end, c)]]
            else:
                last = d["next_obs"][c]
            trunc = d["truncated"][sl, c].copy()
            if not ended:
                trunc[-1] = True
            yield RecordedEpisode(
                task=task, copy=c, seed=int(d["seed"][start, c]),
                observations=np.concatenate([d["obs"][sl, c], last[None]]),
                actions=d["action"][sl, c], rewards=d["reward"][sl, c],
                terminations=d["terminated"][sl, c].copy(), truncations=trunc,
                labels={k[len("label_"):]: d[k][sl, c] for k in labels},
                teacher_acted=d["teacher_acted"][sl, c], cut=not ended)
            start = end + 1
