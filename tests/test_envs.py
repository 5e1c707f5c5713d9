"""The worlds: every registered env is a valid Gymnasium env, and morphology really changes bodies."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import polydistill
import polydistill.envs as penvs
from polydistill.envs import SUITES, get_suite, list_suites
from polydistill.envs.morphology import Morphology

pytestmark = pytest.mark.physics  # rerun on mujoco 3.3.0 in the second CI environment

ALL_TASKS = [t for tasks in SUITES.values() for t in tasks]
# The suite's envs, and the velocity variants its shipped specialists were trained on.
ALL_ENV_IDS = sorted({t.env_id for t in ALL_TASKS} | {
    "polydistill/HalfCheetah-Vel1-v0", "polydistill/HalfCheetah-Vel2-v0",
    "polydistill/HalfCheetah-Vel1.5-v0"})

# Upstream MuJoCo envs declare unbounded observation boxes; the checker warns about that.
_EXPECTED_WARNING = "infinity"

# (observation dim, action dim) of every suite task's env.
EXPECTED_DIMS = {
    "polydistill/Hopper-v0": (11, 3),
    "polydistill/Hopper-Heavy-v0": (11, 3),
    "polydistill/Hopper-Long-v0": (11, 3),
    "polydistill/HopperSizeBody-v0": (13, 3),
    "polydistill/HopperSizeFamily-v0": (13, 3),
    "polydistill/HalfCheetah-Vel1-v0": (18, 6),
    "polydistill/HalfCheetah-Vel2-v0": (18, 6),
    "polydistill/HalfCheetah-Vel1.5-v0": (18, 6),
    "polydistill/HalfCheetahVelBody-v0": (18, 6),
    "polydistill/Swimmer-v0": (8, 2),
    "polydistill/Swimmer-Long-v0": (8, 2),
    "polydistill/DoublePendulum-v0": (9, 1),
    "polydistill/DoublePendulum-Heavy-v0": (9, 1),
}


def _make(env_id: str, **kwargs):
    spec = next((t for t in ALL_TASKS if t.env_id == env_id), None)
    merged = {**(spec.kwargs if spec else {}), **kwargs}
    return gym.make(env_id, **merged)


@pytest.fixture(scope="module")
def nominal_models():
    """Compiled models of the nominal bodies (shared: compiling is the slow part)."""
    out = {}
    for env_id in ("polydistill/Hopper-v0", "polydistill/Swimmer-v0",
                   "polydistill/DoublePendulum-v0", "polydistill/HalfCheetahVel-v0"):
        env = gym.make(env_id)
        out[env_id] = env.unwrapped.model
        env.close()
    return out


# --------------------------------------------------------------------------- env checker
@pytest.mark.parametrize("env_id", ALL_ENV_IDS)
def test_env_passes_gymnasium_checker(env_id):
    env = _make(env_id)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped, skip_render_check=True)
        unexpected = [str(w.message) for w in caught if _EXPECTED_WARNING not in str(w.message)]
        assert unexpected == [], f"{env_id}: env checker warned: {unexpected}"
    finally:
        env.close()


def test_every_registered_polydistill_env_is_in_a_suite_or_a_base():
    registered = {k for k in gym.registry if k.startswith("polydistill/")}
    assert set(ALL_ENV_IDS) <= registered
    assert set(EXPECTED_DIMS) == set(ALL_ENV_IDS)


def test_register_envs_is_idempotent():
    before = {k for k in gym.registry if k.startswith("polydistill/")}
    penvs.register_envs()
    after = {k for k in gym.registry if k.startswith("polydistill/")}
    assert before == after


# --------------------------------------------------------------------------- spaces
@pytest.mark.parametrize("env_id", ALL_ENV_IDS)
def test_observation_and_action_shapes(env_id):
    obs_dim, act_dim = EXPECTED_DIMS[env_id]
    env = _make(env_id)
    try:
        assert env.observation_space.shape == (obs_dim,)
        assert env.action_space.shape == (act_dim,)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (obs_dim,)
        assert env.observation_space.contains(obs)
        obs, *_ = env.step(env.action_space.sample())
        assert obs.shape == (obs_dim,)
        assert np.all(np.isfinite(obs))
    finally:
        env.close()


@pytest.mark.parametrize("velocity", [1.0, 2.0, 3.0])
def test_halfcheetah_last_obs_entry_is_target_velocity(velocity):
    env = gym.make(f"polydistill/HalfCheetah-Vel{int(velocity)}-v0")
    try:
        assert env.unwrapped.target_velocity == velocity
        obs, _ = env.reset(seed=3)
        assert obs[-1] == velocity
        env.action_space.seed(3)
        for _ in range(5):
            obs, reward, _, _, info = env.step(env.action_space.sample())
            assert obs[-1] == velocity
            assert {"x_velocity", "reward_tracking", "reward_ctrl"} <= set(info)
            assert reward == pytest.approx(info["reward_tracking"] + info["reward_ctrl"])
    finally:
        env.close()


def test_halfcheetah_tracking_reward_peaks_at_target():
    env = gym.make("polydistill/HalfCheetah-Vel2-v0").unwrapped
    try:
        env.reset(seed=0)
        zero = np.zeros(6)
        errors = [0.0, 0.25, 0.5, 1.0, 2.0]
        for sign in (1.0, -1.0):
            rewards = [env._get_rew(2.0 + sign * e, zero)[0] for e in errors]
            assert all(a > b for a, b in zip(rewards, rewards[1:], strict=False)), rewards
        # Control effort costs reward.
        assert env._get_rew(2.0, np.ones(6))[0] < env._get_rew(2.0, zero)[0]
    finally:
        env.close()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 11.0, -11.0])
def test_halfcheetah_rejects_bad_target_velocity(bad):
    with pytest.raises(polydistill.ConfigError, match="target_velocity"):
        gym.make("polydistill/HalfCheetahVel-v0", target_velocity=bad)


# --------------------------------------------------------------------------- morphology
def test_heavy_hopper_total_mass_is_1_3x_nominal(nominal_models):
    nominal = nominal_models["polydistill/Hopper-v0"]
    env = gym.make("polydistill/Hopper-Heavy-v0")
    try:
        heavy = env.unwrapped.model
        assert heavy.body_mass.sum() == pytest.approx(1.3 * nominal.body_mass.sum(), rel=1e-9)
        np.testing.assert_allclose(heavy.body_mass, 1.3 * nominal.body_mass, rtol=1e-9)
        np.testing.assert_allclose(heavy.body_inertia, 1.3 * nominal.body_inertia, rtol=1e-9)
        # Geometry is untouched by a density change.
        np.testing.assert_array_equal(heavy.body_pos, nominal.body_pos)
        np.testing.assert_array_equal(heavy.geom_size, nominal.geom_size)
    finally:
        env.close()


def test_heavy_pendulum_total_mass_is_1_5x_nominal(nominal_models):
    nominal = nominal_models["polydistill/DoublePendulum-v0"]
    env = gym.make("polydistill/DoublePendulum-Heavy-v0")
    try:
        assert env.unwrapped.model.body_mass.sum() == pytest.approx(
            1.5 * nominal.body_mass.sum(), rel=1e-9)
    finally:
        env.close()


def test_long_hopper_positions_scaled_1_15x(nominal_models):
    nominal = nominal_models["polydistill/Hopper-v0"]
    env = gym.make("polydistill/Hopper-Long-v0")
    try:
        long = env.unwrapped.model
        np.testing.assert_allclose(long.body_pos, 1.15 * nominal.body_pos, rtol=1e-9, atol=1e-12)
        limbs = nominal.geom_type != 0  # mjGEOM_PLANE == 0: the floor is not scaled
        assert limbs.sum() >= 4
        np.testing.assert_allclose(long.geom_pos[limbs], 1.15 * nominal.geom_pos[limbs],
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(long.geom_pos[~limbs], nominal.geom_pos[~limbs])
        np.testing.assert_array_equal(long.geom_size[~limbs], nominal.geom_size[~limbs])
        # Capsules: half-length scaled, radius kept.
        np.testing.assert_allclose(long.geom_size[limbs, 1], 1.15 * nominal.geom_size[limbs, 1],
                                   rtol=1e-9)
        np.testing.assert_array_equal(long.geom_size[limbs, 0], nominal.geom_size[limbs, 0])
        np.testing.assert_allclose(long.jnt_pos, 1.15 * nominal.jnt_pos, rtol=1e-9, atol=1e-12)
        # Longer capsules of the same density are heavier.
        assert long.body_mass.sum() > nominal.body_mass.sum()
        # The healthy band follows the longer legs.
        assert env.unwrapped._healthy_z_range[0] == pytest.approx(0.7 * 1.15)
    finally:
        env.close()


def test_long_swimmer_positions_scaled_1_2x(nominal_models):
    nominal = nominal_models["polydistill/Swimmer-v0"]
    env = gym.make("polydistill/Swimmer-Long-v0")
    try:
        long = env.unwrapped.model
        np.testing.assert_allclose(long.body_pos, 1.2 * nominal.body_pos, rtol=1e-9, atol=1e-12)
        limbs = nominal.geom_type != 0
        np.testing.assert_allclose(long.geom_pos[limbs], 1.2 * nominal.geom_pos[limbs],
                                   rtol=1e-9, atol=1e-12)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ["polydistill/Hopper-v0", "polydistill/Swimmer-v0",
                                    "polydistill/DoublePendulum-v0",
                                    "polydistill/HalfCheetahVel-v0"])
def test_gear_scaling_changes_actuator_gear(env_id, nominal_models):
    nominal = nominal_models[env_id]
    env = gym.make(env_id, gear=1.5)
    try:
        strong = env.unwrapped.model
        np.testing.assert_allclose(strong.actuator_gear[:, 0], 1.5 * nominal.actuator_gear[:, 0])
        np.testing.assert_array_equal(strong.actuator_gear[:, 1:], nominal.actuator_gear[:, 1:])
        np.testing.assert_array_equal(strong.body_mass, nominal.body_mass)
    finally:
        env.close()


def test_nominal_variant_matches_upstream_model():
    upstream = gym.make("Hopper-v5")
    ours = gym.make("polydistill/Hopper-v0")
    try:
        a, b = upstream.unwrapped.model, ours.unwrapped.model
        np.testing.assert_array_equal(a.body_mass, b.body_mass)
        np.testing.assert_array_equal(a.body_pos, b.body_pos)
        np.testing.assert_array_equal(a.actuator_gear, b.actuator_gear)
    finally:
        upstream.close()
        ours.close()


@pytest.mark.parametrize("field", ["length", "mass", "gear"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 0.19, 5.01,
                                 100.0, "1.0", None])
def test_morphology_rejects_bad_factors(field, bad):
    with pytest.raises(polydistill.ConfigError, match=f"Morphology.{field}"):
        Morphology(**{field: bad})


@pytest.mark.parametrize("good", [0.2, 1, 1.0, 2.5, 5.0])
def test_morphology_accepts_range(good):
    m = Morphology(length=good, mass=good, gear=good)
    assert m.is_nominal == (good == 1.0)


def test_bad_morphology_through_gym_make_is_config_error():
    with pytest.raises(polydistill.PolydistillError):
        gym.make("polydistill/Hopper-v0", mass=float("nan"))
    with pytest.raises(polydistill.ConfigError):
        gym.make("polydistill/Swimmer-v0", length=10.0)


# --------------------------------------------------------------------------- determinism
def _rollout(env_id: str, seed: int, steps: int = 60):
    env = _make(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, dones = [obs], [], [], []
    for _ in range(steps):
        a = env.action_space.sample()
        obs, r, term, trunc, _ = env.step(a)
        actions.append(a)
        observations.append(obs)
        rewards.append(r)
        dones.append((term, trunc))
        if term or trunc:
            obs, _ = env.reset()
            observations.append(obs)
    env.close()
    return np.array(observations), np.array(actions), np.array(rewards), dones


@pytest.mark.parametrize("env_id", ALL_ENV_IDS)
def test_same_seed_gives_identical_trajectories(env_id):
    o1, a1, r1, d1 = _rollout(env_id, seed=7)
    o2, a2, r2, d2 = _rollout(env_id, seed=7)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    assert d1 == d2
    o3, a3, _, _ = _rollout(env_id, seed=8)
    assert not np.array_equal(a1, a3)
    assert not np.array_equal(o1[0], o3[0])


# --------------------------------------------------------------------------- suites
def test_get_suite_unknown_lists_valid_suites():
    with pytest.raises(polydistill.ConfigError) as info:
        get_suite("nope")
    msg = str(info.value)
    assert "nope" in msg
    for name in list_suites():
        assert name in msg


def test_default_suite_exists():
    assert "locomotion" in list_suites()
    assert get_suite("locomotion") is SUITES["locomotion"]


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_suite_train_and_heldout_are_disjoint(suite):
    tasks = get_suite(suite)
    names = [t.name for t in tasks]
    assert len(names) == len(set(names)), "task names must be unique within a suite"
    assert {t.split for t in tasks} <= {"train", "heldout"}
    train = [t for t in tasks if t.split == "train"]
    heldout = [t for t in tasks if t.split == "heldout"]
    assert train and heldout
    assert not {t.name for t in train} & {t.name for t in heldout}
    def key(t):  # one env id may hold several tasks: family members differ by their body
        return t.env_id, repr(sorted(t.kwargs.items()))

    assert not {key(t) for t in train} & {key(t) for t in heldout}
    for t in tasks:
        assert t.env_id in gym.registry


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_heldout_new_embodiments_have_a_proxy_with_same_spaces(suite):
    tasks = get_suite(suite)
    train = [t for t in tasks if t.split == "train"]
    train_embodiments = {t.embodiment for t in train}
    new = [t for t in tasks if t.split == "heldout" and t.embodiment not in train_embodiments]
    assert new, "the suite should test zero-shot transfer to at least one new body"
    for t in new:
        assert t.proxy is not None, f"{t.name}: held-out new embodiment needs a proxy"
        assert t.proxy in train_embodiments, f"{t.name}: proxy {t.proxy!r} is not trained"
        proxy_task = next(p for p in train if p.embodiment == t.proxy)
        held_env, proxy_env = _make(t.env_id), _make(proxy_task.env_id)
        try:
            assert held_env.observation_space == proxy_env.observation_space
            assert held_env.action_space == proxy_env.action_space
        finally:
            held_env.close()
            proxy_env.close()
    for t in tasks:
        if t.split == "train" or t.embodiment in train_embodiments:
            assert t.proxy is None or t.proxy in train_embodiments


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_tasks_on_one_embodiment_share_spaces(suite):
    spaces: dict[str, tuple] = {}
    for t in get_suite(suite):
        env = _make(t.env_id)
        key = (env.observation_space, env.action_space)
        env.close()
        if t.embodiment in spaces:
            assert spaces[t.embodiment] == key, t.name
        spaces[t.embodiment] = key
