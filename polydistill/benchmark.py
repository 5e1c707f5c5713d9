"""Benchmarks that report measured figures (never asserted in tests).

``generalist``: for each seed, distil the default suite with DAgger and, on the same budget,
with pure teacher-rollout behaviour cloning; evaluate both against the specialists on the
training and held-out tasks; report mean and std over seeds.

``vision``: for each vision task and seed, the privileged teacher, the DAgger vision student,
teacher-rollout cloning and the blind (no pixels) student; then render, collection and
training speeds measured alone on the machine.
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
from polydistill.errors import ConfigError
from polydistill.quickstart import SUITE, default_distill_config
from polydistill.report import TaskRow, evaluate_student, suite_eval_tasks
from polydistill.trainer import DistillTrainer, default_teachers_dir
from polydistill.utils import agents_dir, atomic_write_bytes, atomic_write_json, library_versions

__all__ = ["run_generalist_benchmark", "run_vision_benchmark", "run_caml_benchmark", "vision_recipe",
           "caml_recipe"]

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


def _effective_workers(n_jobs: int, workers: int) -> int:
    """Processes used for ``n_jobs`` cells when ``workers`` are asked for (0: one per core)."""
    import os

    return max(1, min(n_jobs, workers or os.cpu_count() or 1))


def _run_cells(jobs: list[tuple[Any, ...]], run: Any, workers: int, desc: str,
               progress_bar: bool) -> dict[tuple[Any, ...], Any]:
    """``run(*job[3:])`` for every job ``(name, seed, method, *args)``, in ``workers`` processes.

    Returns ``{(name, seed, method): result}``; ``workers`` 0 means one per CPU core.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    workers = _effective_workers(len(jobs), workers)
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


VISION_TASKS = {
    "point_goal": ("vision_point_goal.yaml", "point-goal-vision"),
    "reach": ("vision_reach.yaml", "reach-vision"),
}
"""Benchmark task name -> (shipped recipe in ``agents/``, shipped teacher folder)."""


def vision_recipe(name: str, teachers_dir: str | Path | None = None) -> Any:
    """The shipped :class:`~polydistill.vision.VisionDistillConfig` of vision task ``name``.

    Raises:
        ConfigError: for an unknown task name.
    """
    from polydistill.config import from_dict, load_yaml
    from polydistill.vision import VisionDistillConfig

    if name not in VISION_TASKS:
        raise ConfigError(f"unknown vision task {name!r}; valid: {sorted(VISION_TASKS)}")
    recipe, folder = VISION_TASKS[name]
    data = {k: v for k, v in load_yaml(agents_dir() / recipe).items() if k != "setup"}
    cfg = from_dict(VisionDistillConfig, data, "VisionDistillConfig")
    teachers = Path(teachers_dir) if teachers_dir else default_teachers_dir()
    return override(cfg, {"teacher": str(teachers / folder)}) if not cfg.teacher else cfg


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


def measure_vision_speeds(config: Any, collect_steps: int = 4000, updates: int = 60) -> dict[str, float]:
    """Labelled collection (teacher + student acting, pixels rendered) and training speed.

    Measured on the run's own :class:`~polydistill.vision.VisionTrainer`: ``collect_steps``
    DAgger steps with beta 0.5 (both policies run every step), then ``updates`` gradient
    steps on the buffer they filled.
    """
    from polydistill.vision import VisionTrainer

    trainer = VisionTrainer(config, progress_bar=False)
    try:
        trainer.collect(500, 0.5)  # warm-up: first renders, allocations
        c = trainer.collect(collect_steps, 0.5)
        trainer.distiller.train_round(trainer.buffer, 5, updates + 5)
        t = trainer.distiller.train_round(trainer.buffer, updates, updates + 5)
    finally:
        trainer.close()
    return {"collect_steps_per_s": c["collect/steps_per_s"],
            "train_samples_per_s": t["distill/samples_per_s"] * trainer.steps_per_row}


def _vision_job(config: Any, episodes: int, with_teacher: bool, progress_bar: bool) -> dict[str, Any]:
    """One benchmark cell: train a student from ``config``, evaluate it (and the teacher)."""
    import torch

    from polydistill.vision import VisionTrainer

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    trainer = VisionTrainer(config, progress_bar=progress_bar)
    try:
        trainer.learn()
        out: dict[str, Any] = {"return": trainer.evaluate(episodes).mean_return,
                               "wall_s": time.perf_counter() - t0}
        if with_teacher:
            out["teacher_return"] = trainer.evaluate_teacher(episodes).mean_return
    finally:
        trainer.close()
    return out


def run_vision_benchmark(seeds: int = 3, out: str | Path = "results.json", steps: float | None = None,
                         episodes: int = 10, teachers_dir: str | Path | None = None,
                         tasks: tuple[str, ...] = tuple(VISION_TASKS), progress_bar: bool = True,
                         workers: int = 0) -> dict[str, Any]:
    """Privileged teacher vs DAgger vision student vs teacher-rollout cloning vs blind student.

    Every cell trains the shipped recipe of the task (``agents/vision_*.yaml``) with one seed;
    ``bc`` is the same run with the teacher always acting, ``blind`` the same student without
    pixels. Cells run in ``workers`` processes (0: one per CPU core); the speed figures are
    measured afterwards, alone on the machine, so parallel cells do not distort them.
    """
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    jobs: list[tuple[str, int, str, Any]] = []
    for name in tasks:
        base = vision_recipe(name, teachers_dir)
        if steps is not None:
            base = override(base, {"total_steps": int(steps)})
        for seed in range(seeds):
            cfg = override(base, {"seed": seed})
            jobs += [(name, seed, "student", cfg),
                     (name, seed, "bc", override(cfg, {"beta": {"kind": "constant", "start": 1.0}})),
                     (name, seed, "blind", override(cfg, {"student_groups": ["proprio"]}))]
    jobs.sort(key=lambda j: j[2] == "blind")  # the slow image students first
    cells = [(n, s, m, cfg, episodes, m == "student" and s == 0, False) for n, s, m, cfg in jobs]
    t0 = time.perf_counter()
    results = _run_cells(cells, _vision_job, workers, "vision benchmark", progress_bar)
    wall = time.perf_counter() - t0
    for (name, seed, method), r in sorted(results.items()):
        log.info("%s seed %d %s: %.1f (%.0f s)", name, seed, method, r["return"], r["wall_s"])
    rows = []
    for name in tasks:
        per = {m: [results[(name, s, m)]["return"] for s in range(seeds)]
               for m in ("student", "bc", "blind")}
        t = float(results[(name, 0, "student")]["teacher_return"])
        s = float(np.mean(per["student"]))
        rows.append({"name": name, "env_id": vision_recipe(name, teachers_dir).env_id,
                     "teacher_return": t, "student_return": s,
                     "student_return_std": float(np.std(per["student"])),
                     "student_returns": per["student"], "ratio": s / t if t > 0 else None,
                     "min_seed_ratio": min(per["student"]) / t if t > 0 else None,
                     "blind_return": float(np.mean(per["blind"])), "blind_returns": per["blind"],
                     "bc_return": float(np.mean(per["bc"])), "bc_returns": per["bc"]})
    speeds = [measure_vision_speeds(vision_recipe(n, teachers_dir)) for n in tasks]
    report = {
        "setup": "vision", "seeds": seeds, "tasks": rows,
        "render_fps": float(np.mean([measure_render_fps(r["env_id"]) for r in rows])),
        "train_samples_per_s": float(np.mean([s["train_samples_per_s"] for s in speeds])),
        "collect_steps_per_s": float(np.mean([s["collect_steps_per_s"] for s in speeds])),
        "speeds_per_task": dict(zip(tasks, speeds, strict=True)),
        "workers": _effective_workers(len(jobs), workers), "wall_s": wall, "episodes": episodes,
        "command": " ".join(["scripts/benchmark.py", *sys.argv[1:]]) if sys.argv else "",
        "versions": library_versions(),
    }
    atomic_write_json(out, report)
    lines = ["| task | privileged teacher | vision student (DAgger) | ratio (worst seed) | "
             "teacher-rollout cloning | blind student |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio_txt = "-" if r["ratio"] is None else f"{r['ratio']:.3f} ({r['min_seed_ratio']:.3f})"
        lines.append(f"| {r['name']} | {r['teacher_return']:.1f} | {r['student_return']:.1f} "
                     f"± {r['student_return_std']:.1f} | {ratio_txt} | {r['bc_return']:.1f} | "
                     f"{r['blind_return']:.1f} |")
    lines.append(f"\nrender {report['render_fps']:.0f} env steps/s (64x64, random actions); labelled "
                 f"DAgger collection {report['collect_steps_per_s']:.0f} env steps/s; student training "
                 f"{report['train_samples_per_s']:.0f} samples/s (one thread each)")
    report["markdown"] = "\n".join(lines)
    atomic_write_bytes(Path(out).with_suffix(".md"), (report["markdown"] + "\n").encode())
    return report


CAML_ENVS = {"intersection": "caml_intersection.yaml", "rendezvous": "caml_rendezvous.yaml"}
"""Benchmark env name -> shipped CAML recipe in ``agents/``."""


def caml_recipe(name: str) -> tuple[Any, int]:
    """The shipped :class:`~polydistill.caml.CamlConfig` of ``name`` and its PPO baseline budget.

    Raises:
        ConfigError: for an unknown name.
    """
    from polydistill.caml import CamlConfig
    from polydistill.config import from_dict, load_yaml

    if name not in CAML_ENVS:
        raise ConfigError(f"unknown CAML benchmark env {name!r}; valid: {sorted(CAML_ENVS)}")
    data = load_yaml(agents_dir() / CAML_ENVS[name])
    rl_steps = int(data.pop("rl_steps", 300_000))
    data.pop("setup", None)
    return from_dict(CamlConfig, data, "CamlConfig"), rl_steps


def _team_figures(result: Any) -> dict[str, float]:
    return {"return": result.mean_return, "accident_rate": result.accident_rate}


def _caml_job(config: Any, method: str, episodes: int, rl_steps: int) -> dict[str, Any]:
    """One CAML benchmark cell: train ``method`` with ``config`` and evaluate it."""
    import torch

    from polydistill.caml import CamlTrainer, evaluate_team
    from polydistill.envs import make_parallel

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    n = int(config.env_kwargs.get("n_agents", 0)) or len(make_parallel(config.env).possible_agents)
    sizes = {}
    if method == "reduced_rl":
        from stable_baselines3 import PPO

        from polydistill.ma_vec import ParallelVecEnv
        from polydistill.team_student import flatten_modalities

        mods = tuple(config.team.modalities)
        venv = ParallelVecEnv(lambda: make_parallel(config.env, **config.env_kwargs), 8, mods,
                              seed=config.seed)
        model = PPO("MlpPolicy", venv, n_steps=256, batch_size=256, seed=config.seed, verbose=0,
                    policy_kwargs={"net_arch": list(config.student.hidden)})
        model.learn(rl_steps)
        venv.close()

        def act(env: Any, obs: dict[str, Any]) -> dict[str, np.ndarray]:
            x = np.stack([flatten_modalities({m: obs[a][m] for m in mods}, mods) for a in obs])
            a, _ = model.predict(x, deterministic=True)
            return {agent: a[k] for k, agent in enumerate(obs)}

        for k in (n - 1, n, n + 1):
            if k >= 1:
                kwargs = {**config.env_kwargs, "n_agents": k}
                sizes[k] = _team_figures(evaluate_team(lambda kw=kwargs: make_parallel(config.env, **kw),
                                                       act, episodes))
    else:
        trainer = CamlTrainer(config, progress_bar=False)
        try:
            trainer.learn()
            for k in (n - 1, n, n + 1):
                if k >= 1:
                    sizes[k] = _team_figures(trainer.evaluate(episodes, n_agents=k))
        finally:
            trainer.close()
    return {"figures": sizes[n], "by_team_size": {str(k): v for k, v in sizes.items()},
            "wall_s": time.perf_counter() - t0}


def run_caml_benchmark(seeds: int = 3, out: str | Path = "results.json", steps: float | None = None,
                       episodes: int = 20, envs: tuple[str, ...] = tuple(CAML_ENVS),
                       progress_bar: bool = True, workers: int = 0) -> dict[str, Any]:
    """Teacher vs CAML students vs reduced-modality RL vs single-agent auxiliary-modality students.

    For each env and seed: the CAML student (DAgger from the shared-knowledge teacher, with
    messages built from deployable modalities as the recipe sets), the same student acting
    alone (``message_dim`` 0), the single-agent auxiliary-modality student (alone, with a
    teacher that knows only what its own agent senses) and PPO with parameter sharing on the
    deployable modalities alone;
    every method is also evaluated with one agent fewer and one more than it trained with.
    ``steps`` scales the distillation budget (agent-steps) and the PPO budget alike.
    """
    from polydistill.caml import evaluate_team
    from polydistill.envs import make_parallel

    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    jobs, rl_budget = [], {}
    for name in envs:
        base, rl_steps = caml_recipe(name)
        if steps is not None:
            rl_steps = int(rl_steps * steps / base.total_steps)
            base = override(base, {"total_steps": int(steps)})
        rl_budget[name] = rl_steps
        for seed in range(seeds):
            cfg = override(base, {"seed": seed})
            alone = override(cfg, {"team.message_dim": 0})
            jobs += [(name, seed, "caml_student", cfg), (name, seed, "caml_student_alone", alone),
                     (name, seed, "reduced_rl", cfg),
                     (name, seed, "single_agent_aux", override(alone, {"teacher": "own"}))]
    t0 = time.perf_counter()
    cells = [(n, s, m, cfg, m, episodes, rl_budget[n]) for n, s, m, cfg in jobs]
    results = _run_cells(cells, _caml_job, workers, "caml benchmark", progress_bar)
    rows = []
    for name in envs:
        cfg, _ = caml_recipe(name)
        n = int(cfg.env_kwargs.get("n_agents", 0)) or len(make_parallel(cfg.env).possible_agents)
        by_size = {}
        for k in (n - 1, n, n + 1):
            if k >= 1:
                kw = {**cfg.env_kwargs, "n_agents": k}
                by_size[str(k)] = _team_figures(evaluate_team(
                    lambda c=cfg, kw=kw: make_parallel(c.env, **kw),
                    lambda env, obs: env.unwrapped.expert_actions("shared"), episodes))
        methods: dict[str, Any] = {"teacher": {**by_size[str(n)], "by_team_size": by_size}}
        for method in ("caml_student", "caml_student_alone", "reduced_rl", "single_agent_aux"):
            cells = [results[(name, s, method)] for s in range(seeds)]
            figs = {k: float(np.mean([c["figures"][k] for c in cells])) for k in ("return", "accident_rate")}
            figs["return_std"] = float(np.std([c["figures"]["return"] for c in cells]))
            figs["by_team_size"] = {
                size: {k: float(np.mean([c["by_team_size"][size][k] for c in cells]))
                       for k in ("return", "accident_rate")}
                for size in cells[0]["by_team_size"]}
            methods[method] = figs
        ratio = methods["caml_student"]["return"] / methods["teacher"]["return"]
        rows.append({"name": cfg.env, "methods": methods, "caml_ratio": ratio})
    report = {"setup": "caml", "seeds": seeds, "envs": rows, "episodes": episodes,
              "workers": _effective_workers(len(jobs), workers),
              "wall_s": time.perf_counter() - t0,
              "command": " ".join(["scripts/benchmark.py", *sys.argv[1:]]) if sys.argv else "",
              "versions": library_versions()}
    atomic_write_json(out, report)
    lines = ["| env | method | return | accident rate | return, one agent fewer | one more |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        for method, f in r["methods"].items():
            sizes = f.get("by_team_size", {})
            keys = sorted(sizes, key=int)
            fewer = f"{sizes[keys[0]]['return']:.2f}" if len(keys) == 3 else "-"
            more = f"{sizes[keys[-1]]['return']:.2f}" if keys else "-"
            acc = "-" if f["accident_rate"] is None else f"{f['accident_rate']:.3f}"
            lines.append(f"| {r['name']} | {method} | {f['return']:.2f} | {acc} | {fewer} | {more} |")
    report["markdown"] = "\n".join(lines)
    atomic_write_bytes(Path(out).with_suffix(".md"), (report["markdown"] + "\n").encode())
    return report
