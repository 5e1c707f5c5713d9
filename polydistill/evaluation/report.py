"""Per-task evaluation of a student against its teachers, and the report files.

``evaluate_student`` fills one row per task: teacher return, student return and their ratio,
for training tasks and held-out ones (where the yardstick is a specialist trained on that
variant alone, never used for distillation). ``write_report`` writes ``report.md``,
``report.json``, ``report.png`` (student vs teacher returns) and ``report.html`` (the page a
person reads: :mod:`polydistill.evaluation.html`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.deploy.checkpoint import DeployedStudent
from polydistill.errors import ConfigError, ObservationError
from polydistill.evaluation.episodes import evaluate
from polydistill.teachers import load_teacher
from polydistill.utils import atomic_write_bytes, atomic_write_json, command_line

__all__ = ["TaskRow", "EvalTask", "EvalOptions", "evaluate_student", "write_report", "suite_eval_tasks",
           "ratio",
           "markdown_table", "plot_png", "format_figure"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    """How a setup evaluates a student (what the ``evaluate`` command passes on)."""

    episodes: int = 10
    """Episodes per task and policy."""
    seed: int = 100_000
    """Seed of the first evaluation episode (teacher and student see the same seeds)."""
    with_teacher: bool = True
    """Also evaluate the teacher, the yardstick of the ratio column."""
    train_only: bool = False
    """Only the tasks the student was distilled on (no held-out tasks)."""
    suite: str | None = None
    """Generalist: evaluate on this suite's tasks (train and held-out)."""
    teachers_dir: str | None = None
    """Generalist: folder of ``<task>/model.zip`` yardstick teachers."""
    env_id: str | None = None
    """Generalist: evaluate on this one env."""
    teacher: str | None = None
    """Yardstick teacher of ``env_id`` (vision: instead of the recorded one)."""
    embodiment: str | None = None
    """Generalist: the token that drives ``env_id``."""
    task: str | None = None
    """Generalist: the task token that drives ``env_id`` (students with task tokens)."""
    video: str | None = None
    """Also save one GIF episode of the student per task into this folder."""
    success_key: str | None = None
    """``info`` key of the env's success flag: adds success rates (default: the student's own)."""
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    """Generalist: extra ``gymnasium.make`` arguments over each task's own (e.g. another goal seed)."""


@dataclass(frozen=True)
class EvalTask:
    """A task to evaluate: env, the token that drives it, and the yardstick teacher."""

    name: str
    env_id: str
    embodiment: str
    """Student token used on this task (a held-out body's proxy)."""
    split: str = "train"
    teacher: str | None = None
    """Path of the yardstick teacher (None: student only)."""
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    task: str | None = None
    """Task token (students with task tokens; None: the embodiment's token alone)."""


@dataclass
class TaskRow:
    """One line of the report."""

    name: str
    split: str
    embodiment: str
    teacher_return: float | None
    student_return: float
    ratio: float | None
    teacher_std: float | None = None
    student_std: float | None = None
    extra: dict[str, float | None] = field(default_factory=dict)
    """More figures of the row (e.g. accident rates), shown as extra columns."""
    episodes: int | None = None
    """Evaluation episodes behind each mean (None: not recorded); with the stds it gives the
    ratio's confidence interval in the HTML report."""


def refuse_generalist_options(options: EvalOptions, setup: str) -> None:
    """ConfigError for evaluation options only the generalist setup takes."""
    given = [f for f, v in (("--success-key", options.success_key), ("--env-kwarg", options.env_kwargs),
                            ("--task", options.task)) if v]
    if given:
        raise ConfigError(f"{', '.join(given)} do not apply to a {setup} student")


def ratio(student: float, teacher: float | None) -> float | None:
    """``student / teacher``, or None where the teacher's return is missing or not positive."""
    if teacher is None or not math.isfinite(teacher) or teacher <= 0:
        return None
    return student / teacher


def suite_eval_tasks(suite: str, teachers_dir: str | Path,
                     include_heldout: bool = True) -> list[EvalTask]:
    """Evaluation tasks of a suite.

    Teachers are looked up as ``teachers_dir/<task>``, a family member's (a training task that
    names its family's teacher) as ``teachers_dir/<family>-family``.
    """
    from polydistill.envs import get_suite

    out = []
    for t in get_suite(suite):
        if t.split == "heldout" and not include_heldout:
            continue
        teacher = Path(teachers_dir) / t.teacher_name
        out.append(EvalTask(
            t.name, t.env_id, t.proxy or t.embodiment, t.split,
            str(teacher) if (teacher / "model.zip").is_file() else None,
            tuple(sorted(t.kwargs.items())),
        ))
    return out


def evaluate_student(student: DeployedStudent, tasks: list[EvalTask], episodes: int = 10,
                     seed: int = 100_000, teacher_cache: dict[str, Any] | None = None,
                     success_key: str | None = None) -> list[TaskRow]:
    """Evaluate ``student`` and each task's teacher on the same seeds.

    Args:
        student: The loaded student.
        tasks: What to evaluate.
        episodes: Episodes per task and policy.
        seed: Seed of the first evaluation env.
        teacher_cache: Optional ``{key: EvalResult}`` of teachers reused across calls (teachers
            are frozen, so a benchmark need not re-evaluate them for every student).
        success_key: ``info`` key of the env's success flag: rows gain ``success`` (student)
            and ``teacher_success`` columns, the fraction of episodes where it was ever true.

    Raises:
        ConfigError: if a task's token is unknown to the student.
    """
    rows = []
    for t in tasks:
        if t.embodiment not in student.embodiments:
            raise ConfigError(
                f"task {t.name!r} needs embodiment {t.embodiment!r}; the student knows "
                f"{student.embodiments}"
            )
        try:
            student.table.id(t.embodiment, t.task)
        except ObservationError as exc:
            raise ConfigError(f"task {t.name!r}: {exc}") from None
    for t in tasks:
        kwargs = dict(t.env_kwargs)
        s = evaluate(t.env_id, lambda o, e=t.embodiment, k=t.task: student.predict(o, embodiment=e, task=k),
                     n_episodes=episodes, seed=seed, env_kwargs=kwargs, success_key=success_key)
        tr = None
        if t.teacher is not None:
            key = repr((t.teacher, t.env_id, t.env_kwargs, episodes, seed, success_key))
            tr = (teacher_cache or {}).get(key)
            if tr is None:
                tr = evaluate(t.env_id, task_teacher(t.teacher, t.env_id, kwargs).act, n_episodes=episodes,
                              seed=seed, env_kwargs=kwargs, success_key=success_key)
                if teacher_cache is not None:
                    teacher_cache[key] = tr
        t_mean, t_std = (tr.mean_return, tr.std_return) if tr is not None else (None, None)
        extra = {} if success_key is None else {
            "success": s.success_rate, "teacher_success": tr.success_rate if tr is not None else None}
        token = t.embodiment if t.task is None else f"{t.embodiment}/{t.task}"
        rows.append(TaskRow(t.name, t.split, token, t_mean, s.mean_return, ratio(s.mean_return, t_mean),
                            t_std, s.std_return, extra, episodes=len(s.returns)))
        log.debug("%-16s %-8s teacher %8s student %8.1f ratio %s", t.name, t.split,
                 "-" if t_mean is None else f"{t_mean:.1f}", s.mean_return,
                 "-" if rows[-1].ratio is None else f"{rows[-1].ratio:.3f}")
    return rows


def task_teacher(spec: str, env_id: str, env_kwargs: dict[str, Any] | None = None) -> Any:
    """Load a task's teacher; a family teacher on a member of its family sees that body.

    An import path needs the env's spaces, read from one env copy, as does viewing a family
    teacher on one body (:func:`polydistill.setups.morphology.family_member_teacher`).
    """
    from polydistill.setups.morphology import family_member_teacher
    from polydistill.teachers.base import is_import_path
    from polydistill.utils import make_env

    env = make_env(env_id, env_kwargs)
    try:
        teacher = load_teacher(spec, env.observation_space, env.action_space) if is_import_path(spec) \
            else load_teacher(spec)
        return family_member_teacher(teacher, env)
    finally:
        env.close()


def format_figure(x: float | None, digits: int = 1) -> str:
    """``x`` with ``digits`` decimals, or ``-`` where it is missing or not finite."""
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def markdown_table(rows: list[TaskRow]) -> str:
    """The rows as a markdown table."""
    extra = list(dict.fromkeys(k for r in rows for k in r.extra))
    lines = ["| task | split | token | teacher return | student return | ratio |"
             + "".join(f" {k} |" for k in extra),
             "|---|---|---|---:|---:|---:|" + "---:|" * len(extra)]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.split} | {r.embodiment} | {format_figure(r.teacher_return)} | "
            f"{format_figure(r.student_return)} | {format_figure(r.ratio, 3)} |"
            + "".join(f" {format_figure(r.extra.get(k), 3)} |" for k in extra)
        )
    return "\n".join(lines)


def write_report(rows: list[TaskRow], out_dir: str | Path, title: str = "polydistill report",
                 extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.json``, ``report.png`` and ``report.html`` to ``out_dir``.

    ``report.json`` also records the command line and the library versions. The HTML page
    (:func:`polydistill.evaluation.html.write_html_report`) is written last and reads the
    folder (``history.json``, ``run.json``, the student beside); if it fails, a warning is
    logged and the other files stand.
    """
    from polydistill.utils import library_versions

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = [r.ratio for r in rows if r.split == "train" and r.ratio is not None]
    summary = {
        "min_train_ratio": min(train) if train else None,
        "mean_train_ratio": float(np.mean(train)) if train else None,
    }
    succ = [r.extra["success"] for r in rows if r.split == "train" and r.extra.get("success") is not None]
    if succ:
        summary["mean_train_success"] = float(np.mean(succ))
    atomic_write_json(out / "report.json", {"title": title, "summary": summary,
                                            "tasks": [asdict(r) for r in rows], "command": command_line(),
                                            "versions": library_versions(), **(extra or {})})
    md = [f"# {title}", "", markdown_table(rows), "",
          f"Training tasks: min ratio {format_figure(summary['min_train_ratio'], 3)}, "
          f"mean ratio {format_figure(summary['mean_train_ratio'], 3)}"
          + (f", mean success {summary['mean_train_success']:.3f}." if succ else "."), ""]
    if extra:
        md += ["```", *[f"{k}: {v}" for k, v in extra.items() if not isinstance(v, dict | list)],
               "```", ""]
    atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    atomic_write_bytes(out / "report.png", plot_png(rows, title))
    files = {"md": out / "report.md", "json": out / "report.json", "png": out / "report.png"}
    from polydistill.evaluation.html import write_html_report_safe

    if (page := write_html_report_safe(out)) is not None:
        files["html"] = page
    return files


def plot_png(rows: list[TaskRow], title: str) -> bytes:
    """The bar plot of ``report.png`` (student vs teacher returns; success rates where known)."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    succ = any(r.extra.get("success") is not None for r in rows)
    fig, axes = plt.subplots(2 if succ else 1, 1, squeeze=False,
                             figsize=(max(6.0, 0.9 * len(rows) + 1.0), 7.0 if succ else 4.2))
    ax = axes[0, 0]
    x = np.arange(len(rows))
    labels = [f"{r.name}\n({r.split})" for r in rows]
    teacher = [r.teacher_return if r.teacher_return is not None else 0.0 for r in rows]
    student = [r.student_return for r in rows]
    ax.bar(x - 0.2, teacher, 0.4, label="teacher", color="#888888")
    ax.bar(x + 0.2, student, 0.4, label="student", color="#1f77b4")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean episode return (symlog)")
    ax.set_yscale("symlog", linthresh=10.0)
    top = max([abs(v) for v in teacher + student] + [10.0])
    ax.set_ylim(bottom=min(0.0, *teacher, *student), top=top * 4)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, ncols=2)
    if succ:
        ax2 = axes[1, 0]
        for off, key, label, color in ((-0.2, "teacher_success", "teacher", "#888888"),
                                       (0.2, "success", "student", "#1f77b4")):
            ax2.bar(x + off, [r.extra.get(key) or 0.0 for r in rows], 0.4, label=label, color=color)
        ax2.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax2.set_ylabel("success rate")
        ax2.set_ylim(0, 1.05)
        ax2.legend(loc="lower left", fontsize=8, ncols=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
