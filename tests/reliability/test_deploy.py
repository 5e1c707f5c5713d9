"""The deployment API: DeployedStudent.predict validates its input and returns real actions
only, and loading/predicting needs neither gymnasium nor stable-baselines3."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import polydistill
from polydistill.deploy.checkpoint import DeployedStudent, load_student, save_student
from polydistill.students import GeneralistStudent, StudentConfig
from polydistill.students.embodiment import Embodiment, EmbodimentTable


def _table() -> EmbodimentTable:
    return EmbodimentTable([
        Embodiment("a", 11, "continuous", 3, (-1.0,) * 3, (1.0,) * 3),
        Embodiment("b", 4, "continuous", 1, (-2.0,), (2.0,)),
    ])


def _student(table: EmbodimentTable, seed: int = 0, head_std: float = 3.0) -> GeneralistStudent:
    torch.manual_seed(seed)
    student = GeneralistStudent(table, StudentConfig(hidden=(32, 32)))
    student.update_normalizer(np.random.default_rng(seed).normal(size=(100, table.embodiments[0].obs_dim)), 0)
    with torch.no_grad():  # large outputs, so the bounds are actually hit
        student.head.weight.normal_(0, head_std)
        student.head.bias.normal_(0, head_std)
    return student


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("deploy")
    save_student(d, _student(_table()))
    return d


@pytest.fixture(scope="module")
def policy(ckpt_dir: Path) -> DeployedStudent:
    return load_student(ckpt_dir)


def _bad(policy: DeployedStudent, obs: object, embodiment: str | None = "a", *fragments: str) -> str:
    with pytest.raises(polydistill.ObservationError) as info:
        policy.predict(obs, embodiment=embodiment)
    assert isinstance(info.value, polydistill.PolydistillError)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("shape", [(10,), (12,), (4,), (1, 10), (5, 12), (5, 4)])
def test_wrong_shape(policy: DeployedStudent, shape: tuple[int, ...]) -> None:
    _bad(policy, np.zeros(shape), "a", "'a'", "11", str(shape))


def test_wrong_shape_other_embodiment(policy: DeployedStudent) -> None:
    # an observation that fits embodiment a is refused for embodiment b (padding is internal)
    _bad(policy, np.zeros(11), "b", "'b'", "(4,)", "(11,)")


@pytest.mark.parametrize("shape", [(2, 3, 11), (1, 1, 11), (0, 0, 11)])
def test_wrong_rank(policy: DeployedStudent, shape: tuple[int, ...]) -> None:
    _bad(policy, np.zeros(shape), "a", str(shape))


def test_scalar(policy: DeployedStudent) -> None:
    _bad(policy, 1.0, "a")
    _bad(policy, np.float32(1.0), "a")


@pytest.mark.parametrize("obs", [
    np.array(["x"] * 11),
    ["0.0"] * 11,
    np.zeros(11, dtype=object),
    np.array([None] * 11),
    [{"x": 1}] * 11,
    np.array([b"1"] * 11),
])
def test_non_numeric_dtype(policy: DeployedStudent, obs: object) -> None:
    _bad(policy, obs, "a", "dtype")


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_dtype(policy: DeployedStudent, dtype: type) -> None:
    _bad(policy, np.ones(11, dtype=dtype), "a", "dtype")
    _bad(policy, np.ones((3, 11), dtype=dtype), "a", "dtype")


def test_ragged_list(policy: DeployedStudent) -> None:
    _bad(policy, [[0.0] * 11, [0.0] * 10], "a")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite(policy: DeployedStudent, value: float) -> None:
    obs = np.zeros((3, 11))
    obs[2, 7] = value
    msg = _bad(policy, obs, "a", "non-finite")
    assert "[2, 7]" in msg
    single = np.zeros(11, dtype=np.float32)
    single[0] = value
    _bad(policy, single, "a", "non-finite")


def test_empty_batch(policy: DeployedStudent) -> None:
    _bad(policy, np.zeros((0, 11)), "a", "empty")
    _bad(policy, np.zeros((0, 4)), "b", "empty")


@pytest.mark.parametrize("name", ["c", "A", "", "a ", 0])
def test_unknown_embodiment(policy: DeployedStudent, name: object) -> None:
    msg = _bad(policy, np.zeros(11), name)
    assert repr(name) in msg
    assert "'a'" in msg and "'b'" in msg  # lists what the student knows


def test_missing_embodiment_with_several(policy: DeployedStudent) -> None:
    _bad(policy, np.zeros(11), None, "embodiment")
    with pytest.raises(polydistill.ObservationError):
        policy.predict(np.zeros(11))


def test_embodiment_optional_with_one(tmp_path: Path) -> None:
    table = EmbodimentTable([Embodiment("only", 5, "continuous", 2, (-1.0, -1.0), (1.0, 1.0))])
    save_student(tmp_path, _student(table))
    deployed = load_student(tmp_path)
    np.testing.assert_array_equal(deployed.predict(np.ones(5)), deployed.predict(np.ones(5), "only"))
    assert deployed.predict(np.ones((3, 5))).shape == (3, 2)


def test_input_is_not_modified(policy: DeployedStudent) -> None:
    obs = np.random.default_rng(0).normal(size=(6, 11))
    copy = obs.copy()
    policy.predict(obs, "a")
    np.testing.assert_array_equal(obs, copy)


# ----------------------------------------------------------------------------- outputs
@pytest.mark.parametrize(("name", "obs_dim", "act_dim"), [("a", 11, 3), ("b", 4, 1)])
def test_output_shapes(policy: DeployedStudent, name: str, obs_dim: int, act_dim: int) -> None:
    rng = np.random.default_rng(0)
    single = policy.predict(rng.normal(size=obs_dim), name)
    assert isinstance(single, np.ndarray)
    assert single.shape == (act_dim,)
    for n in (1, 2, 33):
        batch = policy.predict(rng.normal(size=(n, obs_dim)), name)
        assert batch.shape == (n, act_dim)
        assert np.issubdtype(batch.dtype, np.floating)
    # a list works like an array
    assert policy.predict(list(rng.normal(size=obs_dim)), name).shape == (act_dim,)


@pytest.mark.parametrize(("name", "obs_dim", "bound"), [("a", 11, 1.0), ("b", 4, 2.0)])
def test_actions_within_bounds(policy: DeployedStudent, name: str, obs_dim: int, bound: float) -> None:
    obs = np.random.default_rng(1).normal(size=(256, obs_dim)) * 5
    for det in (True, False):
        act = policy.predict(obs, name, deterministic=det)
        assert np.all(act >= -bound) and np.all(act <= bound)
        assert np.all(np.isfinite(act))
    det_act = policy.predict(obs, name)
    # the big head really saturates: bounds are hit on both sides
    assert np.isclose(det_act.max(), bound) and np.isclose(det_act.min(), -bound)


def test_predict_deterministic_is_repeatable(policy: DeployedStudent) -> None:
    obs = np.random.default_rng(2).normal(size=(5, 11))
    np.testing.assert_array_equal(policy.predict(obs, "a"), policy.predict(obs, "a"))


def test_padded_action_dims_never_appear(tmp_path: Path) -> None:
    table = EmbodimentTable([
        Embodiment("wide", 8, "continuous", 6, (-1.0,) * 6, (1.0,) * 6),
        Embodiment("thin", 3, "continuous", 1, (-0.5,), (0.5,)),
        Embodiment("mid", 5, "continuous", 2, (0.0, -3.0), (1.0, 3.0)),
    ])
    save_student(tmp_path, _student(table))
    deployed = load_student(tmp_path)
    rng = np.random.default_rng(0)
    thin = deployed.predict(rng.normal(size=3), "thin")
    assert thin.shape == (1,)
    thin_b = deployed.predict(rng.normal(size=(64, 3)) * 4, "thin")
    assert thin_b.shape == (64, 1)
    assert np.all(np.abs(thin_b) <= 0.5)
    mid = deployed.predict(rng.normal(size=(64, 5)) * 4, "mid")
    assert mid.shape == (64, 2)
    assert np.all((mid[:, 0] >= 0.0) & (mid[:, 0] <= 1.0))
    assert np.all(np.abs(mid[:, 1]) <= 3.0)
    assert deployed.predict(rng.normal(size=8), "wide").shape == (6,)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.float16, np.float32, np.float64])
def test_numeric_dtypes_accepted(policy: DeployedStudent, dtype: type) -> None:
    ints = np.arange(22).reshape(2, 11) % 5
    got = policy.predict(ints.astype(dtype), "a")
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, policy.predict(ints.astype(np.float64), "a"), rtol=0, atol=1e-6)
    assert policy.predict([1, 2, 3, 4], "b").shape == (1,)  # a plain int list


def test_discrete_student_returns_ids(tmp_path: Path) -> None:
    table = EmbodimentTable([Embodiment("cart", 4, "discrete", 2), Embodiment("grid", 6, "discrete", 5)])
    save_student(tmp_path, _student(table))
    deployed = load_student(tmp_path)
    rng = np.random.default_rng(0)
    ids = deployed.predict(rng.normal(size=(200, 4)) * 3, "cart")
    assert ids.shape == (200,)
    assert np.issubdtype(ids.dtype, np.integer)
    assert set(np.unique(ids)) <= {0, 1}  # never a padded action id
    one = deployed.predict(rng.normal(size=6), "grid")
    assert one.shape == () and 0 <= int(one) < 5


# ----------------------------------------------------------------------------- no gymnasium / SB3
_BLOCKED_RUN = textwrap.dedent("""
    import json
    import sys

    class _Blocker:
        BLOCKED = ("gymnasium", "stable_baselines3")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"blocked import of {name} (deployment must not need it)")
            return None

    sys.meta_path.insert(0, _Blocker())
    for mod in list(sys.modules):
        if mod.split(".")[0] in _Blocker.BLOCKED:
            del sys.modules[mod]

    import numpy as np

    from polydistill import CheckpointError, ObservationError, PolydistillError
    from polydistill.deploy.checkpoint import load_student

    policy = load_student(sys.argv[1])
    a = policy.predict(np.ones(11), embodiment="a")
    b = policy.predict(np.ones((5, 4)), embodiment="b")
    assert a.shape == (3,) and b.shape == (5, 1), (a.shape, b.shape)
    try:
        policy.predict(np.ones(3), embodiment="a")
    except ObservationError as exc:
        assert isinstance(exc, PolydistillError)
    else:
        raise SystemExit("no ObservationError")
    try:
        load_student(sys.argv[1] + "/missing.safetensors")
    except CheckpointError:
        pass
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in _Blocker.BLOCKED)
    assert not leaked, leaked
    print("OK " + json.dumps({"a": a.tolist(), "b": b.tolist()}))
""")


def test_load_and_predict_without_gymnasium_and_sb3(ckpt_dir: Path, policy: DeployedStudent) -> None:
    proc = subprocess.run([sys.executable, "-c", _BLOCKED_RUN, str(ckpt_dir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("OK ")
    got = json.loads(line[3:])
    np.testing.assert_allclose(got["a"], policy.predict(np.ones(11), "a"), atol=1e-6)
    np.testing.assert_allclose(got["b"], policy.predict(np.ones((5, 4)), "b"), atol=1e-6)


def test_blocker_really_blocks() -> None:
    code = _BLOCKED_RUN.split("import numpy as np")[0] + "import gymnasium\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "blocked import of gymnasium" in proc.stderr


def test_load_student_importable_from_package_as_documented(ckpt_dir: Path) -> None:
    # polydistill/checkpoint.py documents `from polydistill import load_student`
    assert polydistill.load_student is load_student
    assert isinstance(polydistill.load_student(ckpt_dir), polydistill.DeployedStudent)
