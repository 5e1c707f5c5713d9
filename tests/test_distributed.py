"""The Ray path end to end on a local cluster (2 CPUs) with tiny budgets."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from polydistill.collect.ray import init_ray  # noqa: E402
from polydistill.errors import WorkerError  # noqa: E402
from polydistill.setups.generalist import GeneralistRun  # noqa: E402
from polydistill.teachers.train import (  # noqa: E402
    TeacherJob,
    load_recipe,  # noqa: E402
    train_teachers_ray,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_trainer import _config, _digest, _teachers  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_cluster():  # noqa: ANN201
    os.environ.setdefault("MUJOCO_GL", "egl")
    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_ray_workers_collect_the_same_rows_as_the_local_path() -> None:
    cfg = _config(rounds=3, total_steps=2400)
    local = GeneralistRun(cfg, teachers=_teachers(), progress_bar=False)
    local.learn()
    local.close()
    dist = GeneralistRun(_config(rounds=3, total_steps=2400, workers=2), teachers=_teachers(),
                          progress_bar=False)
    assert len(set(dist.collector.pool.pids())) == 2 and os.getpid() not in dist.collector.pool.pids()
    dist.learn()
    dist.close()
    assert _digest(dist.student) == _digest(local.student)
    for k, arr in dist.buffer.data.items():
        assert (arr == local.buffer.data[k]).all(), k
    assert dist.collector.total_steps == local.collector.total_steps == 2400


def test_ray_run_resumes_into_a_local_one(tmp_path: Path) -> None:
    """Run state gathered from Ray workers restores into local runners (and back)."""
    ref = GeneralistRun(_config(rounds=2, total_steps=1600), teachers=_teachers(), progress_bar=False)
    ref.learn()
    ref.close()
    first = GeneralistRun(_config(rounds=2, total_steps=1600, workers=2), teachers=_teachers(),
                           progress_bar=False, run_dir=tmp_path)
    first.learn(max_rounds=1)
    first.close()
    state_file = tmp_path / "checkpoints" / "latest.json"
    assert json.loads(state_file.read_text())["round"] == 1
    second = GeneralistRun(_config(rounds=2, total_steps=1600, workers=0), teachers=_teachers(),
                            progress_bar=False, run_dir=tmp_path)
    assert second.resume()
    second.learn()
    second.close()
    assert _digest(second.student) == _digest(ref.student)


def _vision(**kw):  # noqa: ANN003, ANN202
    from test_vision import SMALL, _scripted_teacher

    from polydistill.setups.vision import VisionDistillConfig, VisionRun
    from polydistill.students import VisionConfig

    small = {**SMALL, "vision": VisionConfig(channels=(8, 8, 8), feature_dim=16)}
    cfg = VisionDistillConfig(total_steps=600, rounds=3, updates_per_step=0.05, **{**small, **kw})
    teacher = _scripted_teacher()
    return lambda run_dir=None: VisionRun(cfg, teacher=teacher, progress_bar=False, run_dir=run_dir)


def _caml(**kw):  # noqa: ANN003, ANN202
    from polydistill.setups.caml import CamlConfig, CamlRun
    from polydistill.students import StudentConfig, TeamConfig

    cfg = CamlConfig(env="rendezvous_v0", n_envs=2, total_steps=900, rounds=3, updates_per_step=0.05,
                     team=TeamConfig(("proprio", "beacon_ring"), message_dim=4),
                     student=StudentConfig(hidden=(32,)), **kw)
    return lambda run_dir=None: CamlRun(cfg, progress_bar=False, run_dir=run_dir)


def _mamujoco(**kw):  # noqa: ANN003, ANN202
    """CAML machinery on Multi-Agent MuJoCo: the shipped joint teacher labels every agent."""
    pytest.importorskip("gymnasium_robotics")
    from polydistill.setups.caml import CamlConfig, CamlRun
    from polydistill.students import StudentConfig, TeamConfig

    cfg = CamlConfig(env="mamujoco_v0", env_kwargs={"scenario": "HalfCheetah", "agent_conf": "2x3"},
                     teacher="agents/teachers/mamujoco-halfcheetah", n_envs=2, total_steps=1200, rounds=3,
                     updates_per_step=0.05, team=TeamConfig(("local", "id")),
                     student=StudentConfig(hidden=(32,)), **kw)
    return lambda run_dir=None: CamlRun(cfg, progress_bar=False, run_dir=run_dir)


@pytest.mark.parametrize("setup", [_vision, _caml, _mamujoco])
def test_ray_workers_serve_vision_and_caml_runs_with_identical_rows(setup, tmp_path: Path) -> None:  # noqa: ANN001
    """Ray rollout workers collect the same rows as the local path in every setup, and a run
    collected by a worker resumes locally."""
    local = setup()()
    local.learn()
    local.close()
    for workers in (1, 2):
        dist = setup(workers=workers)()
        assert dist.collector.pool is not None and os.getpid() not in dist.collector.pool.pids()
        dist.learn()
        dist.close()
        assert _digest(dist.student) == _digest(local.student), workers
        for k, arr in dist.buffer.data.items():
            assert np.array_equal(arr, local.buffer.data[k]), (workers, k)
    first = setup(workers=1)(tmp_path)
    first.learn(max_rounds=1)
    first.close()
    second = setup(workers=0)(tmp_path)  # another worker count: where rows are collected is not the config
    assert second.resume() and second.round == 1
    second.learn()
    second.close()
    assert _digest(second.student) == _digest(local.student)


def test_a_killed_rollout_worker_raises_within_30_seconds() -> None:
    trainer = GeneralistRun(_config(rounds=2, total_steps=400_000, workers=2), teachers=_teachers(),
                             progress_bar=False)
    victim = trainer.collector.pool.pids()[0]
    threading.Timer(1.0, os.kill, (victim, signal.SIGKILL)).start()
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match="died"):
        trainer.collector.collect(100_000, 0.5, trainer.buffer)
    assert time.monotonic() - t0 < 30
    trainer.close()


def test_teachers_train_concurrently_and_one_failure_loses_no_other(tmp_path: Path) -> None:
    recipe = load_recipe("Pendulum-v1", None, {"n_timesteps": 512, "n_envs": 2, "eval_freq": 0,
                                               "final_eval_episodes": 2,
                                               "hyperparams": {"n_steps": 64, "batch_size": 64}})
    jobs = [TeacherJob("Pendulum-v1", str(tmp_path / "a"), recipe, 0, name="a"),
            TeacherJob("NoSuchEnv-v9", str(tmp_path / "bad"), recipe, 1, name="bad"),
            TeacherJob("Pendulum-v1", str(tmp_path / "b"), recipe, 2, name="b")]
    outcomes = train_teachers_ray(jobs)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert "NoSuchEnv-v9" in outcomes[1].error
    for name, seed in (("a", 0), ("b", 2)):
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert (tmp_path / name / "model.zip").is_file() and manifest["seed"] == seed


def test_train_teacher_suite_with_ray_cli(tmp_path: Path) -> None:
    import subprocess

    r = subprocess.run(
        [sys.executable, "-m", "polydistill", "train-teacher", "--suite", "locomotion",
         "--task", "pendulum", "--task", "swimmer", "--steps", "512", "--ray", "--num-cpus", "2",
         "--out", str(tmp_path), "--set", "n_envs=2", "--set", "eval_freq=0",
         "--set", "final_eval_episodes=1", "--seed", "7"],
        env={**os.environ, "MUJOCO_GL": "egl", "PYTHONWARNINGS": "ignore", "RAY_ADDRESS": ""},
        capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| pendulum | ok |" in r.stdout and "| swimmer | ok |" in r.stdout
    seeds = {json.loads((tmp_path / n / "manifest.json").read_text())["seed"]
             for n in ("pendulum", "swimmer")}
    assert len(seeds) == 2  # each specialist its own seed
