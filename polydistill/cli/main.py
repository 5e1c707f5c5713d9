"""Command line: ``polydistill train-teacher|distill|finetune|evaluate|dataset|report|quickstart|benchmark``.

Every subcommand prints its own ``--help``; errors from bad input are printed as one line
(``error: ...``) with exit status 2 instead of a traceback. Every long command ends with a
short table (:mod:`polydistill.cli.summary`): what ran, its figures, where the files went.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polydistill.cli.report_cmd import add_report_parser
from polydistill.cli.summary import Summary, print_summary, ratio_facts
from polydistill.errors import CheckpointError, ConfigError, PolydistillError

__all__ = ["main", "build_parser"]

log = logging.getLogger("polydistill")


def _add_train_teacher(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-teacher", help="train specialist teacher(s) with stable-baselines3")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--env-id", help="any registered Gymnasium env id")
    target.add_argument("--suite", help="train every task of a suite (e.g. locomotion)")
    target.add_argument("--parallel-env", metavar="NAME",
                        help="a multi-agent world (intersection_v0, rendezvous_v0): a learned team "
                        "teacher, PPO with parameter sharing on its shared view (recipe: "
                        "agents/team_teachers.yaml)")
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
    p.add_argument("--checkpoint-every", type=float, default=0, metavar="STEPS",
                   help="keep OUT/checkpoint (model, replay buffer, statistics) every STEPS env steps")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint: same env, seed and recipe (--steps may grow, "
                   "which extends a finished run)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="train the teachers concurrently as Ray tasks (one CPU each); ADDRESS of "
                   "a cluster, else RAY_ADDRESS, else a local Ray instance")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="with --ray and no cluster: CPUs of the local Ray instance")
    p.set_defaults(func=_cmd_train_teacher)


def _recipe_flags(args: argparse.Namespace, overrides: dict[str, Any]) -> str:
    """The ``--recipe`` and ``--set`` flags of a reproducing command line."""
    flags = f" --recipe {shlex.quote(args.recipe)}" if args.recipe else ""
    return flags + "".join(f" --set {shlex.quote(f'{k}={v}')}" for k, v in overrides.items())


def _train_team_teacher(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from polydistill.envs import list_parallel_envs
    from polydistill.teachers.team_train import load_team_recipe, train_team_teacher

    if args.parallel_env not in list_parallel_envs():
        raise ConfigError(f"--parallel-env: unknown multi-agent world {args.parallel_env!r}; valid: "
                          f"{', '.join(list_parallel_envs())}")
    if args.ray is not None or args.task or args.split != "all":
        raise ConfigError("--parallel-env trains one team teacher: --ray, --task and --split do not apply")
    if args.resume or args.checkpoint_every:
        raise ConfigError("--resume and --checkpoint-every are for single-agent teachers; "
                          "not with --parallel-env")
    recipe = load_team_recipe(args.parallel_env, args.recipe, overrides)
    out = Path(args.out)
    cmd = (f"polydistill train-teacher --parallel-env {shlex.quote(args.parallel_env)} --seed {args.seed} "
           f"--out {shlex.quote(str(out))}") + _recipe_flags(args, overrides)
    log.info("training team teacher for %s -> %s (%s, %d agent-steps)", args.parallel_env, out, recipe.algo,
             recipe.n_timesteps)
    m = train_team_teacher(args.parallel_env, out, recipe, seed=args.seed, progress_bar=not args.no_progress,
                           command=cmd)
    trained = Summary("train-teacher: 1 team teacher")
    trained.facts.append((out.name, f"{args.parallel_env}, {recipe.algo} {recipe.n_timesteps:,} agent-steps: "
                                    f"mean return {m['mean_return']:.2f} +- {m['std_return']:.2f}, accident "
                                    f"rate {m['accident_rate']:.3f}"))
    trained.files.append((out.name, out))
    print_summary(trained)
    return 0


def _cmd_train_teacher(args: argparse.Namespace) -> int:
    from polydistill.config import parse_assignments
    from polydistill.envs import get_suite
    from polydistill.teachers.train import load_recipe, suite_teacher_recipe, train_teacher

    overrides = parse_assignments(args.set)
    if args.steps is not None:
        overrides["n_timesteps"] = int(args.steps)
    if args.parallel_env:
        return _train_team_teacher(args, overrides)
    if args.env_id:
        jobs = [(args.env_id, Path(args.out), None)]
    else:
        tasks = get_suite(args.suite)
        if args.task:
            known = {t.name for t in tasks}
            bad = sorted(set(args.task) - known)
            if bad:
                raise ConfigError(f"unknown task(s) {bad}; suite {args.suite!r} has {sorted(known)}")
            tasks = tuple(t for t in tasks if t.name in args.task)
        if args.split != "all":
            tasks = tuple(t for t in tasks if t.split == args.split)
        teachers = {t.teacher_name: t for t in tasks}  # a family's members share its teacher
        jobs = [(t.teacher_env_id, Path(args.out) / n, t) for n, t in teachers.items()]
    specs = []
    for i, (env_id, out, task) in enumerate(jobs):
        seed = args.seed + i  # every specialist of a suite gets its own seed
        if task is None:
            recipe = load_recipe(env_id, args.recipe, overrides)
        else:
            env_id, recipe = suite_teacher_recipe(task, args.recipe, overrides)
        if task is None or task.teacher_family is not None:
            cmd = (f"polydistill train-teacher --env-id {shlex.quote(env_id)} --seed {seed} "
                   f"--out {shlex.quote(str(out))}")
        else:  # the task's env keywords (a family body) come from the suite
            cmd = (f"polydistill train-teacher --suite {shlex.quote(args.suite)} "
                   f"--task {shlex.quote(task.name)} --seed {seed} --out {shlex.quote(str(out.parent))}")
        specs.append((env_id, out, recipe, seed, cmd + _recipe_flags(args, overrides)))
    if args.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every must be >= 0 env steps; got {args.checkpoint_every:g}")
    if args.ray is not None and (args.resume or args.checkpoint_every):
        raise ConfigError("--resume and --checkpoint-every train one teacher after another; not with --ray")
    if args.ray is not None:
        from polydistill.teachers.train import TeacherJob, summarize, train_teachers_ray

        outcomes = train_teachers_ray(
            [TeacherJob(e, str(o), r, s, c, name=o.name) for e, o, r, s, c in specs],
            address=args.ray or None, num_cpus=args.num_cpus)
        print(summarize(outcomes))
        failed = [o.job.name for o in outcomes if not o.ok]
        if failed:
            log.error("%d of %d teachers failed: %s", len(failed), len(outcomes), failed)
            return 1
        return 0
    trained = Summary(f"train-teacher: {len(specs)} teacher{'s' if len(specs) != 1 else ''}")
    for env_id, out, recipe, seed, cmd in specs:
        log.info("training teacher for %s -> %s (%s, %d steps)", env_id, out, recipe.algo,
                 recipe.n_timesteps)
        m = train_teacher(env_id, out, recipe, seed=seed, progress_bar=not args.no_progress, command=cmd,
                          checkpoint_every=int(args.checkpoint_every), resume=args.resume)
        log.info("%s: mean return %.1f +- %.1f", env_id, m["mean_return"], m["std_return"])
        trained.facts.append((str(out.name), f"{env_id}, {recipe.algo} {recipe.n_timesteps:,} steps: mean "
                                             f"return {m['mean_return']:.1f} +- {m['std_return']:.1f}"))
        trained.files.append((str(out.name), out))
    print_summary(trained)
    return 0


def _add_distill(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="distil teacher(s) into one student (any registered setup)")
    p.add_argument("--recipe", default=None, help="recipe YAML; its `setup:` picks the setup (default: "
                   "agents/distill.yaml, the generalist)")
    p.add_argument("--env-id", default=None, help="generalist: distil one task, any registered Gymnasium id")
    p.add_argument("--teacher", default=None, help="generalist with --env-id: SB3 .zip (vecnormalize.pkl "
                   "beside it is picked up), a folder holding model.zip, or an import path "
                   "package.module:Name; vision: the privileged teacher (SB3)")
    p.add_argument("--suite", default=None, help="generalist: distil the training split of this suite")
    p.add_argument("--teachers-dir", default=None, help="generalist: folder of <task>/model.zip teachers")
    p.add_argument("--steps", type=float, default=None, help="labelled steps of collection in total")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--loss", default=None, help="loss name (see polydistill.distill.losses)")
    p.add_argument("--bc", action="store_true",
                   help="behaviour cloning baseline: the teacher always acts (beta = 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set distiller.lr=3e-4")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--out", default=None,
                   help="student path: a folder (student.safetensors inside) or a .safetensors file "
                   "(default: runs/distill)")
    p.add_argument("--eval-episodes", type=int, default=5,
                   help="evaluate student and teachers after training (0: skip)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its latest commit (after a crash or "
                   "kill); it keeps its config, so no other run option may be given")
    p.add_argument("--dataset", default=None, metavar="DIR",
                   help="distil from Minari dataset(s) in DIR (one dataset, or a folder of them): "
                   "behaviour cloning on its rows (a polydistill dataset's teacher labels, else the "
                   "dataset's actions); with --steps N, then DAgger for N labelled steps with the "
                   "tasks' teachers (--env-id / --teacher for a single-task dataset)")
    p.set_defaults(func=_cmd_distill)


RUN_FILE = "run.json"


def _run_dir(out: str) -> Path:
    p = Path(out)
    return p.parent if p.suffix == ".safetensors" else p


def _resume_config(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """Setup, config and student path of the run folder ``args.resume`` (written at its start)."""
    from polydistill.config import from_dict, override, parse_assignments
    from polydistill.setups import get_setup

    path = Path(args.resume) / RUN_FILE
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"--resume {args.resume!r}: not a distill run folder ({exc})") from None
    setup = get_setup(run.get("setup"))
    movable = setup.run.resume_may_differ  # where rows are collected, not what is computed
    flags = (("--recipe", args.recipe), ("--env-id", args.env_id), ("--teacher", args.teacher),
             ("--suite", args.suite), ("--teachers-dir", args.teachers_dir), ("--steps", args.steps),
             ("--seed", args.seed), ("--loss", args.loss), ("--out", args.out))
    sets = parse_assignments(args.set)
    given = [f for f, v in flags if v is not None] + (["--bc"] if args.bc else [])
    given += [f"--set {k}" for k in sets if k not in movable]
    if given:
        raise ConfigError(f"--resume keeps the run's config and folder; do not also give "
                               f"{', '.join(given)} (only --set {' / '.join(movable)} may change)")
    try:
        cfg = from_dict(setup.config, run["config"], f"{setup.config.__name__}({path})")
        return setup, override(cfg, sets), str(Path(args.resume) / run["student"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{str(path)!r} is incomplete: {exc!r}") from None


def _cmd_distill(args: argparse.Namespace) -> int:
    from polydistill.config import parse_assignments, to_dict
    from polydistill.setups import read_recipe
    from polydistill.utils import atomic_write_json

    if args.dataset or (args.resume and _dataset_run(args.resume)):
        return _cmd_distill_dataset(args)
    started = time.perf_counter()
    if args.resume:
        setup, cfg, out = _resume_config(args)
        run_dir = Path(args.resume)
    else:
        setup, recipe = read_recipe(args.recipe)
        flags = {k: v for k in ("env_id", "teacher", "suite", "teachers_dir") if (v := getattr(args, k))}
        shared = {"total_steps": None if args.steps is None else int(args.steps), "seed": args.seed,
                  "distiller.loss": args.loss,
                  "beta": {"kind": "constant", "start": 1.0} if args.bc else None}
        sets = {**{k: v for k, v in shared.items() if v is not None}, **parse_assignments(args.set)}
        cfg = setup.run.config_from(recipe, flags, sets)
        out = args.out or "runs/distill"
        run_dir = _run_dir(out)
        run_dir.mkdir(parents=True, exist_ok=True)
        student_file = Path(out).name if Path(out).suffix == ".safetensors" else "."
        atomic_write_json(run_dir / RUN_FILE, {"setup": setup.name, "student": student_file,
                                               "config": to_dict(cfg)})
    run = setup.run(cfg, run_dir=run_dir, log_dir=run_dir / "tb", progress_bar=not args.no_progress)
    return _finish_distill(args, run, out, run_dir, started, f"distill ({setup.name})",
                           f"{setup.name} distillation run", setup.evaluate)


def _finish_distill(args: argparse.Namespace, run: Any, out: str, run_dir: Path, started: float, title: str,
                    report_title: str, evaluate: Any) -> int:
    """Learn (resuming where asked), save, evaluate, report and summarise a distillation run.

    ``evaluate(student, options)`` gives the evaluation rows; None skips the evaluation (a
    student with no env to drive).
    """
    from polydistill.deploy import load_student
    from polydistill.evaluation.report import EvalOptions, markdown_table, write_report
    from polydistill.utils import atomic_write_json

    try:
        if args.resume and not run.resume():
            log.warning("no commit in %s yet: starting the run from its beginning", run_dir)
        run.learn()
        path = run.save(out)
    finally:
        run.close()
    atomic_write_json(run_dir / "history.json", run.history)
    log.info("student saved to %s", path)
    rows = []
    if args.eval_episodes > 0 and evaluate is not None:
        rows = evaluate(load_student(path), EvalOptions(episodes=args.eval_episodes, train_only=True))
        write_report(rows, run_dir, report_title)
        print(markdown_table(rows))
    print(f"student: {path}\nload it with: polydistill.load_student({str(path)!r})")
    print_summary(_distill_summary(title, run, path, run_dir, rows, started))
    return 0


def _distill_summary(title: str, run: Any, path: Path, run_dir: Path, rows: list[Any],
                     started: float) -> Summary:
    """The closing table of a distillation run.

    ``rows`` is its evaluation (maybe empty), ``started`` the ``time.perf_counter()`` of the
    command's start.
    """
    last = run.history[-1] if run.history else {}
    facts = [("student", f"{run.distiller.updates:,} updates, {run.total_steps:,} labelled env steps, "
                         f"{(time.perf_counter() - started) / 60:.1f} min")]
    bc = next((h["bc/updates"] for h in run.history if "bc/updates" in h), None)
    if bc:  # distill --dataset: the behaviour-cloning phase (DAgger's updates count from 0 after it)
        facts.append(("behaviour cloning", f"{int(bc):,} updates on the dataset's rows"))
    if "distill/teacher_agreement" in last:
        facts.append(("teacher agreement (last round)", f"{last['distill/teacher_agreement']:.3f}"))
    facts += ratio_facts(rows)
    files: list[tuple[str, str | Path]] = [("student", path), ("history", run_dir / "history.json")]
    if (run_dir / "report.html").is_file():
        files.append(("report", run_dir / "report.html"))
    files.append(("tensorboard", f"tensorboard --logdir {run_dir / 'tb'}"))
    return Summary(title, facts, files, [f"polydistill evaluate --student {shlex.quote(str(path))}",
                                         f"polydistill report {shlex.quote(str(run_dir))}"])


def _dataset_run(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a run distilled from a dataset (``distill --dataset``)."""
    try:
        return bool(json.loads((Path(run_dir) / RUN_FILE).read_text()).get("dataset"))
    except (OSError, ValueError, AttributeError):
        return False  # the ordinary --resume path reports it


def _dataset_config(args: argparse.Namespace) -> Any:
    """The :class:`DatasetConfig` of ``distill --dataset`` (recipe fields, flags, then ``--set``)."""
    from polydistill.config import parse_assignments
    from polydistill.datasets.offline import dataset_config

    refused = [f for f, v in (("--bc", args.bc), ("--suite", args.suite),
                              ("--teachers-dir", args.teachers_dir)) if v]
    if refused:
        raise ConfigError(f"{', '.join(refused)} do not apply to --dataset (its rows are the behaviour "
                          "cloning data, its tasks the dataset's)")
    flags = {"env_id": args.env_id, "teacher": args.teacher, "seed": args.seed, "distiller.loss": args.loss,
             "total_steps": None if args.steps is None else int(args.steps),
             "dagger": True if args.steps is not None else None}
    return dataset_config(args.dataset, args.recipe, {k: v for k, v in flags.items() if v is not None},
                          parse_assignments(args.set))


def _cmd_distill_dataset(args: argparse.Namespace) -> int:
    """``distill --dataset DIR`` (and ``--resume`` of such a run)."""
    from polydistill.config import from_dict, override, parse_assignments, to_dict
    from polydistill.datasets.offline import DatasetConfig, make_dataset_run
    from polydistill.distill.run import DaggerRun
    from polydistill.utils import atomic_write_json

    if args.resume:
        given = [f for f, v in (("--dataset", args.dataset), ("--recipe", args.recipe),
                                ("--env-id", args.env_id), ("--teacher", args.teacher),
                                ("--steps", args.steps), ("--seed", args.seed), ("--loss", args.loss),
                                ("--out", args.out)) if v is not None]
        sets = parse_assignments(args.set)
        given += [f"--set {k}" for k in sets if k not in DaggerRun.resume_may_differ]
        if given:
            raise ConfigError(f"--resume keeps the run's config and folder; do not also give "
                              f"{', '.join(given)}")
        run_dir = Path(args.resume)
        run = json.loads((run_dir / RUN_FILE).read_text())
        try:
            cfg = override(from_dict(DatasetConfig, run["config"], f"DatasetConfig({run_dir / RUN_FILE})"),
                           sets)
            out = str(run_dir / run["student"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{str(run_dir / RUN_FILE)!r} is incomplete: {exc!r}") from None
    else:
        cfg = _dataset_config(args)
        out = args.out or "runs/distill"
        run_dir = _run_dir(out)
        run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run = make_dataset_run(cfg, run_dir=run_dir, log_dir=run_dir / "tb", progress_bar=not args.no_progress)
    if not args.resume:
        student_file = Path(out).name if Path(out).suffix == ".safetensors" else "."
        atomic_write_json(run_dir / RUN_FILE, {"setup": run.setup, "dataset": True, "student": student_file,
                                               "config": to_dict(cfg)})
    evaluate = run.evaluate_student if run.student_metadata().get("tasks") else None
    if evaluate is None and args.eval_episodes > 0:
        log.warning("the dataset names no env: evaluate the student with polydistill evaluate --student "
                    "STUDENT --env-id ID")
    return _finish_distill(args, run, out, run_dir, started, "distill from a dataset",
                           "distillation from a dataset", evaluate)


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="distillation datasets in Minari's format: export a recorded run, "
                                       "describe datasets")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    e = dsub.add_parser("export", help="write a run made with --set record_dataset=true as Minari dataset(s)")
    e.add_argument("run", metavar="RUN", help="the distill run folder")
    e.add_argument("--out", required=True, metavar="DIR",
                   help="root folder of the datasets (they go to DIR/NAMESPACE/NAME-vVERSION)")
    e.add_argument("--per-task", action="store_true", help="one dataset per task (default: one for the run, "
                                                            "with task ids)")
    e.add_argument("--name", default=None, help="dataset name (default: the run folder's name)")
    e.add_argument("--namespace", default="polydistill", help="Minari namespace of the dataset ids")
    e.add_argument("--version", type=int, default=0, help="the -vN of the dataset ids")
    e.add_argument("--author", default=None)
    e.add_argument("--author-email", default=None)
    e.add_argument("--code-permalink", default=None)
    e.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    e.set_defaults(func=_cmd_dataset_export)
    i = dsub.add_parser("info", help="episodes, steps, spaces and labels of the Minari dataset(s) in DIR")
    i.add_argument("path", metavar="DIR")
    i.set_defaults(func=_cmd_dataset_info)


def _cmd_dataset_export(args: argparse.Namespace) -> int:
    from polydistill.datasets.minari_io import export_run

    written = export_run(args.run, args.out, per_task=args.per_task, namespace=args.namespace, name=args.name,
                         version=args.version, author=args.author, author_email=args.author_email,
                         code_permalink=args.code_permalink, progress_bar=not args.no_progress)
    for d in written:
        print(f"{d.dataset_id}: {d.episodes} episodes, {d.steps} steps, tasks {', '.join(d.tasks)} "
              f"-> {d.path}")
    where = str(written[0].path if len(written) == 1 else args.out)
    print_summary(Summary("dataset export", [(d.dataset_id, f"{d.episodes:,} episodes, {d.steps:,} steps, "
                                                            f"tasks {', '.join(d.tasks)}") for d in written],
                          [(d.dataset_id, d.path) for d in written],
                          [f"polydistill distill --dataset {shlex.quote(where)} --out runs/from-dataset"]))
    return 0


def _cmd_dataset_info(args: argparse.Namespace) -> int:
    from polydistill.datasets.minari_io import dataset_summary

    lines = ["| dataset | episodes | steps | env | observations | actions | tasks | labels |",
             "|---|---:|---:|---|---|---|---|---|"]
    for d in dataset_summary(args.path):
        lines.append(f"| {d['dataset_id']} | {d['episodes']} | {d['steps']} | {d['env_id'] or '-'} | "
                     f"{d['observation_space']} | {d['action_space']} | "
                     f"{', '.join(d['tasks']) if d['tasks'] else '-'} | {d['labels']} |")
    print("\n".join(lines))
    return 0


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="improve a distilled student with PPO (stable-baselines3)")
    p.add_argument("--student", required=True, help="the distilled student (folder or .safetensors)")
    p.add_argument("--out", required=True, help="folder of the fine-tuned student")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--task", action="append", default=None,
                        help="fine-tune on this task (repeatable): one of the student's own, or of its "
                             "suite (held-out ones too); default: all the student's tasks")
    target.add_argument("--env-id", default=None, help="fine-tune on any registered Gymnasium id")
    p.add_argument("--embodiment", default=None, help="with --env-id: the token that drives it")
    p.add_argument("--teacher", default=None, help="with --env-id: the regulariser's teacher (default: "
                                                     "the student before fine-tuning)")
    p.add_argument("--teachers-dir", default=None, help="where the suite's teachers are (default: shipped)")
    p.add_argument("--steps", type=float, required=True, help="env steps of fine-tuning, all tasks together")
    p.add_argument("--recipe", default=None, help="recipe YAML (default: agents/finetune.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set regularizer.coef=0")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_finetune)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from polydistill.deploy import load_student
    from polydistill.finetune import finetune, load_finetune_config, resolve_finetune_tasks
    from polydistill.utils import command_line

    if args.steps <= 0:
        raise ConfigError(f"--steps must be > 0, got {args.steps:g}")
    if (args.embodiment or args.teacher) and not args.env_id:
        raise ConfigError("--embodiment and --teacher go with --env-id")
    sets = list(args.set) + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = load_finetune_config(args.recipe, sets)
    tasks = resolve_finetune_tasks(load_student(args.student), args.task, args.env_id, args.embodiment,
                                   args.teacher, args.teachers_dir)
    summary = finetune(args.student, args.out, tasks, int(args.steps), cfg,
                       progress_bar=not args.no_progress, command=command_line("polydistill"))
    sb, sa = summary.get("success_before"), summary.get("success_after")
    lines = ["| task | before | after |" + (" success before | success after |" if sb else ""),
             "|---|---:|---:|" + ("---:|---:|" if sb else "")]
    for name, before in summary["returns_before"].items():
        lines.append(f"| {name} | {before:.1f} | {summary['returns_after'][name]:.1f} |"
                     + (f" {sb[name]:.2f} | {sa[name]:.2f} |" if sb and sa else ""))
    print("\n".join(lines))
    print(f"student: {summary['student']} (kept the student of step {summary['kept_step']}); "
          f"evaluate: polydistill evaluate --student {shlex.quote(args.out)}")
    before, after = summary["returns_before"], summary["returns_after"]
    facts = [("fine-tuned", f"{len(before)} task(s), {summary['steps']:,} PPO env steps, "
                            f"{summary['seconds'] / 60:.1f} min; kept the student of step "
                            f"{summary['kept_step']:,}")]
    facts += [(name, f"return {b:.1f} -> {after[name]:.1f}" + (f", success {sb[name]:.2f} -> {sa[name]:.2f}"
                                                                  if sb and sa else ""))
              for name, b in before.items()]
    print_summary(Summary("finetune", facts,
                          [("student", summary["student"]), ("curves", Path(args.out) / "finetune.json"),
                           ("tensorboard", f"tensorboard --logdir {Path(args.out) / 'tb'}")],
                          [f"polydistill evaluate --student {shlex.quote(args.out)}",
                           f"polydistill report {shlex.quote(args.out)}"]))
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="per-task table of teacher vs student returns (any setup)")
    p.add_argument("--student", required=True, help="student folder or .safetensors file")
    p.add_argument("--suite", default=None, help="generalist: evaluate on a suite (train + held-out tasks)")
    p.add_argument("--teachers-dir", default=None, help="generalist: folder of <task>/model.zip teachers")
    p.add_argument("--env-id", default=None, help="generalist: evaluate on one env (with --teacher optional)")
    p.add_argument("--teacher", default=None, help="yardstick teacher (generalist --env-id, vision)")
    p.add_argument("--embodiment", default=None, help="generalist: student token for --env-id")
    p.add_argument("--task", default=None, help="generalist: task token for --env-id (task-token students)")
    p.add_argument("--success-key", default=None,
                   help="info key of the env's success flag: adds success rates (default: the student's)")
    p.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="generalist: override a gymnasium.make argument of every task (YAML value), "
                        "e.g. seed=1000 for Meta-World goals never seen in collection")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--out", default=None, help="write report.md/json/png here")
    p.add_argument("--video", default=None, metavar="DIR",
                   help="also save one GIF episode of the student per task into DIR")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from polydistill.config import parse_value
    from polydistill.deploy import load_student
    from polydistill.evaluation.report import EvalOptions, markdown_table, write_report
    from polydistill.setups import get_setup

    student = load_student(args.student)
    setup = get_setup(student.metadata.get("setup", "generalist"))
    env_kwargs = {}
    for item in args.env_kwarg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env-kwarg: expected KEY=VALUE, got {item!r}")
        env_kwargs[key] = parse_value(value)
    rows = setup.evaluate(student, EvalOptions(
        episodes=args.episodes, seed=args.seed, suite=args.suite, teachers_dir=args.teachers_dir,
        env_id=args.env_id, teacher=args.teacher, embodiment=args.embodiment, video=args.video,
        task=args.task, success_key=args.success_key, env_kwargs=tuple(sorted(env_kwargs.items()))))
    if student.metadata.get("finetune"):
        from polydistill.finetune.run import add_pre_finetune

        rows = add_pre_finetune(rows, args.student, setup, EvalOptions(
            episodes=args.episodes, seed=args.seed, suite=args.suite, teachers_dir=args.teachers_dir,
            env_id=args.env_id, embodiment=args.embodiment, task=args.task, with_teacher=False,
            success_key=args.success_key, env_kwargs=tuple(sorted(env_kwargs.items()))))
    print(markdown_table(rows))
    files: list[tuple[str, str | Path]] = []
    if args.out:
        written = write_report(rows, args.out, f"evaluation of {args.student}")
        print(f"report: {written['md']}")
        files += [(k, written[k]) for k in ("html", "md", "json") if k in written]
    if args.video:
        print(f"videos: {args.video}")
        files.append(("videos", args.video))
    print_summary(Summary(f"evaluate ({setup.name})",
                          [("evaluated", f"{len(rows)} task(s), {args.episodes} episode(s) each, seeds from "
                                         f"{args.seed}"), *ratio_facts(rows)], files))
    return 0


def _add_quickstart(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="the whole pipeline on the default suite (~15 min on 2 CPU cores)")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--train-teachers", action="store_true",
                   help="train the specialists from scratch instead of loading the shipped ones "
                        "(about 3.5 h on 2 cores)")
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
    print(f"report: {report['files']['md']} (+ report.json, report.png, report.html); "
          f"tensorboard --logdir {report['tensorboard']}")
    print(f"student: {report['student']}\n"
          f"deploy: polydistill.load_student({report['student']!r}).predict(obs, embodiment='hopper')")
    print_summary(quickstart_summary(report))
    return 0


def quickstart_summary(report: dict[str, Any]) -> Summary:
    """The closing table of ``quickstart`` from its report (what :func:`run_quickstart` returns)."""
    facts = [("distilled", f"one generalist student, {report['env_steps']:,} labelled env steps, "
                           f"{report['updates']:,} updates, {report['distill_s'] / 60:.1f} min"),
             *ratio_facts(_rows(report["tasks"]))]
    names = {"html": "report", "md": "table"}
    files: list[tuple[str, str | Path]] = [("student", report["student"])]
    files += [(names[k], report["files"][k]) for k in names if k in report["files"]]
    files.append(("tensorboard", f"tensorboard --logdir {report['tensorboard']}"))
    from polydistill.envs import DEFAULT_SUITE

    student = shlex.quote(str(report["student"]))
    return Summary("quickstart", facts, files,
                   [f"polydistill evaluate --student {student} --suite {DEFAULT_SUITE}"])


def _rows(tasks: list[dict[str, Any]]) -> list[Any]:
    """``TaskRow``s of a report's ``tasks`` entries (as ``write_report`` wrote them)."""
    from polydistill.evaluation.report import TaskRow

    return [TaskRow(**t) for t in tasks]


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="measured benchmarks: a setup's, or perf (see scripts/benchmark.py)")
    p.add_argument("name", help="generalist, vision, caml, morphology (a registered setup with a "
                                "benchmark), metaworld, mamujoco, finetune or perf")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="results.json")
    p.add_argument("--steps", type=float, default=None, help="labelled steps of distillation per run")
    p.add_argument("--episodes", type=int, default=None,
                   help="evaluation episodes (default: the benchmark's)")
    p.add_argument("--teachers-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--envs", nargs="+", default=None, help="only these of the benchmark's envs or tasks")
    p.add_argument("--quick", action="store_true",
                   help="tiny budgets (checks every path runs; figures only indicative)")
    p.add_argument("--workers", type=int, default=0,
                   help="benchmark cells run in this many processes (0: one per CPU core)")
    p.add_argument("--suite", default=None,
                   help="metaworld: mt10 (default) or mt50; generalist, finetune: a suite of "
                        "polydistill.envs (default: the quickstart's)")
    p.add_argument("--students", nargs="+", default=None,
                   help="metaworld: only these students (dense, multihead, moe, bc); morphology: only "
                        "these kinds (token, descriptor, history, joints)")
    p.add_argument("--bc-seeds", type=int, default=None,
                   help="metaworld: runs of the behaviour-cloning baseline (default: --seeds)")
    p.add_argument("--cells-dir", default=None,
                   help="keep each finished cell (JSON) here and reuse those already there: an "
                        "interrupted grid resumes, a grid grows seed by seed (use a fresh folder "
                        "after changing the code)")
    p.set_defaults(func=_cmd_benchmark)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from polydistill.bench import BenchOptions, run_benchmark

    opts = BenchOptions(seeds=args.seeds, out=args.out, steps=args.steps, episodes=args.episodes,
                        teachers_dir=args.teachers_dir, progress_bar=not args.no_progress,
                        envs=tuple(args.envs) if args.envs else None, quick=args.quick, workers=args.workers,
                        suite=args.suite, students=tuple(args.students) if args.students else None,
                        cells_dir=args.cells_dir, bc_seeds=args.bc_seeds)
    started = time.perf_counter()
    report = run_benchmark(args.name, opts)
    print(report["markdown"])
    print(f"results: {args.out}")
    out = Path(args.out)
    outputs = (("results", out), ("table", out.with_suffix(".md")), ("plot", out.with_suffix(".png")),
               ("report", out.with_suffix(".html")))
    files = [(kind, p) for kind, p in outputs if p.is_file()]
    print_summary(Summary(f"benchmark {args.name}",
                          [("ran", f"{args.seeds} seed(s){', quick budgets' if args.quick else ''}, "
                                   f"{(time.perf_counter() - started) / 60:.1f} min")], files))
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
    _add_finetune(sub)
    _add_evaluate(sub)
    _add_dataset(sub)
    add_report_parser(sub)
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
