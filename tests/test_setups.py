"""The setup interface: every setup has every run feature, and a new setup is one module.

A toy setup (``toy_setup.py``) is registered and driven through all four commands of the
CLI; the shipped setups share validation, TensorBoard, periodic evaluation and commits.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import polydistill
from polydistill.cli import main
from polydistill.distill.run import DaggerRun

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_setup import ToyConfig, ToyRun  # noqa: E402  (registers the "toy" setup)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"generalist": None, "vision": "vision_point_goal.yaml", "caml": "caml_intersection.yaml",
           "morphology": "morphology.yaml"}


def _recipe(tmp_path: Path, **fields: object) -> str:
    path = tmp_path / "toy.yaml"
    path.write_text("setup: toy\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in fields.items()))
    return str(path)


def test_a_registered_toy_setup_runs_through_every_command(tmp_path: Path, capsys: pytest.CaptureFixture
                                                           ) -> None:
    run_dir = tmp_path / "run"
    recipe = _recipe(tmp_path, total_steps=600, rounds=2, eval_every=1)
    assert main(["distill", "--recipe", recipe, "--out", str(run_dir), "--no-progress", "--eval-episodes",
                 "1"]) == 0
    out = capsys.readouterr().out
    assert "| toy | train | toy |" in out
    # the closing summary: what ran, the figures, where the files went
    summary = out[out.index("distill (toy)"):]
    assert "labelled env steps" in summary and "report.html" in summary and "polydistill report" in summary
    assert json.loads((run_dir / "run.json").read_text())["setup"] == "toy"
    student = polydistill.load_student(run_dir)
    assert student.metadata["setup"] == "toy" and student.predict(np.zeros(3)).shape == (1,)
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["round"] for h in history] == [1.0, 2.0] and "eval/return/toy" in history[0]
    before = load_file(run_dir / "student.safetensors")
    assert main(["distill", "--resume", str(run_dir), "--no-progress", "--eval-episodes", "0"]) == 0
    after = load_file(run_dir / "student.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert main(["evaluate", "--student", str(run_dir), "--episodes", "1", "--out",
                 str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["tasks"][0]["name"] == "toy" and report["tasks"][0]["teacher_return"] is not None
    out = tmp_path / "bench.json"
    assert main(["benchmark", "toy", "--seeds", "2", "--episodes", "1", "--out", str(out),
                 "--no-progress"]) == 0
    bench = json.loads(out.read_text())
    assert len(bench["returns"]) == 2 and bench["stats"]["iqm_ci95"][0] <= bench["stats"]["iqm"]


def test_an_unknown_setup_or_benchmark_lists_the_registered_ones(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("setup: nope\n")
    assert main(["distill", "--recipe", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert main(["benchmark", "nope"]) == 2
    err = capsys.readouterr().err
    assert ("unknown setup 'nope'; registered setups: caml, generalist, morphology, toy, "
            "vision") in err
    assert ("unknown benchmark 'nope'; valid: caml, finetune, generalist, mamujoco, metaworld, morphology, "
            "perf, toy, vision") in err


@pytest.mark.parametrize(("args", "message"), [
    (["generalist", "--bc-seeds", "1"], "--bc-seeds applies to the metaworld benchmark, not 'generalist'"),
    (["metaworld", "--seeds", "2", "--bc-seeds", "3"], "--bc-seeds must be in [1, --seeds=2], got 3"),
    (["metaworld", "--bc-seeds", "0"], "--bc-seeds must be in [1, --seeds=3], got 0"),
    (["morphology", "--suite", "locomotion"],
     "--suite applies to the metaworld, generalist and finetune benchmarks, not 'morphology'"),
    (["generalist", "--suite", "nope"], "unknown suite 'nope'"),
    (["finetune", "--suite", "nope"], "unknown suite 'nope'"),
])
def test_benchmark_flags_are_checked_before_any_cell_runs(args: list[str], message: str,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert main(["benchmark", *args, "--no-progress"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("setup", sorted(RECIPES))
@pytest.mark.parametrize("bad", ["rounds=0", "total_steps=0", "n_envs=0", "updates_per_step=-1",
                                 "eval_every=-1",
                                 "checkpoint_every=-1", "eval_episodes=0", "student_action=greedy"])
def test_shared_fields_are_checked_in_every_setup(setup: str, bad: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    recipe = ["--recipe", str(ROOT / "agents" / RECIPES[setup])] if RECIPES[setup] else []
    assert main(["distill", *recipe, "--set", bad, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    key = bad.split("=")[0]
    assert re.search(rf"error: .*{key}", capsys.readouterr().err)
    assert not (tmp_path / "run" / "student.safetensors").exists()


def _scalars(log_dir: Path) -> set[str]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def _vision_run(**kw: object) -> DaggerRun:
    from test_vision import SMALL, _scripted_teacher

    from polydistill.setups.vision import VisionDistillConfig, VisionRun
    from polydistill.students import VisionConfig

    small = {**SMALL, "vision": VisionConfig(channels=(8, 8, 8), feature_dim=16)}
    cfg = VisionDistillConfig(total_steps=450, rounds=3, updates_per_step=0.05, eval_every=1, eval_episodes=1,
                              checkpoint_every=2, **small)
    return VisionRun(cfg, teacher=_scripted_teacher(), progress_bar=False, **kw)


def _caml_run(**kw: object) -> DaggerRun:
    from polydistill.setups.caml import CamlConfig, CamlRun
    from polydistill.students import StudentConfig, TeamConfig

    cfg = CamlConfig(env="rendezvous_v0", n_envs=2, total_steps=1500, rounds=3, updates_per_step=0.05,
                     team=TeamConfig(("proprio", "beacon_ring")), student=StudentConfig(hidden=(32,)),
                     eval_every=1, eval_episodes=1, checkpoint_every=2)
    return CamlRun(cfg, progress_bar=False, **kw)


@pytest.mark.parametrize("make, task", [(_vision_run, "PointGoalVision-v0"), (_caml_run, "rendezvous_v0")])
def test_vision_and_caml_runs_log_evaluate_and_commit_like_the_generalist(
        make, task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    commits: list[int] = []
    original = DaggerRun.commit

    def spy(self: DaggerRun):  # noqa: ANN202
        commits.append(self.round)
        return original(self)

    monkeypatch.setattr(DaggerRun, "commit", spy)
    run = make(run_dir=tmp_path / "run", log_dir=tmp_path / "tb")
    run.learn()
    run.close()
    assert commits == [2, 3]  # checkpoint_every=2, and the end
    tags = _scalars(tmp_path / "tb")
    for tag in ("collect/steps_per_s", "collect/teacher_frac", "distill/loss", "distill/lr", "buffer/size",
                f"rollout/ep_return/{task}", f"eval/return/{task}"):
        assert tag in tags, (tag, sorted(tags))
    assert all(f"eval/return/{task}" in h for h in run.history)


def test_cli_branches_on_no_setup_and_checkpoints_on_no_student_kind() -> None:
    names = "|".join(["generalist", "vision", "caml", "team"])
    for module in ("cli/main.py", "deploy/checkpoint.py", "deploy/export.py"):
        src = (ROOT / "polydistill" / module).read_text()
        assert not re.search(rf"""(==|!=|\bin)\s*\(?["'](?:{names})["']""", src), module
        assert "isinstance(student" not in src and "kind ==" not in src, module


def test_toy_run_learns_the_teacher() -> None:
    run = ToyRun(ToyConfig(total_steps=3000, rounds=3), progress_bar=False)
    from polydistill.evaluation.report import EvalOptions

    before = ToyRun.evaluate_student(run.deployed(), EvalOptions(episodes=3))[0]
    run.learn()
    run.close()
    after = ToyRun.evaluate_student(run.deployed(), EvalOptions(episodes=3))[0]
    gap = abs(before.student_return - before.teacher_return)
    assert abs(after.student_return - after.teacher_return) < 0.5 * gap, (before, after)


def _square_cell(x: int, log: str) -> dict[str, float]:
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return {"value": float(x * x)}


def test_benchmark_cells_are_kept_and_reused_from_a_cells_dir(tmp_path: Path) -> None:
    from polydistill.bench.stats import run_cells

    log, cells = str(tmp_path / "calls.txt"), tmp_path / "cells"
    jobs = [("sq", s, "m", s + 2, log) for s in range(3)]
    first = run_cells(jobs, _square_cell, 1, "t", False, cells)
    assert first == {("sq", s, "m"): {"value": float((s + 2) ** 2)} for s in range(3)}
    assert len(list(cells.glob("*.json"))) == 3
    again = run_cells(jobs + [("sq", 3, "m", 5, log)], _square_cell, 1, "t", False, cells)
    assert again[("sq", 3, "m")] == {"value": 25.0} and again[("sq", 0, "m")] == first[("sq", 0, "m")]
    assert Path(log).read_text().split() == ["2", "3", "4", "5"]  # only the new cell ran again
    changed = run_cells([("sq", 0, "m", 7, log)], _square_cell, 1, "t", False, cells)  # other args
    assert changed[("sq", 0, "m")] == {"value": 49.0}
    next(iter(cells.glob("sq-m-seed1-*.json"))).write_text("{damaged")
    run_cells(jobs[1:2], _square_cell, 1, "t", False, cells)  # a damaged cell runs again
    assert Path(log).read_text().split()[-1] == "3"


def _numpy_cell(x: int) -> dict[str, object]:
    return {"value": np.float32(x) * 2, "pair": (x, x), "none": None}


def _none_cell(log: str) -> None:
    with open(log, "a") as f:
        f.write("ran\n")


def test_cells_dir_fingerprints_are_stable_and_results_take_one_form(tmp_path: Path) -> None:
    import functools

    from polydistill.bench.stats import cell_fingerprint, run_cells
    from polydistill.errors import ConfigError

    fresh = run_cells([("n", 0, "m", 3)], _numpy_cell, 1, "t", False, tmp_path / "c")
    cached = run_cells([("n", 0, "m", 3)], _numpy_cell, 1, "t", False, tmp_path / "c")
    assert fresh == cached == {("n", 0, "m"): {"value": 6.0, "pair": [3, 3], "none": None}}
    log = str(tmp_path / "log")
    for _ in range(2):  # a None result is a result: kept, not run again
        out = run_cells([("z", 0, "m", log)], _none_cell, 1, "t", False, tmp_path / "c")
        assert out == {("z", 0, "m"): None}
    assert Path(log).read_text().split() == ["ran"]
    job = ("n", 0, "m", functools.partial(_numpy_cell, 3), {1: "a"}, {"1": "a"})
    assert cell_fingerprint(job) == cell_fingerprint(job)
    assert cell_fingerprint(("n", 0, "m", {1: "a"})) != cell_fingerprint(("n", 0, "m", {"1": "a"}))
    with pytest.raises(ConfigError, match="closure"):
        cell_fingerprint(("n", 0, "m", lambda: 0))
    with pytest.raises(ConfigError, match="cannot fingerprint"):
        cell_fingerprint(("n", 0, "m", object()))


def test_cell_fingerprints_do_not_depend_on_where_the_checkout_is(monkeypatch, tmp_path: Path) -> None:
    import polydistill.utils
    from polydistill.bench.stats import cell_fingerprint
    from polydistill.utils import agents_dir

    here = cell_fingerprint(("n", 0, "m", str(agents_dir() / "teachers" / "hopper-family")))
    elsewhere = tmp_path / "clone" / "agents"
    monkeypatch.setattr(polydistill.utils, "agents_dir", lambda: elsewhere)
    assert cell_fingerprint(("n", 0, "m", str(elsewhere / "teachers" / "hopper-family"))) == here
    assert cell_fingerprint(("n", 0, "m", str(elsewhere / "teachers" / "swimmer-family"))) != here


def test_a_retrained_family_teacher_makes_new_morphology_cells(tmp_path: Path) -> None:
    from polydistill.bench.morphology import _teacher_digest

    teacher = tmp_path / "hopper-family"
    assert _teacher_digest(str(teacher)) == ""  # no weights: nothing to digest
    teacher.mkdir()
    (teacher / "model.zip").write_bytes(b"weights one")
    first = _teacher_digest(str(teacher))
    (teacher / "model.zip").write_bytes(b"weights two")
    assert len(first) == 16 and _teacher_digest(str(teacher)) != first
