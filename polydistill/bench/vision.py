"""``benchmark vision``: privileged teacher vs DAgger vision student vs cloning vs blind student.

Every cell trains the shipped recipe of a vision task (``agents/vision_*.yaml``) with one
seed; ``bc`` is the same run with the teacher always acting, ``blind`` the same student
without pixels. Cells run in worker processes; the speed figures are measured afterwards,
alone on the machine, so parallel cells do not distort them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from polydistill.bench import BenchOptions
from polydistill.bench.stats import effective_workers, finish_report, interval_stats, run_cells
from polydistill.config import override
from polydistill.errors import ConfigError
from polydistill.evaluation.report import EvalOptions
from polydistill.setups import read_recipe
from polydistill.setups.vision import VisionDistillConfig, VisionRun
from polydistill.utils import agents_dir, make_env

__all__ = ["run", "vision_recipe", "measure_render_fps", "measure_vision_speeds", "VISION_TASKS"]

log = logging.getLogger(__name__)

VISION_TASKS = {"point_goal": "vision_point_goal.yaml", "reach": "vision_reach.yaml"}
"""Benchmark task name -> shipped recipe in ``agents/``."""


def vision_recipe(name: str, teachers_dir: str | None = None) -> VisionDistillConfig:
    """The shipped config of vision task ``name`` (teacher from ``teachers_dir`` if given).

    Raises:
        ConfigError: for an unknown task name.
    """
    if name not in VISION_TASKS:
        raise ConfigError(f"unknown vision task {name!r}; valid: {sorted(VISION_TASKS)}")
    _, recipe = read_recipe(agents_dir() / VISION_TASKS[name])
    cfg = VisionRun.config_from(recipe)
    if teachers_dir:
        from polydistill.setups.vision import SHIPPED_TEACHERS

        cfg = override(cfg, {"teacher": f"{teachers_dir}/{SHIPPED_TEACHERS[cfg.env_id]}"})
    return cfg  # type: ignore[return-value]


def measure_render_fps(env_id: str, size: int = 64, steps: int = 500) -> float:
    """Env steps/s of a vision env with its camera group rendered (random actions)."""
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


def measure_vision_speeds(config: VisionDistillConfig, collect_steps: int = 4000,
                          updates: int = 60) -> dict[str, float]:
    """Labelled collection (teacher + student acting, pixels rendered) and training speed.

    Measured on the run's own collector: ``collect_steps`` DAgger steps with beta 0.5 (both
    policies run every step), then ``updates`` gradient steps on the buffer they filled.
    """
    run_ = VisionRun(config, progress_bar=False)
    try:
        run_.collector.collect([500], 0.5, run_.buffer)  # warm-up: first renders, allocations
        c = run_.collector.collect([collect_steps], 0.5, run_.buffer)
        run_.distiller.train_round(run_.buffer, 5, updates + 5)
        t = run_.distiller.train_round(run_.buffer, updates, updates + 5)
    finally:
        run_.close()
    return {"collect_steps_per_s": c["collect/steps_per_s"],
            "train_samples_per_s": t["distill/samples_per_s"] * run_.steps_per_row}


def _cell(config: VisionDistillConfig, episodes: int, with_teacher: bool,
          progress_bar: bool) -> dict[str, Any]:
    """One benchmark cell: train a student from ``config``, evaluate it (and the teacher)."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    run_ = VisionRun(config, progress_bar=progress_bar)
    try:
        run_.learn()
        row = VisionRun.evaluate_student(run_.deployed(), EvalOptions(episodes=episodes,
                                                                      with_teacher=with_teacher))[0]
    finally:
        run_.close()
    return {"return": row.student_return, "teacher_return": row.teacher_return,
            "wall_s": time.perf_counter() - t0}


def run(options: BenchOptions) -> dict[str, Any]:
    """Every vision task x seed x (student, bc, blind); writes ``options.out`` and returns it."""
    tasks = options.envs or tuple(VISION_TASKS)
    episodes = options.episodes or 10
    jobs: list[tuple[str, int, str, Any]] = []
    for name in tasks:
        base = vision_recipe(name, options.teachers_dir)
        if options.steps is not None:
            base = override(base, {"total_steps": int(options.steps)})
        for seed in range(options.seeds):
            cfg = override(base, {"seed": seed})
            jobs += [(name, seed, "student", cfg),
                     (name, seed, "bc", override(cfg, {"beta": {"kind": "constant", "start": 1.0}})),
                     (name, seed, "blind", override(cfg, {"student_groups": ["proprio"]}))]
    jobs.sort(key=lambda j: j[2] == "blind")  # the slow image students first
    cells = [(n, s, m, cfg, episodes, m == "student" and s == 0, False) for n, s, m, cfg in jobs]
    t0 = time.perf_counter()
    results = run_cells(cells, _cell, options.workers, "vision benchmark", options.progress_bar,
                        options.cells_dir)
    wall = time.perf_counter() - t0
    rows = []
    for name in tasks:
        per = {m: [results[(name, s, m)]["return"] for s in range(options.seeds)]
               for m in ("student", "bc", "blind")}
        t = float(results[(name, 0, "student")]["teacher_return"])
        s = float(np.mean(per["student"]))
        rows.append({"name": name, "env_id": vision_recipe(name).env_id, "teacher_return": t,
                     "student_return": s, "student_return_std": float(np.std(per["student"])),
                     "student_returns": per["student"], "ratio": s / t if t > 0 else None,
                     "min_seed_ratio": min(per["student"]) / t if t > 0 else None,
                     "ratio_stats": interval_stats(np.array(per["student"]) / t) if t > 0 else None,
                     "blind_return": float(np.mean(per["blind"])), "blind_returns": per["blind"],
                     "bc_return": float(np.mean(per["bc"])), "bc_returns": per["bc"],
                     "bc_stats": interval_stats(per["bc"]), "blind_stats": interval_stats(per["blind"])})
    speeds = [measure_vision_speeds(vision_recipe(n, options.teachers_dir)) for n in tasks]
    report = {
        "setup": "vision", "seeds": options.seeds, "tasks": rows,
        "render_fps": float(np.mean([measure_render_fps(r["env_id"]) for r in rows])),
        "train_samples_per_s": float(np.mean([s["train_samples_per_s"] for s in speeds])),
        "collect_steps_per_s": float(np.mean([s["collect_steps_per_s"] for s in speeds])),
        "speeds_per_task": dict(zip(tasks, speeds, strict=True)),
        "workers": effective_workers(len(jobs), options.workers), "wall_s": wall, "episodes": episodes,
    }
    lines = ["| task | privileged teacher | vision student (DAgger) | ratio (worst seed) | "
             "ratio IQM [95% CI] | "
             "teacher-rollout cloning | blind student |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        st = r["ratio_stats"]
        ratio_txt = "-" if r["ratio"] is None else f"{r['ratio']:.3f} ({r['min_seed_ratio']:.3f})"
        iqm = "-" if st is None else f"{st['iqm']:.3f} [{st['iqm_ci95'][0]:.3f}, {st['iqm_ci95'][1]:.3f}]"
        lines.append(f"| {r['name']} | {r['teacher_return']:.1f} | {r['student_return']:.1f} "
                     f"± {r['student_return_std']:.1f} | {ratio_txt} | {iqm} | {r['bc_return']:.1f} | "
                     f"{r['blind_return']:.1f} |")
    lines.append(f"\nrender {report['render_fps']:.0f} env steps/s (64x64, random actions); labelled "
                 f"DAgger collection {report['collect_steps_per_s']:.0f} env steps/s; student training "
                 f"{report['train_samples_per_s']:.0f} samples/s (one thread each)")
    return finish_report(report, "\n".join(lines), options.out)
