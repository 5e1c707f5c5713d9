"""``benchmark morphology``: morphology-aware students on unseen bodies of every family.

Every cell distils one family teacher into one student kind (``token``, ``descriptor``,
``history``, ``joints``) with one seed, from the shipped recipe ``agents/morphology.yaml``,
and drives every body of the family: its 16 training bodies, 4 held-out bodies inside the
training ranges (``interp``) and 4 outside them (``extrap``). The yardstick of a body is the
better of the family teacher given the body's true descriptor and the body's own specialist
(``agents/teachers/<body name>``) where one exists; both are measured once per family, on
the students' evaluation seeds. A body's ratio is the student's return over the yardstick's.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.bench import BenchOptions
from polydistill.bench.stats import effective_workers, finish_report, run_cells
from polydistill.config import override
from polydistill.errors import ConfigError
from polydistill.evaluation.report import EvalOptions
from polydistill.setups import read_recipe
from polydistill.setups.morphology import (
    MorphologyConfig,
    MorphologyRun,
    body_yardsticks,
    default_family_teacher,
    family_bodies,
)
from polydistill.utils import agents_dir

__all__ = ["run", "morphology_recipe", "FAMILIES", "KINDS", "FAMILY_SETS", "FAMILY_KIND_SETS"]

log = logging.getLogger(__name__)

FAMILIES = ("hopper", "halfcheetah", "swimmer", "cheetah-vel")
KINDS = ("token", "descriptor", "history", "joints")
SPLITS = ("train", "interp", "extrap")
EVAL_SEED = 100_000
"""First evaluation seed of every policy (never a collection seed)."""
KIND_SETS: dict[str, dict[str, Any]] = {"joints": {"updates_per_step": 0.05, "distiller.batch_size": 256}}
"""Per-kind changes to the recipe: the same env steps for every kind, but the transformer's
gradient steps cost far more than a dense student's on a CPU (measured on a shared 2-core machine:
31-41 ms at batch 512 vs 0.8 ms for a dense student at batch 256),
so it takes half as many, of half the batch."""
FAMILY_SETS: dict[str, dict[str, Any]] = {"halfcheetah": {"total_steps": 640_000, "buffer.capacity": 640_000}}
"""Per-family changes to the students' recipe. Half-cheetah students get twice the labelled steps:
measured on the `descriptor` student (seed 0, 5 episodes a body), 640k steps lift the bodies inside
the ranges from 0.827 (worst 0.576) to 0.911 (worst 0.790) and the training bodies from 0.990 to
1.012, where 32 extra pool bodies at 320k reached 0.893 (worst 0.768)."""

FAMILY_KIND_SETS: dict[tuple[str, str], dict[str, Any]] = {
    ("halfcheetah", "history"): {"student.history_aux": 1.0},
}
"""Per family and kind, on top of :data:`FAMILY_SETS`. The half-cheetah ``history`` student learns
to predict the body descriptor from its history latent (``student.history_aux``, RMA-style):
measured over three seeds (5 episodes a body), the bodies inside the ranges went from 0.975
(worst 0.760) to 0.990 (worst 0.836) and those outside from 0.553 to 0.705, training bodies 1.000
-> 1.006. Not measured on the other families, whose ``history`` students keep the plain recipe."""


def morphology_recipe(family: str, kind: str, teachers_dir: str | None = None) -> MorphologyConfig:
    """The shipped morphology recipe for ``family`` and student ``kind`` (with :data:`KIND_SETS`)."""
    _, recipe = read_recipe(agents_dir() / "morphology.yaml")
    sets = {"family": family, "student.kind": kind, **KIND_SETS.get(kind, {})}
    cfg = MorphologyRun.config_from(recipe, sets=sets)
    root = Path(teachers_dir) if teachers_dir else default_family_teacher(family).parent
    return override(cfg, {"teacher": str(root / f"{family}-family"),  # type: ignore[return-value]
                          "specialists_dir": str(root)})


def _student_cell(config: MorphologyConfig, episodes: int, progress_bar: bool) -> dict[str, Any]:
    """Train one student, drive every body of the family (no yardstick)."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    run_ = MorphologyRun(config, progress_bar=progress_bar)
    try:
        run_.learn()
        t_train = time.perf_counter() - t0
        opts = EvalOptions(episodes=episodes, seed=EVAL_SEED, with_teacher=False)
        rows = MorphologyRun.evaluate_student(run_.deployed(), opts)
    finally:
        run_.close()
    return {"bodies": {r.name: {"split": r.split, "return": r.student_return if np.isfinite(r.student_return)
                                else None} for r in rows},
            "train_s": t_train, "wall_s": time.perf_counter() - t0}


def _yardstick_cell(config: MorphologyConfig, episodes: int, progress_bar: bool) -> dict[str, Any]:
    """The family teacher and the specialists on every body of the family."""
    del progress_bar
    bodies = list(family_bodies(config.family).values())
    yard = body_yardsticks(config.family, bodies, episodes, EVAL_SEED, config.teacher,
                           config.specialists_dir)
    out = {}
    for b in bodies:
        got = yard[b.name]
        out[b.name] = {"split": b.split, **{k: got[k].mean_return if k in got else None
                                            for k in ("family_teacher", "specialist")}}
    return {"bodies": out}


def _plot(families: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.4), squeeze=False)
    for ax, fam in zip(axes[0], families, strict=True):
        kinds = list(fam["students"])
        x = np.arange(len(kinds))
        for i, split in enumerate(SPLITS):
            vals = [fam["students"][k][f"{split}_ratio"] or 0.0 for k in kinds]
            ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=split)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(0.8, color="grey", lw=0.8, ls="--")
        ax.set_xticks(x, kinds, rotation=20)
        ax.set_title(fam["name"])
        ax.set_ylim(0, 1.3)
    axes[0][0].set_ylabel("student / yardstick return")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(options: BenchOptions) -> dict[str, Any]:
    """Every family x student kind x seed; writes ``options.out`` (and ``.md``, ``.png``)."""
    families = list(options.envs or FAMILIES)
    kinds = list(options.students or KINDS)
    bad = sorted(set(families) - set(FAMILIES)) + sorted(set(kinds) - set(KINDS))
    if bad:
        raise ConfigError(f"unknown families or kinds {bad}; families: {FAMILIES}, kinds: {KINDS}")
    episodes = options.episodes or (1 if options.quick else 5)
    steps = 4000 if options.quick and options.steps is None else options.steps
    jobs: list[tuple[Any, ...]] = []
    for fam in families:
        base = morphology_recipe(fam, "token", options.teachers_dir)
        # the specialists on disk are part of the cell: one trained later makes it a new cell
        have = tuple(sorted(n for n in family_bodies(fam)
                            if (Path(base.specialists_dir or "") / n / "model.zip").is_file()))
        # so are the teachers' weights: a retrained teacher at the same path makes new cells
        digest = _teacher_digest(base.teacher)
        jobs.append((fam, 0, "yardstick", "yardstick", base, episodes, False, have, digest))
        for kind in kinds:
            cfg = override(morphology_recipe(fam, kind, options.teachers_dir),
                           {**FAMILY_SETS.get(fam, {}), **FAMILY_KIND_SETS.get((fam, kind), {})})
            if steps is not None:
                cfg = override(cfg, {"total_steps": int(steps), "buffer.capacity": int(steps),
                                     **({"rounds": 2} if options.quick else {})})
            for seed in range(options.seeds):
                jobs.append((fam, seed, kind, "student", override(cfg, {"seed": seed}), episodes, False, (),
                             digest))
    t0 = time.perf_counter()
    results = run_cells(jobs, _dispatch, options.workers, "morphology benchmark", options.progress_bar,
                        options.cells_dir)
    wall = time.perf_counter() - t0
    out_families = []
    base_steps = morphology_recipe(families[0], "token", options.teachers_dir).total_steps
    for fam in families:
        yard = results[(fam, 0, "yardstick")]["bodies"]
        students: dict[str, Any] = {}
        for kind in kinds:
            per_body = []
            for name, y in yard.items():
                known = [v for v in (y["family_teacher"], y["specialist"]) if v is not None]
                best = max(known) if known else None
                rets = [results[(fam, s, kind)]["bodies"][name]["return"] for s in range(options.seeds)]
                drivable = all(r is not None and np.isfinite(r) for r in rets)
                ratios = [r / best for r in rets] if best and best > 0 and drivable else []
                per_body.append({"name": name, "split": y["split"], "yardstick": best,
                                 "yardstick_from": None if best is None else
                                 ("specialist" if best == y["specialist"] else "family_teacher"),
                                 "family_teacher": y["family_teacher"], "specialist": y["specialist"],
                                 "student_returns": rets if drivable else None, "drivable": drivable,
                                 "ratio": float(np.mean(ratios)) if ratios else None,
                                 "ratio_std": float(np.std(ratios)) if ratios else None})
            entry: dict[str, Any] = {"bodies": per_body}
            for split in SPLITS:
                vals = [b["ratio"] for b in per_body if b["split"] == split and b["ratio"] is not None]
                entry[f"{split}_ratio"] = float(np.mean(vals)) if vals else None
                entry[f"{split}_min_ratio"] = float(np.min(vals)) if vals else None
                entry[f"{split}_undrivable"] = sum(not b["drivable"] for b in per_body if b["split"] == split)
            entry["train_s"] = float(np.mean([results[(fam, s, kind)]["train_s"]
                                              for s in range(options.seeds)]))
            students[kind] = entry
        out_families.append({"name": fam, "students": students,
                             "teacher": morphology_recipe(fam, "token", options.teachers_dir).teacher,
                             "total_env_steps": steps or FAMILY_SETS.get(fam, {}).get("total_steps",
                                                                                       base_steps)})
    base = morphology_recipe(families[0], "token", options.teachers_dir)
    report = {"setup": "morphology", "seeds": options.seeds, "families": out_families,
              "budget": {"total_env_steps": steps or base.total_steps, "rounds": base.rounds,
                         "eval_episodes": episodes},
              "workers": effective_workers(len(jobs), options.workers), "wall_s": wall}
    lines = ["| family | student | train | interp (worst body) | extrap (worst body) |",
             "|---|---|---:|---:|---:|"]

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    for fam in out_families:
        for kind, e in fam["students"].items():
            cannot = f", {e['extrap_undrivable']} not drivable" if e["extrap_undrivable"] else ""
            lines.append(f"| {fam['name']} | {kind} | {f(e['train_ratio'])} | {f(e['interp_ratio'])} "
                         f"({f(e['interp_min_ratio'])}) | {f(e['extrap_ratio'])} "
                         f"({f(e['extrap_min_ratio'])}{cannot}) |")
    return finish_report(report, "\n".join(lines), options.out, plot=functools.partial(_plot, out_families))


def _teacher_digest(teacher: str | None) -> str:
    """SHA-256 (16 hex digits) of the family teacher's weights, or ``""`` where it has none."""
    import hashlib

    path = Path(teacher or "") / "model.zip"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""


def _dispatch(which: str, config: MorphologyConfig, episodes: int, progress_bar: bool,
              specialists: tuple[str, ...] = (), teacher_digest: str = "") -> dict[str, Any]:
    """Run a ``student`` or a ``yardstick`` cell.

    Cells are named, so a cell's fingerprint is its config, the digest of its family teacher's
    weights and, for a yardstick cell, the specialists it found.
    """
    del specialists, teacher_digest  # only part of the fingerprint
    cell = _student_cell if which == "student" else _yardstick_cell
    return cell(config, episodes, progress_bar)
