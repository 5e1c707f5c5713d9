"""What every benchmark shares: rliable statistics, cells in worker processes, the report files.

Aggregates follow Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice"):
the interquartile mean (IQM) over runs and tasks, with a stratified bootstrap 95% confidence
interval (``rliable.library.get_interval_estimates``), reported beside the mean and std.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.errors import ConfigError
from polydistill.utils import atomic_write_bytes, atomic_write_json, command_line, library_versions

__all__ = ["interval_stats", "run_cells", "cell_fingerprint", "effective_workers", "finish_report"]

BOOTSTRAP_REPS = 5000
log = logging.getLogger(__name__)


def interval_stats(scores: Sequence[float] | np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Mean, std, IQM and stratified bootstrap 95% CIs of ``scores`` (runs, or runs x tasks).

    Raises:
        ConfigError: if rliable is missing (``pip install 'polydistill[bench]'``).
    """
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError as exc:
        raise ConfigError(f"benchmark statistics need rliable: pip install 'polydistill[bench]' ({exc})"
                          ) from None
    import logging

    logging.getLogger("absl").setLevel(logging.WARNING)  # rliable logs every estimate at INFO
    x = np.asarray(scores, dtype=np.float64)
    x = x.reshape(len(x), -1)  # (runs, tasks)
    point, ci = rly.get_interval_estimates(
        {"s": x}, lambda s: np.array([metrics.aggregate_iqm(s), metrics.aggregate_mean(s)]),
        reps=BOOTSTRAP_REPS, random_state=np.random.RandomState(seed))
    return {"mean": float(x.mean()), "std": float(x.std()), "iqm": float(point["s"][0]),
            "iqm_ci95": [float(v) for v in ci["s"][:, 0]], "mean_ci95": [float(v) for v in ci["s"][:, 1]],
            "runs": int(x.shape[0]), "tasks": int(x.shape[1])}


def effective_workers(n_jobs: int, workers: int) -> int:
    """Processes used for ``n_jobs`` cells when ``workers`` are asked for (0: one per core)."""
    return max(1, min(n_jobs, workers or os.cpu_count() or 1))


def _canon(x: Any) -> Any:
    """A JSON form of a cell argument that is the same in every process (or ConfigError)."""
    import dataclasses
    import functools

    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        # a field marked ``metadata={"fingerprint": "if_set"}`` (one added after cells were kept)
        # counts only away from its default, so cells computed before it existed stay found
        return {"__dataclass__": type(x).__qualname__,
                **{f.name: _canon(getattr(x, f.name)) for f in dataclasses.fields(x)
                   if not (f.metadata.get("fingerprint") == "if_set" and getattr(x, f.name) == f.default)}}
    if isinstance(x, functools.partial):
        return {"__partial__": _canon(x.func), "args": _canon(x.args), "keywords": _canon(x.keywords)}
    if isinstance(x, bool | int | float | str | type(None)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return {"__array__": str(x.dtype), "data": x.tolist()}
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, dict):
        return {f"{type(k).__name__}:{k}": _canon(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_canon(v) for v in x]
    if isinstance(x, set | frozenset):
        return {"__set__": sorted(json.dumps(_canon(v), sort_keys=True) for v in x)}
    if callable(x):
        name = getattr(x, "__qualname__", "")
        if not name or "<locals>" in name or "<lambda>" in name:
            raise ConfigError(f"--cells-dir: cell argument {x!r} is a lambda or closure; its captured "
                              "values cannot be fingerprinted (use a module-level function)")
        return f"{x.__module__}:{name}"
    raise ConfigError(f"--cells-dir: cannot fingerprint a cell argument of type {type(x).__name__}")


def cell_fingerprint(job: tuple[Any, ...]) -> str:
    """A digest of a cell that is the same in every process and run.

    It covers the cell's name, seed, method, function and arguments (dataclasses as their
    fields, functions as their import path). Paths inside the installed ``agents/`` folder
    count from that folder, so a cell computed in one checkout is found in another.

    Raises:
        ConfigError: for an argument with no stable form (a closure, an arbitrary object).
    """
    import hashlib

    from polydistill.utils import agents_dir

    text = json.dumps(_canon(list(job)), sort_keys=True).replace(str(agents_dir()), "<agents>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cell_path(cache_dir: Path, job: tuple[Any, ...]) -> Path:
    name, seed, method = (str(v).replace("/", "_") for v in job[:3])
    return cache_dir / f"{name}-{method}-seed{seed}-{cell_fingerprint(job)}.json"


def _load_cell(path: Path) -> tuple[bool, Any]:
    try:
        return True, json.loads(path.read_text())["result"]
    except (OSError, ValueError, KeyError):
        return False, None  # absent or damaged: the cell runs again


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON")


def _save_cell(path: Path, job: tuple[Any, ...], result: Any) -> Any:
    """Write the cell; returns the result as read back (what a later cache hit returns)."""
    import time

    try:
        text = json.dumps({"cell": [str(v) for v in job[:3]], "fingerprint": cell_fingerprint(job),
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": library_versions(),
                           "result": result}, indent=2, default=_json_default)
    except TypeError as exc:
        log.warning("cell %s not kept: its result is not JSON (%s)", job[:3], exc)
        return result
    atomic_write_bytes(path, (text + "\n").encode())
    return json.loads(text)["result"]


def run_cells(jobs: list[tuple[Any, ...]], run: Callable[..., Any], workers: int, desc: str,
              progress_bar: bool, cache_dir: str | Path | None = None) -> dict[tuple[Any, ...], Any]:
    """``run(*job[3:])`` for every job ``(name, seed, method, *args)``, in ``workers`` processes.

    With ``cache_dir``, every finished cell is written there at once (atomically, JSON) under
    its :func:`cell_fingerprint`, and a cell whose file is already there is not run again: a
    long grid survives an interruption, and grows seed by seed over several invocations.
    The fingerprint covers the cell's configuration, not the code or the contents of teacher
    files it names: after changing either, use a fresh folder. With a cache, every result is
    returned in its JSON form (tuples as lists, keys as strings), fresh or cached alike.

    Returns ``{(name, seed, method): result}``.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    results: dict[tuple[Any, ...], Any] = {}
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            found, hit = _load_cell(_cell_path(cache, job))
            if found:
                results[job[:3]] = hit
    todo = [job for job in jobs if job[:3] not in results]

    def done(job: tuple[Any, ...], result: Any) -> None:
        # with a cache, fresh results take the JSON form cached ones have (lists, str keys)
        results[job[:3]] = _save_cell(_cell_path(cache, job), job, result) if cache is not None else result
        bar.update()

    workers = effective_workers(len(todo), workers)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, disable=not progress_bar)
    if workers == 1:
        for job in todo:
            done(job, run(*job[3:]))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futs = {pool.submit(run, *job[3:]): job for job in todo}
            for fut in as_completed(futs):
                done(futs[fut], fut.result())
    bar.close()
    return results


def finish_report(report: dict[str, Any], markdown: str, out: str | Path,
                  plot: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Stamp the command and versions, write ``out`` (JSON), its ``.md`` table and ``.html`` page.

    Args:
        report: The benchmark's results (gains ``command`` and ``versions``).
        markdown: Its table(s), written to ``out`` with ``.md``.
        out: The results JSON.
        plot: Draws the benchmark's figure into the path it is given (``out`` with ``.png``),
            after the JSON is safe and before the page, which embeds it.

    The page (``out`` with ``.html``, :func:`polydistill.evaluation.html.write_html_report`)
    comes last: if it fails, a warning is logged and the results stand.

    Returns:
        ``report``, with ``markdown`` added.
    """
    report["command"] = command_line("scripts/benchmark.py")
    report["versions"] = library_versions()
    atomic_write_json(out, report)
    atomic_write_bytes(Path(out).with_suffix(".md"), (markdown + "\n").encode())
    report["markdown"] = markdown
    if plot is not None:
        plot(Path(out).with_suffix(".png"))
    from polydistill.evaluation.html import write_html_report_safe

    write_html_report_safe(out)
    return report
