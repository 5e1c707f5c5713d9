"""The README's main job: teachers -> DAgger distillation -> evaluation -> report -> student."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from polydistill.config import override
from polydistill.deploy import load_student
from polydistill.envs import DEFAULT_SUITE
from polydistill.evaluation.report import evaluate_student, markdown_table, suite_eval_tasks, write_report
from polydistill.setups import read_recipe
from polydistill.setups.generalist import GeneralistConfig, GeneralistRun, default_teachers_dir
from polydistill.utils import atomic_write_json

__all__ = ["run_quickstart", "default_distill_config", "ensure_teachers"]

log = logging.getLogger(__name__)

def default_distill_config() -> GeneralistConfig:
    """The shipped distillation recipe (``agents/distill.yaml``)."""
    setup, recipe = read_recipe(None)
    return setup.run.config_from(recipe)  # type: ignore[return-value]


def ensure_teachers(out: Path, train: bool, seed: int = 0, progress_bar: bool = True) -> Path:
    """Folder with every teacher the suite names (one per task; one per family for members).

    Shipped teachers are used where present (unless ``train``); any missing one is trained
    into ``out/teachers`` with its recipe and ``seed``, and the shipped ones are linked beside.
    A family teacher trains on its family's env, a specialist on its task's env and keywords.
    """
    from polydistill.envs import get_suite
    from polydistill.teachers.train import suite_teacher_recipe, train_teacher

    shipped = default_teachers_dir()
    teachers = {t.teacher_name: t for t in get_suite(DEFAULT_SUITE)}  # a family's members share one
    missing = [n for n in teachers if train or not (shipped / n / "model.zip").is_file()]
    if not missing:
        log.info("using the shipped teachers in %s (retrain: --train-teachers)", shipped)
        return shipped
    folder = out / "teachers"
    folder.mkdir(parents=True, exist_ok=True)
    for name, t in teachers.items():
        dest = folder / name
        if name not in missing:
            if not dest.exists():
                dest.symlink_to((shipped / name).resolve(), target_is_directory=True)
            continue
        if (dest / "model.zip").is_file() and (dest / "manifest.json").is_file():
            continue  # trained by an earlier run of this quickstart
        env_id, recipe = suite_teacher_recipe(t)
        log.info("training teacher %s (%s)", name, env_id)
        train_teacher(env_id, dest, recipe, seed=seed, progress_bar=progress_bar)
    return folder


def run_quickstart(out: str | Path = "runs/quickstart", train_teachers: bool = False,
                   steps: float | None = None, seed: int = 0, episodes: int = 10,
                   progress_bar: bool = True) -> dict[str, object]:
    """Run the whole pipeline on the default suite and write everything under ``out``.

    Returns:
        The report's JSON content, plus ``markdown`` (the table), ``files`` and ``tensorboard``.
    """
    out = Path(out)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    teachers_dir = ensure_teachers(out, train_teachers, seed, progress_bar)
    timings["teachers_s"] = time.perf_counter() - t0

    sets: dict[str, object] = {"seed": seed, "teachers_dir": str(teachers_dir), "suite": DEFAULT_SUITE}
    if steps is not None:
        sets["total_steps"] = int(steps)
    cfg = override(default_distill_config(), sets)
    t0 = time.perf_counter()
    trainer = GeneralistRun(cfg, log_dir=out / "tb", progress_bar=progress_bar)
    try:
        trainer.learn()
        student_path = trainer.save(out / "student")
    finally:
        trainer.close()
    timings["distill_s"] = time.perf_counter() - t0
    atomic_write_json(out / "history.json", trainer.history)

    t0 = time.perf_counter()
    rows = evaluate_student(load_student(student_path), suite_eval_tasks(DEFAULT_SUITE, teachers_dir),
                            episodes=episodes)
    timings["evaluate_s"] = time.perf_counter() - t0
    extra = {"student": str(student_path), "env_steps": trainer.collector.total_steps,
             "updates": trainer.distiller.updates, "seed": seed,
             **{k: round(v, 1) for k, v in timings.items()}}
    files = write_report(rows, out, "polydistill quickstart: generalist student vs specialists",
                         extra)
    import json

    report = json.loads(files["json"].read_text())
    report["markdown"] = markdown_table(rows)
    report["files"] = {k: str(v) for k, v in files.items()}
    report["tensorboard"] = str(out / "tb")
    return report
