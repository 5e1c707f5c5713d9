"""Behaviour unchanged by the run core: the same seeds give the same students, bit for bit.

``data/behaviour_golden.json`` holds, for every scenario below, the SHA-256 of the student's
weights and its evaluation figures as the code *before* the setup interface and the one DAgger
run core (commit fa8a3d6: three trainers, four collection loops) produced them. Each scenario
is run here with today's API and must give identical weights and identical figures. The
quickstart scenario was re-recorded twice, on purpose: when the suite's velocity tasks took the
velocity family's teacher, and when the default suite became ``locomotion-sizes``
(``quickstart_recorded_with`` says so).

Bit-identity holds on one machine; other float kernels (another CPU family, another torch,
numpy or MuJoCo) round differently, so the goldens apply only where a canary computation
(an MLP's AdamW steps and a MuJoCo rollout) and the library versions match the recording.

When the platform moves on (a new MuJoCo release made every golden skip), re-record on the new
one with ``POLYDISTILL_RECORD_GOLDEN="<commit and why>" pytest tests/test_behaviour_unchanged.py``
*before* changing behaviour: every scenario then writes its figures instead of checking them,
and the file gets this platform's canary and versions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from polydistill.config import override

GOLDEN_PATH = Path(__file__).parent / "data" / "behaviour_golden.json"
GOLDEN = json.loads(GOLDEN_PATH.read_text())
RECORD = os.environ.get("POLYDISTILL_RECORD_GOLDEN")


def weights_sha(student: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(student.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def canary() -> str:
    """Float arithmetic of this machine: AdamW steps of an MLP and a MuJoCo rollout, hashed."""
    import gymnasium as gym

    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(37, 256), torch.nn.ELU(), torch.nn.Linear(256, 256),
                              torch.nn.ELU(), torch.nn.Linear(256, 12))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
    x, y = torch.randn(512, 37, generator=g), torch.randn(512, 12, generator=g)
    for _ in range(5):
        loss = ((net(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    h = hashlib.sha256()
    for p in net.parameters():
        h.update(p.detach().numpy().tobytes())
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=0)
    for i in range(200):
        obs, *_ = env.step(np.full(3, 0.3 * np.sin(i / 7)))
    h.update(np.asarray(obs).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module", autouse=True)
def same_platform() -> Any:
    rec = GOLDEN["platform"]
    have = {d: md.version(d) for d in rec["versions"]}
    if RECORD:  # write this platform's goldens instead of checking them
        GOLDEN["platform"] = {"canary": canary(), "versions": have}
        GOLDEN["recorded_with"] = RECORD
        GOLDEN["how"] = "POLYDISTILL_RECORD_GOLDEN=... pytest tests/test_behaviour_unchanged.py"
        yield
        GOLDEN_PATH.write_text(json.dumps(GOLDEN, indent=1) + "\n")
        return
    if have != rec["versions"]:
        pytest.skip(f"goldens recorded with {rec['versions']}, this environment has {have}")
    if canary() != rec["canary"]:
        pytest.skip("this machine's float kernels round differently from the recording machine's")
    yield


def vision_canary() -> str:
    """What the vision scenarios add to :func:`canary`: a rendered frame and a conv net's steps.

    The MLP-and-physics canary does not see the offscreen renderer (Mesa/EGL) or the CPU's
    convolution kernels, and either one changes a vision student bit for bit.
    """
    import gymnasium as gym

    import polydistill.envs  # noqa: F401  (registers the ids)

    env = gym.make("polydistill/PointGoalVision-v0")
    obs, _ = env.reset(seed=0)
    env.close()
    h = hashlib.sha256(np.ascontiguousarray(obs["pixels"]).tobytes())
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ELU(),
                              torch.nn.Conv2d(16, 32, 3, stride=2), torch.nn.ELU(), torch.nn.Flatten(),
                              torch.nn.Linear(32 * 14 * 14, 8))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = torch.rand(16, 3, 64, 64, generator=g), torch.randn(16, 8, generator=g)
    for _ in range(3):
        loss = ((net(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for q in net.parameters():
        h.update(q.detach().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture
def same_vision_platform() -> Any:
    if RECORD:
        GOLDEN["platform"]["vision_canary"] = vision_canary()
        return
    want = GOLDEN["platform"].get("vision_canary")
    if want is None or vision_canary() != want:
        pytest.skip("this machine renders or convolves differently from the one that recorded the vision "
                    "goldens")


def _check(name: str, weights: str, figures: Any) -> None:
    if RECORD:
        GOLDEN["scenarios"][name] = {"weights": weights, "eval": json.loads(json.dumps(figures))}
        return
    want = GOLDEN["scenarios"][name]
    assert weights == want["weights"], f"{name}: the student's weights changed"
    assert json.loads(json.dumps(figures)) == want["eval"], f"{name}: the evaluation figures changed"


@pytest.mark.slow
def test_quickstart_student_and_report_are_unchanged(tmp_path: Path) -> None:
    from polydistill import load_student
    from polydistill.quickstart import run_quickstart

    report = run_quickstart(out=tmp_path, steps=6000, seed=0, episodes=1, progress_bar=False)
    figures = {t["name"]: [t["teacher_return"], t["student_return"]] for t in report["tasks"]}
    _check("quickstart", weights_sha(load_student(tmp_path / "student").student), figures)


def test_generalist_with_sampling_kl_and_reservoir_is_unchanged() -> None:
    from polydistill.setups.generalist import (
        GeneralistConfig,
        GeneralistRun,
        TaskConfig,
        default_teachers_dir,
    )

    root = default_teachers_dir()
    tasks = (TaskConfig("hopper", "polydistill/Hopper-v0", str(root / "hopper")),
             TaskConfig("pendulum", "polydistill/DoublePendulum-v0", str(root / "pendulum")))
    cfg = GeneralistConfig(tasks=tasks, total_steps=3000, rounds=3, n_envs=4, student_action="sample",
                           teacher_action="sample", seed=3)
    cfg = override(cfg, {"distiller.loss": "forward_kl", "buffer.strategy": "reservoir",
                         "buffer.capacity": 1000,
                         "beta": {"kind": "linear", "start": 0.8, "end": 0.2}})
    run = GeneralistRun(cfg, progress_bar=False)
    run.learn()
    run.close()
    _check("generalist_sample", weights_sha(run.student), run.evaluate(episodes=1))


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.usefixtures("same_vision_platform")
def test_short_vision_run_is_unchanged(recurrent: bool) -> None:
    from polydistill.bench.vision import vision_recipe
    from polydistill.evaluation.report import EvalOptions
    from polydistill.setups.vision import VisionRun

    sets: dict[str, Any] = {"total_steps": 1200, "rounds": 2, "n_envs": 4}
    if recurrent:
        sets.update({"vision.recurrent_size": 32, "seq_len": 8, "burn_in": 2})
    run = VisionRun(override(vision_recipe("point_goal"), sets), progress_bar=False)
    run.learn()
    run.close()
    row = VisionRun.evaluate_student(run.deployed(), EvalOptions(episodes=2))[0]
    _check("vision_recurrent" if recurrent else "vision", weights_sha(run.student),
           {"student": row.student_return, "teacher": row.teacher_return})


@pytest.mark.parametrize("env", ["intersection", "rendezvous"])
def test_short_caml_run_is_unchanged(env: str) -> None:
    from polydistill.bench.caml import caml_recipe
    from polydistill.setups.caml import CamlRun

    run = CamlRun(override(caml_recipe(env), {"total_steps": 3000, "rounds": 2, "n_envs": 4}),
                  progress_bar=False)
    run.learn()
    s, t = run.evaluate_policy(3), run.evaluate_teacher(3)
    run.close()
    _check(f"caml_{env}", weights_sha(run.student),
           {"student": [s.mean_return, s.accident_rate], "teacher": [t.mean_return, t.accident_rate]})
