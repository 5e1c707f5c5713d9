"""End-to-end: a real shipped SB3 teacher distilled into a student that matches it."""

from __future__ import annotations

import pytest

import polydistill.envs  # noqa: F401
from polydistill.buffer import BufferConfig
from polydistill.deploy.checkpoint import load_student
from polydistill.distill.distiller import DistillerConfig
from polydistill.evaluation import evaluate
from polydistill.setups.generalist import GeneralistConfig, GeneralistRun, TaskConfig, default_teachers_dir
from polydistill.students import StudentConfig
from polydistill.teachers import load_teacher

pytestmark = pytest.mark.physics  # rerun on mujoco 3.3.0 in the second CI environment

ENV = "polydistill/DoublePendulum-v0"


@pytest.mark.slow
def test_dagger_student_reaches_90_percent_of_shipped_teacher(tmp_path) -> None:
    teacher_dir = default_teachers_dir() / "pendulum"
    cfg = GeneralistConfig(
        tasks=(TaskConfig("pendulum", ENV, str(teacher_dir), "pendulum"),),
        total_steps=40_000, rounds=5, n_envs=4, updates_per_step=0.2, seed=0,
        student=StudentConfig(hidden=(128, 128)),
        distiller=DistillerConfig(batch_size=256, lr=1e-3),
        buffer=BufferConfig(capacity=40_000),
    )
    trainer = GeneralistRun(cfg, log_dir=tmp_path / "tb", progress_bar=False)
    trainer.learn()
    path = trainer.save(tmp_path / "student")
    trainer.close()
    student = load_student(path)
    s = evaluate(ENV, lambda o: student.predict(o), n_episodes=5, seed=123)
    t = evaluate(ENV, load_teacher(teacher_dir).act, n_episodes=5, seed=123)
    assert t.mean_return > 5000, "the shipped pendulum teacher should balance the poles"
    assert s.mean_return >= 0.9 * t.mean_return, (s.mean_return, t.mean_return)
    assert list((tmp_path / "tb").iterdir())
