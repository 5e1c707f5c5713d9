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


VISION_TASKS = {
    "point_goal": ("polydistill/PointGoalVision-v0", "point-goal-vision"),
    "reach": ("polydistill/ReachVision-v0", "reach-vision"),
}


def measure_render_fps(env_id: str, size: int = 64, steps: int = 500) -> float:
    """Env steps/s of a vision env with its camera group rendered (random actions)."""
    from polydistill.evaluation import make_env

    env = make_env(env_id, {"size": size})
    env.reset(seed=0)
    env.action_space.seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    fps = steps / (time.perf_counter() - t0)
    env.close()
    return fps


def run_vision_benchmark(seeds: int = 3, out: str | Path = "results.json", steps: float | None = None,
                         episodes: int = 10, teachers_dir: str | Path | None = None,
                         tasks: tuple[str, ...] = tuple(VISION_TASKS), progress_bar: bool = True
                         ) -> dict[str, Any]:
    """Privileged teacher vs DAgger vision student vs teacher-rollout cloning vs blind student."""
    from polydistill.vision import VisionDistillConfig, VisionTrainer

    teachers = Path(teachers_dir) if teachers_dir else default_teachers_dir()
    rows, sps = [], []
    for name in tasks:
        env_id, folder = VISION_TASKS[name]
        per: dict[str, list[float]] = {"student": [], "bc": [], "blind": []}
        teacher_ret: list[float] = []
        for seed in range(seeds):
            base = VisionDistillConfig(env_id=env_id, teacher=str(teachers / folder), seed=seed)
            if steps is not None:
                base = override(base, {"total_steps": int(steps)})
            variants = {
                "student": base,
                "bc": override(base, {"beta": {"kind": "constant", "start": 1.0}}),
                "blind": override(base, {"student_groups": ["proprio"]}),
            }
            for method, cfg in variants.items():
                trainer = VisionTrainer(cfg, progress_bar=progress_bar)
                try:
                    trainer.learn()
                    per[method].append(trainer.evaluate(episodes).mean_return)
                    if method == "student":
                        sps += [h["distill/samples_per_s"] for h in trainer.history
                                if "distill/samples_per_s" in h]
                        if seed == 0:
                            teacher_ret.append(trainer.evaluate_teacher(episodes).mean_return)
                finally:
                    trainer.close()
                log.info("%s seed %d %s: %.1f", name, seed, method, per[method][-1])
        t = float(np.mean(teacher_ret))
        s = float(np.mean(per["student"]))
        rows.append({"name": name, "env_id": env_id, "teacher_return": t, "student_return": s,
                     "student_return_std": float(np.std(per["student"])),
                     "ratio": s / t if t > 0 else None,
                     "blind_return": float(np.mean(per["blind"])),
                     "bc_return": float(np.mean(per["bc"]))})
    report = {
        "setup": "vision", "seeds": seeds, "tasks": rows,
        "render_fps": float(np.mean([measure_render_fps(VISION_TASKS[n][0]) for n in tasks])),
        "train_samples_per_s": float(np.mean(sps)) if sps else None,
        "command": " ".join(["scripts/benchmark.py", *sys.argv[1:]]) if sys.argv else "",
        "versions": library_versions(),
    }
    atomic_write_json(out, report)
    lines = ["| task | teacher | vision student (DAgger) | ratio | teacher-rollout cloning | blind |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio_txt = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        lines.append(f"| {r['name']} | {r['teacher_return']:.1f} | {r['student_return']:.1f} "
                     f"± {r['student_return_std']:.1f} | {ratio_txt} | {r['bc_return']:.1f} | "
                     f"{r['blind_return']:.1f} |")
    report["markdown"] = "\n".join(lines)
    return report
