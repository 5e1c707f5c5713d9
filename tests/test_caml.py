"""CAML: per-agent students distilled from the shared-knowledge teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydistill.distill.run import BetaSchedule
from polydistill.errors import ConfigError, ObservationError
from polydistill.setups.caml import CamlConfig, CamlRun
from polydistill.students import StudentConfig
from polydistill.students.team import TeamConfig, TeamStudent, flatten_modalities

simple_spread_v3 = pytest.importorskip("mpe2.simple_spread_v3")

RV = dict(env="rendezvous_v0", n_envs=4, student=StudentConfig(hidden=(128, 128)), updates_per_step=0.2)


def _team_student(message_dim: int) -> TeamStudent:
    torch.manual_seed(0)
    return TeamStudent(5, -np.ones(2), np.ones(2), StudentConfig(hidden=(32,)),
                       TeamConfig(("a",), message_dim))


@pytest.mark.parametrize("message_dim", [0, 8])
def test_alone_mode_uses_no_data_from_other_agents(message_dim: int) -> None:
    student = _team_student(message_dim)
    student.eval()
    x = torch.randn(1, 3, 5)
    present = torch.ones(1, 3, dtype=torch.bool)
    emb = torch.zeros(1, 3, dtype=torch.long)
    other = x.clone()
    other[0, 1:] = torch.randn(2, 5)  # change everyone but agent 0
    with torch.no_grad():
        a = student.act({"obs": x, "present": present}, emb)[0, 0]
        b = student.act({"obs": other, "present": present}, emb)[0, 0]
        alone = student.act({"obs": x[:, :1], "present": present[:, :1]}, emb[:, :1])[0, 0]
    if message_dim == 0:
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, alone)
    else:  # messages carry the others' (deployable) observations
        assert not torch.allclose(a, b)


def test_absent_agents_send_no_messages() -> None:
    student = _team_student(8)
    student.eval()
    x = torch.randn(1, 3, 5)
    emb = torch.zeros(1, 3, dtype=torch.long)
    two = torch.tensor([[True, True, False]])
    junk = x.clone()
    junk[0, 2] = 100.0
    with torch.no_grad():
        a = student.act({"obs": x, "present": two}, emb)[0, :2]
        b = student.act({"obs": junk, "present": two}, emb)[0, :2]
        pair = student.act({"obs": x[:, :2], "present": two[:, :2]}, emb[:, :2])[0]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, pair)


def test_flatten_refuses_training_only_or_missing_modalities() -> None:
    mods = ("proprio", "beacon_ring")
    ok = {"proprio": np.zeros(4), "beacon_ring": np.ones(16)}
    assert flatten_modalities(ok, mods, (4, 16)).shape == (20,)
    with pytest.raises(ObservationError, match="not deployable \\['gps'\\]"):
        flatten_modalities({**ok, "gps": np.zeros(3)}, mods)
    with pytest.raises(ObservationError, match="missing \\['beacon_ring'\\]"):
        flatten_modalities({"proprio": np.zeros(4)}, mods)
    with pytest.raises(ObservationError, match="expected 16 values"):
        flatten_modalities({**ok, "beacon_ring": np.ones(8)}, mods, (4, 16))


def test_unknown_modality_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no modality \\['radar'\\]"):
        CamlRun(CamlConfig(**RV, team=TeamConfig(("proprio", "radar"))), progress_bar=False)


def test_students_never_read_training_only_modalities(monkeypatch: pytest.MonkeyPatch) -> None:
    import polydistill.setups.caml as caml
    import polydistill.students.team as team

    seen: set[str] = set()
    original = team.flatten_modalities

    def spy(obs, modalities, sizes=None):  # noqa: ANN001, ANN202
        seen.update(obs)
        return original(obs, modalities, sizes)

    monkeypatch.setattr(caml, "flatten_modalities", spy)  # collection
    monkeypatch.setattr(team, "flatten_modalities", spy)  # deployment (evaluation)
    cfg = CamlConfig(**RV, team=TeamConfig(("proprio", "beacon_ring")), total_steps=300, rounds=1)
    trainer = CamlRun(cfg, progress_bar=False)
    trainer.learn()
    trainer.evaluate_policy(episodes=1)
    trainer.close()
    assert seen == {"proprio", "beacon_ring"}


def test_collection_survives_agents_leaving_mid_episode() -> None:
    cfg = CamlConfig(env="intersection_v0", n_envs=2, total_steps=3000, rounds=1,
                     student=StudentConfig(hidden=(32,)), beta=BetaSchedule("constant", 0.0))
    trainer = CamlRun(cfg, progress_bar=False)
    trainer.collector.collect([3000], 0.0, trainer.buffer)  # untrained students crash and leave; envs reset
    present = trainer.buffer.data["present"][: trainer.buffer.sizes[0]]
    trainer.close()
    assert trainer.total_steps >= 3000
    assert (present.sum(1) < 4).any() and (present.sum(1) == 4).any()


@pytest.mark.slow
def test_short_caml_run_beats_untrained_students_and_runs_with_other_team_sizes() -> None:
    cfg = CamlConfig(**RV, team=TeamConfig(("proprio", "beacon_ring", "neighbor_ring")), total_steps=12_000,
                     rounds=4, seed=0)
    trainer = CamlRun(cfg, progress_bar=False)
    before = trainer.evaluate_policy(episodes=6).mean_return
    teacher = trainer.evaluate_teacher(episodes=6).mean_return
    trainer.learn()
    after = trainer.evaluate_policy(episodes=6).mean_return
    assert after > before + 0.5 * (teacher - before), (before, after, teacher)
    for n in (2, 4):  # trained with 3 robots
        assert np.isfinite(trainer.evaluate_policy(episodes=2, n_agents=n).mean_return)
    trainer.close()


def test_parallel_vec_env_shares_one_sb3_policy_across_agents_that_leave() -> None:
    from stable_baselines3 import PPO

    from polydistill.envs import make_parallel
    from polydistill.wrappers.sb3 import ParallelVecEnv

    venv = ParallelVecEnv(lambda: make_parallel("intersection_v0"), 2, ("state", "camera"), seed=0)
    assert venv.num_envs == 8 and venv.observation_space.shape == (6 + 256,)
    obs = venv.reset()
    assert obs.shape == (8, 262)
    ended = np.zeros(8, int)
    for _ in range(400):
        obs, rew, dones, infos = venv.step(np.ones((8, 1), np.float32))  # full throttle: crashes
        ended += dones
        for i in np.flatnonzero(dones):
            assert infos[i]["terminal_observation"].shape == (262,)
    assert (ended >= 1).all()
    with pytest.raises(ConfigError, match="no modality"):
        ParallelVecEnv(lambda: make_parallel("intersection_v0"), 1, ("radar",))
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0)
    model.learn(256)  # SB3 trains through agents leaving and copies resetting
    venv.close()


def test_team_student_checkpoint_round_trip_and_input_checks(tmp_path) -> None:
    from polydistill.deploy.checkpoint import load_student, save_student

    cfg = CamlConfig(**{**RV, "team": TeamConfig(("proprio", "beacon_ring"), message_dim=4)},
                     total_steps=300, rounds=1)
    trainer = CamlRun(cfg, progress_bar=False)
    trainer.learn()
    policy = load_student(save_student(tmp_path / "team", trainer.student))
    from polydistill.envs import make_parallel
    from polydistill.setups.caml import team_policy

    env = make_parallel("rendezvous_v0")
    obs, _ = env.reset(seed=3)
    deployable = {a: {m: o[m] for m in ("proprio", "beacon_ring")} for a, o in obs.items()}
    got = policy.predict(deployable)
    want = team_policy(trainer.deployed())(env, obs)  # the in-memory student, all modalities offered
    trainer.close()
    assert set(got) == set(obs)
    for a in got:
        np.testing.assert_allclose(got[a], want[a], atol=1e-6)
    one = next(iter(deployable))
    for bad, needle in [
        ({one: {**deployable[one], "gps": np.zeros(3)}}, "not deployable \\['gps'\\]"),
        ({one: {"proprio": np.zeros(4)}}, "missing \\['beacon_ring'\\]"),
        ({one: {**deployable[one], "proprio": np.full(4, np.nan)}}, "non-finite"),
        ({}, "empty dict"),
        (np.zeros(20), "team student takes"),
    ]:
        with pytest.raises(ObservationError, match=needle):
            policy.predict(bad)


def test_distill_cli_selects_the_caml_setup_from_the_recipe(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    import polydistill

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "distill.py"),
         "--recipe", str(root / "agents" / "caml_rendezvous.yaml"),
         "--steps", "600", "--set", "rounds=1", "--set", "n_envs=2", "--out", str(tmp_path / "s"),
         "--no-progress", "--eval-episodes", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| rendezvous_v0 |" in r.stdout
    policy = polydistill.load_student(tmp_path / "s")
    assert policy.metadata["setup"] == "caml" and policy.metadata["env"] == "rendezvous_v0"
    obs = {"robot_0": {"proprio": np.zeros(4), "beacon_ring": np.zeros(16), "neighbor_ring": np.zeros(16)}}
    assert policy.predict(obs)["robot_0"].shape == (2,)
    r = subprocess.run([sys.executable, str(root / "scripts" / "evaluate.py"), "--student",
                        str(tmp_path / "s"), "--episodes", "2", "--out", str(tmp_path / "eval")],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads((tmp_path / "eval" / "report.json").read_text())["tasks"][0]
    assert row["name"] == "rendezvous_v0" and row["teacher_return"] > row["student_return"]
    assert row["episodes"] == 2 and row["student_std"] >= 0 and row["teacher_std"] >= 0  # the page's CI
    assert {"accident_rate", "teacher_accident_rate"} <= set(row["extra"]) and "accident_rate" in r.stdout
    # --resume finds the caml run's config in run.json and its last commit (here: the end)
    before = (tmp_path / "s" / "student.safetensors").read_bytes()
    r = subprocess.run([sys.executable, str(root / "scripts" / "distill.py"), "--resume", str(tmp_path / "s"),
                        "--no-progress", "--eval-episodes", "0"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    from safetensors.torch import load as st_load

    a, b = st_load(before), st_load((tmp_path / "s" / "student.safetensors").read_bytes())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_any_parallel_env_plugs_in_with_a_modality_spec_and_a_teacher() -> None:
    """mpe2's simple_spread, grouped into modalities, with a hand-written teacher: no code changes."""
    from polydistill.wrappers.pettingzoo import ModalityGroups

    spec = {"self": (0, 4), "landmarks": (4, 10), "others": (10, 14)}

    def make():  # noqa: ANN202
        env = simple_spread_v3.parallel_env(N=3, continuous_actions=True, max_cycles=25)
        return ModalityGroups(env, spec)

    def nearest_landmark(env, obs):  # noqa: ANN001, ANN202
        out = {}
        for a, o in obs.items():
            rel = o["landmarks"].reshape(3, 2)
            dx, dy = rel[np.argmin((rel ** 2).sum(1))]
            out[a] = np.clip(np.array([0.0, -dx, dx, -dy, dy]) * 2.0, 0.0, 1.0).astype(np.float32)
        return out

    cfg = CamlConfig(env="mpe2-simple-spread", team=TeamConfig(("self", "landmarks")), total_steps=6000,
                     rounds=3, n_envs=4, updates_per_step=0.2, student=StudentConfig(hidden=(64, 64)))
    trainer = CamlRun(cfg, progress_bar=False, make_env=make, teacher=nearest_landmark)
    before = trainer.evaluate_policy(episodes=10).mean_return
    teacher = trainer.evaluate_teacher(episodes=10).mean_return
    trainer.learn()
    after = trainer.evaluate_policy(episodes=10).mean_return
    with pytest.raises(ConfigError, match="custom make_env"):
        trainer.evaluate_policy(episodes=1, n_agents=4)
    assert set(trainer.evaluate(episodes=1)) == {"eval/return/mpe2-simple-spread",
                                                 "eval/accident_rate/mpe2-simple-spread"}  # on the custom env
    from polydistill.evaluation.report import EvalOptions

    with pytest.raises(ConfigError, match="custom env"):  # its checkpoint cannot rebuild the env
        CamlRun.evaluate_student(trainer.deployed(), EvalOptions(episodes=1))
    trainer.close()
    assert teacher > before + 1.0, (before, teacher)
    assert after > before + 0.5 * (teacher - before), (before, after, teacher)
