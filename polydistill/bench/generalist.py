"""``benchmark generalist``: DAgger vs behaviour cloning on the default suite.

For each seed, distil the default suite with DAgger and, on the same budget, with pure
teacher-rollout behaviour cloning; evaluate both against the specialists on the training and
held-out tasks; report per task the mean, std, IQM and 95% CI over seeds, and over all
training tasks together.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from polydistill.bench import BenchOptions
from polydistill.bench.stats import finish_report, interval_stats
from polydistill.config import override
from polydistill.envs import DEFAULT_SUITE
from polydistill.evaluation.report import TaskRow, evaluate_student, suite_eval_tasks
from polydistill.quickstart import default_distill_config
from polydistill.setups.generalist import GeneralistRun, default_teachers_dir

__all__ = ["run"]

log = logging.getLogger(__name__)


def _aggregate(per_seed: list[list[TaskRow]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Per-task figures over seeds, and the statistics of every training task's ratio together."""
    out = []
    for i, row in enumerate(per_seed[0]):
        s = np.array([rows[i].student_return for rows in per_seed])
        ratios = [rows[i].ratio for rows in per_seed if rows[i].ratio is not None]
        out.append({
            "name": row.name, "split": row.split, "embodiment": row.embodiment,
            "teacher_return": row.teacher_return, "student_return": float(s.mean()),
            "student_return_std": float(s.std()), "student_returns": s.tolist(),
            "ratio": float(np.mean(ratios)) if ratios else None,
            "ratio_std": float(np.std(ratios)) if ratios else None, "ratios": ratios,
            "ratio_stats": interval_stats(ratios) if ratios else None,
        })
    train = [i for i, r in enumerate(out) if r["split"] == "train" and len(r["ratios"]) == len(per_seed)]
    grid = np.array([[out[i]["ratios"][s] for i in train] for s in range(len(per_seed))])
    return out, interval_stats(grid) if train else None


def _table(tasks: list[dict[str, Any]], bc: list[dict[str, Any]]) -> str:
    def f(x: float | None, d: int = 3) -> str:
        return "-" if x is None else f"{x:.{d}f}"

    def iqm(t: dict[str, Any]) -> str:
        st = t["ratio_stats"]
        return "-" if st is None else f"{st['iqm']:.3f} [{st['iqm_ci95'][0]:.3f}, {st['iqm_ci95'][1]:.3f}]"

    lines = ["| task | split | teacher | DAgger student | ratio (±std) | ratio IQM [95% CI] "
             "| BC ratio (±std) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for t, b in zip(tasks, bc, strict=True):
        lines.append(f"| {t['name']} | {t['split']} | {f(t['teacher_return'], 1)} | "
                     f"{f(t['student_return'], 1)} | {f(t['ratio'])} ± {f(t['ratio_std'])} | {iqm(t)} | "
                     f"{f(b['ratio'])} ± {f(b['ratio_std'])} |")
    return "\n".join(lines)


def run(options: BenchOptions) -> dict[str, Any]:
    """DAgger vs behaviour cloning, ``options.seeds`` runs each; writes ``options.out`` and returns it."""
    teachers = options.teachers_dir or str(default_teachers_dir())
    episodes = options.episodes or 10
    suite = options.suite or DEFAULT_SUITE
    eval_tasks = suite_eval_tasks(suite, teachers)
    base = override(default_distill_config(), {"teachers_dir": teachers, "suite": suite})
    if options.steps is not None:
        base = override(base, {"total_steps": int(options.steps)})
    cache: dict[str, Any] = {}
    results: dict[str, list[list[TaskRow]]] = {"dagger": [], "bc": []}
    timing: dict[str, list[float]] = {"dagger": [], "bc": []}
    for seed in range(options.seeds):
        for method in ("dagger", "bc"):
            sets: dict[str, Any] = {"seed": seed}
            if method == "bc":
                sets["beta"] = {"kind": "constant", "start": 1.0}
            t0 = time.perf_counter()
            run_ = GeneralistRun(override(base, sets), progress_bar=options.progress_bar)
            try:
                run_.learn()
            finally:
                run_.close()
            timing[method].append(time.perf_counter() - t0)
            rows = evaluate_student(run_.deployed(), eval_tasks, episodes=episodes, teacher_cache=cache)
            results[method].append(rows)
            log.info("seed %d %s: train ratios %s", seed, method,
                     [round(r.ratio, 3) for r in rows if r.split == "train" and r.ratio is not None])
    tasks, train_stats = _aggregate(results["dagger"])
    bc, bc_stats = _aggregate(results["bc"])
    report = {
        "setup": "generalist", "suite": suite, "seeds": options.seeds, "tasks": tasks,
        "train_ratio_stats": train_stats,
        "baselines": {"bc": bc, "bc_train_ratio_stats": bc_stats},
        "budget": {"total_env_steps": base.total_steps, "rounds": base.rounds,
                   "updates_per_step": base.updates_per_step, "eval_episodes": episodes},
        "distill_seconds": {k: float(np.mean(v)) for k, v in timing.items()},
    }
    md = _table(tasks, bc)
    for name, st in (("DAgger", train_stats), ("BC", bc_stats)):
        if st:
            md += (f"\n{name}, all training tasks: ratio IQM {st['iqm']:.3f} [{st['iqm_ci95'][0]:.3f}, "
                   f"{st['iqm_ci95'][1]:.3f}], mean {st['mean']:.3f}")
    return finish_report(report, md, options.out)
