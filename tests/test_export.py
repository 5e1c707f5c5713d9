"""ONNX and TorchScript exports reproduce DeployedStudent.predict (normalizer and clipping built in)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydistill.deploy.checkpoint import load_student, save_student
from polydistill.errors import ConfigError
from polydistill.students import GeneralistStudent, StudentConfig
from polydistill.students.embodiment import Embodiment, EmbodimentTable
from polydistill.students.team import TeamConfig, TeamStudent
from polydistill.students.vision import VisionConfig, VisionStudent

ort = pytest.importorskip("onnxruntime")
FORMATS = ["onnx", "torchscript"]
RNG = np.random.default_rng(0)


def _loud(student: torch.nn.Module) -> None:
    """Give the tiny-initialised head clearly non-zero actions (so clipping is exercised)."""
    with torch.no_grad():
        student.head.weight.normal_(0, 0.5)


def _generalist(kind: str) -> GeneralistStudent:
    torch.manual_seed(0)
    if kind == "continuous":
        table = EmbodimentTable([Embodiment("a", 11, "continuous", 3, (-1.0,) * 3, (1.0,) * 3),
                                 Embodiment("b", 4, "continuous", 1, (-2.0,), (0.5,))])
    else:
        table = EmbodimentTable([Embodiment("a", 6, "discrete", 4), Embodiment("b", 3, "discrete", 2)])
    s = GeneralistStudent(table, StudentConfig(hidden=(32, 32)))
    for i, e in enumerate(table.embodiments):
        s.update_normalizer(RNG.normal(size=(64, e.obs_dim)) * 3 + i, i)
    _loud(s)
    return s


def _run(path, fmt: str, inputs: list[np.ndarray]) -> list[np.ndarray]:  # noqa: ANN001
    if fmt == "onnx":
        sess = ort.InferenceSession(str(path))
        names = [i.name for i in sess.get_inputs()]
        return sess.run(None, dict(zip(names, inputs, strict=True)))
    module = torch.jit.load(str(path))
    out = module(*[torch.from_numpy(x) for x in inputs])
    return [o.numpy() for o in out] if isinstance(out, tuple) else [out.numpy()]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_generalist_export_matches_predict(tmp_path, fmt: str, kind: str) -> None:
    policy = load_student(save_student(tmp_path / "s", _generalist(kind)))
    for name in ("a", "b"):
        dim = policy.table.embodiments[policy.table.id(name)].obs_dim
        obs = (RNG.normal(size=(7, dim)) * 4).astype(np.float32)  # some actions hit the bounds
        path = policy.export(tmp_path / f"{name}.{fmt}", fmt, embodiment=name)
        got = _run(path, fmt, [obs])[0]
        want = policy.predict(obs, embodiment=name)
        assert got.shape == want.shape
        if kind == "discrete":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="embodiment=NAME"):
        policy.export(tmp_path / "x.onnx", fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("pixels", [True, False])
def test_vision_export_matches_predict(tmp_path, fmt: str, pixels: bool) -> None:
    torch.manual_seed(0)
    s = VisionStudent(4, -np.ones(2), np.ones(2), (3, 32, 32) if pixels else None,
                      StudentConfig(hidden=(32,)), VisionConfig(channels=(8, 8, 8), feature_dim=16))
    s.update_normalizer(RNG.normal(size=(64, 4)), 0)
    _loud(s)
    policy = load_student(save_student(tmp_path / "v", s))
    obs = {"proprio": RNG.normal(size=(5, 4)).astype(np.float32)}
    if pixels:
        obs["pixels"] = RNG.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    before = policy.predict(obs)
    path = policy.export(tmp_path / f"v.{fmt}", fmt)
    assert not policy.student.training  # exporting leaves the student as it was: deterministic
    got = _run(path, fmt, [obs["proprio"]] + ([obs["pixels"]] if pixels else []))[0]
    np.testing.assert_array_equal(policy.predict(obs), before)
    np.testing.assert_allclose(got, before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_recurrent_vision_export_carries_state_like_predict(tmp_path, fmt: str) -> None:
    torch.manual_seed(0)
    s = VisionStudent(4, -np.ones(2), np.ones(2), (3, 32, 32), StudentConfig(hidden=(32,)),
                      VisionConfig(channels=(8, 8, 8), feature_dim=16, recurrent_size=16))
    _loud(s)
    policy = load_student(save_student(tmp_path / "r", s))
    path = policy.export(tmp_path / f"r.{fmt}", fmt)
    state = np.zeros((3, 16), np.float32)
    first = np.ones(3, bool)
    policy.reset()
    for _ in range(4):
        obs = {"proprio": RNG.normal(size=(3, 4)).astype(np.float32),
               "pixels": RNG.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)}
        action, state = _run(path, fmt, [obs["proprio"], obs["pixels"], state, first])
        first = np.zeros(3, bool)
        np.testing.assert_allclose(action, policy.predict(obs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("message_dim", [0, 8])
def test_team_export_matches_predict_for_any_team_size(tmp_path, fmt: str, message_dim: int) -> None:
    torch.manual_seed(0)
    s = TeamStudent(5, -np.ones(2), np.ones(2), StudentConfig(hidden=(32,)),
                    TeamConfig(("a", "b"), message_dim), (2, 3))
    s.update_normalizer(RNG.normal(size=(64, 5)), 0)
    _loud(s)
    policy = load_student(save_student(tmp_path / "t", s))
    path = policy.export(tmp_path / f"t.{fmt}", fmt)
    for n in (2, 4):  # exported with a team of 3
        obs = {f"agent_{i}": {"a": RNG.normal(size=2), "b": RNG.normal(size=3)} for i in range(n)}
        x = np.stack([np.r_[o["a"], o["b"]] for o in obs.values()]).astype(np.float32)[None]
        got = _run(path, fmt, [x, np.ones((1, n), bool)])[0][0]
        want = policy.predict(obs)
        np.testing.assert_allclose(got, np.stack([want[a] for a in obs]), atol=1e-5, rtol=0)


def test_unknown_export_format_is_a_config_error(tmp_path) -> None:
    policy = load_student(save_student(tmp_path / "s", _generalist("continuous")))
    with pytest.raises(ConfigError, match="'onnx' or 'torchscript'"):
        policy.export(tmp_path / "x", "tflite", embodiment="a")
