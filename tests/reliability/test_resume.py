"""Crash and resume: a run killed with SIGKILL at random points ends bit-identical on CPU."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from polydistill.collect.replay import ReplayVectorEnv
from polydistill.distill.run_state import load_run_state, save_run_state
from polydistill.errors import CheckpointError, ConfigError
from polydistill.setups.generalist import GeneralistRun

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_trainer import _config, _digest, _teachers  # noqa: E402

TIMING = ("collect/steps_per_s", "collect/agent_steps_per_s", "distill/samples_per_s", "time/elapsed_s")


def _strip_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


# ------------------------------------------------------------------ in-process
def test_resume_round_by_round_equals_uninterrupted_run(tmp_path: Path) -> None:
    cfg = _config(rounds=5, total_steps=4000)
    ref = GeneralistRun(cfg, teachers=_teachers(), progress_bar=False)
    ref.learn()
    ref.close()
    for expected_round in range(5):  # a new process-like trainer every round
        t = GeneralistRun(cfg, teachers=_teachers(), progress_bar=False, run_dir=tmp_path)
        assert t.resume() == (expected_round > 0)
        assert t.round == expected_round
        t.learn(max_rounds=1)
        t.close()
    assert _digest(t.student) == _digest(ref.student)
    assert _strip_timing(t.history) == _strip_timing(ref.history)
    assert t.collector.total_steps == ref.collector.total_steps == 4000
    for k, arr in t.buffer.data.items():
        assert np.array_equal(arr, ref.buffer.data[k]), k


def test_resume_refuses_a_run_state_of_another_config(tmp_path: Path) -> None:
    t = GeneralistRun(_config(), teachers=_teachers(), progress_bar=False, run_dir=tmp_path)
    t.learn(max_rounds=1)
    t.close()
    other = GeneralistRun(_config(seed=3), teachers=_teachers(), progress_bar=False, run_dir=tmp_path)
    with pytest.raises(CheckpointError, match="another config.*seed"):
        other.resume()
    other.close()


def test_resume_without_run_dir_is_a_config_error() -> None:
    t = GeneralistRun(_config(), teachers=_teachers(), progress_bar=False)
    with pytest.raises(ConfigError, match="run_dir"):
        t.resume()
    t.close()


def test_damaged_commit_is_refused(tmp_path: Path) -> None:
    folder = save_run_state(tmp_path, 3, {"w": torch.arange(10.0), "n": 1})
    assert load_run_state(tmp_path)[0] == 3
    data = bytearray((folder / "state.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "state.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_run_state(tmp_path)
    with pytest.raises(CheckpointError, match="no committed run state"):
        load_run_state(tmp_path / "nothing-here")


def test_run_state_round_trips_nested_structures(tmp_path: Path) -> None:
    state = {"t": torch.ones(2, 3), "a": np.arange(4, dtype=np.int64), "b": np.zeros(3, bool),
             "opt": {0: {"step": torch.tensor(3.0)}, 1: {}}, "tup": (1, "x", None, 2**70),
             "rows": [{"x": 1.5}], "scalar": np.float32(0.25)}
    save_run_state(tmp_path, 1, state)
    _, back = load_run_state(tmp_path)
    assert torch.equal(back["t"], state["t"]) and np.array_equal(back["a"], state["a"])
    assert back["b"].dtype == bool and list(back["opt"]) == [0, 1]
    assert back["tup"] == (1, "x", None, 2**70) and back["rows"] == [{"x": 1.5}]
    assert back["scalar"] == 0.25


class _Drifting(gym.Wrapper):
    """An env whose dynamics depend on a hidden counter that seeded resets do not reset."""

    calls = 0

    def step(self, action):  # noqa: ANN001, ANN201
        obs, r, te, tr, info = self.env.step(action)
        _Drifting.calls += 1
        return obs + _Drifting.calls, r, te, tr, info


def test_replay_detects_an_env_that_is_not_deterministic() -> None:
    make = [lambda: gym.make("Pendulum-v1")] * 2
    venv = ReplayVectorEnv(make, seed=0)
    venv.reset()
    for _ in range(7):
        venv.step(np.zeros((2, 1), np.float32))
    twin = ReplayVectorEnv(make, seed=0)
    twin.load_state_dict(venv.state_dict())
    assert np.array_equal(twin.obs, venv.obs)
    bad = ReplayVectorEnv([lambda: _Drifting(gym.make("Pendulum-v1"))] * 2, seed=0)
    bad.reset()
    for _ in range(3):
        bad.step(np.zeros((2, 1), np.float32))
    again = ReplayVectorEnv([lambda: _Drifting(gym.make("Pendulum-v1"))] * 2, seed=0)
    with pytest.raises(CheckpointError, match="not deterministic"):
        again.load_state_dict(bad.state_dict())


# ------------------------------------------------------------------ real processes, SIGKILL
ROOT = Path(__file__).resolve().parents[2]
RUN_ARGS = ["--steps", "14000", "--set", "rounds=14", "--set", "n_envs=4", "--seed", "5",
            "--no-progress", "--eval-episodes", "0"]


def _launch(args: list[str], pause_in_commit: float = 0.0) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MUJOCO_GL": "egl", "PYTHONWARNINGS": "ignore"}
    if pause_in_commit:
        env["POLYDISTILL_TEST_PAUSE_IN_COMMIT_S"] = str(pause_in_commit)
    return subprocess.Popen([sys.executable, "-m", "polydistill", "distill", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _committed_round(run: Path) -> int:
    try:
        return int(json.loads((run / "checkpoints" / "latest.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


def _latest_dir(run: Path) -> Path:
    ckpt = run / "checkpoints"
    return ckpt / json.loads((ckpt / "latest.json").read_text())["dir"]


def _wait(pred, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> bool:  # noqa: ANN001
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("the run made no progress in time")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stderr.close()


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path: Path) -> None:
    ref, run = tmp_path / "uninterrupted", tmp_path / "killed"
    r = subprocess.run([sys.executable, "-m", "polydistill", "distill", "--out", str(ref), *RUN_ARGS],
                       env={**os.environ, "MUJOCO_GL": "egl", "PYTHONWARNINGS": "ignore"},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]

    rng = random.Random()
    log: list[str] = []
    kills = 0
    first = True
    while kills < 6:
        args = ["--out", str(run), *RUN_ARGS] if first else ["--resume", str(run), "--no-progress",
                                                              "--eval-episodes", "0"]
        first = False
        before = _committed_round(run)
        if kills == 3:  # this kill lands inside a commit: state written, pointer not yet moved
            proc = _launch(args, pause_in_commit=30.0)
            ckpt = run / "checkpoints"
            assert _wait(lambda c=ckpt: any((p / "state.safetensors").exists()
                                            for p in c.glob(".round-*.tmp-*")), proc), "finished early"
            _kill(proc)
            assert _committed_round(run) == before, "a half-written commit became the latest"
            assert list(ckpt.glob(".round-*.tmp-*")), "the half-written commit should be left over"
            log.append(f"kill {kills}: mid-commit after round {before}")
        else:
            proc = _launch(args)
            # wait for one new commit (progress), then kill at a random moment of the next round
            assert _wait(lambda b=before: _committed_round(run) > b, proc), "the run finished too early"
            delay = rng.uniform(0.0, 0.8)
            time.sleep(delay)
            assert proc.poll() is None, f"the run finished before kill {kills}: {log}"
            _kill(proc)
            log.append(f"kill {kills}: {delay:.2f}s after commit {before + 1}")
        kills += 1
    final = _launch(["--resume", str(run), "--no-progress", "--eval-episodes", "0"])
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, (log, err.decode()[-2000:])
    assert not list((run / "checkpoints").glob(".round-*.tmp-*")), "leftovers were not cleaned"

    a = load_file(str(ref / "student.safetensors"))
    b = load_file(str(run / "student.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, log)
    # the whole committed state (buffer rows, cursors, optimizer, RNGs) matches too
    sa, sb = (load_file(str(_latest_dir(r) / "state.safetensors")) for r in (ref, run))
    assert _committed_round(ref) == _committed_round(run) == 14
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), (k, log)
    ha = json.loads((ref / "history.json").read_text())
    hb = json.loads((run / "history.json").read_text())
    assert _strip_timing(ha) == _strip_timing(hb)
    assert [row["env_steps"] for row in hb][-1] == 14000


# ------------------------------------------------------------------ vision runs
def _resume_every_round_equals_uninterrupted(make, tmp_path: Path, rounds: int) -> None:  # noqa: ANN001
    """A new trainer per round, each resuming the last commit, ends where one run ends."""
    ref = make(None)
    ref.learn()
    ref.close()
    for expected in range(rounds):
        t = make(tmp_path)
        assert t.resume() == (expected > 0) and t.round == expected
        t.learn(max_rounds=1)
        t.close()
    assert _digest(t.student) == _digest(ref.student)
    assert t.total_steps == ref.total_steps
    assert _strip_timing(t.history) == _strip_timing(ref.history)
    for k, arr in t.buffer.data.items():
        assert np.array_equal(arr, ref.buffer.data[k]), k


@pytest.mark.parametrize("recurrent", [False, True])
def test_vision_run_resumes_round_by_round_bit_identical(tmp_path: Path, recurrent: bool) -> None:
    """Pixels, DrQ shifts, DAgger mixing and (recurrent) open sequences all survive a resume."""
    from test_vision import SMALL, _scripted_teacher

    from polydistill.setups.vision import VisionDistillConfig, VisionRun
    from polydistill.students.vision import VisionConfig

    vision = VisionConfig(channels=(8, 8, 8), feature_dim=16, recurrent_size=16 if recurrent else 0)
    cfg = VisionDistillConfig(total_steps=600, rounds=3, seq_len=8, burn_in=2, updates_per_step=0.05,
                              **{**SMALL, "vision": vision})
    _resume_every_round_equals_uninterrupted(
        lambda run_dir: VisionRun(cfg, teacher=_scripted_teacher(), progress_bar=False, run_dir=run_dir),
        tmp_path, 3)


# ------------------------------------------------------------------ CAML runs
@pytest.mark.parametrize("env", ["rendezvous_v0", "intersection_v0"])
def test_caml_run_resumes_round_by_round_bit_identical(tmp_path: Path, env: str) -> None:
    """PettingZoo env copies are rebuilt by seeded reset + joint-action replay."""
    from polydistill.setups.caml import CamlConfig, CamlRun
    from polydistill.students.team import TeamConfig

    mods = ("proprio", "beacon_ring", "neighbor_ring") if env == "rendezvous_v0" else ("state", "camera")
    cfg = CamlConfig(env=env, n_envs=2, total_steps=900, rounds=3, updates_per_step=0.05,
                     team=TeamConfig(mods, message_dim=4))
    _resume_every_round_equals_uninterrupted(
        lambda run_dir: CamlRun(cfg, progress_bar=False, run_dir=run_dir), tmp_path, 3)


def test_resume_refuses_other_run_flags_but_allows_a_new_worker_count(tmp_path: Path) -> None:
    import argparse

    from polydistill.cli.main import _resume_config, build_parser
    from polydistill.errors import PolydistillError

    (tmp_path / "run.json").write_text(json.dumps({"setup": "generalist", "student": ".",
                                                   "config": {"total_steps": 1000}}))

    def parse(*extra: str) -> argparse.Namespace:
        return build_parser().parse_args(["distill", "--resume", str(tmp_path), *extra])

    for flags in (["--seed", "0"], ["--steps", "0"], ["--out", "elsewhere"], ["--set", "seed=3"], ["--bc"]):
        with pytest.raises(PolydistillError, match="keeps the run's config"):
            _resume_config(parse(*flags))
    setup, cfg, student = _resume_config(parse("--set", "workers=2"))
    assert setup.name == "generalist" and cfg.workers == 2 and cfg.total_steps == 1000
    assert student == str(tmp_path / ".")
