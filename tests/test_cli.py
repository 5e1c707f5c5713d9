"""The documented command-line interfaces, run as a user would (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import polydistill
import polydistill.envs  # noqa: F401  (registers polydistill/ ids)
from polydistill.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUJOCO_GL": "egl", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _train_sb3(env_id: str, folder: Path, algo: str = "ppo") -> Path:
    """A real (tiny) SB3 teacher with VecNormalize statistics saved beside it."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(make_vec_env(env_id, n_envs=2, seed=0))
    model = sb3.PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0,
                    policy_kwargs={"net_arch": [16]})
    model.learn(256)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.zip")
    venv.save(str(folder / "vecnormalize.pkl"))
    return folder / "model.zip"


def test_parser_has_every_subcommand() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) >= {"train-teacher", "distill", "evaluate", "quickstart", "benchmark"}


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_distill_user_teacher_then_deploy_in_plain_gym_env(tmp_path: Path, env_id: str) -> None:
    teacher = _train_sb3(env_id, tmp_path / "teacher")
    out = tmp_path / "student"
    r = _run(str(ROOT / "scripts" / "distill.py"), "--env-id", env_id, "--teacher", str(teacher),
             "--out", str(out), "--steps", "1200", "--seed", "1", "--no-progress",
             "--set", "rounds=2", "--set", "n_envs=2", "--set", "eval_every=0",
             "--eval-episodes", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "student.safetensors").is_file()
    assert (out / "report.json").is_file() and (out / "tb").is_dir()
    policy = polydistill.load_student(out)
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        action = policy.predict(obs)
        assert env.action_space.contains(action if env_id == "CartPole-v1" else action.astype(np.float32))
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            obs, _ = env.reset()


def test_distill_bad_inputs_exit_cleanly(tmp_path: Path) -> None:
    teacher = _train_sb3("Pendulum-v1", tmp_path / "teacher")
    cases = [
        (["--env-id", "polydistill/NoSuchEnv-v0", "--teacher", str(teacher)], "NoSuchEnv"),
        (["--env-id", "Pendulum-v1", "--teacher", str(tmp_path / "missing.zip")], "not found"),
        (["--env-id", "CartPole-v1", "--teacher", str(teacher)], "observations have shape"),
        (["--env-id", "Pendulum-v1", "--teacher", str(teacher), "--loss", "nope"], "valid losses"),
        (["--env-id", "Pendulum-v1", "--teacher", str(teacher), "--set", "bogus=1"], "unknown key"),
        (["--env-id", "Pendulum-v1"], "go together"),
    ]
    for args, needle in cases:
        r = _run(str(ROOT / "scripts" / "distill.py"), *args, "--out", str(tmp_path / "s"),
                 "--no-progress", cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr[-1500:])
        assert needle in r.stderr, (args, r.stderr[-1500:])
        assert "Traceback" not in r.stderr, (args, r.stderr[-1500:])


def test_train_teacher_script_writes_model_stats_and_manifest(tmp_path: Path) -> None:
    import json

    out = tmp_path / "t"
    r = _run(str(ROOT / "scripts" / "train_teacher.py"), "--env-id", "polydistill/DoublePendulum-v0",
             "--steps", "2048", "--out", str(out), "--no-progress", "--set", "eval_freq=1024",
             "--set", "final_eval_episodes=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("model.zip", "vecnormalize.pkl", "manifest.json"):
        assert (out / name).is_file()
    m = json.loads((out / "manifest.json").read_text())
    assert m["env_id"] == "polydistill/DoublePendulum-v0" and m["n_timesteps"] == 2048
    assert np.isfinite(m["mean_return"]) and m["eval_episodes"] == 2
    assert "stable_baselines3" in m["versions"] and m["reproduce"].startswith("polydistill train-teacher")
    assert list((out / "tb").iterdir())


def test_train_teacher_of_a_family_body_trains_that_body(tmp_path: Path) -> None:
    import json

    from polydistill.envs.families import get_family

    r = _run(str(ROOT / "scripts" / "train_teacher.py"), "--suite", "swimmer-bodies", "--task",
             "swimmer-extrap-01", "--steps", "1024", "--out", str(tmp_path), "--no-progress", "--set",
             "eval_freq=0", "--set", "final_eval_episodes=1", "--set", "n_envs=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "swimmer-extrap-01" / "manifest.json").read_text())
    body = get_family("swimmer").split("extrap")[1]
    assert m["recipe"]["env_kwargs"] == {"body": body}
    assert m["observation_shape"] == [4 + 2 * (int(body["segments"]) - 1)]
    assert "--suite swimmer-bodies --task swimmer-extrap-01" in m["reproduce"]


def test_train_teacher_sac(tmp_path: Path) -> None:
    from polydistill.teachers.train import TeacherRecipe, train_teacher

    recipe = TeacherRecipe(algo="sac", n_envs=1, n_timesteps=300, normalize=False,
                           hyperparams={"learning_starts": 100, "batch_size": 32},
                           policy_kwargs={"net_arch": [32]}, eval_freq=0, final_eval_episodes=1)
    m = train_teacher("Pendulum-v1", tmp_path / "sac", recipe, progress_bar=False)
    assert m["algo"] == "sac" and np.isfinite(m["mean_return"])
    assert not (tmp_path / "sac" / "vecnormalize.pkl").exists()


def test_td3_teacher_takes_rl_zoo_action_noise(tmp_path: Path) -> None:
    """``noise_type`` / ``noise_std`` (rl-zoo3's keys) become SB3's action noise of the right size."""
    from stable_baselines3 import TD3
    from stable_baselines3.common.noise import NormalActionNoise

    from polydistill.teachers.train import TeacherRecipe, train_teacher

    recipe = TeacherRecipe(algo="td3", n_envs=1, n_timesteps=200, normalize=False,
                           hyperparams={"learning_starts": 100, "batch_size": 32, "noise_type": "normal",
                                        "noise_std": 0.3},
                           policy_kwargs={"net_arch": [32]}, eval_freq=0, final_eval_episodes=1)
    m = train_teacher("Pendulum-v1", tmp_path / "td3", recipe, progress_bar=False)
    assert m["algo"] == "td3" and m["recipe"]["hyperparams"]["noise_type"] == "normal"
    noise = TD3.load(tmp_path / "td3" / "model.zip", device="cpu").action_noise
    assert isinstance(noise, NormalActionNoise) and np.allclose(noise._sigma, [0.3])


@pytest.mark.parametrize("bad, match", [({"noise_type": "gauss"}, "noise_type"),
                                        ({"noise_type": "normal", "noise_std": -1}, "noise_std"),
                                        ({"noise_std": 0.1}, "needs a noise_type")])
def test_bad_action_noise_is_a_config_error(bad: dict[str, object], match: str) -> None:
    from stable_baselines3 import TD3

    from polydistill.errors import ConfigError
    from polydistill.teachers.train import _check_hyperparams

    with pytest.raises(ConfigError, match=match):
        _check_hyperparams(TD3, bad)


def test_on_policy_teacher_refuses_action_noise() -> None:
    from stable_baselines3 import PPO

    from polydistill.errors import ConfigError
    from polydistill.teachers.train import _check_hyperparams

    with pytest.raises(ConfigError, match="noise_type"):
        _check_hyperparams(PPO, {"noise_type": "normal"})


def test_train_teacher_rejects_typo_in_hyperparams(tmp_path: Path) -> None:
    r = _run(str(ROOT / "scripts" / "train_teacher.py"), "--env-id", "Pendulum-v1", "--steps", "64",
             "--out", str(tmp_path / "t"), "--set", "hyperparams={n_step: 64}", cwd=tmp_path)
    assert r.returncode == 2 and "n_step" in r.stderr and "valid" in r.stderr


@pytest.mark.parametrize("flags, match", [(["--resume"], "no checkpoint"),
                                           (["--checkpoint-every", "-5"], "checkpoint-every"),
                                           (["--resume", "--ray"], "not with --ray")])
def test_train_teacher_bad_resume_flags_exit_2(tmp_path: Path, flags: list[str], match: str) -> None:
    r = _run(str(ROOT / "scripts" / "train_teacher.py"), "--env-id", "Pendulum-v1", "--steps", "64",
             "--out", str(tmp_path / "t"), *flags, cwd=tmp_path)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and match in errors[0], r.stderr[-800:]


def test_evaluate_writes_report_and_video(tmp_path: Path) -> None:
    teacher = _train_sb3("polydistill/DoublePendulum-v0", tmp_path / "teacher")
    out = tmp_path / "student"
    r = _run(str(ROOT / "scripts" / "distill.py"), "--env-id", "polydistill/DoublePendulum-v0",
             "--teacher", str(teacher), "--out", str(out), "--steps", "800", "--no-progress",
             "--set", "rounds=1", "--set", "n_envs=2", "--set", "eval_every=0",
             "--eval-episodes", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run(str(ROOT / "scripts" / "evaluate.py"), "--student", str(out), "--env-id",
             "polydistill/DoublePendulum-v0", "--teacher", str(teacher), "--episodes", "2",
             "--out", str(tmp_path / "eval"), "--video", str(tmp_path / "eval" / "video"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| DoublePendulum-v0 |" in r.stdout
    for name in ("report.md", "report.json", "report.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    gif = tmp_path / "eval" / "video" / "DoublePendulum-v0.gif"
    assert gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a")


def test_evaluate_missing_student_is_a_clean_error(tmp_path: Path) -> None:
    r = _run(str(ROOT / "scripts" / "evaluate.py"), "--student", str(tmp_path / "nope"), cwd=tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_quickstart_runs_the_whole_pipeline_on_a_small_budget(tmp_path: Path) -> None:
    import json

    from polydistill.envs import DEFAULT_SUITE, get_suite

    r = _run(str(ROOT / "scripts" / "quickstart.py"), "--out", str(tmp_path / "qs"), "--steps", "6000",
             "--episodes", "1", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "qs" / "report.json").read_text())
    names = {t["name"] for t in report["tasks"]}
    assert names == {t.name for t in get_suite(DEFAULT_SUITE)}
    assert all(t["teacher_return"] is not None for t in report["tasks"])
    assert (tmp_path / "qs" / "report.png").stat().st_size > 0
    policy = polydistill.load_student(tmp_path / "qs" / "student")
    assert {"hopper", "halfcheetah", "swimmer", "pendulum"} <= set(policy.embodiments)
    assert policy.predict(np.zeros(13), embodiment="hopper").shape == (3,)  # 11 + size and weight
    assert policy.predict(np.zeros(18), embodiment="halfcheetah").shape == (6,)


def test_dotted_hyperparameter_override_merges_into_the_recipe() -> None:
    from polydistill.teachers.train import load_recipe

    base = load_recipe("polydistill/Hopper-v0")
    r = load_recipe("polydistill/Hopper-v0", overrides={"hyperparams.learning_rate": 1e-4})
    assert r.hyperparams["learning_rate"] == 1e-4
    assert {k: v for k, v in r.hyperparams.items() if k != "learning_rate"} == {
        k: v for k, v in base.hyperparams.items() if k != "learning_rate"}


def test_linear_schedule_hyperparameters_decay_to_zero() -> None:
    from polydistill.teachers.train import _hyperparams

    hp = _hyperparams({"learning_rate": "lin_3e-4", "clip_range": "lin_0.2", "n_steps": 64})
    assert hp["n_steps"] == 64
    lr = hp["learning_rate"]
    assert lr(1.0) == pytest.approx(3e-4) and lr(0.5) == pytest.approx(1.5e-4)
    assert hp["clip_range"](0.0) == 0.0


@pytest.mark.parametrize("bad", [{"learning_rate": "lin_x"}, {"learning_rate": "lin_-1"},
                                 {"gamma": "lin_0.99"}])
def test_bad_linear_schedule_is_a_config_error(bad: dict[str, str]) -> None:
    from polydistill.errors import ConfigError
    from polydistill.teachers.train import _hyperparams

    with pytest.raises(ConfigError, match="lin_"):
        _hyperparams(bad)
