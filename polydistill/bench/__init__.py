"""Benchmarks that report measured figures (never asserted in tests): a setup's, or ``perf``.

Setup benchmarks aggregate seeds with rliable (:mod:`polydistill.bench.stats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polydistill.errors import ConfigError

__all__ = ["BenchOptions", "list_benchmarks", "run_benchmark"]

OTHER_BENCHMARKS = {"perf": "polydistill.bench.perf:run", "metaworld": "polydistill.bench.metaworld:run",
                    "finetune": "polydistill.bench.finetune:run",
                    "mamujoco": "polydistill.bench.mamujoco:run"}
"""Benchmarks that belong to no setup."""


@dataclass(frozen=True)
class BenchOptions:
    """What the ``benchmark`` command passes to a benchmark."""

    seeds: int = 3
    """Independent runs (seeds 0 .. seeds-1) of every cell."""
    out: str = "results.json"
    """JSON report (a ``.md`` table is written beside it)."""
    steps: float | None = None
    """Labelled steps of distillation per run (default: the recipe's)."""
    episodes: int | None = None
    """Evaluation episodes (default: the benchmark's)."""
    teachers_dir: str | None = None
    """Folder of the teachers (default: the shipped ones)."""
    progress_bar: bool = True
    envs: tuple[str, ...] | None = None
    """Only these of the benchmark's envs or tasks."""
    quick: bool = False
    """Tiny budgets: every path runs, figures only indicative."""
    workers: int = 0
    """Benchmark cells run in this many processes (0: one per CPU core)."""
    suite: str | None = None
    """Benchmarks with several suites (``metaworld``: ``mt10`` or ``mt50``; ``generalist`` and
    ``finetune``: a suite of ``polydistill.envs``, default the quickstart's)."""
    students: tuple[str, ...] | None = None
    """``metaworld``: only these students (architectures, and ``bc``); ``morphology``: only these
    student kinds."""
    cells_dir: str | None = None
    """Keep every finished cell here and reuse the ones already there (see
    :func:`polydistill.bench.stats.run_cells`)."""
    bc_seeds: int | None = None
    """``metaworld``: runs of the behaviour-cloning baseline (seeds 0 .. bc_seeds-1; default:
    ``seeds``), for grids where a baseline on fewer seeds is enough."""


def list_benchmarks() -> list[str]:
    """Names ``run_benchmark`` accepts: setups with a benchmark, and the others (``perf``)."""
    from polydistill.setups import get_setup, list_setups

    return sorted([n for n in list_setups() if get_setup(n).benchmark] + list(OTHER_BENCHMARKS))


def run_benchmark(name: str, options: BenchOptions) -> dict[str, Any]:
    """Run benchmark ``name``; returns its report (with a ``markdown`` table).

    Raises:
        ConfigError: for an unknown name (the message lists the known ones).
    """
    import importlib

    from polydistill.setups import get_setup, list_setups

    if options.seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {options.seeds}")
    target = OTHER_BENCHMARKS.get(name) or (get_setup(name).benchmark if name in list_setups() else None)
    if target is None:
        raise ConfigError(f"unknown benchmark {name!r}; valid: {', '.join(list_benchmarks())}")
    if options.suite is not None and name not in ("metaworld", "generalist", "finetune"):
        raise ConfigError("--suite applies to the metaworld, generalist and finetune benchmarks, "
                          f"not {name!r}")
    if options.bc_seeds is not None:
        if name != "metaworld":
            raise ConfigError(f"--bc-seeds applies to the metaworld benchmark, not {name!r}")
        if not 1 <= options.bc_seeds <= options.seeds:
            raise ConfigError(f"--bc-seeds must be in [1, --seeds={options.seeds}], got {options.bc_seeds}")
    if isinstance(target, str):  # "package.module:function", imported when run
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target(options)
