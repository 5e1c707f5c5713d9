"""load_student(path, env=...) refuses an env whose spaces differ from the checkpoint's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gymnasium import spaces

from polydistill.deploy.checkpoint import load_student, save_student
from polydistill.errors import PolydistillError, SpaceMismatchError
from polydistill.students import GeneralistStudent, StudentConfig
from polydistill.students.embodiment import Embodiment, EmbodimentTable
from polydistill.students.team import TeamConfig, TeamStudent
from polydistill.students.vision import VisionConfig, VisionStudent


def _env(obs: spaces.Space, act: spaces.Space) -> SimpleNamespace:
    return SimpleNamespace(observation_space=obs, action_space=act, spec=None)


@pytest.fixture(scope="module")
def generalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    table = EmbodimentTable([Embodiment("a", 11, "continuous", 3, (-1.0,) * 3, (1.0,) * 3),
                             Embodiment("b", 4, "continuous", 1, (-2.0,), (2.0,))])
    student = GeneralistStudent(table, StudentConfig(hidden=(8,)))
    return save_student(tmp_path_factory.mktemp("g") / "s", student)


def test_matching_env_loads(generalist: Path) -> None:
    env = _env(spaces.Box(-np.inf, np.inf, (11,)), spaces.Box(-1, 1, (3,)))
    assert load_student(generalist, env=env, embodiment="a").embodiments == ["a", "b"]


@pytest.mark.parametrize(("obs", "act", "embodiment", "needle"), [
    (spaces.Box(-1, 1, (12,)), spaces.Box(-1, 1, (3,)), "a", "observation shape of 'a'"),
    (spaces.Box(-1, 1, (11,)), spaces.Box(-1, 1, (2,)), "a", "action shape of 'a'"),
    (spaces.Box(-1, 1, (11,)), spaces.Box(-2, 2, (3,)), "a", "action bounds of 'a'"),
    (spaces.Box(-1, 1, (11,)), spaces.Box(-1, 1, (3,)), "b", "observation shape of 'b'"),
    (spaces.Box(-1, 1, (11,)), spaces.Discrete(3), "a", "action shape of 'a'"),
])
def test_mismatched_env_is_refused(generalist: Path, obs: spaces.Space, act: spaces.Space, embodiment: str,
                                   needle: str) -> None:
    with pytest.raises(SpaceMismatchError, match=needle):
        load_student(generalist, env=_env(obs, act), embodiment=embodiment)


def test_vision_student_checks_groups_and_image_size(tmp_path: Path) -> None:
    s = VisionStudent(4, -np.ones(2), np.ones(2), (3, 32, 32), StudentConfig(hidden=(8,)),
                      VisionConfig(channels=(4, 4, 4), feature_dim=8))
    path = save_student(tmp_path / "v", s)
    good = spaces.Dict({"proprio": spaces.Box(-np.inf, np.inf, (4,)), "privileged": spaces.Box(-1, 1, (2,)),
                        "pixels": spaces.Box(0, 255, (3, 32, 32), np.uint8)})
    load_student(path, env=_env(good, spaces.Box(-1, 1, (2,))))
    big = spaces.Dict({**good.spaces, "pixels": spaces.Box(0, 255, (3, 64, 64), np.uint8)})
    with pytest.raises(SpaceMismatchError, match="pixels shape"):
        load_student(path, env=_env(big, spaces.Box(-1, 1, (2,))))
    blind = spaces.Dict({"proprio": good["proprio"]})
    with pytest.raises(SpaceMismatchError, match="observation groups"):
        load_student(path, env=_env(blind, spaces.Box(-1, 1, (2,))))


def test_team_student_checks_the_parallel_env(tmp_path: Path) -> None:
    from polydistill.envs import make_parallel

    torch.manual_seed(0)
    s = TeamStudent(262, -np.ones(1), np.ones(1), StudentConfig(hidden=(8,)), TeamConfig(("state", "camera")),
                    (6, 256))
    path = save_student(tmp_path / "t", s)
    load_student(path, env=make_parallel("intersection_v0", n_agents=2))
    with pytest.raises(SpaceMismatchError, match="deployable modalities"):
        load_student(path, env=make_parallel("rendezvous_v0"))
    with pytest.raises(SpaceMismatchError, match="modality sizes"):
        load_student(path, env=make_parallel("intersection_v0", camera_size=8))
    assert issubclass(SpaceMismatchError, PolydistillError)


@pytest.mark.skipif(os.environ.get("POLYDISTILL_RELIABILITY_UNDER_O") == "1", reason="already under -O")
def test_every_reliability_check_holds_under_python_O() -> None:
    """The same malformed inputs raise the same typed errors with asserts stripped (``python -O``)."""
    here = Path(__file__).resolve()
    r = subprocess.run(
        [sys.executable, "-O", "-m", "pytest", str(here.parent), "-q", "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=600, cwd=here.parents[2],
        env={**os.environ, "POLYDISTILL_RELIABILITY_UNDER_O": "1"})
    assert r.returncode == 0, r.stdout[-3000:]
    passed = int(r.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 30, r.stdout[-500:]
