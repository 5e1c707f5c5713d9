"""Minari datasets: export a run's recording, import any Minari dataset as distillation rows.

Layout of an exported dataset (one per task with ``per_task``, else one for the whole run):

- ``observations`` ``(T + 1, obs_dim)``: what the env returned, the final observation last;
  ``actions`` ``(T, ...)``: the actions executed (the teacher's or, in DAgger rounds, the
  student's); ``rewards``, ``terminations``, ``truncations`` as the env gave them. An episode
  the run stopped inside ends truncated at the env's observation of that moment (its id is
  listed in the metadata's ``polydistill.cut_episodes``). Each episode's ``seed`` is its reset
  seed, so ``env.reset(seed=seed)`` and the actions replay it.
- ``infos`` (``T + 1`` rows, aligned with the observations): ``teacher_action`` and, where the
  teacher has a distribution, ``teacher_mean`` / ``teacher_log_std`` or ``teacher_logits``
  (the labels of the first ``T`` observations; the final observation is unlabelled: NaN, or -1
  for discrete actions), ``labelled``, ``teacher_acted`` (whose action was executed),
  ``task_id`` and ``embodiment_id`` (the run's task index and token row), ``env_copy``.
- metadata ``polydistill``: format and version, polydistill's version and the library versions
  of the run, the run's config, its tasks (env id and keywords, embodiment, task token,
  teacher) and the student's embodiment table, which tasks this dataset holds.

A whole-run dataset of bodies with different spaces stores observations zero-padded to the
widest (``polydistill.padded``; Box spaces padded with zero bounds) and actions padded too
unless every body has the same action space (different discrete ones are refused); a
per-task dataset keeps the env's own spaces and its ``env_spec``, so
``dataset.recover_environment()`` works (after ``import polydistill.envs`` for polydistill ids).

Datasets are written under the folder given (``MINARI_DATASETS_PATH`` is set to it while
writing), never under ``~/.minari``. Storage: HDF5 (``minari[hdf5]``, the ``minari`` extra).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.datasets.recorder import (
    DATASET_DIR,
    MANIFEST,
    RecordedEpisode,
    iter_episodes,
    read_recording,
)
from polydistill.datasets.rows import DatasetRows, DatasetTask, RowsBuilder, manifest_table, run_info
from polydistill.errors import CheckpointError, ConfigError, SpaceMismatchError
from polydistill.students import Embodiment, EmbodimentTable

__all__ = ["export_run", "load_dataset", "find_datasets", "dataset_summary", "ExportedDataset",
           "minari_module", "METADATA_KEY"]

METADATA_KEY = "polydistill"
"""Key of polydistill's own metadata in a dataset's ``metadata.json``."""
FORMAT = "polydistill.minari"
FORMAT_VERSION = 1
DATA_FORMAT = "hdf5"


def minari_module() -> Any:
    """The ``minari`` package with its HDF5 storage.

    Raises:
        ConfigError: naming the extra to install when either is missing.
    """
    try:
        import h5py  # noqa: F401  (Minari's HDF5 storage)
        import minari
    except ImportError as exc:
        raise ConfigError(f"Minari datasets need the minari extra: pip install -e \".[minari]\" "
                          f"({exc})") from None
    return minari


@contextlib.contextmanager
def _datasets_root(path: Path) -> Iterator[None]:
    """Minari's dataset root set to ``path`` for the block (restored after)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _slug(text: str) -> str:
    return re.sub(r"[^-\w]+", "_", text).strip("_-") or "run"


def make_dataset_id(namespace: str | None, name: str, version: int) -> str:
    """``namespace/name-vN`` checked against Minari's rules.

    Raises:
        ConfigError: for an id Minari would refuse.
    """
    from minari.dataset.minari_dataset import parse_dataset_id

    if version < 0:
        raise ConfigError(f"dataset version must be >= 0, got {version}")
    dataset_id = f"{namespace + '/' if namespace else ''}{name}-v{version}"
    try:
        ns, _, v = parse_dataset_id(dataset_id)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid Minari dataset id {dataset_id!r}: {exc}") from None
    if v != version or ns != (namespace or None):
        raise ConfigError(f"invalid Minari dataset id {dataset_id!r} (namespace and name may hold letters, "
                          "digits, '-' and '_')")
    return dataset_id


@dataclass(frozen=True)
class ExportedDataset:
    """One dataset written by :func:`export_run`."""

    dataset_id: str
    path: Path
    """Its folder (``OUT/<namespace>/<name>-v<N>``; Minari's files in ``data/``)."""
    episodes: int
    steps: int
    tasks: tuple[str, ...]


def _padded_box(spaces: list[Any]) -> Any:
    """A Box holding every space's observations zero-padded to the widest."""
    import gymnasium as gym

    width = max(s.shape[0] for s in spaces)
    low, high = np.full(width, np.inf), np.full(width, -np.inf)
    for s in spaces:
        n = s.shape[0]
        low[:n], high[:n] = np.minimum(low[:n], s.low), np.maximum(high[:n], s.high)
        low[n:], high[n:] = np.minimum(low[n:], 0.0), np.maximum(high[n:], 0.0)  # the padding
    dtype = np.result_type(*[s.dtype for s in spaces])
    return gym.spaces.Box(low.astype(dtype), high.astype(dtype), (width,), dtype)


def _episode_count(rec: Any, task: int) -> int:
    """Episodes :func:`iter_episodes` yields for ``task`` (ended ones, plus each copy's open one)."""
    d = rec.tasks[task]
    done = d["terminated"] | d["truncated"]
    return int(done.sum() + (~done[-1]).sum())


def _infos(ep: RecordedEpisode, task: int, emb_id: int, width: int | None,
           discrete: bool) -> dict[str, np.ndarray]:
    """Minari infos (``T + 1`` rows) of one recorded episode (labels padded to ``width``)."""
    n = len(ep.actions)
    out: dict[str, np.ndarray] = {}
    for k, v in ep.labels.items():
        if discrete and k == "action":
            out["teacher_action"] = np.concatenate([v.astype(np.int64), [-1]])
            continue
        w = v.shape[1] if width is None else width
        full = np.zeros((n + 1, w), v.dtype)
        full[:n, : v.shape[1]] = v
        full[n] = np.nan
        out[f"teacher_{k}"] = full
    out["labelled"] = np.concatenate([np.ones(n, bool), [False]])
    out["teacher_acted"] = np.concatenate([ep.teacher_acted.astype(bool), [False]])
    out["task_id"] = np.full(n + 1, task, np.int64)
    out["embodiment_id"] = np.full(n + 1, emb_id, np.int64)
    out["env_copy"] = np.full(n + 1, ep.copy, np.int64)
    return out


def _pad(a: np.ndarray, width: int | None) -> np.ndarray:
    if width is None or a.ndim != 2 or a.shape[1] == width:
        return a
    out = np.zeros((len(a), width), a.dtype)
    out[:, : a.shape[1]] = a
    return out


def _episode_buffers(rec: Any, tasks: Any, group: list[int], obs_w: int | None, act_w: int | None,
                     discrete: bool, cut: list[int], count: dict[str, int], bar: Any) -> Iterator[Any]:
    """A group's episodes one at a time (Minari writes each before the next is built).

    Appends to ``cut`` the index of every episode the recording cut short, and counts episodes
    and steps in ``count``.
    """
    from minari.data_collector import EpisodeBuffer

    for i in group:
        for ep in iter_episodes(rec, i):
            if ep.cut:
                cut.append(count["episodes"])
            yield EpisodeBuffer(
                id=count["episodes"], seed=ep.seed, observations=_pad(ep.observations, obs_w),
                actions=_pad(ep.actions, act_w), rewards=ep.rewards, terminations=ep.terminations,
                truncations=ep.truncations, infos=_infos(ep, i, tasks[i].emb_id, act_w, discrete))
            count["episodes"] += 1
            count["steps"] += len(ep.rewards)
            bar.update(1)


def export_run(run: str | Path, out: str | Path, *, per_task: bool = False, namespace: str = "polydistill",
               name: str | None = None, version: int = 0, author: str | None = None,
               author_email: str | None = None, code_permalink: str | None = None,
               progress_bar: bool = True) -> list[ExportedDataset]:
    """Export the recording of ``run`` (a run made with ``record_dataset``) as Minari dataset(s).

    Args:
        run: The run folder.
        out: Root folder of the datasets (Minari's ``MINARI_DATASETS_PATH`` layout).
        per_task: One dataset per task (``<name>-<task>``) instead of one for the run.
        namespace: Minari namespace of the ids.
        name: Dataset name (default: the run folder's name).
        version: The ``-vN`` of the ids.
        author: Recorded in the metadata (Minari's ``author``).
        author_email: Likewise.
        code_permalink: Likewise.
        progress_bar: Show a tqdm bar over episodes.

    Returns:
        The datasets written.

    Raises:
        ConfigError: if ``run`` is not a recorded run, an id is invalid or already taken, or
            the run's bodies cannot share one dataset (different spaces with discrete actions).
    """
    from tqdm.auto import tqdm

    import polydistill
    from polydistill.utils import library_versions, make_env

    minari = minari_module()
    rec = read_recording(run)
    table, tasks = manifest_table(rec.manifest)
    out = Path(out).resolve()  # absolute: Minari 0.5.4 sizes a relative dataset path wrongly
    base = _slug(name or Path(run).resolve().name)
    groups = ([[i] for i in range(len(tasks))] if per_task else [list(range(len(tasks)))])
    ids = [make_dataset_id(namespace, f"{base}-{_slug(tasks[g[0]].name)}" if per_task else base, version)
           for g in groups]
    taken = [i for i in ids if (out / i).exists()]
    if taken:
        raise ConfigError(f"dataset(s) {taken} already exist under {str(out)!r}; pass another --version "
                          "or --out")
    envs = {}
    for i, t in enumerate(tasks):
        if t.env_id is None:
            raise ConfigError(f"task {t.name!r} of the recording has no env id")
        envs[i] = make_env(t.env_id, t.env_kwargs)
        width = envs[i].observation_space.shape
        if rec.tasks[i]["obs"].shape[2:] != tuple(width):
            raise SpaceMismatchError(f"task {t.name!r}: recorded observations have shape "
                                     f"{rec.tasks[i]['obs'].shape[2:]}, env {t.env_id!r} now gives {width}")
    written: list[ExportedDataset] = []
    total = sum(_episode_count(rec, i) for i in range(len(tasks)))
    bar = tqdm(total=total, desc="export", unit="episode", disable=not progress_bar)
    try:
        for group, dataset_id in zip(groups, ids, strict=True):
            obs_spaces = [envs[i].observation_space for i in group]
            act_spaces = [envs[i].action_space for i in group]
            same = all(o == obs_spaces[0] for o in obs_spaces) and all(a == act_spaces[0] for a in act_spaces)
            obs_w = act_w = None
            if same:
                obs_space, act_space = obs_spaces[0], act_spaces[0]
            elif all(a == act_spaces[0] for a in act_spaces):  # observations padded, actions as they are
                obs_space, act_space = _padded_box(obs_spaces), act_spaces[0]
                obs_w = obs_space.shape[0]
            elif table.action_kind == "discrete":
                raise ConfigError("the run's bodies have different discrete action spaces "
                                  f"({sorted({str(a) for a in act_spaces})}): export them with --per-task")
            else:
                obs_space, act_space = _padded_box(obs_spaces), _padded_box(act_spaces)
                obs_w, act_w = obs_space.shape[0], act_space.shape[0]
            one_env = len({(tasks[i].env_id, repr(sorted(tasks[i].env_kwargs.items()))) for i in group}) == 1
            cut: list[int] = []
            count = {"episodes": 0, "steps": 0}

            names = ", ".join(tasks[i].name for i in group)
            with _datasets_root(out), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # Minari's notes on fields left None
                try:
                    ds = minari.create_dataset_from_buffers(
                        dataset_id,
                        _episode_buffers(rec, tasks, group, obs_w, act_w, table.action_kind == "discrete",
                                         cut, count, bar),
                        env=envs[group[0]] if one_env else None,
                        observation_space=obs_space, action_space=act_space,
                        algorithm_name="polydistill DAgger (teacher-labelled)", author=author,
                        author_email=author_email, code_permalink=code_permalink,
                        description=(f"polydistill {polydistill.__version__}: labelled steps of the run "
                                     f"{Path(run).resolve().name!r}, task(s) {names}. actions: executed "
                                     "(teacher or student); infos['teacher_*']: the teacher's labels."),
                        data_format=DATA_FORMAT, requirements=[f"polydistill>={polydistill.__version__}"])
                    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
                            "version": polydistill.__version__, "layout": "per-task" if per_task else "run",
                            "padded": obs_w is not None,
                            "task_ids": list(group), "cut_episodes": cut, "run": str(Path(run).resolve()),
                            "table": rec.manifest["table"], "tasks": rec.manifest["tasks"],
                            "label_fields": sorted(k for k in rec.tasks[group[0]]
                                                   if k.startswith("label_")),
                            **run_info(rec.manifest), "export_versions": library_versions()}
                    ds.storage.update_metadata({METADATA_KEY: meta})
                except (ValueError, TypeError, OSError) as exc:
                    shutil.rmtree(out / dataset_id, ignore_errors=True)
                    raise CheckpointError(f"writing dataset {dataset_id!r} under {str(out)!r} failed: "
                                          f"{exc!r}") from None
                except BaseException:
                    shutil.rmtree(out / dataset_id, ignore_errors=True)
                    raise
            written.append(ExportedDataset(dataset_id, out / dataset_id, count["episodes"], count["steps"],
                                           tuple(tasks[i].name for i in group)))
    finally:
        bar.close()
        for env in envs.values():
            env.close()
    return written


# ---------------------------------------------------------------------------- import
def find_datasets(path: str | Path) -> list[Path]:
    """The Minari data folders (``.../data`` with ``metadata.json``) at or below ``path``.

    ``path`` is one dataset's folder, its ``data`` folder, or any folder holding datasets
    (a Minari root with namespaces).

    Raises:
        ConfigError: if ``path`` does not exist or holds no dataset (a run folder is told to
            be exported first).
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"dataset folder {str(p)!r} does not exist")
    if (p / "data" / "metadata.json").is_file():
        return [p / "data"]
    if p.name == "data" and (p / "metadata.json").is_file():
        return [p]
    found = sorted(m.parent for m in p.rglob("metadata.json") if m.parent.name == "data")
    if found:
        return found
    if (p / "run.json").is_file() or (p / MANIFEST).is_file() or (p / DATASET_DIR / MANIFEST).is_file():
        raise ConfigError(f"{str(p)!r} is a distill run folder, not a Minari dataset; export it first: "
                          f"polydistill dataset export {p} --out DIR")
    raise ConfigError(f"{str(p)!r} holds no Minari dataset (expected DIR/data/metadata.json, or datasets "
                      "below DIR)")


def _open(path: Path) -> Any:
    minari = minari_module()
    try:
        return minari.MinariDataset(path)
    except (ValueError, KeyError, OSError, AssertionError, TypeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not a readable Minari dataset: {exc!r}") from None


def _ours(ds: Any) -> dict[str, Any] | None:
    meta = ds.storage.metadata.get(METADATA_KEY)
    if meta is None:
        return None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"dataset {ds.id!r}: expected {FORMAT} v{FORMAT_VERSION} metadata, got "
                              f"{meta.get('format')} v{meta.get('format_version')}")
    return meta


def _sub_table(table: EmbodimentTable, tasks: list[DatasetTask]) -> tuple[EmbodimentTable, list[DatasetTask]]:
    """The table a generalist run of ``tasks`` alone builds (bodies and tokens in task order)."""
    bodies: dict[str, Embodiment] = {}
    for t in tasks:
        bodies.setdefault(t.embodiment, table[t.embodiment])
    sub = EmbodimentTable(list(bodies.values()),
                          [(t.task or t.name, t.embodiment) for t in tasks] if table.has_tasks else None)
    return sub, [DatasetTask(t.name, sub.id(t.embodiment, t.task if table.has_tasks else None), t.embodiment,
                             t.env_id, t.env_kwargs, t.task, t.teacher) for t in tasks]


def _load_ours(datasets: list[tuple[Path, Any, dict[str, Any]]], progress_bar: bool) -> DatasetRows:
    from tqdm.auto import tqdm

    first = datasets[0][2]
    for path, _, meta in datasets[1:]:
        key = (meta["tasks"], meta["table"], meta.get("run"))
        if key != (first["tasks"], first["table"], first.get("run")):
            raise ConfigError(f"{str(path)!r} comes from another run than {str(datasets[0][0])!r}; import "
                              "one run's datasets at a time")
    table, tasks = manifest_table(first)
    present = sorted({t for _, _, m in datasets for t in m["task_ids"]})
    if len(present) != sum(len(m["task_ids"]) for _, _, m in datasets):
        raise ConfigError("the datasets hold a task twice (two exports of one run?); import one of them")
    if present != list(range(len(tasks))):
        table, kept = _sub_table(table, [tasks[i] for i in present])
    else:
        kept = tasks
    index = {old: new for new, old in enumerate(present)}
    builder = RowsBuilder(table, kept)
    total = sum(ds.total_episodes for _, ds, _ in datasets)
    with tqdm(total=total, desc="load dataset", unit="episode", disable=not progress_bar) as bar:
        for path, ds, _ in datasets:
            for ep in ds.iterate_episodes():
                infos = ep.infos
                task = int(infos["task_id"][0])
                if task not in index or not bool(np.all(infos["labelled"][:-1])):
                    raise CheckpointError(f"{str(path)!r}: episode {ep.id} names task {task} or has "
                                          "unlabelled steps")
                labels = {k[len("teacher_"):]: np.asarray(v)[:-1] for k, v in infos.items()
                          if k.startswith("teacher_") and k != "teacher_acted"}
                builder.add_episode(index[task], np.asarray(ep.observations), labels)
                bar.update(1)
    sources = [{"dataset_id": ds.id, "path": str(path.resolve()), "polydistill": True}
               for path, ds, _ in datasets]
    return builder.build(True, sources, {k: first.get(k) for k in ("setup", "config", "suite", "success_key",
                                                                    "n_envs", "versions", "run")})


def _load_foreign(datasets: list[tuple[Path, Any]], progress_bar: bool) -> DatasetRows:
    from minari.dataset.minari_dataset import parse_dataset_id
    from tqdm.auto import tqdm

    bodies: dict[str, Embodiment] = {}
    tasks_in: list[DatasetTask] = []
    for path, ds in datasets:
        env_id = ds.env_spec.id if ds.env_spec is not None else None
        name = parse_dataset_id(ds.id)[1]
        emb_name = env_id or name
        emb = Embodiment.from_spaces(emb_name, ds.observation_space, ds.action_space)
        if bodies.setdefault(emb_name, emb) != emb:
            raise SpaceMismatchError(f"{str(path)!r}: env {emb_name!r} has spaces {emb}, another dataset "
                                     f"of it {bodies[emb_name]}")
        if name in {t.name for t in tasks_in}:
            name = _slug(ds.id)
        tasks_in.append(DatasetTask(name, -1, emb_name, env_id))
    table = EmbodimentTable(list(bodies.values()))
    tasks = [DatasetTask(t.name, table.id(t.embodiment), t.embodiment, t.env_id) for t in tasks_in]
    builder = RowsBuilder(table, tasks)
    with tqdm(total=sum(ds.total_episodes for _, ds in datasets), desc="load dataset", unit="episode",
              disable=not progress_bar) as bar:
        for i, (_, ds) in enumerate(datasets):
            for ep in ds.iterate_episodes():
                builder.add_episode(i, np.asarray(ep.observations), {"action": np.asarray(ep.actions)})
                bar.update(1)
    sources = [{"dataset_id": ds.id, "path": str(path.resolve()), "polydistill": False}
               for path, ds in datasets]
    return builder.build(False, sources)


def load_dataset(path: str | Path, progress_bar: bool = True) -> DatasetRows:
    """The distillation rows of the Minari dataset(s) at ``path`` (see :func:`find_datasets`).

    A polydistill dataset gives the teacher's labels (and distributions) with the run's tasks
    and embodiment table; a folder of one export's per-task datasets gives them all. Any
    other Minari dataset with a flat Box observation space and Box or Discrete actions is one
    task whose labels are its actions (embodiment: its env id, else its name).

    Raises:
        ConfigError: for a folder without datasets, spaces the student cannot take, or a mix
            of polydistill and other datasets.
        CheckpointError: for an unreadable dataset.
    """
    datasets = [(p, _open(p)) for p in find_datasets(path)]
    ours = [(p, ds, _ours(ds)) for p, ds in datasets]
    flags = {m is not None for _, _, m in ours}
    if len(flags) > 1:
        raise ConfigError(f"{str(path)!r} mixes polydistill datasets and others; import them separately")
    if flags == {True}:
        return _load_ours([(p, ds, m) for p, ds, m in ours if m is not None], progress_bar)
    return _load_foreign(datasets, progress_bar)


def dataset_summary(path: str | Path) -> list[dict[str, Any]]:
    """One line of facts per dataset at ``path`` (``polydistill dataset info``)."""
    out = []
    for p in find_datasets(path):
        ds = _open(p)
        meta = _ours(ds)
        out.append({"dataset_id": ds.id, "path": str(p.parent), "episodes": ds.total_episodes,
                    "steps": ds.total_steps, "observation_space": str(ds.observation_space),
                    "action_space": str(ds.action_space),
                    "env_id": ds.env_spec.id if ds.env_spec is not None else None,
                    "tasks": ([meta["tasks"][i]["name"] for i in meta["task_ids"]] if meta else None),
                    "labels": ("teacher: " + ", ".join(f[len("label_"):] for f in meta["label_fields"])
                               if meta else "dataset actions"),
                    "cut_episodes": len(meta["cut_episodes"]) if meta else None})
    return out
