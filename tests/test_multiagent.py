"""Multi-agent worlds and PettingZoo wrappers: conformance, seeding, modality hygiene, bad input."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test
from pettingzoo.utils.conversions import parallel_to_aec

from polydistill.envs import list_parallel_envs, make_parallel
from polydistill.envs.intersection import IntersectionEnv, _blocked
from polydistill.errors import ConfigError, PolydistillError
from polydistill.wrappers.pettingzoo import (
    SHARED_PREFIX,
    ModalityDropout,
    ModalityGroups,
    PadAgents,
    SelectModalities,
    SharedView,
)

mpe2 = pytest.importorskip("mpe2")
from mpe2 import simple_adversary_v3, simple_speaker_listener_v4, simple_spread_v3  # noqa: E402

SPREAD = {"self": (0, 4), "landmarks": (4, 10), "others": (10, 14)}


def _adversary_spec(agent: str) -> dict[str, tuple[int, int]]:
    if agent.startswith("adversary"):
        return {"landmarks": (0, 4), "others": (4, 8)}
    return {"goal": (0, 2), "landmarks": (2, 6), "others": (6, 10)}


ENVS: dict[str, Callable[[], object]] = {
    **{name: (lambda name=name: make_parallel(name)) for name in list_parallel_envs()},
    "intersection+shared": lambda: SharedView(make_parallel("intersection_v0")),
    "intersection+select": lambda: SelectModalities(make_parallel("intersection_v0"), ["state", "camera"]),
    "intersection+dropout": lambda: ModalityDropout(make_parallel("intersection_v0"), 0.3,
                                                    ["camera", "lidar"]),
    "intersection-3-agents": lambda: SharedView(make_parallel("intersection_v0", n_agents=3)),
    "rendezvous-5-agents+shared": lambda: SharedView(make_parallel("rendezvous_v0", n_agents=5)),
    "rendezvous+select": lambda: SelectModalities(make_parallel("rendezvous_v0"), ["proprio", "beacon_ring"]),
    "mpe-spread+groups+shared": lambda: SharedView(ModalityGroups(
        simple_spread_v3.parallel_env(N=3, continuous_actions=True), SPREAD)),
    "mpe-speaker-listener+pad": lambda: PadAgents(
        simple_speaker_listener_v4.parallel_env(continuous_actions=True)),
    "mpe-adversary+pad+shared": lambda: SharedView(PadAgents(ModalityGroups(
        simple_adversary_v3.parallel_env(continuous_actions=True), _adversary_spec))),
}


@pytest.mark.parametrize("name", sorted(ENVS))
def test_pettingzoo_conformance(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PettingZoo warns that Dict observations are not arrays
        parallel_api_test(ENVS[name](), num_cycles=200)
        api_test(parallel_to_aec(ENVS[name]()), num_cycles=200)
        parallel_seed_test(ENVS[name], num_cycles=200)


def _rollout(env, seed: int, steps: int) -> list:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    trace = []
    for _ in range(steps):
        if not env.agents:
            obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
        actions = {}
        for a in env.agents:
            space = env.action_space(a)
            actions[a] = rng.uniform(space.low, space.high).astype(space.dtype)
        obs, rew, term, trunc, _ = env.step(actions)
        trace.append((sorted(obs), [np.concatenate([np.ravel(v).astype(float) for v in o.values()])
                                    for _, o in sorted(obs.items())], sorted(rew.items()),
                      sorted(term.items()), sorted(trunc.items())))
    return trace


@pytest.mark.parametrize("name", ["intersection_v0", "intersection+shared", "rendezvous_v0",
                                  "mpe-adversary+pad+shared"])
def test_same_seed_same_long_rollout(name: str) -> None:
    """Many steps (with resets and agents leaving) repeat exactly for a seed and differ across seeds."""
    a, b, c = _rollout(ENVS[name](), 3, 600), _rollout(ENVS[name](), 3, 600), _rollout(ENVS[name](), 4, 600)

    def same(x: list, y: list) -> bool:
        return all(p[0] == q[0] and all(np.array_equal(u, v) for u, v in zip(p[1], q[1], strict=True))
                   and p[2:] == q[2:] for p, q in zip(x, y, strict=True))

    assert same(a, b)
    assert not same(a, c)


def test_observations_stay_in_space_while_agents_leave() -> None:
    env = SharedView(make_parallel("intersection_v0"))
    obs, _ = env.reset(seed=0)
    left = set()
    for _ in range(300):
        if not env.agents:
            break
        for a, o in obs.items():
            assert env.observation_space(a).contains(o), a
        obs, _, term, trunc, infos = env.step({a: np.ones(1, np.float32) for a in env.agents})
        for o in obs.values():  # agents gone before this step are marked absent in the shared view
            for a in left:
                assert a not in obs and o[SHARED_PREFIX + "present"][int(a.split("_")[1])] == 0.0
        left |= {a for a in term if term[a] or trunc[a]}
    assert left == set(env.possible_agents)


def test_deployed_modalities_never_include_training_only_data() -> None:
    env = SelectModalities(SharedView(make_parallel("intersection_v0")), keep=["state", "camera"])
    obs, _ = env.reset(seed=1)
    for _ in range(50):
        for a, o in obs.items():
            assert set(o) == {"state", "camera"}
            assert set(env.observation_space(a).spaces) == {"state", "camera"}
        if not env.agents:
            break
        obs, *_ = env.step({a: np.zeros(1, np.float32) for a in env.agents})


def test_shared_view_stacks_every_agents_modalities_and_poses() -> None:
    base = make_parallel("intersection_v0")
    env = SharedView(base, modalities=["state"])
    obs, _ = env.reset(seed=2)
    raw = {a: base.unwrapped.agent_pose(a) for a in base.agents}
    for i, (a, o) in enumerate(sorted(obs.items())):
        assert o[SHARED_PREFIX + "is_me"][i] == 1.0 and o[SHARED_PREFIX + "is_me"].sum() == 1.0
        np.testing.assert_array_equal(o[SHARED_PREFIX + "state"][i], o["state"])
        for j, b in enumerate(sorted(obs)):
            np.testing.assert_allclose(o[SHARED_PREFIX + "rel_pose"][j], raw[b] - raw[a], atol=1e-5)


def test_modality_dropout_zeroes_whole_modalities_at_the_given_rate() -> None:
    env = ModalityDropout(make_parallel("intersection_v0"), 0.5, ["lidar"])
    zeroed = total = 0
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        for o in obs.values():
            total += 1
            zeroed += not o["lidar"].any()
            assert o["state"].any()  # untouched modality
    assert 0.3 < zeroed / total < 0.7


def test_pad_agents_gives_one_space_and_zero_pads_missing_modalities() -> None:
    inner = ModalityGroups(simple_adversary_v3.parallel_env(continuous_actions=True), _adversary_spec)
    env = PadAgents(inner)
    spaces_ = {a: env.observation_space(a) for a in env.possible_agents}
    assert len({repr(s) for s in spaces_.values()}) == 1
    obs, _ = env.reset(seed=0)
    assert not obs["adversary_0"]["goal"].any()  # the adversary has no goal: padded zeros
    np.testing.assert_array_equal(obs["agent_0"]["goal"], inner.observations(
        {"agent_0": inner.env.unwrapped.observe("agent_0")})["agent_0"]["goal"])


def test_pad_agents_pads_actions_and_cuts_them_back() -> None:
    inner = simple_speaker_listener_v4.parallel_env(continuous_actions=True)
    sizes = {a: inner.action_space(a).shape[0] for a in inner.possible_agents}
    assert len(set(sizes.values())) == 2  # speaker and listener really differ
    env = PadAgents(inner)
    width = max(sizes.values())
    assert all(env.action_space(a).shape == (width,) for a in env.possible_agents)
    assert all(env.observation_space(a).shape == env.observation_space("listener_0").shape
               for a in env.possible_agents)
    env.reset(seed=0)
    received = {}
    original = inner.step

    def spy(actions):  # noqa: ANN001, ANN202
        received.update({a: np.asarray(x).shape for a, x in actions.items()})
        return original(actions)

    inner.step = spy
    env.step({a: np.full(width, 0.5, np.float32) for a in env.agents})
    assert received == {a: (n,) for a, n in sizes.items()}


def test_bad_input_raises_project_errors() -> None:
    env = make_parallel("intersection_v0")
    with pytest.raises(ConfigError, match="unknown multi-agent env"):
        make_parallel("nope_v0")
    with pytest.raises(ConfigError, match="unknown agent 'vehicle_9'"):
        env.observation_space("vehicle_9")
    with pytest.raises(ConfigError, match="unknown agent 'ghost'"):
        SharedView(env).observation_space("ghost")
    with pytest.raises(ConfigError, match="no modality \\['radar'\\]"):
        SelectModalities(env, ["state", "radar"])
    with pytest.raises(ConfigError, match="no modality 'radar'"):
        SharedView(env, ["radar"])
    with pytest.raises(ConfigError, match="spans \\[4, 99\\)"):
        ModalityGroups(simple_spread_v3.parallel_env(N=3), {"self": (0, 4), "landmarks": (4, 99)})
    with pytest.raises(ConfigError, match="flat Box"):
        ModalityGroups(env, SPREAD)
    with pytest.raises(ConfigError, match="Dict of modalities"):
        SharedView(simple_spread_v3.parallel_env(N=3))
    with pytest.raises(ConfigError, match="p must be in"):
        ModalityDropout(env, 1.5, ["camera"])
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="missing \\['vehicle_3'\\]"):
        env.step({a: np.zeros(1) for a in env.agents[:3]})
    with pytest.raises(ConfigError, match="non-finite"):
        env.step({a: np.array([np.nan]) for a in env.agents})
    assert issubclass(ConfigError, PolydistillError)


def test_corner_buildings_block_sight_and_lidar() -> None:
    a = np.array([[-20.0, -1.75], [-20.0, -1.75], [-1.75, -20.0]])
    b = np.array([[1.75, -20.0], [20.0, -1.75], [1.75, 20.0]])
    np.testing.assert_array_equal(_blocked(a, b), [True, False, False])
    env = IntersectionEnv(n_agents=1, n_background=0)
    obs, _ = env.reset(seed=0)
    p = env.p[0]
    # eastbound at y=-1.75: the ray straight right (-90 deg, index 24 of 32) hits the building
    # face at y=-6, 4.25 m away; the ray straight ahead runs the road's length
    np.testing.assert_allclose(obs["vehicle_0"]["lidar"][24] * 40.0, 4.25, atol=1e-4)
    assert obs["vehicle_0"]["lidar"][0] == 1.0 and p < -20


def test_sharing_what_others_see_makes_the_expert_safer() -> None:
    """The premise of CAML here: one vehicle's occluded view is not enough, the union is."""
    env = IntersectionEnv()
    rates = {}
    for knowledge in ("full", "shared", "own"):
        crashes = agents = 0
        for seed in range(30):
            env.reset(seed=seed)
            agents += env.n_agents
            while env.agents:
                _, _, _, _, infos = env.step(env.expert_actions(knowledge))
                crashes += sum(i["collision"] for i in infos.values())
        rates[knowledge] = crashes / agents
    assert rates["full"] <= 0.02, rates
    assert rates["shared"] <= 0.05 and rates["own"] >= rates["shared"] + 0.15, rates


def test_rendezvous_sensors_and_expert() -> None:
    env = make_parallel("rendezvous_v0", n_agents=3)
    obs, _ = env.reset(seed=5)
    pos, beacon = env.positions(), env.beacon
    for i, a in enumerate(env.agents):
        rel = beacon - pos[i]
        gps = np.r_[rel, 1.0] if np.linalg.norm(rel) <= 1.5 else np.zeros(3)
        np.testing.assert_allclose(obs[a]["gps"], gps, atol=1e-6)
        ring = obs[a]["beacon_ring"]
        b = int(np.floor((np.arctan2(rel[1], rel[0]) % (2 * np.pi)) / (2 * np.pi) * 16)) % 16
        assert np.count_nonzero(ring) == 1
        assert ring[b] == pytest.approx(np.exp(-np.linalg.norm(rel)), rel=1e-5)
    spaces_ = {n: make_parallel("rendezvous_v0", n_agents=n).observation_space("robot_0") for n in (2, 4)}
    assert spaces_[2] == spaces_[4]  # a student trained with 2 robots runs with 4
    collisions = 0
    while env.agents:
        _, _, _, _, infos = env.step(env.expert_actions())
        collisions += sum(i["collision"] for i in infos.values())
    assert all(0.2 < i["distance"] < 0.4 for i in infos.values()) and collisions <= 3


def test_rendezvous_renders_offscreen() -> None:
    env = make_parallel("rendezvous_v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (160, 160, 3) and frame.dtype == np.uint8 and frame.std() > 5
