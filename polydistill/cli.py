"""Command line: ``polydistill train-teacher | distill | evaluate | quickstart | benchmark``.

Every subcommand prints its own ``--help``; errors from bad input are printed as one line
(``error: ...``) with exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polydistill.errors import CheckpointError, PolydistillError

__all__ = ["main", "build_parser"]

log = logging.getLogger("polydistill")


def _add_train_teacher(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-teacher", help="train specialist teacher(s) with stable-baselines3")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--env-id", help="any registered Gymnasium env id")
    target.add_argument("--suite", help="train every task of a suite (e.g. locomotion)")
    p.add_argument("--task", action="append", default=None,
                   help="with --suite: only these task names (repeatable)")
    p.add_argument("--split", choices=["train", "heldout", "all"], default="all",
                   help="with --suite: which split's tasks to train")
    p.add_argument("--recipe", default=None, help="recipe YAML (default: agents/teachers.yaml)")
    p.add_argument("--steps", type=float, default=None, help="override n_timesteps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/teachers",
                   help="run folder (--env-id) or parent folder of one folder per task (--suite)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set n_envs=4")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="train the teachers concurrently as Ray tasks (one CPU each); ADDRESS of "
                   "a cluster, else RAY_ADDRESS, else a local Ray instance")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="with --ray and no cluster: CPUs of the local Ray instance")
    p.set_defaults(func=_cmd_train_teacher)


def _cmd_train_teacher(args: argparse.Namespace) -> int:
    from polydistill.config import parse_assignments
    from polydistill.envs import get_suite
    from polydistill.train_teacher import load_recipe, train_teacher

    overrides = parse_assignments(args.set)
    if args.steps is not None:
        overrides["n_timesteps"] = int(args.steps)
    if args.env_id:
        jobs = [(args.env_id, Path(args.out))]
    else:
        tasks = get_suite(args.suite)
        if args.task:
            known = {t.name for t in tasks}
            bad = sorted(set(args.task) - known)
            if bad:
                raise PolydistillError(f"unknown task(s) {bad}; suite {args.suite!r} has {sorted(known)}")
            tasks = tuple(t for t in tasks if t.name in args.task)
        if args.split != "all":
            tasks = tuple(t for t in tasks if t.split == args.split)
        jobs = [(t.env_id, Path(args.out) / t.name) for t in tasks]
    specs = []
    for i, (env_id, out) in enumerate(jobs):
        seed = args.seed + i  # every specialist of a suite gets its own seed
        recipe = load_recipe(env_id, args.recipe, overrides)
        cmd = (f"polydistill train-teacher --env-id {shlex.quote(env_id)} --seed {seed} "
               f"--out {shlex.quote(str(out))}")
        if args.recipe:
            cmd += f" --recipe {shlex.quote(args.recipe)}"
        for k, v in overrides.items():
            cmd += f" --set {shlex.quote(f'{k}={v}')}"
        specs.append((env_id, out, recipe, seed, cmd))
    if args.ray is not None:
        from polydistill.distributed import TeacherJob, summarize, train_teachers_ray

        outcomes = train_teachers_ray(
            [TeacherJob(e, str(o), r, s, c, name=o.name) for e, o, r, s, c in specs],
            address=args.ray or None, num_cpus=args.num_cpus)
        print(summarize(outcomes))
        failed = [o.job.name for o in outcomes if not o.ok]
        if failed:
            log.error("%d of %d teachers failed: %s", len(failed), len(outcomes), failed)
            return 1
        return 0
    for env_id, out, recipe, seed, cmd in specs:
        log.info("training teacher for %s -> %s (%s, %d steps)", env_id, out, recipe.algo,
                 recipe.n_timesteps)
        m = train_teacher(env_id, out, recipe, seed=seed,
                          progress_bar=not args.no_progress, command=cmd)
        log.info("%s: mean return %.1f +- %.1f", env_id, m["mean_return"], m["std_return"])
    return 0


def _add_distill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default=None, help="DistillConfig YAML (default: agents/distill.yaml)")
    p.add_argument("--env-id", default=None, help="distil one task: any registered Gymnasium id")
    p.add_argument("--teacher", default=None, help="with --env-id: SB3 .zip (vecnormalize.pkl beside "
                   "it is picked up) or a folder holding model.zip")
    p.add_argument("--suite", default=None, help="distil the training split of this suite")
    p.add_argument("--teachers-dir", default=None, help="folder of <task>/model.zip teachers")
    p.add_argument("--steps", type=float, default=None, help="env steps of collection in total")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--loss", default=None, help="loss name (see polydistill.losses)")
    p.add_argument("--bc", action="store_true",
                   help="behaviour cloning baseline: the teacher always acts (beta = 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set distiller.lr=3e-4")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _distill_config(args: argparse.Namespace) -> object:
    from polydistill.config import from_dict, load_yaml, override
    from polydistill.trainer import DistillConfig
    from polydistill.utils import agents_dir

    path = args.recipe or str(agents_dir() / "distill.yaml")
    data = {k: v for k, v in load_yaml(path).items() if k != "setup"}
    cfg = from_dict(DistillConfig, data, f"DistillConfig({path})")
    sets: dict[str, object] = {}
    if args.env_id or args.teacher:
        if not (args.env_id and args.teacher):
            raise PolydistillError("--env-id and --teacher go together")
        name = args.env_id.split("/")[-1]
        cfg = override(cfg, {"tasks": [{"name": name, "env_id": args.env_id,
                                        "teacher": args.teacher}]})
    if args.suite:
        sets["suite"] = args.suite
    if args.teachers_dir:
        sets["teachers_dir"] = args.teachers_dir
    cfg = override(cfg, {**sets, **_run_sets(args)})
    return override(cfg, args.set)


def _run_sets(args: argparse.Namespace) -> dict[str, object]:
    """Config overrides from the flags every distillation setup shares."""
    sets: dict[str, object] = {}
    if args.steps is not None:
        sets["total_steps"] = int(args.steps)
    if args.seed is not None:
        sets["seed"] = args.seed
    if args.loss:
        sets["distiller.loss"] = args.loss
    if args.bc:
        sets["beta"] = {"kind": "constant", "start": 1.0}
    return sets


def _run_dir(out: str) -> Path:
    p = Path(out)
    return p.parent if p.suffix == ".safetensors" else p


def _add_distill(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="distil teacher(s) into one student")
    _add_distill_args(p)
    p.add_argument("--out", default=None,
                   help="student path: a folder (student.safetensors inside) or a .safetensors file "
                   "(default: runs/distill)")
    p.add_argument("--eval-episodes", type=int, default=5,
                   help="evaluate student and teachers after training (0: skip)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its latest commit (after a crash or "
                   "kill); it keeps its config, so no other run option may be given")
    p.set_defaults(func=_cmd_distill)


def _write_run_file(run_dir: Path, setup: str, out: str, config: object) -> None:
    """``run.json``: what ``distill --resume`` needs to continue the run (setup, config, output)."""
    from polydistill.config import to_dict
    from polydistill.utils import atomic_write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    student_file = Path(out).name if Path(out).suffix == ".safetensors" else "."
    atomic_write_json(run_dir / RUN_FILE, {"setup": setup, "student": student_file,
                                           "config": to_dict(config)})


def _cmd_distill_vision(args: argparse.Namespace, data: dict, resumed: Any = None) -> int:
    """``distill`` for a recipe with ``setup: vision`` (privileged teacher -> vision student)."""
    from polydistill.checkpoint import save_student
    from polydistill.report import TaskRow, markdown_table, ratio, write_report
    from polydistill.utils import atomic_write_json
    from polydistill.vision import VisionTrainer

    if resumed is not None:
        cfg, run_dir = resumed, Path(args.resume)
    else:
        cfg = _vision_config(args, data)
        run_dir = _run_dir(args.out)
        _write_run_file(run_dir, "vision", args.out, cfg)
    trainer = VisionTrainer(cfg, progress_bar=not args.no_progress, run_dir=run_dir)
    try:
        if resumed is not None and not trainer.resume():
            log.warning("no commit in %s yet: starting the run from round 0", run_dir)
        trainer.learn()
        path = save_student(args.out, trainer.student, {
            "setup": "vision", "env_id": cfg.env_id, "env_kwargs": dict(cfg.env_kwargs),
            "student_groups": list(cfg.student_groups), "teacher": cfg.teacher,
            "env_steps": trainer.total_steps, "updates": trainer.distiller.updates,
        })
        atomic_write_json(run_dir / "history.json", trainer.history)
        if args.eval_episodes > 0:
            s = trainer.evaluate(args.eval_episodes)
            t = trainer.evaluate_teacher(args.eval_episodes)
            rows = [TaskRow(cfg.env_id.split("/")[-1], "train", "vision", t.mean_return,
                            s.mean_return, ratio(s.mean_return, t.mean_return))]
            write_report(rows, run_dir, "vision distillation run")
            print(markdown_table(rows))
    finally:
        trainer.close()
    print(f"student: {path}\nload it with: polydistill.load_student({str(path)!r})")
    return 0


def _vision_config(args: argparse.Namespace, data: dict) -> Any:
    """The vision recipe ``data`` with the command line's overrides and the shipped teacher."""
    from polydistill.config import from_dict, override
    from polydistill.vision import VisionDistillConfig

    if args.env_id or args.suite or args.teachers_dir:
        raise PolydistillError("--env-id/--suite/--teachers-dir do not apply to a vision recipe; "
                               "set env_id and teacher in the recipe or with --set")
    cfg = from_dict(VisionDistillConfig, {k: v for k, v in data.items() if k != "setup"},
                    "VisionDistillConfig")
    sets = _run_sets(args)
    if args.teacher:
        sets["teacher"] = args.teacher
    cfg = override(override(cfg, sets), args.set)
    if not cfg.teacher:
        from polydistill.trainer import default_teachers_dir

        shipped = {"polydistill/PointGoalVision-v0": "point-goal-vision",
                   "polydistill/ReachVision-v0": "reach-vision"}
        if cfg.env_id not in shipped:
            raise PolydistillError(f"no shipped teacher for {cfg.env_id!r}: pass --teacher PATH")
        cfg = override(cfg, {"teacher": str(default_teachers_dir() / shipped[cfg.env_id])})
    return cfg


def _cmd_distill_caml(args: argparse.Namespace, data: dict, resumed: Any = None) -> int:
    """``distill`` for a recipe with ``setup: caml`` (shared-knowledge teacher -> per-agent students)."""
    from polydistill.caml import CamlConfig, CamlTrainer
    from polydistill.checkpoint import save_student
    from polydistill.config import from_dict, override
    from polydistill.utils import atomic_write_json

    if resumed is not None:
        cfg, run_dir = resumed, Path(args.resume)
    else:
        if args.env_id or args.suite or args.teachers_dir or args.teacher:
            raise PolydistillError("--env-id/--suite/--teachers-dir/--teacher do not apply to a caml "
                                   "recipe; use --set (e.g. --set teacher=own, --set env=rendezvous_v0)")
        fields = {k: v for k, v in data.items() if k not in ("setup", "rl_steps")}
        cfg = override(override(from_dict(CamlConfig, fields, "CamlConfig"), _run_sets(args)), args.set)
        run_dir = _run_dir(args.out)
        _write_run_file(run_dir, "caml", args.out, cfg)
    trainer = CamlTrainer(cfg, progress_bar=not args.no_progress, run_dir=run_dir)
    try:
        if resumed is not None and not trainer.resume():
            log.warning("no commit in %s yet: starting the run from round 0", run_dir)
        trainer.learn()
        path = save_student(args.out, trainer.student, {
            "setup": "caml", "env": cfg.env, "env_kwargs": dict(cfg.env_kwargs), "teacher": cfg.teacher,
            "agent_steps": trainer.total_steps, "updates": trainer.distiller.updates,
        })
        atomic_write_json(run_dir / "history.json", trainer.history)
        if args.eval_episodes > 0:
            s = trainer.evaluate(args.eval_episodes)
            t = trainer.evaluate_teacher(args.eval_episodes)
            print(f"| env | teacher return | student return | teacher accidents | student accidents |\n"
                  f"|---|---:|---:|---:|---:|\n| {cfg.env} | {t.mean_return:.2f} | {s.mean_return:.2f} | "
                  f"{t.accident_rate:.3f} | {s.accident_rate:.3f} |")
    finally:
        trainer.close()
    print(f"student: {path}\nload it with: polydistill.load_student({str(path)!r})"
          ".predict({agent: {modality: array}})")
    return 0


RUN_FILE = "run.json"


def _resume_config(args: argparse.Namespace) -> tuple[str, object, str]:
    """Setup, config and student path of the run folder ``args.resume`` (written at its start)."""
    from polydistill.caml import CamlConfig
    from polydistill.config import from_dict, override, parse_assignments
    from polydistill.trainer import DistillConfig
    from polydistill.vision import VisionDistillConfig

    given = [flag for flag, v in (("--recipe", args.recipe), ("--env-id", args.env_id),
                                  ("--teacher", args.teacher), ("--suite", args.suite),
                                  ("--teachers-dir", args.teachers_dir), ("--steps", args.steps),
                                  ("--seed", args.seed), ("--loss", args.loss), ("--out", args.out))
             if v is not None] + (["--bc"] if args.bc else [])
    sets = parse_assignments(args.set)
    movable = {"workers", "ray_address"}  # where rows are collected; what is computed stays the same
    given += [f"--set {k}" for k in sets if k not in movable]
    if given:
        raise PolydistillError(f"--resume keeps the run's config and folder; do not also give "
                               f"{', '.join(given)} (only --set workers=N / ray_address=ADDR may change)")
    path = Path(args.resume) / RUN_FILE
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"--resume {args.resume!r}: not a distill run folder ({exc})") from None
    classes = {"generalist": DistillConfig, "vision": VisionDistillConfig, "caml": CamlConfig}
    setup = run.get("setup")
    if setup not in classes:
        raise PolydistillError(f"--resume supports {sorted(classes)} runs; {str(path)!r} is a {setup!r} run")
    if sets and setup != "generalist":
        raise PolydistillError(f"--set {', '.join(sets)}: only generalist runs collect with Ray workers")
    try:
        student = str(Path(args.resume) / run["student"])
        cls = classes[setup]
        return setup, override(from_dict(cls, run["config"], f"{cls.__name__}({path})"), sets), student
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{str(path)!r} is incomplete: {exc!r}") from None


def _cmd_distill(args: argparse.Namespace) -> int:
    from polydistill.checkpoint import load_student
    from polydistill.config import load_yaml
    from polydistill.report import EvalTask, evaluate_student, markdown_table, write_report
    from polydistill.trainer import DistillTrainer
    from polydistill.utils import atomic_write_json

    if args.out is None and not args.resume:
        args.out = "runs/distill"
    if args.resume:
        setup, cfg, args.out = _resume_config(args)
        if setup == "vision":
            return _cmd_distill_vision(args, {}, cfg)
        if setup == "caml":
            return _cmd_distill_caml(args, {}, cfg)
        run_dir = Path(args.resume)
    else:
        if args.recipe:
            data = load_yaml(args.recipe)
            if data.get("setup") == "vision":
                return _cmd_distill_vision(args, data)
            if data.get("setup") == "caml":
                return _cmd_distill_caml(args, data)
        cfg = _distill_config(args)
        run_dir = _run_dir(args.out)
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_run_file(run_dir, "generalist", args.out, cfg)
    trainer = DistillTrainer(cfg, log_dir=run_dir / "tb", progress_bar=not args.no_progress,
                             run_dir=run_dir)
    try:
        if args.resume and not trainer.resume():
            log.warning("no commit in %s yet: starting the run from round 0", run_dir)
        trainer.learn()
        path = trainer.save(args.out)
    finally:
        trainer.close()
    atomic_write_json(run_dir / "history.json", trainer.history)
    log.info("student saved to %s", path)
    if args.eval_episodes > 0:
        tasks = [EvalTask(t.name, t.env_id, t.embodiment or t.env_id, "train", t.teacher,
                          tuple(sorted(t.env_kwargs.items()))) for t in trainer.tasks]
        rows = evaluate_student(load_student(path), tasks, episodes=args.eval_episodes)
        write_report(rows, run_dir, "distillation run")
        print(markdown_table(rows))
    print(f"student: {path}\nload it with: polydistill.load_student({str(path)!r})")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="per-task table of teacher vs student returns")
    p.add_argument("--student", required=True, help="student folder or .safetensors file")
    p.add_argument("--suite", default=None, help="evaluate on a suite (train + held-out tasks)")
    p.add_argument("--teachers-dir", default=None, help="folder of <task>/model.zip teachers")
    p.add_argument("--env-id", default=None, help="evaluate on one env (with --teacher optional)")
    p.add_argument("--teacher", default=None, help="yardstick teacher for --env-id")
    p.add_argument("--embodiment", default=None, help="student token for --env-id")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--out", default=None, help="write report.md/json/png here")
    p.add_argument("--video", default=None, metavar="DIR",
                   help="also save one GIF episode of the student per task into DIR")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from polydistill.checkpoint import load_student
    from polydistill.report import (
        EvalTask,
        evaluate_student,
        markdown_table,
        suite_eval_tasks,
        write_report,
    )
    from polydistill.trainer import default_teachers_dir

    student = load_student(args.student)
    if student.metadata.get("setup") == "vision":
        return _evaluate_vision(student, args)
    if args.env_id:
        emb = args.embodiment or (student.embodiments[0] if len(student.embodiments) == 1 else None)
        if emb is None:
            raise PolydistillError(f"--embodiment is required: the student knows {student.embodiments}")
        tasks = [EvalTask(args.env_id.split("/")[-1], args.env_id, emb, "train", args.teacher)]
    else:
        suite = args.suite or "locomotion"
        tasks = suite_eval_tasks(suite, args.teachers_dir or default_teachers_dir())
    rows = evaluate_student(student, tasks, episodes=args.episodes, seed=args.seed)
    print(markdown_table(rows))
    if args.out:
        files = write_report(rows, args.out, f"evaluation of {args.student}")
        print(f"report: {files['md']}")
    if args.video:
        from polydistill.video import record_gif

        for t in tasks:
            gif = record_gif(student, t, Path(args.video) / f"{t.name}.gif", seed=args.seed)
            print(f"video: {gif}")
    return 0


def _evaluate_vision(student: object, args: argparse.Namespace) -> int:
    from polydistill.evaluation import evaluate
    from polydistill.report import TaskRow, markdown_table, ratio, write_report
    from polydistill.teacher import load_teacher
    from polydistill.wrappers import flatten_groups

    meta = student.metadata
    env_id, kwargs = meta["env_id"], meta.get("env_kwargs", {})
    keys = meta.get("student_groups", ["proprio", "pixels"])
    student.reset()
    s = evaluate(env_id, lambda o: student.predict({k: o[k] for k in keys}),
                 n_episodes=args.episodes, seed=args.seed, env_kwargs=kwargs,
                 on_episode_end=student.reset)
    t_mean = None
    teacher_path = args.teacher or meta.get("teacher")
    if teacher_path:
        teacher = load_teacher(teacher_path)
        t = evaluate(env_id, lambda o: teacher.act(flatten_groups(o, ("proprio", "privileged"))),
                     n_episodes=args.episodes, seed=args.seed, env_kwargs={**kwargs, "pixels": False})
        t_mean = t.mean_return
    rows = [TaskRow(env_id.split("/")[-1], "train", "vision", t_mean, s.mean_return,
                    ratio(s.mean_return, t_mean))]
    print(markdown_table(rows))
    if args.out:
        print(f"report: {write_report(rows, args.out, f'evaluation of {args.student}')['md']}")
    if args.video:
        from polydistill.video import record_vision_gif

        gif = record_vision_gif(student, Path(args.video) / f"{env_id.split('/')[-1]}.gif",
                                seed=args.seed)
        print(f"video: {gif}")
    return 0


def _add_quickstart(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="the whole pipeline on the default suite (~5 min)")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--train-teachers", action="store_true",
                   help="train the specialists from scratch instead of loading the shipped ones "
                        "(about 1 h on 2 cores)")
    p.add_argument("--steps", type=float, default=None, help="env steps of distillation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes per task")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_quickstart)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from polydistill.quickstart import run_quickstart

    report = run_quickstart(out=args.out, train_teachers=args.train_teachers, steps=args.steps,
                            seed=args.seed, episodes=args.episodes,
                            progress_bar=not args.no_progress)
    print(report["markdown"])
    s = report["summary"]
    if s["min_train_ratio"] is not None:
        print(f"\ntraining tasks: student/teacher return ratio min {s['min_train_ratio']:.3f}, "
              f"mean {s['mean_train_ratio']:.3f}")
    print(f"report: {report['files']['md']} (+ report.json, report.png); "
          f"tensorboard --logdir {report['tensorboard']}")
    print(f"student: {report['student']}\n"
          f"deploy: polydistill.load_student({report['student']!r}).predict(obs, embodiment='hopper')")
    return 0


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="measured benchmarks (see scripts/benchmark.py)")
    p.add_argument("setup", choices=["generalist", "vision", "caml", "perf"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="results.json")
    p.add_argument("--steps", type=float, default=None, help="env steps of distillation per run")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--teachers-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--envs", nargs="+", default=None,
                   help="caml: benchmark only these envs (intersection, rendezvous)")
    p.add_argument("--quick", action="store_true",
                   help="perf: tiny budgets (checks every path runs; figures only indicative)")
    p.add_argument("--workers", type=int, default=0,
                   help="vision: benchmark cells run in this many processes (0: one per CPU core); "
                        "speeds are measured afterwards with the machine to themselves")
    p.set_defaults(func=_cmd_benchmark)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from polydistill.benchmark import run_caml_benchmark, run_generalist_benchmark, run_vision_benchmark

    if args.setup == "perf":
        from polydistill.perf import PerfBudget, run_perf_benchmark

        report = run_perf_benchmark(args.out, PerfBudget.quick() if args.quick else None)
        print(report["markdown"])
        print(f"results: {args.out}")
        return 0
    common = {"seeds": args.seeds, "out": args.out, "steps": args.steps, "episodes": args.episodes,
              "teachers_dir": args.teachers_dir, "progress_bar": not args.no_progress}
    if args.setup == "vision":
        report = run_vision_benchmark(**common, workers=args.workers)
    elif args.setup == "caml":
        common.pop("teachers_dir")
        if args.envs:
            common["envs"] = tuple(args.envs)
        report = run_caml_benchmark(**common, workers=args.workers)
    else:
        report = run_generalist_benchmark(**common)
    print(report["markdown"])
    print(f"results: {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``polydistill`` command."""
    parser = argparse.ArgumentParser(prog="polydistill", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: small networks run fastest on one "
                             "thread, and extra threads thrash when cores are shared; 0 = torch default)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_teacher(sub)
    _add_distill(sub)
    _add_evaluate(sub)
    _add_quickstart(sub)
    _add_benchmark(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``polydistill`` console script."""
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"  # offscreen rendering without a display (videos)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL's import chatter
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except PolydistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
