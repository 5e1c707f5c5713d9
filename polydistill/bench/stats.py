"""What every benchmark shares: rliable statistics, cells in worker processes, the report files.

Aggregates follow Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice"):
the interquartile mean (IQM) over runs and tasks, with a stratified bootstrap 95% confidence
interval (``rliable.library.get_interval_estimates``), reported beside the mean and std.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.errors import ConfigError
from polydistill.utils import atomic_write_bytes, atomic_write_json, library_versions

__all__ = ["interval_stats", "run_cells", "effective_workers", "finish_report"]

BOOTSTRAP_REPS = 5000


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


def run_cells(jobs: list[tuple[Any, ...]], run: Callable[..., Any], workers: int, desc: str,
              progress_bar: bool) -> dict[tuple[Any, ...], Any]:
    """``run(*job[3:])`` for every job ``(name, seed, method, *args)``, in ``workers`` processes.

    Returns ``{(name, seed, method): result}``.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    workers = effective_workers(len(jobs), workers)
    results: dict[tuple[Any, ...], Any] = {}
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress_bar)
    if workers == 1:
        for job in jobs:
            results[job[:3]] = run(*job[3:])
            bar.update()
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futs = {pool.submit(run, *job[3:]): job[:3] for job in jobs}
            for fut in as_completed(futs):
                results[futs[fut]] = fut.result()
                bar.update()
    bar.close()
    return results


def finish_report(report: dict[str, Any], markdown: str, out: str | Path) -> dict[str, Any]:
    """Stamp the command and versions, write ``out`` (JSON) and its ``.md`` table; returns it."""
    report["command"] = " ".join(["scripts/benchmark.py", *sys.argv[1:]]) if sys.argv else ""
    report["versions"] = library_versions()
    atomic_write_json(out, report)
    atomic_write_bytes(Path(out).with_suffix(".md"), (markdown + "\n").encode())
    report["markdown"] = markdown
    return report
