"""``benchmark metaworld --suite mt10|mt50``: Meta-World's scripted experts into one student.

Every cell distils the suite's recipe (``agents/metaworld_<suite>.yaml``) for one seed with one
student architecture (dense, multi-head, mixture of experts: one parameter budget) by DAgger,
plus the recipe's student by teacher-rollout behaviour cloning on the same budget. Each student
is evaluated per task on the training goal set (``env_kwargs.seed`` of the recipe, fresh reset
seeds) and on goals never seen in collection (another goal seed), and zero-shot on those of
ML10's five test tasks the suite does not train on (MT10: four; drawer-open-v3 is an MT10 task;
MT50 trains on all five, so it has none) through its
:data:`~polydistill.students.UNSEEN_TASK` token: no labels of those tasks were ever seen, so it
is expected to be low. The scripted experts are evaluated on the same episodes (each on its own
task: a reference, not zero-shot). Success is Meta-World's ``info["success"]`` ever being true
in an episode. All cells and the experts use the same evaluation reset seeds (100000 on), so
seeds differ in training only; the goal set has 50 goals, of which 10 episodes see at most 10.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from polydistill.bench import BenchOptions
from polydistill.bench.stats import finish_report, interval_stats, run_cells
from polydistill.config import from_dict, override
from polydistill.errors import ConfigError
from polydistill.evaluation.report import EvalTask, evaluate_student
from polydistill.setups.generalist import GeneralistConfig, GeneralistRun
from polydistill.students import UNSEEN_TASK

__all__ = ["run", "ARCHS", "HELD_OUT_GOAL_SEED"]

log = logging.getLogger(__name__)

ARCHS = ("dense", "multihead", "moe")
"""Student architectures compared (all at the dense student's parameter count)."""
HELD_OUT_GOAL_SEED = 1000
"""``env_kwargs.seed`` of the held-out goal set (the recipes collect on seed 0's goals)."""
ML10_TEST = ("drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3")
"""ML10's test tasks (``metaworld.env_dict.ML10_V3["test"]``)."""


def suite_config(suite: str) -> GeneralistConfig:
    """The recipe of ``suite`` (``mt10`` or ``mt50``) as a config.

    Raises:
        ConfigError: for another suite, or without the ``metaworld`` extra.
    """
    from polydistill.setups import read_recipe
    from polydistill.utils import agents_dir

    if suite not in ("mt10", "mt50"):
        raise ConfigError(f"--suite must be mt10 or mt50, got {suite!r}")
    try:
        import metaworld  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"the metaworld benchmark needs the extra: pip install -e \".[metaworld]\" ({exc})"
                          ) from None
    _, recipe = read_recipe(agents_dir() / f"metaworld_{suite}.yaml")
    return from_dict(GeneralistConfig, recipe)


def _eval_tasks(config: GeneralistConfig, goal_seed: int | None, with_teacher: bool) -> list[EvalTask]:
    out = []
    for t in config.tasks:
        kwargs = {**t.env_kwargs, **({} if goal_seed is None else {"seed": goal_seed})}
        out.append(EvalTask(t.name, t.env_id, t.embodiment or t.env_id, "train",
                            t.teacher if with_teacher else None,
                            tuple(sorted(kwargs.items())), t.task or t.name))
    return out


def zero_shot_names(config: GeneralistConfig) -> list[str]:
    """ML10's test tasks that ``config`` does not train on."""
    trained = {t.env_kwargs.get("env_name", t.name) for t in config.tasks}
    return [n for n in ML10_TEST if n not in trained]


def _zero_shot_tasks(config: GeneralistConfig, with_teacher: bool) -> list[EvalTask]:
    from metaworld.policies import ENV_POLICY_MAP

    body = config.tasks[0].embodiment or config.tasks[0].env_id
    return [EvalTask(n, "Meta-World/MT1", body, "heldout",
                     f"metaworld.policies:{ENV_POLICY_MAP[n].__name__}" if with_teacher else None,
                     (("env_name", n), ("seed", HELD_OUT_GOAL_SEED)), UNSEEN_TASK)
            for n in zero_shot_names(config)]


def _success(rows: list[Any], key: str) -> list[float | None]:
    return [r.extra.get(key) for r in rows]


def _cell(config: GeneralistConfig, episodes: int, zero_shot: bool) -> dict[str, Any]:
    """Distil one cell and evaluate it (runs in a worker process)."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    run_ = GeneralistRun(config, progress_bar=False)
    try:
        run_.learn()
    finally:
        run_.close()
    seconds = time.perf_counter() - t0
    student = run_.deployed()
    out: dict[str, Any] = {"distill_seconds": seconds, "env_steps": run_.total_steps}
    for split, goal_seed in (("train_goals", None), ("held_out_goals", HELD_OUT_GOAL_SEED)):
        rows = evaluate_student(student, _eval_tasks(config, goal_seed, False), episodes=episodes,
                                success_key="success")
        out[split] = _success(rows, "success")
    if zero_shot and zero_shot_names(config):
        rows = evaluate_student(student, _zero_shot_tasks(config, False), episodes=episodes,
                                success_key="success")
        out["zero_shot"] = _success(rows, "success")
    out["eval_seconds"] = time.perf_counter() - t0 - seconds
    return out


def _teacher_cell(config: GeneralistConfig, episodes: int) -> dict[str, Any]:
    """The scripted experts on the same episodes (a student that never acts: teacher rows only)."""
    import torch

    torch.set_num_threads(1)
    from polydistill.evaluation.episodes import evaluate
    from polydistill.evaluation.report import task_teacher

    out: dict[str, Any] = {}
    for split, tasks in (("train_goals", _eval_tasks(config, None, True)),
                         ("held_out_goals", _eval_tasks(config, HELD_OUT_GOAL_SEED, True)),
                         ("zero_shot", _zero_shot_tasks(config, True))):
        out[split] = []
        for t in tasks:
            kwargs = dict(t.env_kwargs)
            r = evaluate(t.env_id, task_teacher(str(t.teacher), t.env_id, kwargs).act, n_episodes=episodes,
                         seed=100_000, env_kwargs=kwargs, success_key="success")
            out[split].append(r.success_rate)
    return out


def _arch_summary(names: list[str], teacher: list[float], cells: list[dict[str, Any]], split: str
                  ) -> dict[str, Any]:
    s = np.array([c[split] for c in cells], dtype=np.float64)  # (seeds, tasks)
    t = np.array(teacher, dtype=np.float64)
    per_seed_mean = s.mean(1)
    norm = s / np.where(t > 0, t, np.nan)  # success relative to the teacher's, per task
    return {
        "mean_success": float(per_seed_mean.mean()), "mean_success_std": float(per_seed_mean.std()),
        "per_seed_mean_success": per_seed_mean.tolist(),
        "teacher_mean_success": float(t.mean()),
        "per_seed_ratio_of_means": (per_seed_mean / t.mean()).tolist() if t.mean() > 0 else None,
        "success_stats": interval_stats(s),
        "tasks": [{"name": n, "teacher_success": float(t[i]), "student_success": float(s[:, i].mean()),
                   "student_success_std": float(s[:, i].std()), "student_successes": s[:, i].tolist(),
                   "ratio": float(np.nanmean(norm[:, i])) if t[i] > 0 else None}
                  for i, n in enumerate(names)],
    }


def _table(report: dict[str, Any]) -> str:
    archs = list(report["students"])
    names = [t["name"] for t in report["students"][archs[0]]["tasks"]]
    seeds = {a: report["students"][a].get("seeds", report["seeds"]) for a in archs}
    head = "| task | teacher | " + " | ".join(
        a if seeds[a] == report["seeds"] else f"{a} ({seeds[a]} seed{'s' * (seeds[a] > 1)})"
        for a in archs) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(archs)]
    for i, n in enumerate(names):
        cells = [report["students"][a]["tasks"][i] for a in archs]
        lines.append(f"| {n} | {cells[0]['teacher_success']:.2f} | "
                     + " | ".join(f"{c['student_success']:.2f} ± {c['student_success_std']:.2f}"
                                  for c in cells) + " |")
    lines.append("| **mean** | {:.3f} | ".format(report["students"][archs[0]]["teacher_mean_success"])
                 + " | ".join(f"**{report['students'][a]['mean_success']:.3f}** ± "
                              f"{report['students'][a]['mean_success_std']:.3f}" for a in archs) + " |")
    bc = f" (`bc`: behaviour cloning of the {report.get('bc_architecture', 'recipe')} student)"
    out = [f"Success rate on training goals (mean ± std over seeds; DAgger except `bc`{bc}):", "", *lines, ""]
    out.append("| student | train goals | held-out goals | ML10 test tasks, zero-shot | distill s "
               "| env steps |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for a in archs:
        h = report["heldout"][a]
        out.append(f"| {a} | {report['students'][a]['mean_success']:.3f} | "
                   f"{h['goals']['mean_success']:.3f} ± {h['goals']['mean_success_std']:.3f} | "
                   + (f"{h['zero_shot']['mean_success']:.3f}" if h.get("zero_shot") else "-")
                   + f" | {report['cost'][a]['distill_seconds']:.0f} | {report['cost'][a]['env_steps']} |")
    t = report["heldout"]["teacher"]
    own = "-" if t["zero_shot"] is None else f"{t['zero_shot']:.3f} (each task's own expert)"
    out.append(f"| scripted experts | {report['students'][archs[0]]['teacher_mean_success']:.3f} | "
               f"{t['goals']:.3f} | {own} | - | - |")
    out += ["", f"Zero-shot tasks (ML10 test tasks this suite never trains on): "
                f"{', '.join(report['heldout']['zero_shot_tasks']) or 'none'}. Distillation seconds are "
                "measured with cells running side by side in worker processes."]
    if report["default"]:
        out += ["", f"Default architecture (highest mean training-goal success): **{report['default']}**."]
    return "\n".join(out)


def grid(options: BenchOptions) -> tuple[GeneralistConfig, list[str], int, list[tuple[Any, ...]]]:
    """The benchmark's cells: ``(base config, methods, episodes, jobs)`` (jobs for :func:`run_cells`).

    Raises:
        ConfigError: for an unknown name in ``options.students``.
    """
    suite = options.suite or "mt10"
    base = suite_config(suite)
    if options.envs:
        base = override(base, {"tasks": [t for t in base.tasks if t.name in options.envs]})
    if options.steps is not None:
        base = override(base, {"total_steps": int(options.steps)})
    if options.quick:
        base = override(base, {"total_steps": 400 * len(base.tasks), "rounds": 2, "n_envs": 2})
    episodes = options.episodes or (2 if options.quick else 10)
    methods: dict[str, dict[str, Any]] = {a: {"student": {**_student(base), "architecture": a}}
                                          for a in ARCHS}
    methods["bc"] = {"beta": {"kind": "constant", "start": 1.0}}
    if options.students:
        unknown = sorted(set(options.students) - set(methods))
        if unknown:
            raise ConfigError(f"--students: unknown {unknown}; valid: {', '.join(methods)}")
        methods = {m: v for m, v in methods.items() if m in options.students}
    jobs: list[tuple[Any, ...]] = [("teacher", 0, "teacher", _teacher_cell, base, episodes)]
    for seed in range(options.seeds):
        for m, sets in methods.items():
            if seed >= method_seeds(m, options):
                continue
            jobs.append((m, seed, m, _cell, override(base, {**sets, "seed": seed}), episodes, m != "bc"))
    return base, list(methods), episodes, jobs


def method_seeds(method: str, options: BenchOptions) -> int:
    """Runs of ``method`` in the grid: ``options.seeds``, or ``options.bc_seeds`` for ``bc``."""
    return options.bc_seeds if method == "bc" and options.bc_seeds is not None else options.seeds


def run(options: BenchOptions) -> dict[str, Any]:
    """Every architecture by DAgger and the recipe's by BC, ``options.seeds`` runs each."""
    suite = options.suite or "mt10"
    base, methods, episodes, jobs = grid(options)
    t0 = time.perf_counter()
    res = run_cells(jobs, _dispatch, options.workers, f"metaworld {suite}",
                    options.progress_bar, options.cells_dir)
    names = [t.name for t in base.tasks]
    teacher = res[("teacher", 0, "teacher")]
    unseen = zero_shot_names(base)
    teacher_heldout = {"goals": float(np.mean(teacher["held_out_goals"])),
                       "zero_shot": float(np.mean(teacher["zero_shot"])) if unseen else None,
                       "zero_shot_tasks": dict(zip(unseen, teacher["zero_shot"], strict=True))}
    report: dict[str, Any] = {"setup": "metaworld", "suite": suite, "seeds": options.seeds, "students": {},
                              "heldout": {"teacher": teacher_heldout, "zero_shot_tasks": unseen}, "cost": {}}
    for m in methods:
        cells = [res[(m, s, m)] for s in range(method_seeds(m, options))]
        report["students"][m] = _arch_summary(names, teacher["train_goals"], cells, "train_goals")
        report["students"][m]["seeds"] = len(cells)
        h = {"goals": _arch_summary(names, teacher["held_out_goals"], cells, "held_out_goals")}
        if m != "bc" and unseen:
            z = np.array([c["zero_shot"] for c in cells], dtype=np.float64)
            h["zero_shot"] = {"mean_success": float(z.mean()),
                              "tasks": dict(zip(unseen, z.mean(0).tolist(), strict=True))}
        report["heldout"][m] = h
        report["cost"][m] = {k: float(np.mean([c[k] for c in cells]))
                             for k in ("distill_seconds", "eval_seconds")}
        report["cost"][m]["env_steps"] = int(cells[0]["env_steps"])
    archs = [a for a in ARCHS if a in methods]
    report["default"] = max(archs, key=lambda a: report["students"][a]["mean_success"]) if archs else None
    report["bc_architecture"] = base.student.architecture
    report["budget"] = {"total_env_steps": base.total_steps, "rounds": base.rounds, "n_envs": base.n_envs,
                        "updates_per_step": base.updates_per_step, "eval_episodes": episodes,
                        "student_hidden": list(base.student.hidden), "held_out_goal_seed": HELD_OUT_GOAL_SEED}
    report["wall_seconds"] = time.perf_counter() - t0
    return finish_report(report, _table(report), options.out)


def _student(config: GeneralistConfig) -> dict[str, Any]:
    from polydistill.config import to_dict

    return to_dict(config.student)


def _dispatch(fn: Any, *args: Any) -> Any:
    return fn(*args)
