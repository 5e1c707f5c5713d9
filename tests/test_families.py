"""Procedural body families (issue 13): generation, descriptors, splits and env conformance."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import polydistill.envs  # noqa: F401  (registers the ids)
from polydistill.envs import body_descriptor, list_families, make_body
from polydistill.envs.families import SPLIT_SIZES, build_body, get_family
from polydistill.errors import ConfigError

pytestmark = pytest.mark.physics  # rerun on mujoco 3.3.0 in the second CI environment

UPSTREAM = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "swimmer": "Swimmer-v5"}
ALL = ["cheetah-vel", "halfcheetah", "hopper", "hopper-size", "swimmer"]


def test_three_families_ship() -> None:
    assert list_families() == ["cheetah-vel", "halfcheetah", "hopper", "hopper-size", "swimmer"]


@pytest.mark.parametrize("family", ALL)
def test_splits_are_seeded_sized_and_where_they_say(family: str) -> None:
    fam = get_family(family)
    for split, n in SPLIT_SIZES.items():
        bodies = fam.split(split)
        assert len(bodies) == n and bodies == fam.split(split)  # the same every call
        d = np.stack([fam.descriptor(b) for b in bodies])
        if split == "extrap":
            assert (np.abs(d) > 1 + 1e-9).any(1).all()  # every body leaves a training range
        else:
            assert (np.abs(d) <= 1 + 1e-9).all()
    assert len(fam.split("train")) >= 16
    train = {tuple(sorted(b.items())) for b in fam.split("train")}
    assert not train & {tuple(sorted(b.items())) for b in fam.split("interp")}


@pytest.mark.parametrize("family", ALL)
def test_make_body_is_deterministic_per_seed(family: str) -> None:
    a, b, c = (make_body(family, seed=s) for s in (3, 3, 4))
    assert np.array_equal(body_descriptor(a), body_descriptor(b))
    assert not np.array_equal(body_descriptor(a), body_descriptor(c))
    oa, _ = a.reset(seed=0)
    ob, _ = b.reset(seed=0)
    assert np.array_equal(oa, ob)


@pytest.mark.parametrize("family", sorted(UPSTREAM))
def test_nominal_body_is_gymnasiums(family: str) -> None:
    ours, ref = make_body(family), gym.make(UPSTREAM[family])
    assert ours.observation_space.shape == ref.observation_space.shape
    assert np.allclose(ours.unwrapped.model.body_mass, ref.unwrapped.model.body_mass)
    o1, _ = ours.reset(seed=0)
    o2, _ = ref.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.uniform(-1, 1, ref.action_space.shape)
        o1, r1, *_ = ours.step(a)
        o2, r2, *_ = ref.step(a)
    assert np.allclose(o1, o2, atol=1e-6) and r1 == pytest.approx(r2, abs=1e-6)


def test_descriptor_matches_the_built_hopper() -> None:
    fam = get_family("hopper")
    body = fam.split("extrap")[0]
    m, nominal = build_body("hopper", body), build_body("hopper")
    half = {n: m.geom_size[m.geom(n).id, 1] / nominal.geom_size[nominal.geom(n).id, 1]
            for n in ("torso_geom", "thigh_geom", "leg_geom", "foot_geom")}
    assert half["torso_geom"] == pytest.approx(body["torso_length"])
    assert half["thigh_geom"] == pytest.approx(body["thigh_length"])
    assert half["leg_geom"] == pytest.approx(body["leg_length"])
    assert half["foot_geom"] == pytest.approx(body["foot_length"])
    same_shape = build_body("hopper", {**body, "mass": 1.0})
    assert m.body_mass.sum() / same_shape.body_mass.sum() == pytest.approx(body["mass"])
    assert np.allclose(m.actuator_gear[:, 0], nominal.actuator_gear[:, 0] * body["gear"])
    act = [m.joint(n).dofadr[0] for n in ("thigh_joint", "leg_joint", "foot_joint")]
    assert np.allclose(m.dof_damping[act], nominal.dof_damping[act] * body["damping"])
    d = fam.descriptor(body)
    back = [p.low + (v + 1) * p.half for p, v in zip(fam.params, d, strict=True)]
    assert np.allclose(back, [body[p.name] for p in fam.params])
    # the longer the legs, the higher the hopper starts: feet start where the nominal ones do
    data = __import__("mujoco").MjData(m)
    __import__("mujoco").mj_kinematics(m, data)
    foot = data.geom_xpos[m.geom("foot_geom").id, 2]
    assert foot == pytest.approx(0.1, abs=1e-6)


def test_swimmer_segments_set_the_joint_count() -> None:
    for n in (3, 4, 5, 6):
        env = make_body("swimmer", {"segments": n, "segment_length": 0.9})
        assert env.action_space.shape == (n - 1,)
        assert env.observation_space.shape == (2 * n + 2,)
        assert env.unwrapped.model.nbody == n + 1
        assert body_descriptor(env)[0] == pytest.approx(get_family("swimmer").params[0].normalise(n))


@pytest.mark.parametrize("family", [*sorted(UPSTREAM), "hopper-size"])
@pytest.mark.parametrize("split", ["train", "interp", "extrap"])
def test_sampled_bodies_pass_check_env(family: str, split: str) -> None:
    body = get_family(family).split(split)[0]
    env = gym.make(get_family(family).env_id, body=body)
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=0)
    for _ in range(200):  # a random policy must not blow the simulation up
        obs, rew, term, trunc, _ = env.step(env.action_space.sample())
        assert np.isfinite(obs).all() and np.isfinite(rew)
        if term or trunc:
            env.reset()


def test_hopper_sizes_observe_their_descriptor_and_weigh_what_the_suite_variants_do() -> None:
    from polydistill.setups.morphology import FamilyTeacherView
    from polydistill.teachers import PolicyTeacher

    fam = get_family("hopper-size")
    assert fam.observed and fam.param_names == ["length", "mass"]
    long_ = make_body("hopper-size", {"length": 1.15})
    obs, _ = long_.reset(seed=0)
    assert obs.shape == (13,) and np.array_equal(obs[-2:], body_descriptor(long_))
    for _ in range(5):
        obs, *_ = long_.step(long_.action_space.sample())
        assert np.array_equal(obs[-2:], fam.descriptor({"length": 1.15}))
    # the same rigid bodies as the scaled variants (Morphology: uniform length, mass x inertia)
    for variant, body in (("polydistill/Hopper-Long-v0", {"length": 1.15}),
                          ("polydistill/Hopper-Heavy-v0", {"mass": 1.3})):
        ref = gym.make(variant).unwrapped.model
        ours = make_body("hopper-size", body).unwrapped.model
        assert np.allclose(ours.body_mass, ref.body_mass) and np.allclose(ours.body_inertia, ref.body_inertia)
    # the family env appends nothing more, so a family teacher reads a member's observation as it is
    fenv = gym.make(fam.family_env_id)
    assert fenv.observation_space.shape == (13,)
    teacher = PolicyTeacher(lambda o: np.zeros((len(o), 3)), fenv.observation_space, fenv.action_space)
    view = FamilyTeacherView(teacher, "hopper-size", {"length": 1.15})
    assert np.array_equal(view.observe(obs[None]), obs[None])


def test_bad_bodies_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown body family 'ant'"):
        make_body("ant")
    with pytest.raises(ConfigError, match="no parameter.*'wings'"):
        make_body("hopper", {"wings": 2})
    with pytest.raises(ConfigError, match="'thigh_length' must be a finite number"):
        make_body("hopper", {"thigh_length": float("nan")})
    with pytest.raises(ConfigError, match="'segments' must be a whole number"):
        make_body("swimmer", {"segments": 4.5})
    with pytest.raises(ConfigError, match="params or seed"):
        make_body("hopper", {"mass": 1.1}, seed=0)
    with pytest.raises(ConfigError, match="not a body of a family"):
        body_descriptor(gym.make("Hopper-v5"))
    with pytest.raises(ConfigError, match="unknown split"):
        get_family("hopper").split("test")


@pytest.mark.parametrize("family", ALL)
def test_family_env_randomises_bodies_and_shows_their_descriptor(family: str) -> None:
    from polydistill.envs.families import FamilyEnv, body_layout

    env = gym.make(get_family(family).family_env_id)
    check_env(env.unwrapped, skip_render_check=True)
    fam, inner = get_family(family), env.unwrapped
    assert isinstance(inner, FamilyEnv)
    seen, first = set(), []
    for episode in range(12):
        obs, info = env.reset(seed=100 + episode)
        seen.add(info["body"])
        body = fam.split("train")[info["body"]]
        d = fam.descriptor(body)
        assert np.array_equal(obs[-len(d):], d)
        own = inner._env(info["body"]).unwrapped._get_obs()  # the body's own observation
        padded = inner.layout.pad(own, body_layout(family, body))
        assert np.array_equal(obs[: inner.obs_dim], padded)  # positions, velocities, extras, each padded
        obs, rew, *_ = env.step(env.action_space.sample())
        assert np.isfinite(obs).all() and np.isfinite(rew)
        first.append(obs)
    assert len(seen) > 3  # episodes drive different bodies
    again = gym.make(get_family(family).family_env_id)
    for episode in range(3):  # the same seeds give the same bodies and observations
        again.reset(seed=100 + episode)
        env.reset(seed=100 + episode)
        a = env.action_space.sample()
        assert np.array_equal(again.step(a)[0], env.step(a)[0])
    if family == "swimmer":  # padded to the largest swimmer of any split (6 segments)
        assert inner.action_space.shape == (5,) and inner.observation_space.shape == (14 + 4,)
        assert (inner.layout.n_pos, inner.layout.n_vel) == (6, 8)


def test_family_env_on_one_held_out_body_is_that_body() -> None:
    from polydistill.envs.families import FamilyEnv

    body = get_family("hopper").split("interp")[2]
    env = FamilyEnv("hopper", [body])
    obs, info = env.reset(seed=0)
    ref = make_body("hopper", body)
    assert np.array_equal(obs[-7:], body_descriptor(ref)) and info["body"] == 0
    with pytest.raises(ConfigError, match="at least one body"):
        FamilyEnv("hopper", [])


@pytest.mark.parametrize("family", sorted(UPSTREAM))
def test_every_parameter_changes_the_built_model(family: str) -> None:
    fam = get_family(family)

    def fields(m) -> dict[str, np.ndarray]:  # noqa: ANN001
        return {"mass": m.body_mass, "inertia": m.body_inertia, "size": m.geom_size, "pos": m.body_pos,
                "gear": m.actuator_gear, "damping": m.dof_damping, "nbody": np.array([m.nbody])}

    nominal = fields(build_body(family))
    for p in fam.params:
        changed = fields(build_body(family, {p.name: p.high}))
        differs = [k for k in nominal if nominal[k].shape != changed[k].shape
                   or not np.allclose(nominal[k], changed[k])]
        assert differs, p.name
        if p.name == "mass":  # heavier, even where upstream fixes the total mass (half-cheetah)
            assert build_body(family, {"mass": p.high}).body_mass.sum() == pytest.approx(
                p.high * build_body(family).body_mass.sum())


def test_a_bool_is_not_a_body_parameter() -> None:
    with pytest.raises(ConfigError, match="finite number"):
        make_body("hopper", {"mass": True})


def test_velocity_family_is_a_target_velocity_per_body() -> None:
    fam = get_family("cheetah-vel")
    env = make_body("cheetah-vel", {"target_velocity": 1.7})
    obs, _ = env.reset(seed=0)
    assert obs[-1] == pytest.approx(1.7) and body_descriptor(env) == pytest.approx([(1.7 - 1.5) / 1.0])
    check_env(env.unwrapped, skip_render_check=True)
    assert all(0.5 <= b["target_velocity"] <= 2.5 for b in fam.split("train") + fam.split("interp"))
    assert all(not 0.5 <= b["target_velocity"] <= 2.5 for b in fam.split("extrap"))
    with pytest.raises(ConfigError, match="builds no bodies"):
        build_body("cheetah-vel")


@pytest.mark.parametrize("family", ALL)
def test_layouts_say_where_each_quantity_sits(family: str) -> None:
    from polydistill.envs.families import body_layout, family_layout

    fam, lay = get_family(family), family_layout(family)
    for body in fam.split("train") + fam.split("extrap"):
        env = make_body(family, body)
        own = body_layout(family, body)
        assert own in lay.layouts and own.obs_dim == env.observation_space.shape[0]
        assert own.joints == env.action_space.shape[0]
        obs, _ = env.reset(seed=1)
        qpos, qvel = env.unwrapped.data.qpos, env.unwrapped.data.qvel
        padded = lay.pad(obs, own)
        skip = qpos.size - (own.root_pos + own.joints)
        assert np.array_equal(padded[: own.root_pos + own.joints], qpos[skip:])
        assert np.array_equal(padded[lay.n_pos: lay.n_pos + qvel.size], qvel)
        assert np.array_equal(padded[lay.n_pos + lay.n_vel: lay.n_pos + lay.n_vel + own.extra],
                              obs[obs.size - own.extra:])


def test_family_suites_list_every_split_with_its_body() -> None:
    from polydistill.envs import get_suite, list_suites

    assert {f"{f}-bodies" for f in ALL} <= set(list_suites())
    tasks = get_suite("hopper-bodies")
    assert [t.split for t in tasks].count("train") == SPLIT_SIZES["train"]
    t = next(t for t in tasks if t.name == "hopper-interp-01")
    assert t.split == "heldout" and t.kwargs["body"] == get_family("hopper").split("interp")[1]
    env = gym.make(t.env_id, **t.kwargs)
    assert np.array_equal(body_descriptor(env), get_family("hopper").descriptor(t.kwargs["body"]))


def test_the_default_suite_family_tasks_share_their_family_teacher() -> None:
    from polydistill.envs import get_suite
    from polydistill.evaluation.report import suite_eval_tasks
    from polydistill.setups.generalist import default_teachers_dir
    from polydistill.setups.morphology import FamilyTeacherView

    tasks = {t.name: t for t in get_suite("locomotion")}
    for name in ("cheetah-vel1", "cheetah-vel2"):
        assert tasks[name].teacher_name == "cheetah-vel-family"
        assert tasks[name].teacher_env_id == "polydistill/HalfCheetahVelFamily-v0"
    held = tasks["cheetah-vel1.5"]  # the yardstick stays the target's own specialist
    assert held.teacher_name == "cheetah-vel1.5" and held.teacher_env_id == held.env_id
    assert tasks["hopper"].teacher_name == "hopper"
    sizes = {t.name: t for t in get_suite("locomotion-sizes")}
    assert set(sizes) - set(tasks) == {"hopper-sizes", "hopper-size-long"}
    assert set(tasks) - set(sizes) == {"hopper-long"}
    for name in ("hopper", "hopper-heavy", "hopper-sizes"):  # the hopper sizes: one family teacher
        assert sizes[name].teacher_name == "hopper-size-family" and sizes[name].embodiment == "hopper"
        assert sizes[name].teacher_env_id == "polydistill/HopperSizeFamily-v0"
    long_ = sizes["hopper-size-long"]  # held out inside the ranges, its own specialist the yardstick
    assert long_.teacher_name == "hopper-size-long" and long_.split == "heldout" and long_.proxy is None
    assert (np.abs(get_family("hopper-size").descriptor(long_.kwargs["body"])) < 1).all()
    # the family row weighs three single bodies and drives 48 pool bodies beside the 16
    assert sizes["hopper-sizes"].weight == 3.0 and sizes["hopper-sizes"].kwargs == {"pool": 48}
    from polydistill.setups.generalist import GeneralistConfig, resolve_tasks

    resolved = {t.name: t for t in resolve_tasks(GeneralistConfig(suite="locomotion-sizes"))}
    assert resolved["hopper-sizes"].weight == 3.0 and resolved["hopper"].weight == 1.0
    assert long_.kwargs["body"] not in get_family("hopper-size").split("train")
    assert tasks["swimmer"].teacher_name == "swimmer"
    # every teacher the suite names is shipped
    assert all((default_teachers_dir() / t.teacher_name / "model.zip").is_file()
               for t in [*tasks.values(), *sizes.values()])
    evals = {t.name: t for t in suite_eval_tasks("locomotion", default_teachers_dir())}
    assert evals["cheetah-vel2"].teacher.endswith("cheetah-vel-family")  # type: ignore[union-attr]
    from polydistill.evaluation.report import task_teacher

    t = evals["cheetah-vel2"]
    view = task_teacher(t.teacher, t.env_id, dict(t.env_kwargs))  # type: ignore[arg-type]
    assert isinstance(view, FamilyTeacherView) and view.descriptor.shape == (1,)
    t = {e.name: e for e in suite_eval_tasks("locomotion-sizes", default_teachers_dir())}["hopper-heavy"]
    # an observed family: the member's observation is the teacher's
    view = task_teacher(t.teacher, t.env_id, dict(t.env_kwargs))  # type: ignore[arg-type]
    assert isinstance(view, FamilyTeacherView) and view.descriptor.shape == (0,)


def test_one_default_suite_everywhere() -> None:
    from polydistill.envs import DEFAULT_SUITE
    from polydistill.quickstart import default_distill_config
    from polydistill.setups.generalist import GeneralistConfig

    assert DEFAULT_SUITE == "locomotion-sizes"
    assert GeneralistConfig().suite == default_distill_config().suite == DEFAULT_SUITE


def test_suite_teacher_recipe_trains_family_teachers_on_the_family_env() -> None:
    from polydistill.envs import get_suite
    from polydistill.teachers.train import suite_teacher_recipe

    tasks = {t.name: t for t in get_suite("locomotion")}
    env_id, recipe = suite_teacher_recipe(tasks["cheetah-vel2"])
    assert env_id == "polydistill/HalfCheetahVelFamily-v0" and "body" not in recipe.env_kwargs
    env_id, recipe = suite_teacher_recipe(tasks["cheetah-vel1.5"])  # a specialist of one member
    assert env_id == "polydistill/HalfCheetahVelBody-v0"
    assert recipe.env_kwargs["body"] == {"target_velocity": 1.5}


@pytest.mark.parametrize("family", ALL)
def test_the_pool_is_seeded_inside_the_ranges_and_apart_from_every_split(family: str) -> None:
    fam = get_family(family)
    pool = fam.pool(8)
    assert pool == fam.pool(8) and fam.pool(3) == pool[:3]  # one stream: a longer pool extends a shorter
    d = np.stack([fam.descriptor(b) for b in pool])
    assert (np.abs(d) <= 1 + 1e-9).all()
    named = {tuple(sorted(b.items())) for s in SPLIT_SIZES for b in fam.split(s)}  # type: ignore[arg-type]
    assert not named & {tuple(sorted(b.items())) for b in pool}


def test_a_family_env_with_a_pool_drives_its_bodies_too() -> None:
    from polydistill.envs.families import FamilyEnv

    env = FamilyEnv("swimmer", bodies="train", pool=4)
    assert len(env.bodies) == SPLIT_SIZES["train"] + 4
    with pytest.raises(ConfigError, match="pool must be >= 0"):
        FamilyEnv("swimmer", pool=-1)


@pytest.mark.parametrize("balance", ["episodes", "steps"])
def test_balancing_by_steps_gives_a_body_that_ends_early_its_share_of_samples(balance: str) -> None:
    from gymnasium.utils.env_checker import check_env

    from polydistill.envs.families import FamilyEnv

    env = FamilyEnv("swimmer", bodies="train", balance=balance)
    env.bodies = env.bodies[:2]  # two bodies: episodes on body 0 last 5 steps, on body 1 50
    env._mean_length = env._mean_length[:2]
    steps = np.zeros(2)
    env.reset(seed=0)
    for _ in range(400):
        n = 5 if env._current == 0 else 50
        for _ in range(n):
            env.step(env.action_space.sample())
        steps[env._current] += n
        env.reset()
    share = steps[0] / steps.sum()
    if balance == "steps":
        assert 0.35 < share < 0.65, share
    else:
        assert share < 0.2, share
    # a seeded reset starts afresh: the same seed draws the same body and observation
    first = env.reset(seed=3)
    for _ in range(7):
        env.step(env.action_space.sample())
    again = env.reset(seed=3)
    assert first[1]["body"] == again[1]["body"] and np.array_equal(first[0], again[0])
    env.close()
    check_env(FamilyEnv("swimmer", bodies="train", balance=balance), skip_render_check=True)
    with pytest.raises(ConfigError, match="balance"):
        FamilyEnv("swimmer", balance="returns")
