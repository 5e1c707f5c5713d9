"""Frozen teachers: torch modules, callables and SB3 zips (with VecNormalize) give the action
distribution the underlying policy really has; bad teachers and mismatched spaces are refused."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import polydistill
from polydistill.teachers import (
    ActionTarget,
    CallableTeacher,
    ObsNormalizer,
    SB3Teacher,
    Teacher,
    TorchTeacher,
    check_teacher_fits,
    load_teacher,
)

pytestmark = pytest.mark.physics  # rerun on mujoco 3.3.0 in the second CI environment

OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACT = gym.spaces.Box(np.array([-1.0, -2.0, 0.0], np.float32), np.array([1.0, 0.5, 3.0], np.float32))


def _obs(n: int = 64, d: int = 5, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, d)) * 3).astype(np.float32)


class _GaussModule(torch.nn.Module):
    """Linear Gaussian policy returning ``(mean, log_std)``; the mean overshoots the bounds."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(5, 3)
        self.log_std = torch.nn.Parameter(torch.tensor([-1.0, 0.0, 0.5]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 4 * self.lin(x), self.log_std


class _NormalModule(_GaussModule):
    def forward(self, x: torch.Tensor) -> torch.distributions.Normal:  # type: ignore[override]
        mean, log_std = super().forward(x)
        return torch.distributions.Normal(mean, log_std.exp().expand_as(mean))


class _PlainModule(_GaussModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[0]


def _reference_mean(module: _GaussModule, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return (4 * module.lin(torch.as_tensor(obs, dtype=torch.float32))).numpy().astype(np.float64)


def _assert_clipped_copy(target: ActionTarget, mean: np.ndarray, space: gym.spaces.Box) -> None:
    assert target.action.shape == mean.shape
    np.testing.assert_allclose(target.action, np.clip(mean, space.low, space.high), rtol=0, atol=1e-6)
    assert np.all(target.action >= space.low) and np.all(target.action <= space.high)
    # the test data really exercises the clipping, on both sides of every dimension
    assert np.all((mean < space.low).any(0)) and np.all((mean > space.high).any(0))


# ----------------------------------------------------------------------------- TorchTeacher
def test_torch_teacher_mean_log_std() -> None:
    module = _GaussModule()
    teacher = TorchTeacher(module, OBS, ACT)
    obs = _obs()
    target = teacher.action_dist(obs)
    assert target.kind == "gaussian"
    mean = _reference_mean(module, obs)
    np.testing.assert_allclose(target.mean, mean, rtol=1e-6, atol=1e-6)  # unclipped
    _assert_clipped_copy(target, mean, ACT)
    assert target.log_std.shape == mean.shape  # broadcast from (A,)
    np.testing.assert_allclose(target.log_std, np.broadcast_to([-1.0, 0.0, 0.5], mean.shape), atol=1e-7)
    assert target.logits is None
    np.testing.assert_array_equal(teacher.act(obs), target.action)


def test_torch_teacher_normal_distribution() -> None:
    module = _NormalModule()
    teacher = TorchTeacher(module, OBS, ACT)
    obs = _obs(seed=1)
    target = teacher.action_dist(obs)
    assert target.kind == "gaussian"
    mean = _reference_mean(module, obs)
    np.testing.assert_allclose(target.mean, mean, rtol=1e-6, atol=1e-6)
    _assert_clipped_copy(target, mean, ACT)
    np.testing.assert_allclose(target.log_std, np.broadcast_to([-1.0, 0.0, 0.5], mean.shape), atol=1e-6)


def test_torch_teacher_plain_actions() -> None:
    module = _PlainModule()
    teacher = TorchTeacher(module, OBS, ACT)
    obs = _obs(seed=2)
    target = teacher.action_dist(obs)
    assert target.kind == "deterministic"
    mean = _reference_mean(module, obs)
    np.testing.assert_allclose(target.mean, mean, rtol=1e-6, atol=1e-6)
    _assert_clipped_copy(target, mean, ACT)
    assert target.log_std is None and target.logits is None


def test_torch_teacher_is_frozen() -> None:
    module = _GaussModule().train()
    teacher = TorchTeacher(module, OBS, ACT)
    assert not module.training
    assert all(not p.requires_grad for p in module.parameters())
    before = [p.clone() for p in module.parameters()]
    teacher.action_dist(_obs())
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_torch_teacher_applies_its_normalizer() -> None:
    seen: list[np.ndarray] = []

    class Spy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.numpy().copy())
            return torch.zeros(x.shape[0], 3)

    norm = ObsNormalizer(mean=np.arange(5.0), var=np.full(5, 4.0), clip=2.0)
    obs = _obs(seed=3)
    TorchTeacher(Spy(), OBS, ACT, normalizer=norm).action_dist(obs)
    expected = np.clip((obs - np.arange(5.0)) / np.sqrt(4.0 + 1e-8), -2.0, 2.0)
    np.testing.assert_allclose(seen[0], expected, rtol=1e-6, atol=1e-6)
    assert seen[0].dtype == np.float32


def test_torch_teacher_discrete_outputs() -> None:
    space = gym.spaces.Discrete(4)
    obs = _obs(seed=4)

    class Logits(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :4] * torch.tensor([1.0, -1.0, 2.0, 0.5])

    target = TorchTeacher(Logits(), OBS, space).action_dist(obs)
    logits = obs[:, :4] * np.array([1.0, -1.0, 2.0, 0.5], np.float32)
    assert target.kind == "categorical"
    np.testing.assert_allclose(target.logits, logits, rtol=1e-6)
    np.testing.assert_array_equal(target.action, logits.argmax(-1))

    class Cat(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.distributions.Categorical:
            return torch.distributions.Categorical(logits=Logits()(x))

    cat = TorchTeacher(Cat(), OBS, space).action_dist(obs)
    assert cat.kind == "categorical"
    np.testing.assert_array_equal(cat.action, logits.argmax(-1))
    # Categorical normalizes logits; softmax (the distribution) is what must agree
    np.testing.assert_allclose(torch.softmax(torch.as_tensor(cat.logits), -1).numpy(),
                               torch.softmax(torch.as_tensor(logits), -1).numpy(), rtol=1e-5, atol=1e-6)

    class Ids(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, 0] > 0).long() * 3

    ids = TorchTeacher(Ids(), OBS, space).action_dist(obs)
    assert ids.kind == "deterministic"
    np.testing.assert_array_equal(ids.action, (obs[:, 0] > 0) * 3)


@pytest.mark.parametrize("shape", [(5,), (4, 4), (4, 6), (2, 3, 5), (0,)])
def test_teacher_refuses_wrong_observation_shape(shape: tuple[int, ...]) -> None:
    teacher = TorchTeacher(_GaussModule(), OBS, ACT)
    with pytest.raises(polydistill.SpaceMismatchError, match=r"\(N, 5\)"):
        teacher.action_dist(np.zeros(shape, np.float32))


# ----------------------------------------------------------------------------- CallableTeacher
def test_callable_teacher_numpy_function() -> None:
    calls: list[np.ndarray] = []

    def fn(obs: np.ndarray) -> np.ndarray:
        calls.append(obs)
        return obs[:, :3] * 2.0

    teacher = CallableTeacher(fn, OBS, ACT)
    obs = _obs(seed=5)
    target = teacher.action_dist(obs)
    np.testing.assert_array_equal(calls[0], obs)  # raw observations, no normalization
    assert target.kind == "deterministic"
    mean = obs[:, :3].astype(np.float64) * 2.0
    np.testing.assert_allclose(target.mean, mean, rtol=1e-6)
    _assert_clipped_copy(target, mean, ACT)
    assert target.action.dtype == np.float32


def test_callable_teacher_gaussian_tuple() -> None:
    teacher = CallableTeacher(lambda o: (o[:, :3] * 2.0, np.full(3, -0.7)), OBS, ACT)
    obs = _obs(seed=6)
    target = teacher.action_dist(obs)
    assert target.kind == "gaussian"
    mean = obs[:, :3].astype(np.float64) * 2.0
    np.testing.assert_allclose(target.mean, mean, rtol=1e-6)
    _assert_clipped_copy(target, mean, ACT)
    np.testing.assert_allclose(target.log_std, np.full(mean.shape, -0.7))


def test_callable_teacher_discrete_ids() -> None:
    teacher = CallableTeacher(lambda o: (o[:, 0] > 0).astype(np.int64), OBS, gym.spaces.Discrete(2))
    obs = _obs(seed=7)
    target = teacher.action_dist(obs)
    assert target.kind == "deterministic"
    np.testing.assert_array_equal(target.action, obs[:, 0] > 0)


# ----------------------------------------------------------------------------- check_teacher_fits
def _callable(obs_space: gym.spaces.Box, act_space: gym.spaces.Space) -> CallableTeacher:
    return CallableTeacher(lambda o: np.zeros(len(o)), obs_space, act_space)


def test_check_teacher_fits_accepts_matching_spaces() -> None:
    check_teacher_fits(_callable(OBS, ACT), OBS, ACT)
    d = gym.spaces.Discrete(3)
    check_teacher_fits(_callable(OBS, d), OBS, d)
    # bounds may differ; only shapes must agree
    check_teacher_fits(_callable(OBS, ACT), gym.spaces.Box(-1, 1, (5,)), gym.spaces.Box(-1, 1, (3,)))


@pytest.mark.parametrize(("teacher_spaces", "env_spaces", "fragments"), [
    ((OBS, ACT), (gym.spaces.Box(-1, 1, (6,)), ACT), ["observations", "(6,)", "(5,)"]),
    ((OBS, ACT), (gym.spaces.Box(-1, 1, (5, 1)), ACT), ["observations", "(5, 1)"]),
    ((OBS, ACT), (OBS, gym.spaces.Box(-1, 1, (2,))), ["actions", "(2,)", "(3,)"]),
    ((OBS, ACT), (OBS, gym.spaces.Discrete(3)), ["Discrete", "Box"]),
    ((OBS, gym.spaces.Discrete(3)), (OBS, ACT), ["Discrete", "Box"]),
    ((OBS, gym.spaces.Discrete(3)), (OBS, gym.spaces.Discrete(4)), ["4", "3"]),
])
def test_check_teacher_fits_mismatch(teacher_spaces: tuple, env_spaces: tuple, fragments: list[str]) -> None:
    teacher = _callable(*teacher_spaces)
    with pytest.raises(polydistill.SpaceMismatchError) as info:
        check_teacher_fits(teacher, *env_spaces, name="task 'hop'")
    msg = str(info.value)
    assert "task 'hop'" in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    assert isinstance(info.value, polydistill.PolydistillError)


def test_check_teacher_fits_refuses_non_box_observations() -> None:
    with pytest.raises(polydistill.ConfigError):
        check_teacher_fits(_callable(OBS, ACT), gym.spaces.Discrete(5), ACT)


# ----------------------------------------------------------------------------- load_teacher errors
def _teacher_error(spec: object, *fragments: str) -> None:
    with pytest.raises(polydistill.TeacherError) as info:
        load_teacher(spec)  # type: ignore[arg-type]
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, (frag, msg)
    assert isinstance(info.value, polydistill.PolydistillError)


def test_load_teacher_missing(tmp_path: Path) -> None:
    _teacher_error(tmp_path / "nope.zip", "not found", "nope.zip")
    _teacher_error(tmp_path / "nope", "nope")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    _teacher_error(empty, "model.zip")


def test_load_teacher_not_a_zip(tmp_path: Path) -> None:
    f = tmp_path / "model.pkl"
    f.write_bytes(b"not a zip")
    _teacher_error(f, ".zip", "model.pkl")


def test_load_teacher_random_bytes_zip(tmp_path: Path) -> None:
    f = tmp_path / "model.zip"
    f.write_bytes(np.random.default_rng(0).bytes(2048))
    _teacher_error(f, "model.zip")
    _teacher_error(tmp_path, "model.zip")  # the folder form reaches the same file


def test_load_teacher_zip_without_sb3_data(tmp_path: Path) -> None:
    f = tmp_path / "model.zip"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("hello.txt", "hi")
    _teacher_error(f, "stable-baselines3")
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("data", "{not json")
    _teacher_error(f, "stable-baselines3")


def test_load_teacher_passes_teacher_through() -> None:
    teacher = _callable(OBS, ACT)
    assert load_teacher(teacher) is teacher


# ----------------------------------------------------------------------------- SB3 round trips
def _vec_pendulum(seed: int = 0):
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    venv.seed(seed)
    return VecNormalize(venv)


def _pendulum_obs(n: int = 48) -> np.ndarray:
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    rows = [obs]
    rng = np.random.default_rng(0)
    for _ in range(n - 3):
        obs, *_ = env.step(rng.uniform(-2, 2, size=(1,)).astype(np.float32))
        rows.append(obs)
    rows += [np.array([1.0, 0.0, 300.0], np.float32), np.array([-1.0, 0.0, -300.0], np.float32)]  # clipped
    env.close()
    return np.stack(rows).astype(np.float32)


def _normalize(venv, obs: np.ndarray) -> np.ndarray:
    rms = venv.obs_rms
    return np.clip((obs - rms.mean) / np.sqrt(rms.var + venv.epsilon), -venv.clip_obs, venv.clip_obs)


@pytest.fixture(scope="module")
def ppo_pendulum(tmp_path_factory: pytest.TempPathFactory):
    from stable_baselines3 import PPO

    venv = _vec_pendulum()
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=32, n_epochs=1, seed=0,
                policy_kwargs={"net_arch": [16, 16]}, device="cpu")
    model.learn(128)
    folder = tmp_path_factory.mktemp("ppo_pendulum")
    model.save(folder / "model.zip")
    venv.save(str(folder / "vecnormalize.pkl"))
    return model, venv, folder


@pytest.fixture(scope="module")
def sac_pendulum(tmp_path_factory: pytest.TempPathFactory):
    from stable_baselines3 import SAC

    venv = _vec_pendulum(1)
    model = SAC("MlpPolicy", venv, learning_starts=0, seed=0, policy_kwargs={"net_arch": [16, 16]},
                device="cpu")
    model.learn(64)
    folder = tmp_path_factory.mktemp("sac_pendulum")
    model.save(folder / "model.zip")
    venv.save(str(folder / "vecnormalize.pkl"))
    return model, venv, folder


def test_sb3_ppo_teacher_matches_policy(ppo_pendulum) -> None:
    model, venv, folder = ppo_pendulum
    teacher = SB3Teacher.load(folder / "model.zip")
    assert teacher.normalizer is not None, "vecnormalize.pkl beside the zip was not picked up"
    np.testing.assert_array_equal(teacher.normalizer.mean, venv.obs_rms.mean)
    np.testing.assert_array_equal(teacher.normalizer.var, venv.obs_rms.var)
    assert not np.allclose(venv.obs_rms.var, 1.0)  # the statistics are non-trivial
    obs = _pendulum_obs()
    target = teacher.action_dist(obs)
    assert target.kind == "gaussian"
    with torch.no_grad():
        dist = model.policy.get_distribution(torch.as_tensor(_normalize(venv, obs), dtype=torch.float32))
        want_mean = dist.distribution.mean.numpy()
        want_log_std = dist.distribution.stddev.log().numpy()
    assert target.mean.shape == (len(obs), 1)
    np.testing.assert_allclose(target.mean, want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(target.log_std, want_log_std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(target.action, np.clip(want_mean, -2.0, 2.0), rtol=1e-5, atol=1e-6)
    # without the normalizer the answer would differ: the statistics matter
    with torch.no_grad():
        raw = model.policy.get_distribution(torch.as_tensor(obs)).distribution.mean.numpy()
    assert not np.allclose(raw, want_mean, atol=1e-6)


def test_sb3_teacher_is_frozen(ppo_pendulum, sac_pendulum) -> None:
    for _, _, folder in (ppo_pendulum, sac_pendulum):
        teacher = SB3Teacher.load(folder / "model.zip")
        params = list(teacher.policy.parameters())
        assert params and all(not p.requires_grad for p in params)
        assert not teacher.policy.training
        assert isinstance(teacher, Teacher)


def test_sb3_teacher_explicit_and_absent_vecnormalize(ppo_pendulum, tmp_path: Path) -> None:
    model, venv, folder = ppo_pendulum
    lonely = tmp_path / "model.zip"
    lonely.write_bytes((folder / "model.zip").read_bytes())
    plain = SB3Teacher.load(lonely)
    assert plain.normalizer is None
    obs = _pendulum_obs(8)
    with torch.no_grad():
        raw_mean = model.policy.get_distribution(torch.as_tensor(obs)).distribution.mean.numpy()
    np.testing.assert_allclose(plain.action_dist(obs).mean, raw_mean, rtol=1e-5, atol=1e-6)
    named = SB3Teacher.load(lonely, vecnormalize=folder / "vecnormalize.pkl")
    np.testing.assert_allclose(named.action_dist(obs).mean,
                               SB3Teacher.load(folder / "model.zip").action_dist(obs).mean, rtol=0, atol=0)
    # load_teacher accepts the folder too
    via_folder = load_teacher(folder)
    assert isinstance(via_folder, SB3Teacher) and via_folder.normalizer is not None


def test_sb3_teacher_bad_vecnormalize(ppo_pendulum, tmp_path: Path) -> None:
    _, _, folder = ppo_pendulum
    (tmp_path / "model.zip").write_bytes((folder / "model.zip").read_bytes())
    (tmp_path / "vecnormalize.pkl").write_bytes(b"garbage")
    with pytest.raises(polydistill.TeacherError, match="VecNormalize"):
        SB3Teacher.load(tmp_path / "model.zip")


def test_sb3_sac_teacher_matches_predict(sac_pendulum) -> None:
    model, venv, folder = sac_pendulum
    teacher = load_teacher(folder / "model.zip")
    assert isinstance(teacher, SB3Teacher) and teacher.normalizer is not None
    obs = _pendulum_obs()
    target = teacher.action_dist(obs)
    assert target.kind == "gaussian"
    want, _ = model.predict(_normalize(venv, obs).astype(np.float32), deterministic=True)
    inside = np.all((want > -2.0) & (want < 2.0), axis=1)
    assert inside.sum() >= len(obs) // 2
    np.testing.assert_allclose(target.mean[inside], want[inside], rtol=0, atol=1e-5)
    np.testing.assert_allclose(target.action[inside], want[inside], rtol=0, atol=1e-5)
    assert np.all(np.abs(target.action) <= 2.0)
    assert target.log_std.shape == target.mean.shape and np.all(np.isfinite(target.log_std))


def test_sb3_discrete_ppo_teacher(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    env = gym.make("CartPole-v1")
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0,
                policy_kwargs={"net_arch": [16, 16]}, device="cpu")
    model.learn(64)
    model.save(tmp_path / "model.zip")
    teacher = load_teacher(tmp_path)
    assert isinstance(teacher, SB3Teacher) and teacher.normalizer is None
    check_teacher_fits(teacher, env.observation_space, env.action_space)
    obs = np.stack([env.observation_space.sample() for _ in range(32)]).astype(np.float32)
    target = teacher.action_dist(obs)
    assert target.kind == "categorical"
    assert target.logits.shape == (32, 2)
    np.testing.assert_array_equal(target.action, target.logits.argmax(-1))
    with torch.no_grad():
        want = model.policy.get_distribution(torch.as_tensor(obs)).distribution.logits.numpy()
    np.testing.assert_allclose(target.logits, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(target.action, model.predict(obs, deterministic=True)[0])
    with pytest.raises(polydistill.SpaceMismatchError):
        check_teacher_fits(teacher, env.observation_space, gym.spaces.Discrete(3))
    env.close()


@pytest.mark.parametrize("damage", ["drop", "garble"])
def test_load_teacher_damaged_sb3_zip(ppo_pendulum, tmp_path: Path, damage: str) -> None:
    _, _, folder = ppo_pendulum
    src = zipfile.ZipFile(folder / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip", "w") as z:
        for name in src.namelist():
            if name == "policy.pth":
                if damage == "drop":
                    continue
                z.writestr(name, b"garbage" * 10)
            else:
                z.writestr(name, src.read(name))
    with pytest.raises(polydistill.TeacherError):
        load_teacher(tmp_path / "model.zip")


@pytest.mark.parametrize("share", [True, False])
def test_sb3_gaussian_fast_path_equals_the_policy_distribution(share: bool) -> None:
    """The labelling fast path reads the same layers as SB3's get_distribution (shared or
    separate feature extractors)."""
    import stable_baselines3 as sb3

    from polydistill.teachers import SB3Teacher

    model = sb3.PPO("MlpPolicy", "Pendulum-v1", seed=0, device="cpu",
                    policy_kwargs={"net_arch": [16], "share_features_extractor": share})
    teacher = SB3Teacher(model)
    obs = np.random.default_rng(0).normal(size=(7, 3))
    tgt = teacher.action_dist(obs)
    with torch.no_grad():
        d = model.policy.get_distribution(torch.as_tensor(obs, dtype=torch.float32)).distribution
    np.testing.assert_allclose(tgt.mean, d.mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(tgt.log_std, torch.log(d.stddev).numpy(), atol=1e-6)


class _Wider(gym.ObservationWrapper):
    """Pendulum with two more observation entries at the end (a body descriptor, say)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float64)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, [0.5, -0.25]])


def _wider_pendulum() -> gym.Env:
    return _Wider(gym.make("Pendulum-v1"))


def test_a_teacher_starts_from_another_with_more_observations(tmp_path: Path) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from polydistill.errors import ConfigError
    from polydistill.teachers.train import TeacherRecipe, train_teacher, warm_start

    recipe = TeacherRecipe(n_timesteps=512, n_envs=2, eval_freq=0, final_eval_episodes=1,
                           hyperparams={"n_steps": 128, "batch_size": 64},
                           policy_kwargs={"net_arch": [16, 16]})
    train_teacher("Pendulum-v1", tmp_path / "src", recipe, progress_bar=False)
    src = PPO.load(tmp_path / "src" / "model.zip", device="cpu")
    stats = VecNormalize.load(str(tmp_path / "src" / "vecnormalize.pkl"),
                              DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    venv = VecNormalize(DummyVecEnv([_wider_pendulum]))
    model = PPO("MlpPolicy", venv, policy_kwargs={"net_arch": [16, 16]}, device="cpu")
    got = warm_start(model, venv, tmp_path / "src", PPO)
    assert got == {"from": str(tmp_path / "src"), "observations_added": 2, "statistics": True}
    assert np.array_equal(venv.obs_rms.mean[:3], stats.obs_rms.mean[:3])
    assert np.array_equal(venv.obs_rms.mean[3:], [0, 0]) and np.array_equal(venv.obs_rms.var[3:], [1, 1])
    rng = np.random.default_rng(0)
    for _ in range(5):  # the new policy acts as the source, whatever the new entries say
        obs = rng.normal(size=(4, 3))
        wide = np.concatenate([obs, rng.normal(size=(4, 2))], 1)
        a_src = src.policy.predict(stats.normalize_obs(obs), deterministic=True)[0]
        a_new = model.policy.predict(venv.normalize_obs(wide), deterministic=True)[0]
        assert np.allclose(a_src, a_new, atol=1e-6)
    other = PPO("MlpPolicy", venv, policy_kwargs={"net_arch": [32, 32]}, device="cpu")
    with pytest.raises(ConfigError, match="has shape"):
        warm_start(other, venv, tmp_path / "src", PPO)
    with pytest.raises(ConfigError, match="no model.zip"):
        warm_start(model, venv, tmp_path / "nowhere", PPO)
    narrow = PPO("MlpPolicy", DummyVecEnv([lambda: gym.make("MountainCarContinuous-v0")]),
                 policy_kwargs={"net_arch": [16, 16]}, device="cpu")
    with pytest.raises(ConfigError, match="may only add observations"):
        warm_start(narrow, narrow.get_env(), tmp_path / "src", PPO)


def test_train_env_kwargs_reach_the_training_envs_and_not_the_evaluations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stable_baselines3.common.env_util as env_util

    from polydistill.teachers.train import TeacherRecipe, train_teacher

    calls: list[tuple[int, dict]] = []
    real = env_util.make_vec_env

    def spy(env_id, n_envs=1, seed=None, env_kwargs=None, **kw):  # noqa: ANN001, ANN202
        calls.append((n_envs, dict(env_kwargs or {})))
        return real(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs, **kw)

    monkeypatch.setattr(env_util, "make_vec_env", spy)
    recipe = TeacherRecipe(n_timesteps=256, n_envs=2, eval_freq=128, n_eval_episodes=1, final_eval_episodes=1,
                           hyperparams={"n_steps": 64, "batch_size": 64}, policy_kwargs={"net_arch": [8]},
                           env_kwargs={"g": 9.0}, train_env_kwargs={"g": 3.0})
    train_teacher("Pendulum-v1", tmp_path / "t", recipe, progress_bar=False)
    assert calls[0] == (2, {"g": 3.0})  # the training envs
    assert len(calls) >= 2 and all(kw == {"g": 9.0} for _, kw in calls[1:])  # periodic and final evaluations


def _killed_after_checkpoints(monkeypatch: pytest.MonkeyPatch, n: int, env_id: str, out: Path, recipe: Any,
                              checkpoint_every: int) -> list[int]:
    """Train until the ``n``-th checkpoint is written, then die there (KeyboardInterrupt).

    Returns the steps of the checkpoints written; checkpointing works as before afterwards.
    """
    import polydistill.teachers.train as train

    real, saved = train._save_checkpoint, []

    def crash_after_n(model, out, state):  # noqa: ANN001, ANN202
        real(model, out, state)
        saved.append(state["num_timesteps"])
        if len(saved) == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_checkpoint", crash_after_n)
    with pytest.raises(KeyboardInterrupt):
        train.train_teacher(env_id, out, recipe, progress_bar=False, checkpoint_every=checkpoint_every)
    monkeypatch.setattr(train, "_save_checkpoint", real)
    return saved


def test_a_killed_sac_teacher_resumes_from_its_checkpoint(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from stable_baselines3 import SAC

    from polydistill.teachers.train import TeacherRecipe, train_teacher

    recipe = TeacherRecipe(algo="sac", n_timesteps=600, n_envs=1, normalize=False, eval_freq=200,
                           n_eval_episodes=1, final_eval_episodes=1, policy_kwargs={"net_arch": [8]},
                           hyperparams={"learning_starts": 100, "batch_size": 32, "buffer_size": 1000})
    # the run dies right after its step-400 checkpoint
    saved = _killed_after_checkpoints(monkeypatch, 2, "Pendulum-v1", tmp_path, recipe, checkpoint_every=200)
    assert saved == [200, 400] and not (tmp_path / "manifest.json").exists()
    assert (tmp_path / "checkpoint" / "best" / "model.zip").is_file()
    # a kill between the two renames that replace a checkpoint leaves only checkpoint.old/
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.old")
    (tmp_path / "best" / "newer.txt").write_text("written after the checkpoint")

    m = train_teacher("Pendulum-v1", tmp_path, recipe, progress_bar=False, checkpoint_every=200, resume=True)
    assert m["resumed_at"] == [400] and m["n_timesteps"] == 600
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["num_timesteps"] == 600 and state["resumed_at"] == [400]
    assert not (tmp_path / "checkpoint.old").exists()
    assert not (tmp_path / "best" / "newer.txt").exists()  # best/ as it was at the checkpoint
    final = SAC.load(tmp_path / "final_model.zip", device="cpu")
    assert final.num_timesteps == 600
    final.load_replay_buffer(tmp_path / "checkpoint" / "replay_buffer.pkl")
    assert final.replay_buffer.size() == 600  # the first part's transitions were kept
    with np.load(tmp_path / "eval" / "evaluations.npz") as ev:
        assert list(ev["timesteps"]) == [200, 400, 600]  # the first part's evaluations too


def test_resume_extends_a_finished_run_and_refuses_another_recipe(tmp_path: Path) -> None:
    from dataclasses import replace

    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from polydistill.errors import CheckpointError, ConfigError
    from polydistill.teachers.train import TeacherRecipe, train_teacher

    recipe = TeacherRecipe(n_timesteps=256, n_envs=2, eval_freq=0, final_eval_episodes=1,
                           hyperparams={"n_steps": 64, "batch_size": 64}, policy_kwargs={"net_arch": [8]})
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train_teacher("Pendulum-v1", tmp_path, recipe, progress_bar=False, resume=True)
    train_teacher("Pendulum-v1", tmp_path, recipe, progress_bar=False, checkpoint_every=128)

    def stats() -> VecNormalize:
        holder = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
        return VecNormalize.load(str(tmp_path / "vecnormalize.pkl"), holder)

    first = stats()
    with pytest.raises(ConfigError, match=r"differs .*hyperparams"):
        train_teacher("Pendulum-v1", tmp_path, replace(recipe, hyperparams={"n_steps": 32, "batch_size": 64}),
                      progress_bar=False, resume=True)
    with pytest.raises(ConfigError, match="seed"):
        train_teacher("Pendulum-v1", tmp_path, recipe, seed=1, progress_bar=False, resume=True)
    m = train_teacher("Pendulum-v1", tmp_path, replace(recipe, n_timesteps=512), progress_bar=False,
                      checkpoint_every=128, resume=True)
    assert m["n_timesteps"] == 512 and m["resumed_at"] == [256]
    assert PPO.load(tmp_path / "model.zip", device="cpu").num_timesteps == 512
    after = stats()
    # the statistics carried on: 256 more steps, plus the resumed envs' first observations
    assert after.obs_rms.count == pytest.approx(first.obs_rms.count + 256 + recipe.n_envs)
    with pytest.raises(ConfigError, match="past n_timesteps"):
        train_teacher("Pendulum-v1", tmp_path, recipe, progress_bar=False, resume=True)


def test_a_resumed_n_step_buffer_does_not_run_returns_across_the_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stable_baselines3 import SAC

    from polydistill.teachers.train import TeacherRecipe, train_teacher

    # SB3's n-step returns; checkpoint at step 150, in the middle of a 200-step Pendulum episode
    recipe = TeacherRecipe(algo="sac", n_timesteps=300, n_envs=1, normalize=False, eval_freq=0,
                           final_eval_episodes=1, policy_kwargs={"net_arch": [8]},
                           hyperparams={"learning_starts": 100, "batch_size": 32, "buffer_size": 1000,
                                        "n_steps": 3})
    _killed_after_checkpoints(monkeypatch, 1, "Pendulum-v1", tmp_path, recipe, checkpoint_every=150)
    m = train_teacher("Pendulum-v1", tmp_path, recipe, progress_bar=False, checkpoint_every=150, resume=True)
    assert m["resumed_at"] == [150] and m["n_timesteps"] == 300  # n_steps=3 is no rollout: no slack
    model = SAC.load(tmp_path / "model.zip", device="cpu")
    model.load_replay_buffer(tmp_path / "checkpoint" / "replay_buffer.pkl")
    rb = model.replay_buffer
    assert type(rb).__name__ == "NStepReplayBuffer" and rb.size() == 300
    cut = np.flatnonzero(rb.timeouts[:300, 0])
    assert list(cut) == [149]  # the transition before the resume ends its n-step returns; no other
    assert not rb.dones[:300].any()  # ... without pretending the pendulum terminated there
