"""Multi-Agent MuJoCo as a polydistill world (issue 15): conformance, modalities, the joint view."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test  # noqa: E402
from pettingzoo.utils.conversions import parallel_to_aec  # noqa: E402

from polydistill.envs import make_parallel  # noqa: E402
from polydistill.envs.mamujoco import SCENARIOS, joint_env_id  # noqa: E402
from polydistill.errors import ConfigError  # noqa: E402
from polydistill.utils import shipped_path  # noqa: E402
from polydistill.wrappers.pettingzoo import PadAgents, SelectModalities, SharedView  # noqa: E402

pytestmark = pytest.mark.physics


def _env(name: str = "HalfCheetah-2x3", k: int = 1):  # noqa: ANN202
    scenario, conf = SCENARIOS[name]
    return make_parallel("mamujoco_v0", scenario=scenario, agent_conf=conf, agent_obsk=k)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_pettingzoo_conformance(name: str) -> None:
    parallel_api_test(_env(name), num_cycles=100)
    api_test(parallel_to_aec(_env(name)), num_cycles=100)
    parallel_seed_test(lambda: _env(name), num_cycles=100)


def test_same_seed_same_rollout_and_another_seed_another() -> None:
    def rollout(seed: int) -> np.ndarray:
        env = _env()
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        out = [obs["agent_0"]["global"]]
        for _ in range(50):
            obs, *_ = env.step({a: rng.uniform(-1, 1, env.action_space(a).shape) for a in env.agents})
            out.append(obs["agent_0"]["global"])
        return np.stack(out)

    assert np.array_equal(rollout(1), rollout(1))
    assert not np.allclose(rollout(1), rollout(2))


@pytest.mark.parametrize(("name", "k"), [("HalfCheetah-2x3", 0), ("HalfCheetah-2x3", 1),
                                         ("HalfCheetah-6x1", 0), ("Walker2d-2x3", 1), ("Ant-2x4", 1)])
def test_modalities_local_global_and_id(name: str, k: int) -> None:
    env = _env(name, k)
    obs, _ = env.reset(seed=0)
    n = len(env.possible_agents)
    single = gym.make(joint_env_id(SCENARIOS[name][0]))
    state, _ = single.reset(seed=0)
    for i, a in enumerate(env.possible_agents):
        o = obs[a]
        assert set(o) == {"local", "global", "id"}
        assert env.observation_space(a).contains(o)
        # global is the single-agent env's observation, the same for every agent
        np.testing.assert_allclose(o["global"], state.astype(np.float32), rtol=0, atol=0)
        assert o["id"].tolist() == [1.0 if j == i else 0.0 for j in range(n)]
        assert o["local"].shape == env.env.observation_space(a).shape  # MaMuJoCo's own local view
    # more hops, more of the robot seen
    if k == 0:
        wider = _env(name, 1).observation_space("agent_0")["local"].shape[0]
        assert wider > env.observation_space("agent_0")["local"].shape[0]


def test_ant_without_contact_forces_drops_them_from_state_and_local_views() -> None:
    """The Ant joint teacher's env (no ``cfrc_ext``): MaMuJoCo would index missing entries."""
    def make(k: int = 1):  # noqa: ANN202
        return make_parallel("mamujoco_v0", scenario="Ant", agent_conf="2x4", agent_obsk=k,
                             include_cfrc_ext_in_observation=False)

    parallel_api_test(make(), num_cycles=50)
    parallel_seed_test(make, num_cycles=50)
    single = gym.make("Ant-v5", include_cfrc_ext_in_observation=False)
    state, _ = single.reset(seed=3)
    for k in (0, 1):
        env, full = make(k), _env("Ant-2x4", k)
        obs, _ = env.reset(seed=3)
        assert env.env.local_categories == [["qpos", "qvel"], ["qpos"]][:k + 1]
        for a in env.possible_agents:
            np.testing.assert_array_equal(obs[a]["global"], state.astype(np.float32))
            assert obs[a]["local"].shape[0] < full.observation_space(a)["local"].shape[0]
    with pytest.raises(ConfigError, match="no scenario"):  # asked-for categories are left alone
        make_parallel("mamujoco_v0", scenario="Ant", agent_conf="2x4", include_cfrc_ext_in_observation=False,
                      local_categories=[["qpos", "qvel", "cfrc_ext"], ["qpos"]])


def test_a_joint_policy_through_the_wrapper_is_the_single_agent_env() -> None:
    """The joint action split among the agents drives the robot exactly as the single-agent env."""
    w = np.random.default_rng(0).normal(size=(6, 17)) * 0.3

    def joint(state: np.ndarray) -> np.ndarray:
        return np.tanh(w @ state.astype(np.float32)).astype(np.float32)

    single = gym.make("HalfCheetah-v5")
    s, _ = single.reset(seed=3)
    alone = 0.0
    for _ in range(300):
        s, r, term, trunc, _ = single.step(joint(s).astype(np.float64))
        alone += r
        if term or trunc:
            break
    env = _env()
    env.reset(seed=3)
    team = 0.0
    for _ in range(300):
        a = joint(env.state())
        split = env.split_action(a)
        assert np.array_equal(env.join_actions(split), a)
        _, rew, term, trunc, _ = env.step(split)
        assert len(set(rew.values())) == 1  # one reward for the whole team
        team += rew["agent_0"]
        if any(term.values()) or any(trunc.values()):
            break
    assert team == pytest.approx(alone, rel=1e-9)


def test_the_caml_wrappers_take_it() -> None:
    env = SelectModalities(_env(), keep=("local", "id"))
    obs, _ = env.reset(seed=0)
    assert set(obs["agent_0"]) == {"local", "id"}  # what a decentralised student deploys with
    shared = SharedView(_env(), modalities=("global",))
    obs, _ = shared.reset(seed=0)
    assert obs["agent_0"]["shared/global"].shape == (2, 17)
    padded = PadAgents(_env("HalfCheetah-6x1", 1))
    obs, _ = padded.reset(seed=0)
    assert len({padded.observation_space(a)["local"].shape for a in padded.possible_agents}) == 1


def test_bad_input_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no scenario"):
        make_parallel("mamujoco_v0", scenario="Cheetah", agent_conf="2x3")
    with pytest.raises(ConfigError, match="agent_obsk"):
        make_parallel("mamujoco_v0", scenario="HalfCheetah", agent_conf="2x3", agent_obsk=-1)
    env = _env()
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="missing"):
        env.step({"agent_0": np.zeros(3)})
    with pytest.raises(ConfigError, match="finite action"):
        env.step({"agent_0": np.full(3, np.nan), "agent_1": np.zeros(3)})
    with pytest.raises(ConfigError, match="joint action"):
        env.split_action(np.zeros(5))
    with pytest.raises(ConfigError, match="unknown agent"):
        env.observation_space("agent_9")


# ------------------------------------------------------------------ joint teacher -> decentralised students
TEACHER = "agents/teachers/mamujoco-halfcheetah"


@pytest.mark.parametrize(("scenario", "teacher", "floor"), [
    ("HalfCheetah-2x3", TEACHER, 3000),  # its manifest: 4,172 +- 15 over 10 episodes
    ("Walker2d-2x3", "agents/teachers/mamujoco-walker2d", 1000),  # 4,053 +- 740: it falls in some
    ("HalfCheetah-2x3", "agents/teachers/mamujoco-halfcheetah-sac", 5000),  # SAC: 6,699 +- 82
    ("Ant-2x4", "agents/teachers/mamujoco-ant", 1500),  # PPO without contact forces: 3,722 +- 755
])
def test_the_joint_teacher_through_the_wrapper_gets_its_single_agent_return(scenario: str, teacher: str,
                                                                             floor: float) -> None:
    from polydistill.evaluation import evaluate, evaluate_team
    from polydistill.setups.caml import team_teacher

    robot, conf = SCENARIOS[scenario]
    # both worlds are built as the teacher's own env was (Ant: no contact forces in the state)
    kwargs = json.loads((shipped_path(teacher) / "manifest.json").read_text())["recipe"]["env_kwargs"]
    joint = team_teacher(teacher)
    best = -np.inf
    for seed in (7, 8):  # one episode per seed: both evaluators reset with exactly that seed
        alone = evaluate(joint_env_id(robot), lambda o: joint.teacher.act(np.asarray(o, np.float32)),
                         n_episodes=1, n_envs=1, seed=seed, env_kwargs=kwargs)
        team = evaluate_team(lambda: make_parallel("mamujoco_v0", scenario=robot, agent_conf=conf, **kwargs),
                             joint, episodes=1, seed=seed)
        assert team.returns == pytest.approx(alone.returns, rel=1e-6)
        best = max(best, alone.mean_return)
    # a real teacher; the Ant and Walker2d ones fall in some episodes (Ant: on seed 7 here)
    assert best > floor


def _caml_config(**kw):  # noqa: ANN003, ANN202
    from polydistill.buffer import BufferConfig
    from polydistill.distill.distiller import DistillerConfig
    from polydistill.setups.caml import CamlConfig
    from polydistill.students import StudentConfig, TeamConfig

    base = dict(env="mamujoco_v0", teacher=TEACHER,
                env_kwargs={"scenario": "HalfCheetah", "agent_conf": "2x3", "agent_obsk": 1},
                team=TeamConfig(("local", "id"), message_dim=0), total_steps=2400, rounds=2,
                n_envs=2, updates_per_step=0.1, student=StudentConfig(hidden=(32, 32)),
                distiller=DistillerConfig(batch_size=32), buffer=BufferConfig(capacity=2400), eval_episodes=1)
    base.update(kw)
    return CamlConfig(**base)


def test_decentralised_students_are_labelled_by_the_joint_teacher_and_never_read_global(  # noqa: ANN201
        tmp_path):  # noqa: ANN001
    from polydistill.deploy.checkpoint import load_student
    from polydistill.errors import ObservationError
    from polydistill.evaluation.report import EvalOptions
    from polydistill.setups.caml import CamlRun, team_teacher

    run = CamlRun(_caml_config(), progress_bar=False)
    run.learn()
    # every stored label is the joint teacher's action split among the agents
    env = _env()
    obs, _ = env.reset(seed=0)
    want = team_teacher(TEACHER)(env, obs)
    joint = team_teacher(TEACHER).teacher.act(env.state()[None])[0]
    np.testing.assert_allclose(np.concatenate([want["agent_0"], want["agent_1"]]),
                               np.clip(joint, -1, 1), atol=1e-6)
    student = load_student(run.save(tmp_path / "s"))
    run.close()
    assert student.student.team.modalities == ("local", "id")
    deployable = {a: {m: o[m] for m in ("local", "id")} for a, o in obs.items()}
    act = student.predict(deployable)
    assert set(act) == {"agent_0", "agent_1"} and all(np.isfinite(v).all() for v in act.values())
    with pytest.raises(ObservationError):
        student.predict(obs)  # the training-only `global` is refused, not read
    rows = CamlRun.evaluate_student(student, EvalOptions(episodes=1))
    assert rows[0].teacher_return is not None and rows[0].teacher_return > 3000


def test_agents_of_different_sizes_train_through_pad_agents() -> None:
    from polydistill.setups.caml import CamlRun

    cfg = _caml_config(env_kwargs={"scenario": "HalfCheetah", "agent_conf": "6x1", "agent_obsk": 1},
                       pad_agents=True, total_steps=1200, rounds=1)
    run = CamlRun(cfg, progress_bar=False)
    run.learn()
    assert len(run.agents) == 6 and run.action_space.shape == (1,)
    run.close()


def test_the_benchmark_reports_every_method_in_the_issue_interface(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from polydistill.bench import BenchOptions, run_benchmark

    out = tmp_path / "results.json"
    report = run_benchmark("mamujoco", BenchOptions(seeds=1, quick=True, envs=("HalfCheetah-2x3",), workers=1,
                                                    out=str(out), progress_bar=False))
    assert report["setup"] == "mamujoco" and report["seeds"] == 1
    (row,) = report["scenarios"]
    assert row["name"] == "HalfCheetah-2x3" and row["teacher_return"] > 3000
    assert set(row["methods"]) == {"student_obsk0", "student_obsk1", "student_obsk1_messages", "ippo"}
    for m in row["methods"].values():
        assert {"return", "return_std", "ratio"} <= set(m) and np.isfinite(m["return"])
    # the baseline's budget: the teacher's env steps and the distillation's together
    b = row["budget"]
    assert b["ippo_env_steps"] == b["teacher_env_steps"] + b["distill_env_steps"]
    assert out.is_file() and out.with_suffix(".md").is_file()
    from polydistill.bench import mamujoco as bench_mamujoco
    from polydistill.bench.mamujoco import scenario_config

    monkeypatch.delitem(bench_mamujoco.TEACHERS, "Ant", raising=False)  # a robot without a teacher
    with pytest.raises(ConfigError, match="no shipped joint teacher"):
        scenario_config("Ant-2x4")
    assert scenario_config("Walker2d-2x3").teacher.endswith("mamujoco-walker2d")
    assert scenario_config("HalfCheetah-2x3").teacher.endswith("mamujoco-halfcheetah-sac")
    assert scenario_config("HalfCheetah-6x1").pad_agents and not scenario_config("HalfCheetah-2x3").pad_agents
