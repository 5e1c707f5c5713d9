"""Learned team teachers: PPO with parameter sharing on a CAML world's shared view."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polydistill.config import override
from polydistill.envs import make_parallel
from polydistill.errors import ConfigError, SpaceMismatchError, TeacherError
from polydistill.evaluation.episodes import evaluate_team
from polydistill.setups.caml import CamlConfig, CamlRun, team_teacher
from polydistill.students import StudentConfig
from polydistill.teachers import PolicyTeamTeacher
from polydistill.teachers.team_train import load_team_recipe, train_team_teacher
from polydistill.utils import shipped_path
from polydistill.wrappers.pettingzoo import SharedView

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {"intersection_v0": "teachers/caml-intersection", "rendezvous_v0": "teachers/caml-rendezvous"}


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) team teacher of the intersection, trained through the library's own function."""
    out = tmp_path_factory.mktemp("team") / "teacher"
    recipe = load_team_recipe("intersection_v0", overrides={
        "n_timesteps": 2048, "n_envs": 2, "eval_freq": 1024, "n_eval_episodes": 2, "final_eval_episodes": 3,
        "hyperparams.n_steps": 128, "hyperparams.batch_size": 128, "policy_kwargs": {"net_arch": [32]}})
    train_team_teacher("intersection_v0", out, recipe, seed=0, progress_bar=False)
    return out


def test_training_writes_model_statistics_and_a_manifest_that_reloads(tiny_teacher: Path) -> None:
    for name in ("model.zip", "vecnormalize.pkl", "manifest.json"):
        assert (tiny_teacher / name).is_file()
    m = json.loads((tiny_teacher / "manifest.json").read_text())
    assert m["kind"] == "polydistill.team_teacher" and m["env"] == "intersection_v0"
    assert m["n_timesteps"] == 2048 and m["eval_episodes"] == 3
    assert "shared/lidar" in m["obs_groups"] and m["shared_view"] == ["state", "lidar"]
    assert np.isfinite(m["mean_return"]) and 0.0 <= m["accident_rate"] <= 1.0
    # 4 agents: own state (6) + lidar (32), the team's (4 x 38), present, is_me, relative poses (4 x 3)
    assert m["observation_shape"] == [6 + 32 + 4 * 38 + 4 + 4 + 4 * 3]
    teacher = team_teacher(str(tiny_teacher))
    assert isinstance(teacher, PolicyTeamTeacher)
    # the manifest's figure is reproduced by the loaded teacher on the same seeds
    make = functools.partial(make_parallel, "intersection_v0", n_agents=4)
    again = evaluate_team(make, teacher, 3, m["seed"] + 20_000)
    assert again.mean_return == pytest.approx(m["mean_return"], rel=1e-6)


def test_team_teacher_acts_from_the_shared_view_and_is_deterministic(tiny_teacher: Path) -> None:
    teacher = PolicyTeamTeacher.load(tiny_teacher)
    env = make_parallel("intersection_v0", n_agents=4)
    obs, _ = env.reset(seed=3)
    a1, a2 = teacher(env, obs), teacher(env, obs)
    assert set(a1) == set(env.agents)
    for agent, a in a1.items():
        assert env.action_space(agent).contains(a.astype(np.float32))
        assert np.array_equal(a, a2[agent])
    # an env that already carries the shared view gives the same inputs
    wrapped = SharedView(make_parallel("intersection_v0", n_agents=4), ("state", "lidar"))
    wobs, _ = wrapped.reset(seed=3)
    assert np.array_equal(teacher.observations(wrapped, wobs), teacher.observations(env, obs))
    # every agent's input holds the same team readings (its own row marked by is_me)
    x = teacher.observations(env, obs)
    assert x.shape == (4, 210) and np.array_equal(x[0, 38:190], x[1, 38:190]) and x[0, 38:190].any()
    env.close()
    wrapped.close()


def test_team_teacher_pickles_for_rollout_workers(tiny_teacher: Path) -> None:
    import pickle

    teacher = PolicyTeamTeacher.load(tiny_teacher)
    env = make_parallel("intersection_v0", n_agents=4)
    obs, _ = env.reset(seed=1)
    before = teacher(env, obs)  # fills the per-env view cache
    clone = pickle.loads(pickle.dumps(teacher))
    after = clone(env, obs)
    assert all(np.array_equal(before[a], after[a]) for a in before)
    env.close()


def test_team_teacher_refuses_a_team_of_another_size(tiny_teacher: Path) -> None:
    teacher = PolicyTeamTeacher.load(tiny_teacher)
    env = make_parallel("intersection_v0", n_agents=5)
    obs, _ = env.reset(seed=0)
    with pytest.raises(SpaceMismatchError, match="shape"):
        teacher(env, obs)
    env.close()


def test_caml_run_distils_from_a_learned_teacher_and_evaluates_against_it(tiny_teacher: Path) -> None:
    cfg = CamlConfig(env="intersection_v0", teacher=str(tiny_teacher), n_envs=2, total_steps=2000, rounds=1,
                     student=StudentConfig(hidden=(32,)))
    run = CamlRun(cfg, progress_bar=False)
    try:
        run.learn()
        assert run.total_steps >= 2000 and isinstance(run.teacher, PolicyTeamTeacher)
        assert run.student_metadata()["teacher"] == str(tiny_teacher)
        # the students never read the teacher's shared view
        assert run.student.team.modalities == ("state", "camera")
        t = run.evaluate_teacher(episodes=2)
        assert np.isfinite(t.mean_return)
    finally:
        run.close()
    # the same run collects through Ray rollout workers (the teacher travels to them)
    run = CamlRun(override(cfg, {"workers": 1, "total_steps": 800}), progress_bar=False)
    try:
        run.learn()
        assert run.total_steps >= 800
    finally:
        run.close()


def test_bad_team_teacher_recipes_and_folders_are_refused(tmp_path: Path, tiny_teacher: Path) -> None:
    with pytest.raises(ConfigError, match="algo"):
        load_team_recipe("intersection_v0", overrides={"algo": "sac"})
    with pytest.raises(ConfigError, match="obs_groups"):
        load_team_recipe("intersection_v0", overrides={"obs_groups": []})
    with pytest.raises(ConfigError, match="no modality"):
        train_team_teacher("intersection_v0", tmp_path / "t",
                           load_team_recipe("intersection_v0", overrides={"obs_groups": ["gps"]}),
                           progress_bar=False)
    with pytest.raises(TeacherError, match="team teacher folder"):
        PolicyTeamTeacher.load(tmp_path)
    with pytest.raises(ConfigError, match="learned team teacher"):
        team_teacher(str(tmp_path / "missing"))


def test_cli_trains_a_team_teacher_and_refuses_unknown_worlds(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "t"
    cli = [sys.executable, "-m", "polydistill", "train-teacher", "--parallel-env"]
    r = subprocess.run([*cli, "rendezvous_v0", "--steps", "1024", "--set", "n_envs=2", "--set", "eval_freq=0",
                        "--set", "final_eval_episodes=2", "--set", "hyperparams.n_steps=128",
                        "--out", str(out), "--no-progress"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["env"] == "rendezvous_v0" and m["selected"] == "final"
    assert "--parallel-env rendezvous_v0" in m["reproduce"]
    r = subprocess.run([*cli, "nowhere_v0", "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 2 and "error:" in r.stderr and "rendezvous_v0" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("world", sorted(SHIPPED))
def test_shipped_learned_teachers_drive_their_world(world: str) -> None:
    path = shipped_path(SHIPPED[world])
    m = json.loads((path / "manifest.json").read_text())
    assert m["kind"] == "polydistill.team_teacher" and m["env"] == world
    teacher = team_teacher(SHIPPED[world])
    assert isinstance(teacher, PolicyTeamTeacher)
    make = functools.partial(make_parallel, world, **m["env_kwargs"])
    # the first episodes of the manifest's own evaluation give its figures back
    r = evaluate_team(make, teacher, 2, m["seed"] + 20_000)
    assert np.isfinite(r.mean_return) and 0.0 <= r.accident_rate <= 1.0
    zero = evaluate_team(make, lambda env, obs: {a: np.zeros(env.action_space(a).shape, np.float32)
                                                 for a in obs}, 2, m["seed"] + 20_000)
    assert r.mean_return > zero.mean_return


def test_caml_benchmark_reports_the_learned_teacher_and_its_student(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's assembly: a ``teacher_learned`` row (measured here) beside the scripted one, and
    the student distilled from it as a method (its cells stubbed: they take minutes each)."""
    from polydistill.bench import BenchOptions, caml

    seen: list[tuple] = []

    def cells(jobs: list[tuple], *_: object, **__: object) -> dict:
        seen.extend(jobs)
        fig = {"return": 1.0, "accident_rate": 0.0}
        return {j[:3]: {"figures": fig, "by_team_size": {"2": fig, "3": fig, "4": fig}} for j in jobs}

    monkeypatch.setattr(caml, "run_cells", cells)
    report = caml.run(BenchOptions(seeds=1, envs=("rendezvous",), episodes=2, out=str(tmp_path / "r.json"),
                                   progress_bar=False))
    learned = [j for j in seen if j[2] == "caml_student_learned"]
    assert len(learned) == 1 and learned[0][3].teacher == "teachers/caml-rendezvous"
    (row,) = report["envs"]
    methods = row["methods"]
    assert set(caml.METHODS) | {"teacher", "teacher_learned"} == set(methods)
    assert list(methods["teacher_learned"]["by_team_size"]) == ["3"]  # it drives its own team size only
    assert np.isfinite(methods["teacher_learned"]["return"])
    assert row["learned_ratio"] == pytest.approx(1.0 / methods["teacher_learned"]["return"])
