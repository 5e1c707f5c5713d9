"""Teachers from import paths, success rates, task tokens and the multi-task student kinds."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import multitask_fixture as fx  # noqa: E402

import polydistill  # noqa: E402
from polydistill import load_student  # noqa: E402
from polydistill.errors import ConfigError, ObservationError, TeacherError  # noqa: E402
from polydistill.evaluation.episodes import evaluate  # noqa: E402
from polydistill.evaluation.report import markdown_table  # noqa: E402
from polydistill.setups.generalist import GeneralistConfig, GeneralistRun, TaskConfig  # noqa: E402
from polydistill.students import (  # noqa: E402
    UNSEEN_TASK,
    Embodiment,
    EmbodimentTable,
    MoEStudent,
    MultiHeadStudent,
    StudentConfig,
    student_for,
)
from polydistill.students.multitask import mlp_params  # noqa: E402
from polydistill.teachers import PolicyTeacher, load_teacher  # noqa: E402
from polydistill.utils import make_env  # noqa: E402

ENV = make_env(fx.ENV_ID)
OBS_SPACE, ACT_SPACE = ENV.observation_space, ENV.action_space


def _obs(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 4))


# ----------------------------------------------------------------------------- import paths
def test_get_action_class_is_called_per_row_and_clipped() -> None:
    t = load_teacher("multitask_fixture:TowardExpert", OBS_SPACE, ACT_SPACE)
    assert isinstance(t, PolicyTeacher) and t.per_row
    obs = _obs()
    target = t.action_dist(obs)
    assert target.kind == "deterministic"
    want = np.clip(np.stack([fx.TowardExpert().get_action(o) for o in obs]), -0.2, 0.2)
    np.testing.assert_allclose(target.action, want)
    assert np.abs(fx.toward_batch(obs)).max() > 0.2  # the raw expert overshoots; the label does not
    assert np.all(np.abs(target.action) <= 0.2 + 1e-7)


def test_batch_functions_label_batches_and_single_observation_functions_go_per_row() -> None:
    batch = load_teacher("multitask_fixture:toward_batch", OBS_SPACE, ACT_SPACE)
    one = load_teacher("multitask_fixture:toward_one", OBS_SPACE, ACT_SPACE)
    assert not batch.per_row and one.per_row  # type: ignore[attr-defined]
    obs = _obs()
    np.testing.assert_allclose(batch.act(obs), one.act(obs))


@pytest.mark.parametrize(("path", "words"), [
    ("no_such_module_xyz:Policy", ["no_such_module_xyz", "cannot import"]),
    ("multitask_fixture:Missing", ["has no attribute", "Missing"]),
    ("multitask_fixture:NOT_A_POLICY", ["neither get_action", "__call__"]),
])
def test_bad_import_paths_name_what_was_tried(path: str, words: list[str]) -> None:
    with pytest.raises(TeacherError) as err:
        load_teacher(path, OBS_SPACE, ACT_SPACE)
    assert path in str(err.value) and all(w in str(err.value) for w in words)


def test_an_import_path_needs_the_env_spaces_and_a_non_path_is_refused() -> None:
    with pytest.raises(TeacherError, match="spaces"):
        load_teacher("multitask_fixture:TowardExpert")
    with pytest.raises(TeacherError, match="import path"):
        load_teacher("not a teacher")


def test_a_teacher_giving_nan_is_refused() -> None:
    t = PolicyTeacher(lambda o: np.full((len(o), 2), np.nan), OBS_SPACE, ACT_SPACE, name="nan teacher")
    with pytest.raises(TeacherError, match="non-finite"):
        t.action_dist(_obs())


# ----------------------------------------------------------------------------- success
def test_success_rate_counts_episodes_whose_flag_was_ever_true() -> None:
    expert = load_teacher("multitask_fixture:TowardExpert", OBS_SPACE, ACT_SPACE)
    good = evaluate(fx.ENV_ID, expert.act, n_episodes=6, n_envs=3, success_key="success")
    idle = evaluate(fx.ENV_ID, lambda o: np.zeros((len(o), 2)), n_episodes=6, n_envs=3, success_key="success")
    assert good.success_rate == 1.0 and len(good.successes) == 6
    assert idle.success_rate is not None and idle.success_rate < 0.5
    assert evaluate(fx.ENV_ID, expert.act, n_episodes=2).success_rate is None
    with pytest.raises(ConfigError, match="never reported"):
        evaluate(fx.ENV_ID, expert.act, n_episodes=2, success_key="solved")


# ----------------------------------------------------------------------------- task tokens
def _two_task_config(**kw: object) -> GeneralistConfig:
    tasks = tuple(TaskConfig(name, fx.ENV_ID, f"multitask_fixture:{cls}", "point", {"task": name}, task=name)
                  for name, cls in (("toward", "TowardExpert"), ("away", "AwayExpert")))
    base = dict(tasks=tasks, total_steps=8000, rounds=4, n_envs=4, updates_per_step=0.25,
                success_key="success", eval_episodes=4, seed=0,
                student=StudentConfig(hidden=(64, 64)))
    return GeneralistConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_task_tokens_let_one_body_do_two_tasks(tmp_path: Path) -> None:
    run = GeneralistRun(_two_task_config())
    run.learn()
    assert run.table.has_tasks and run.table.code_dim == 1 + 2
    scores = run.evaluate(episodes=8)
    assert set(scores) >= {"eval/success/toward", "eval/success/away", "eval/return/toward"}
    assert scores["eval/success/toward"] >= 0.75 and scores["eval/success/away"] >= 0.75, scores
    path = run.save(tmp_path / "s")
    s = load_student(path)
    assert s.embodiments == ["point"] and s.tasks == ["toward", "away"]
    obs = _obs(1)[0]
    a, b = s.predict(obs, embodiment="point", task="toward"), s.predict(obs, embodiment="point", task="away")
    assert a.shape == (2,) and not np.allclose(a, b)
    assert s.predict(obs, task=UNSEEN_TASK).shape == (2,)  # one body: the embodiment may be left out
    with pytest.raises(ObservationError, match="pass task="):
        s.predict(obs)
    with pytest.raises(ObservationError, match="unknown task 'sideways'"):
        s.predict(obs, task="sideways")
    rows = GeneralistRun.evaluate_student(s, __import__("polydistill.evaluation.report", fromlist=["x"])
                                          .EvalOptions(episodes=4))
    assert {r.name for r in rows} == {"toward", "away"}
    assert all(r.extra["teacher_success"] == 1.0 for r in rows)
    assert "teacher_success" in markdown_table(rows)


def test_a_student_without_task_tokens_refuses_a_task() -> None:
    t = EmbodimentTable([Embodiment("point", 4, "continuous", 2, (-0.2,) * 2, (0.2,) * 2)])
    s = student_for(t, StudentConfig(hidden=(8,)))
    with pytest.raises(ObservationError, match="no task tokens"):
        s.prepare(_obs(1)[0], "point", "toward")


# ----------------------------------------------------------------------------- architectures
def _table(tasks: int = 10) -> EmbodimentTable:
    body = Embodiment("sawyer", 39, "continuous", 4, (-1.0,) * 4, (1.0,) * 4)
    return EmbodimentTable([body], [(f"t{i}", "sawyer") for i in range(tasks)])


@pytest.mark.parametrize("hidden", [(64, 64), (256, 256), (512, 512, 512)])
@pytest.mark.parametrize("arch", ["multihead", "moe"])
@pytest.mark.parametrize("tasks", [2, 10, 50])
def test_multitask_students_match_the_dense_parameter_budget(hidden: tuple[int, ...], arch: str,
                                                               tasks: int) -> None:
    table = _table(tasks)
    dense = sum(p.numel() for p in student_for(table, StudentConfig(hidden=hidden)).parameters())
    s = student_for(table, StudentConfig(hidden=hidden, architecture=arch))  # type: ignore[arg-type]
    n = sum(p.numel() for p in s.parameters())
    assert dense == mlp_params([39 + 1 + tasks, *hidden, 8])
    assert abs(n - dense) <= 0.1 * dense, (n, dense)


@pytest.mark.parametrize("cls", [MultiHeadStudent, MoEStudent])
def test_multitask_students_round_trip_predict_and_export(cls: type, tmp_path: Path) -> None:
    student = StudentConfig(hidden=(32, 32), architecture=cls.architecture)
    run = GeneralistRun(_two_task_config(total_steps=800, rounds=2, student=student))
    run.learn()
    assert type(run.student) is cls
    path = run.save(tmp_path / "s")
    s = load_student(path)
    assert type(s.student) is cls
    obs = _obs(5)
    for task in ("toward", "away", UNSEEN_TASK):
        np.testing.assert_array_equal(s.predict(obs, task=task), run.deployed().predict(obs, task=task))
    # the fast per-token policy equals the generic forward
    with torch.inference_mode():
        e = s.table.id("point", "away")
        fast = s.student.policy(e)(torch.from_numpy(obs.astype(np.float32)))
        generic = s.student.act(torch.from_numpy(obs.astype(np.float32)), torch.full((5,), e))
    if cls is MoEStudent:  # its fast path folds the token into biases: equal up to rounding
        np.testing.assert_allclose(fast.numpy(), generic.numpy(), atol=1e-5)
    else:
        np.testing.assert_array_equal(fast.numpy(), generic.numpy())
    with torch.no_grad():  # the fast path follows weight and statistics updates
        for p in s.student.parameters():
            p.add_(0.01 * torch.randn_like(p))
        s.student.update_normalizer(obs * 3.0 + 1.0, e)
    with torch.inference_mode():
        fast = s.student.policy(e)(torch.from_numpy(obs.astype(np.float32)))
        generic = s.student.act(torch.from_numpy(obs.astype(np.float32)), torch.full((5,), e))
    np.testing.assert_allclose(fast.numpy(), generic.numpy(), atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    onnx = s.export(tmp_path / "away.onnx", embodiment="point", task="away")
    sess = ort.InferenceSession(str(onnx))
    got = sess.run(None, {"obs": obs.astype(np.float32)})[0]
    np.testing.assert_allclose(got, s.predict(obs, task="away"), atol=1e-5)
    with pytest.raises(ConfigError, match="task"):
        s.export(tmp_path / "x.onnx")


def test_an_architecture_other_kinds_do_not_build_is_a_config_error() -> None:
    from polydistill.students import GeneralistStudent

    with pytest.raises(ConfigError, match="architecture"):
        GeneralistStudent(_table(2), StudentConfig(architecture="moe"))
    with pytest.raises(ConfigError, match="architecture"):
        StudentConfig(architecture="transformer")  # type: ignore[arg-type]


def test_a_run_state_from_before_the_new_config_fields_still_loads() -> None:
    run = GeneralistRun(_two_task_config(total_steps=400, rounds=2))
    run.learn(max_rounds=1)
    state = run.state_dict()
    old = dict(state["config"])
    del old["success_key"]
    old["student"] = {k: v for k, v in old["student"].items() if k not in ("architecture", "experts")}
    old["tasks"] = [{k: v for k, v in t.items() if k != "task"} for t in old["tasks"]]
    fresh = GeneralistRun(_two_task_config(total_steps=400, rounds=2, success_key=None,
                                           tasks=tuple(dataclasses.replace(t, task=None)
                                                       for t in _two_task_config().tasks)))
    fresh.load_state_dict({**fresh.state_dict(), "config": old})  # defaults fill the missing fields
    with pytest.raises(polydistill.CheckpointError, match="another config"):
        run.load_state_dict({**state, "config": {**old, "rounds": 7}})
    run.close()
    fresh.close()


def test_env_namespaces_import_their_package_name_the_extra_and_wrap(monkeypatch: pytest.MonkeyPatch) -> None:
    import gymnasium as gym

    from polydistill import utils
    from polydistill.errors import ConfigError

    missing = utils.EnvNamespace("polydistill_no_such_pkg", "nowhere")
    monkeypatch.setitem(utils.ENV_NAMESPACES, "Nowhere", missing)
    with pytest.raises(ConfigError, match=r"polydistill_no_such_pkg.*pip install -e \"\.\[nowhere\]\""):
        utils.make_env("Nowhere/Task-v0")
    monkeypatch.setitem(utils.ENV_NAMESPACES, "polydistill", utils.EnvNamespace(
        "polydistill.envs", "test", "gymnasium.wrappers:RecordEpisodeStatistics"))
    env = utils.make_env("polydistill/Hopper-v0")
    assert isinstance(env, gym.wrappers.RecordEpisodeStatistics)
    env.close()
    broken = utils.EnvNamespace("polydistill.envs", "test", "polydistill.envs:NoSuchWrapper")
    monkeypatch.setitem(utils.ENV_NAMESPACES, "polydistill", broken)
    with pytest.raises(ConfigError, match="NoSuchWrapper"):
        utils.make_env("polydistill/Hopper-v0")
    with pytest.raises(ConfigError, match="module:Name"):
        utils.EnvNamespace("x", "x", "no_colon")
