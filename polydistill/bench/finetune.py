"""``benchmark finetune``: RL fine-tuning of the distilled generalist, against its teachers.

Per seed, a suite (``--suite``, default the quickstart's :data:`polydistill.envs.DEFAULT_SUITE`)
is distilled once with the quickstart's recipe (changed by :data:`DISTILL_SETS` for a suite
listed there; the distilled student); then every task of the suite is fine-tuned on its own
from that student with ``agents/finetune.yaml`` and an RL budget of :data:`BUDGET_FRACTION` of
the env steps its specialist trained for (its manifest's ``n_timesteps``). Beside them, on each
training task, RL from scratch on that task (its env and keywords, as the fine-tuning) with the
specialist's algorithm and settings and the same budget. Every
policy is evaluated on the same seeds (100,000+); ratios are over the task's specialist (the
teacher of a training task, the yardstick of a held-out one).

Ablations (seed 0, training tasks): the recipe without the kickstarting regulariser
(``regularizer.coef=0``) and without the critic warm-up (``critic_warmup_steps=0``).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.bench import BenchOptions
from polydistill.bench.stats import cell_fingerprint, effective_workers, finish_report, run_cells
from polydistill.config import override
from polydistill.envs import DEFAULT_SUITE, get_suite
from polydistill.errors import ConfigError
from polydistill.evaluation.report import EvalTask, evaluate_student, suite_eval_tasks

__all__ = ["run", "BUDGET_FRACTION", "ABLATIONS", "DISTILL_SETS"]

log = logging.getLogger(__name__)

DISTILL_SETS: dict[str, dict[str, Any]] = {
    "locomotion": {"total_steps": 450_000, "buffer.capacity": 450_000, "updates_per_step": 0.1},
}
"""Per suite, the changes to ``agents/distill.yaml`` its distilled students are made with (a suite
not listed: the recipe as shipped). ``locomotion``, the default before ``locomotion-sizes``, keeps
the quickstart's recipe of then, which its committed cells were measured with."""
BUDGET_FRACTION = 0.1
"""Fine-tuning (and scratch PPO) env steps per task, as a fraction of its specialist's."""
EVAL_SEED = 100_000
"""First evaluation seed of every policy (as the generalist benchmark)."""
ABLATIONS: dict[str, dict[str, Any]] = {
    "no_regularizer": {"regularizer.coef": 0.0},
    "no_warmup": {"critic_warmup_steps": 0},
}
"""Recipe changes of the ablations (run on seed 0, training tasks)."""


def _budget(task: EvalTask, fraction: float) -> tuple[int, int]:
    """The specialist's training steps (from its manifest) and the fine-tuning budget."""
    manifest = Path(task.teacher or "") / "manifest.json"
    if not manifest.is_file():
        raise ConfigError(f"task {task.name!r}: no specialist manifest at {manifest}; the budget is a "
                          "fraction of the specialist's steps")
    steps = int(json.loads(manifest.read_text())["n_timesteps"])
    return steps, max(1, int(round(fraction * steps)))


def _distill_config(suite: str, seed: int, teachers: str, steps: int | None) -> Any:
    """The run a distill cell makes: the quickstart's recipe, :data:`DISTILL_SETS` for ``suite``.

    The resolved config is the cell's argument and its digest names the student's folder, so a
    changed ``agents/distill.yaml`` makes new distill cells, new students and new fine-tuning cells.
    """
    from polydistill.quickstart import default_distill_config

    sets: dict[str, Any] = {**DISTILL_SETS.get(suite, {}), "suite": suite, "seed": seed,
                            "teachers_dir": teachers}
    if steps is not None:
        sets["total_steps"] = int(steps)
    return override(default_distill_config(), sets)


def _distill_cell(config: Any, out: str, progress_bar: bool) -> dict[str, Any]:
    """Distil with ``config`` (see :func:`_distill_config`); save the student to ``out``."""
    import torch

    from polydistill.setups.generalist import GeneralistRun

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    run_ = GeneralistRun(config, progress_bar=progress_bar)
    try:
        run_.learn()
        path = run_.save(out)
    finally:
        run_.close()
    return {"student": str(path), "seconds": time.perf_counter() - t0}


def _eval_policy(task: EvalTask, student: str, episodes: int) -> float:
    from polydistill.deploy.checkpoint import load_student

    rows = evaluate_student(load_student(student), [replace(task, teacher=None)], episodes=episodes,
                            seed=EVAL_SEED)
    return float(rows[0].student_return)


def _finetune_cell(task: EvalTask, student: str, out: str, steps: int, cfg: Any,
                   episodes: int, progress_bar: bool) -> dict[str, Any]:
    """Fine-tune ``student`` on ``task`` alone; its return before and after, and the curve.

    ``cfg`` is the resolved ``FinetuneConfig`` (part of the cell's key, so a changed
    ``agents/finetune.yaml`` makes new cells).
    """
    import torch

    from polydistill.deploy.checkpoint import load_student
    from polydistill.finetune import finetune, resolve_finetune_tasks

    torch.set_num_threads(1)
    ft_task = resolve_finetune_tasks(load_student(student), [task.name])
    t0 = time.perf_counter()
    summary = finetune(student, out, ft_task, steps=steps, config=cfg, progress_bar=progress_bar)
    seconds = time.perf_counter() - t0
    return {"distilled": _eval_policy(task, student, episodes),
            "finetuned": _eval_policy(task, summary["student"], episodes),
            "curve": [{"step": c["step"], "return": c["returns"][task.name]} for c in summary["curve"]],
            "kept_step": summary["kept_step"], "steps": summary["steps"], "seconds": seconds}


def _scratch_recipe(task: EvalTask, steps: int) -> tuple[str, Any]:
    """The env and recipe of PPO from scratch on ``task``: the specialist's algorithm and settings.

    It trains on the env the fine-tuning trains on (the task's own id and keywords), not on the
    specialist's: a task labelled by a family teacher (the cheetah targets, the hopper sizes)
    would otherwise spend its budget over the whole family. The resolved recipe is the cell's
    argument, so a changed specialist or budget makes a new cell.
    """
    from polydistill.teachers.train import TeacherRecipe

    rec = json.loads((Path(task.teacher or "") / "manifest.json").read_text())["recipe"]
    # whole rollouts within the budget (SB3 finishes the rollout that crosses it)
    n_steps = rec["hyperparams"].get("n_steps", {"ppo": 2048, "a2c": 5}.get(rec["algo"], 1))
    rollout = int(rec["n_envs"]) * int(n_steps)
    return task.env_id, TeacherRecipe(**{
        **rec, "n_timesteps": max(rollout, int(steps) // rollout * rollout),
        "env_kwargs": dict(task.env_kwargs), "train_env_kwargs": {},
        # the same checkpoint selection as fine-tuning: every 10,000 steps
        "eval_freq": min(int(rec.get("eval_freq", 10_000)), 10_000)})


def _scratch_cell(task: EvalTask, env_id: str, recipe: Any, out: str, seed: int, episodes: int,
                  progress_bar: bool) -> dict[str, Any]:
    """RL from scratch on ``task`` with ``recipe`` (see :func:`_scratch_recipe`)."""
    import torch

    from polydistill.teachers.train import train_teacher

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train_teacher(env_id, out, recipe, seed=seed, progress_bar=progress_bar)
    seconds = time.perf_counter() - t0
    return {"return": _eval_teacher(out, task, episodes).mean_return, "seconds": seconds}


def _eval_teacher(spec: str, task: EvalTask, episodes: int) -> Any:
    """An SB3 policy folder (a specialist or a scratch run) on ``task``, on the benchmark's seeds."""
    from polydistill.evaluation.episodes import evaluate
    from polydistill.evaluation.report import task_teacher

    kwargs = dict(task.env_kwargs)
    return evaluate(task.env_id, task_teacher(spec, task.env_id, kwargs).act, n_episodes=episodes,
                    seed=EVAL_SEED, env_kwargs=kwargs)


def _teacher_cell(task: EvalTask, episodes: int) -> dict[str, Any]:
    r = _eval_teacher(task.teacher or "", task, episodes)
    return {"return": r.mean_return, "std": r.std_return}


def _dispatch(which: str, *args: Any) -> dict[str, Any]:
    cell = {"distill": _distill_cell, "finetune": _finetune_cell, "scratch": _scratch_cell,
            "teacher": _teacher_cell}[which]
    return cell(*args)


def _ratio(x: float | None, y: float | None) -> float | None:
    from polydistill.evaluation.report import ratio

    return None if x is None or y is None else ratio(x, y)


def run(options: BenchOptions) -> dict[str, Any]:
    """Distil, fine-tune every task, PPO from scratch; writes ``options.out`` (``.md``, ``.png``)."""
    from polydistill.finetune import load_finetune_config
    from polydistill.setups.generalist import default_teachers_dir

    teachers = options.teachers_dir or str(default_teachers_dir())
    suite = options.suite or DEFAULT_SUITE
    get_suite(suite)  # an unknown name fails here, before any cell runs
    tasks = suite_eval_tasks(suite, teachers)
    if options.envs:
        bad = sorted(set(options.envs) - {t.name for t in tasks})
        if bad:
            raise ConfigError(f"unknown tasks {bad}; the suite has {[t.name for t in tasks]}")
        tasks = [t for t in tasks if t.name in options.envs]
    episodes = options.episodes or (2 if options.quick else 10)
    fraction = 0.002 if options.quick else BUDGET_FRACTION
    distill_steps = 3000 if options.quick and options.steps is None else options.steps
    # students and PPO runs: beside the cells (they outlive the run with them) or beside the report
    out = Path(options.out)
    work = (Path(options.cells_dir) / "runs" if options.cells_dir
            else out.with_name(out.stem + "-runs")) / suite
    budgets = {t.name: _budget(t, fraction) for t in tasks}
    quick_sets: dict[str, Any] = ({"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 2,
                                   "critic_warmup_steps": 256, "eval_every": 512, "eval_episodes": 1,
                                   "regularizer.decay_steps": 1000} if options.quick else {})

    # Stage 1: one distilled student per seed (the fine-tuning runs start from it).
    configs = {s: _distill_config(suite, s, teachers, distill_steps) for s in range(options.seeds)}
    students = {s: str(work / f"distilled-seed{s}-{cell_fingerprint(('distill', s, suite, c))[:8]}")
                for s, c in configs.items()}
    stage1_jobs = [("distilled", s, "distill", "distill", configs[s], students[s], False)
                   for s in range(options.seeds)]
    stage1 = run_cells(stage1_jobs, _dispatch, options.workers, "distil", options.progress_bar,
                       Path(options.cells_dir) / "distill" if options.cells_dir else None)
    # Stage 2: teachers, fine-tuning (every task x seed, ablations on seed 0), scratch PPO.
    jobs = []
    for t in tasks:
        _, budget = budgets[t.name]
        jobs.append((t.name, 0, "teacher", "teacher", t, episodes))
        for s in range(options.seeds):
            jobs.append((t.name, s, "finetuned", "finetune", t, students[s],
                         str(work / f"ft-{t.name}-seed{s}"),
                         budget, load_finetune_config(overrides={**quick_sets, "seed": s}), episodes, False))
            if t.split == "train":
                jobs.append((t.name, s, "scratch", "scratch", t, *_scratch_recipe(t, budget),
                             str(work / f"scratch-{t.name}-seed{s}"), s, episodes, False))
        if t.split == "train":
            for name, sets in ABLATIONS.items():
                cfg = load_finetune_config(overrides={**quick_sets, **sets, "seed": 0})
                jobs.append((t.name, 0, name, "finetune", t, students[0], str(work / f"ft-{t.name}-{name}"),
                             budget, cfg, episodes, False))
    if options.cells_dir:  # cells kept from an earlier run need no student; new ones need theirs
        from polydistill.bench.stats import _cell_path, _load_cell

        kept = {job[5]: _cell_path(Path(options.cells_dir) / "distill", job) for job in stage1_jobs}
        for job in jobs:
            if job[3] == "finetune" and not _load_cell(_cell_path(Path(options.cells_dir), job))[0] \
                    and not Path(job[5]).exists():
                raise ConfigError(f"the distilled student {job[5]} of a cached distill cell is gone and cell "
                                  f"{job[:3]} needs it; remove {kept[job[5]]} to distil it again")
    t0 = time.perf_counter()
    results = run_cells(jobs, _dispatch, options.workers, "finetune benchmark", options.progress_bar,
                        options.cells_dir)
    wall = time.perf_counter() - t0

    rows = []
    for t in tasks:
        teacher = results[(t.name, 0, "teacher")]["return"]
        ft = [results[(t.name, s, "finetuned")] for s in range(options.seeds)]
        dist_r = [_ratio(c["distilled"], teacher) for c in ft]
        ft_r = [_ratio(c["finetuned"], teacher) for c in ft]
        row: dict[str, Any] = {
            "name": t.name, "split": t.split, "teacher_return": teacher,
            "specialist_steps": budgets[t.name][0], "finetune_steps": budgets[t.name][1],
            "distilled_return": float(np.mean([c["distilled"] for c in ft])),
            "distilled_ratio": float(np.mean(dist_r)), "distilled_ratios": dist_r,
            "finetuned_return": float(np.mean([c["finetuned"] for c in ft])),
            "finetuned_ratio": float(np.mean(ft_r)), "finetuned_ratio_std": float(np.std(ft_r)),
            "finetuned_ratios": ft_r, "kept_steps": [c["kept_step"] for c in ft],
            "finetune_seconds": float(np.mean([c["seconds"] for c in ft])),
            "curves": [c["curve"] for c in ft],
            "scratch_ratio": None,
        }
        if t.split == "train":
            sc = [results[(t.name, s, "scratch")] for s in range(options.seeds)]
            sc_r = [_ratio(c["return"], teacher) for c in sc]
            row.update(scratch_return=float(np.mean([c["return"] for c in sc])),
                       scratch_ratio=float(np.mean(sc_r)), scratch_ratio_std=float(np.std(sc_r)),
                       scratch_ratios=sc_r, scratch_seconds=float(np.mean([c["seconds"] for c in sc])))
            ab = {name: results[(t.name, 0, name)] for name in ABLATIONS}
            row["ablations"] = {name: {"finetuned_ratio": _ratio(c["finetuned"], teacher),
                                       "kept_step": c["kept_step"], "curve": c["curve"]}
                                for name, c in ab.items()}
        rows.append(row)
    train = [r for r in rows if r["split"] == "train"]
    held = [r for r in rows if r["split"] != "train"]
    summary = {
        "train_min_finetuned_ratio": min((r["finetuned_ratio"] for r in train), default=None),
        "train_tasks_at_or_above_1.05": sum(r["finetuned_ratio"] >= 1.05 for r in train),
        "heldout_min_finetuned_ratio": min((r["finetuned_ratio"] for r in held), default=None),
    }
    report = {"setup": "finetune", "suite": suite, "seeds": options.seeds, "budget_fraction": fraction,
              "tasks": rows, "summary": summary,
              "distill_seconds": float(np.mean([stage1[("distilled", s, "distill")]["seconds"]
                                                for s in range(options.seeds)])),
              "eval_episodes": episodes, "workers": effective_workers(len(jobs), options.workers),
              "wall_s": wall}
    return finish_report(report, _table(rows, options.seeds), options.out,
                         plot=functools.partial(_plot, rows))


def _table(rows: list[dict[str, Any]], seeds: int) -> str:
    def f(x: float | None, d: int = 3) -> str:
        return "-" if x is None else f"{x:.{d}f}"

    lines = [f"| task | split | teacher | FT steps | distilled | fine-tuned (±std, {seeds} seeds) | "
             "PPO from scratch | no regulariser | no warm-up |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ab = r.get("ablations", {})
        lines.append(
            f"| {r['name']} | {r['split']} | {f(r['teacher_return'], 1)} | {r['finetune_steps']:,} | "
            f"{f(r['distilled_ratio'])} | {f(r['finetuned_ratio'])} ± {f(r['finetuned_ratio_std'])} | "
            f"{f(r['scratch_ratio'])} | {f(ab.get('no_regularizer', {}).get('finetuned_ratio'))} | "
            f"{f(ab.get('no_warmup', {}).get('finetuned_ratio'))} |")
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Learning curves: return / teacher vs fine-tuning steps (mean over seeds, seeds thin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    cols = min(n, 5)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 2.8 * nrows), squeeze=False)
    for ax, r in zip(axes.flat, rows, strict=False):
        teacher = r["teacher_return"] or 1.0
        grids = []
        for curve in r["curves"]:
            steps = [c["step"] for c in curve]
            vals = [c["return"] / teacher for c in curve]
            ax.plot(steps, vals, color="tab:blue", lw=0.6, alpha=0.4)
            grids.append((steps, vals))
        common = grids[0][0]
        if all(g[0] == common for g in grids):
            ax.plot(common, np.mean([g[1] for g in grids], 0), color="tab:blue", lw=1.8, label="fine-tuned")
        for name, style in (("no_regularizer", "tab:red"), ("no_warmup", "tab:orange")):
            ab = r.get("ablations", {}).get(name)
            if ab:
                ax.plot([c["step"] for c in ab["curve"]], [c["return"] / teacher for c in ab["curve"]],
                        color=style, lw=0.9, label=name.replace("_", " "))
        if r["scratch_ratio"] is not None:
            ax.axhline(r["scratch_ratio"], color="grey", ls="--", lw=1, label="PPO from scratch (end)")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_title(f"{r['name']} ({r['split']})", fontsize=9)
        ax.set_xlabel("fine-tuning env steps", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("return / specialist")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
