"""Benchmarks that report measured figures (never asserted in tests).

``generalist``: for each seed, distil the default suite with DAgger and, on the same budget,
with pure teacher-rollout behaviour cloning; evaluate both against the specialists on the
training and held-out tasks; report mean and std over seeds.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.checkpoint import DeployedStudent
from polydistill.config import override
from polydistill.quickstart import SUITE, default_distill_config
from polydistill.report import TaskRow, evaluate_student, suite_eval_tasks
from polydistill.trainer import DistillTrainer, default_teachers_dir
from polydistill.utils import atomic_write_bytes, atomic_write_json, library_versions

__all__ = ["run_generalist_benchmark"]

log = logging.getLogger(__name__)


def _aggregate(per_seed: list[list[TaskRow]]) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(per_seed[0]):
        s = np.array([rows[i].student_return for rows in per_seed])
        r = [rows[i].ratio for rows in per_seed]
        ratios = np.array([x for x in r if x is not None])
        out.append({
            "name": row.name, "split": row.split, "embodiment": row.embodiment,
            "teacher_return": row.teacher_return,
            "student_return": float(s.mean()), "student_return_std": float(s.std()),
            "ratio": float(ratios.mean()) if ratios.size else None,
            "ratio_std": float(ratios.std()) if ratios.size else None,
        })
    return out


def _table(tasks: list[dict[str, Any]], bc: list[dict[str, Any]]) -> str:
    def f(x: float | None, d: int = 3) -> str:
        return "-" if x is None else f"{x:.{d}f}"

    lines = ["| task | split | teacher | DAgger student | ratio (±std) | BC student | BC ratio (±std) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for t, b in zip(tasks, bc, strict=True):
        lines.append(
            f"| {t['name']} | {t['split']} | {f(t['teacher_return'], 1)} | "
            f"{f(t['student_return'], 1)} | {f(t['ratio'])} ± {f(t['ratio_std'])} | "
            f"{f(b['student_return'], 1)} | {f(b['ratio'])} ± {f(b['ratio_std'])} |"
        )
    return "\n".join(lines)


def run_generalist_benchmark(seeds: int = 3, out: str | Path = "results.json",
                             steps: float | None = None, episodes: int = 10,
                             teachers_dir: str | Path | None = None,
                             progress_bar: bool = True) -> dict[str, Any]:
    """DAgger vs behaviour cloning, ``seeds`` runs each; writes ``out`` (JSON) and returns it."""
    teachers = Path(teachers_dir) if teachers_dir else default_teachers_dir()
    eval_tasks = suite_eval_tasks(SUITE, teachers)
    base = override(default_distill_config(), {"teachers_dir": str(teachers), "suite": SUITE})
    if steps is not None:
        base = override(base, {"total_steps": int(steps)})
    cache: dict[str, tuple[float, float]] = {}
    results: dict[str, list[list[TaskRow]]] = {"dagger": [], "bc": []}
    timing: dict[str, list[float]] = {"dagger": [], "bc": []}
    for seed in range(seeds):
        for method in ("dagger", "bc"):
            sets: dict[str, Any] = {"seed": seed}
            if method == "bc":
                sets["beta"] = {"kind": "constant", "start": 1.0}
            cfg = override(base, sets)
            t0 = time.perf_counter()
            trainer = DistillTrainer(cfg, progress_bar=progress_bar)
            try:
                trainer.learn()
            finally:
                trainer.close()
            timing[method].append(time.perf_counter() - t0)
            deployed = DeployedStudent(trainer.student.eval(), {})
            rows = evaluate_student(deployed, eval_tasks, episodes=episodes, teacher_cache=cache)
            results[method].append(rows)
            train_ratios = [r.ratio for r in rows if r.split == "train" and r.ratio is not None]
            log.info("seed %d %s: train ratios %s", seed, method,
                     [round(x, 3) for x in train_ratios])
    tasks = _aggregate(results["dagger"])
    bc = _aggregate(results["bc"])
    report = {
        "setup": "generalist",
        "seeds": seeds,
        "tasks": tasks,
        "baselines": {"bc": bc},
        "budget": {"total_env_steps": base.total_steps, "rounds": base.rounds,
                   "updates_per_step": base.updates_per_step, "eval_episodes": episodes},
        "distill_seconds": {k: float(np.mean(v)) for k, v in timing.items()},
        "command": " ".join(["scripts/benchmark.py", *sys.argv[1:]]) if sys.argv else "",
        "versions": library_versions(),
    }
    atomic_write_json(out, report)
    table = _table(tasks, bc)
    atomic_write_bytes(Path(out).with_suffix(".md"), (table + "\n").encode())
    report["markdown"] = table
    return report
