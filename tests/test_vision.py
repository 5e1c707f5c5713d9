"""Privileged teacher -> vision student: behaviour of the vision trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import polydistill.envs  # noqa: F401
from polydistill.buffer import BufferConfig
from polydistill.errors import ConfigError, SpaceMismatchError
from polydistill.setups.generalist import default_teachers_dir
from polydistill.setups.vision import VisionDistillConfig, VisionRun
from polydistill.students import StudentConfig
from polydistill.students.vision import VisionConfig, VisionStudent, random_shift
from polydistill.teachers import CallableTeacher

TEACHER = default_teachers_dir() / "point-goal-vision"
SMALL = dict(env_kwargs={"size": 32}, n_envs=4, vision=VisionConfig(channels=(16, 32, 32), feature_dim=32),
             student=StudentConfig(hidden=(64, 64)))


def _scripted_teacher() -> CallableTeacher:
    """Privileged PD controller toward the goal: obs = [x, y, vx, vy, gx, gy]."""
    import gymnasium as gym

    def act(o: np.ndarray) -> np.ndarray:
        return np.clip(5 * (o[:, 4:6] - o[:, 0:2]) - 0.5 * o[:, 2:4], -1, 1)

    return CallableTeacher(act, gym.spaces.Box(-np.inf, np.inf, (6,)), gym.spaces.Box(-1, 1, (2,)))


def test_student_never_sees_privileged_group(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: set[str] = set()
    original = VisionStudent.features

    def spy(self, obs, emb):  # noqa: ANN001, ANN202
        seen.update(obs)
        return original(self, obs, emb)

    monkeypatch.setattr(VisionStudent, "features", spy)
    cfg = VisionDistillConfig(total_steps=400, rounds=2, **SMALL)
    trainer = VisionRun(cfg, teacher=_scripted_teacher(), progress_bar=False)
    trainer.learn()
    trainer.evaluate_policy(episodes=1)
    trainer.close()
    assert seen == {"proprio", "pixels"}
    assert "privileged" not in trainer.buffer.fields


def test_student_groups_with_privileged_key_are_refused() -> None:
    cfg = VisionDistillConfig(student_groups=("proprio", "privileged"), **SMALL)
    with pytest.raises(ConfigError, match="privileged"):
        VisionRun(cfg, teacher=_scripted_teacher(), progress_bar=False)


def test_teacher_of_wrong_size_is_refused() -> None:
    import gymnasium as gym

    bad = CallableTeacher(lambda o: np.zeros((len(o), 2)), gym.spaces.Box(-1, 1, (4,)),
                          gym.spaces.Box(-1, 1, (2,)))
    with pytest.raises(SpaceMismatchError, match=r"\(6,\)"):
        VisionRun(VisionDistillConfig(**SMALL), teacher=bad, progress_bar=False)


def test_pixels_are_uint8_and_disk_buffer_stays_bounded(tmp_path) -> None:
    cfg = VisionDistillConfig(total_steps=1200, rounds=3, updates_per_step=0.0,
                              buffer=BufferConfig(capacity=300, storage="disk", path=str(tmp_path)),
                              **SMALL)
    trainer = VisionRun(cfg, teacher=_scripted_teacher(), progress_bar=False)
    nbytes = trainer.buffer.nbytes
    trainer.learn()
    trainer.close()
    assert trainer.total_steps == 1200 and len(trainer.buffer) == 300
    assert trainer.buffer.nbytes == nbytes
    pixels = trainer.buffer.data["pixels"]
    assert isinstance(pixels, np.memmap) and pixels.dtype == np.uint8 and pixels.shape[1:] == (3, 32, 32)
    assert (tmp_path / "pixels.npy").is_file()


def test_random_shift_keeps_shape_and_content_range() -> None:
    x = torch.rand(5, 3, 32, 32)
    y = random_shift(x, 4, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(random_shift(x, 0), x)
    assert not torch.allclose(y, x)


@pytest.mark.slow
def test_short_vision_distillation_improves_on_untrained_start() -> None:
    cfg = VisionDistillConfig(teacher=str(TEACHER), total_steps=8000, rounds=4, updates_per_step=0.15,
                              seed=0, **SMALL)
    trainer = VisionRun(cfg, progress_bar=False)
    before = trainer.evaluate_policy(episodes=6).mean_return
    teacher = trainer.evaluate_teacher(episodes=6).mean_return
    trainer.learn()
    after = trainer.evaluate_policy(episodes=6).mean_return
    trainer.close()
    assert teacher > before + 10, (teacher, before)
    assert after > before + 0.4 * (teacher - before), (before, after, teacher)


def test_vision_student_checkpoint_round_trip_and_input_checks(tmp_path) -> None:
    from polydistill.deploy.checkpoint import load_student, save_student
    from polydistill.errors import ObservationError

    cfg = VisionDistillConfig(total_steps=200, rounds=1, **SMALL)
    trainer = VisionRun(cfg, teacher=_scripted_teacher(), progress_bar=False)
    trainer.learn()
    trainer.close()
    path = save_student(tmp_path / "vision", trainer.student)
    policy = load_student(path)
    rng = np.random.default_rng(0)
    obs = {"proprio": rng.normal(size=(5, 4)), "pixels": rng.integers(0, 255, (5, 3, 32, 32), dtype=np.uint8)}
    x = {"proprio": torch.as_tensor(obs["proprio"], dtype=torch.float32),
         "pixels": torch.as_tensor(obs["pixels"])}
    trainer.student.eval()
    with torch.no_grad():
        expected = trainer.student.act(x, torch.zeros(5, dtype=torch.long)).numpy()
    np.testing.assert_allclose(policy.predict(obs), expected, atol=1e-6)
    assert policy.predict({k: v[0] for k, v in obs.items()}).shape == (2,)
    for bad, needle in [
        ({**obs, "privileged": np.zeros((5, 2))}, "exactly"),
        ({"proprio": obs["proprio"]}, "exactly"),
        ({**obs, "pixels": obs["pixels"].astype(np.float32)}, "uint8"),
        ({**obs, "pixels": obs["pixels"][:, :, :16]}, "pixels"),
        ({**obs, "proprio": np.full((5, 4), np.nan)}, "non-finite"),
        (obs["proprio"], "dict"),
    ]:
        with pytest.raises(ObservationError, match=needle):
            policy.predict(bad)


def test_distill_cli_selects_the_vision_setup_from_the_recipe(tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import polydistill

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "distill.py"), "--recipe",
         str(root / "agents" / "vision_point_goal.yaml"), "--steps", "400", "--set", "rounds=1",
         "--set", "env_kwargs={size: 32}", "--set", "n_envs=4", "--out", str(tmp_path / "s"),
         "--no-progress", "--eval-episodes", "1"],
        env={**os.environ, "MUJOCO_GL": "egl"}, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| PointGoalVision-v0 |" in r.stdout
    row = json.loads((tmp_path / "s" / "report.json").read_text())["tasks"][0]
    assert row["episodes"] == 1 and row["student_std"] == 0.0 and row["teacher_std"] == 0.0
    policy = polydistill.load_student(tmp_path / "s")
    assert policy.metadata["setup"] == "vision" and policy.metadata["student_groups"] == ["proprio", "pixels"]
    action = policy.predict({"proprio": np.zeros(4), "pixels": np.zeros((3, 32, 32), np.uint8)})
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)
    # --resume finds the vision run's config in run.json and its last commit (here: the end)
    before = (tmp_path / "s" / "student.safetensors").read_bytes()
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "distill.py"), "--resume", str(tmp_path / "s"),
         "--no-progress", "--eval-episodes", "0"],
        env={**os.environ, "MUJOCO_GL": "egl"}, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    from safetensors.torch import load as st_load

    a, b = st_load(before), st_load((tmp_path / "s" / "student.safetensors").read_bytes())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "evaluate.py"), "--student", str(tmp_path / "s"),
         "--episodes", "1", "--video", str(tmp_path / "video")],
        env={**os.environ, "MUJOCO_GL": "egl"}, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    gif = tmp_path / "video" / "PointGoalVision-v0.gif"
    assert gif.read_bytes()[:6] == b"GIF89a"


def test_recurrent_sequence_forward_matches_stepping_with_resets() -> None:
    """The GRU core unrolled over a stored sequence acts exactly as step-by-step deployment."""
    torch.manual_seed(0)
    student = VisionStudent(4, -np.ones(2), np.ones(2), (3, 32, 32), StudentConfig(hidden=(32,)),
                            VisionConfig(channels=(8, 8, 8), feature_dim=16, recurrent_size=16))
    student.eval()
    b, t = 3, 6
    obs = {"proprio": torch.randn(b, t, 4),
           "pixels": torch.randint(0, 256, (b, t, 3, 32, 32), dtype=torch.uint8),
           "first": torch.zeros(b, t, dtype=torch.bool)}
    obs["first"][:, 0] = True
    obs["first"][1, 3] = True  # an episode boundary inside the sequence
    emb = torch.zeros(b, t, dtype=torch.long)
    with torch.no_grad():
        seq = student.clip_action(student(obs, emb).mean, emb)
        state, steps = student.initial_state(b), []
        for i in range(t):
            one = {k: v[:, i] for k, v in obs.items()}
            a, state = student.step(one, emb[:, i], state, obs["first"][:, i])
            steps.append(a)
    torch.testing.assert_close(torch.stack(steps, 1), seq, atol=1e-6, rtol=0)
    # the reset really cuts the memory: row 1 after step 3 ignores what came before
    other = {k: v.clone() for k, v in obs.items()}
    other["pixels"][1, :3] = 0
    with torch.no_grad():
        seq2 = student.clip_action(student(other, emb).mean, emb)
    torch.testing.assert_close(seq2[1, 3:], seq[1, 3:], atol=1e-6, rtol=0)
    assert not torch.allclose(seq2[1, :3], seq[1, :3])
    with pytest.raises(ConfigError, match="step"):
        student.act({k: v[:, 0] for k, v in obs.items()}, emb[:, 0])


def test_recurrent_vision_trainer_stores_sequences_and_deploys_with_state(tmp_path) -> None:
    from polydistill.deploy.checkpoint import load_student, save_student
    from polydistill.errors import ObservationError

    cfg = VisionDistillConfig(total_steps=480, rounds=2, seq_len=8, burn_in=2, **{
        **SMALL, "vision": VisionConfig(channels=(8, 8, 8), feature_dim=16, recurrent_size=16)})
    trainer = VisionRun(cfg, teacher=_scripted_teacher(), progress_bar=False)
    trainer.learn()
    trainer.close()
    stride = cfg.seq_len - cfg.burn_in
    assert trainer.steps_per_row == stride
    assert trainer.total_steps >= 480 and trainer.total_steps % stride == 0
    rows = trainer.buffer.sample(4)
    assert rows["pixels"].shape == (4, 8, 3, 32, 32) and rows["first"].shape == (4, 8)
    # burn-in steps carry no loss unless an episode started at or before them
    started = np.logical_or.accumulate(rows["first"], axis=1)
    trained = rows["mask"].all(-1)
    assert np.array_equal(trained, started | (np.arange(8) >= 2)[None])
    assert np.isfinite(trainer.history[-1]["distill/loss"])
    assert trainer.evaluate_policy(episodes=2).returns  # runs with state and resets

    policy = load_student(save_student(tmp_path / "rec", trainer.student))
    assert policy.recurrent
    rng = np.random.default_rng(0)
    obs = [{"proprio": rng.normal(size=(2, 4)),
            "pixels": rng.integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)} for _ in range(3)]
    first = np.array([p := policy.predict(o) for o in obs])
    assert p.shape == (2, 2)
    policy.reset()
    np.testing.assert_array_equal(np.array([policy.predict(o) for o in obs]), first)  # same after reset
    policy.reset(np.array([True, False]))
    again = policy.predict(obs[0])
    np.testing.assert_array_equal(again[0], first[0][0])  # row 0 restarted, row 1 kept its memory
    with pytest.raises(ObservationError, match="reset"):
        policy.predict({k: v[:1] for k, v in obs[0].items()})
    with pytest.raises(ObservationError, match="bool mask"):
        policy.reset(np.array([1, 0]))


def test_recurrent_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="burn_in"):
        VisionDistillConfig(seq_len=4, burn_in=4)
    with pytest.raises(ConfigError, match="recurrent_size"):
        VisionConfig(recurrent_size=-1)
