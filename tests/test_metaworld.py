"""Meta-World (the ``metaworld`` extra): recipes, scripted experts as teachers, a small distillation.

CI runs this file in a second virtual environment with ``.[test,metaworld]`` (``mujoco==3.3.0``);
in the default environment it is skipped.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

metaworld = pytest.importorskip("metaworld")
pytestmark = pytest.mark.metaworld

from polydistill.config import from_dict  # noqa: E402
from polydistill.evaluation.episodes import evaluate  # noqa: E402
from polydistill.evaluation.report import EvalOptions  # noqa: E402
from polydistill.setups import read_recipe  # noqa: E402
from polydistill.setups.generalist import GeneralistConfig, GeneralistRun  # noqa: E402
from polydistill.students import StudentConfig  # noqa: E402
from polydistill.teachers import PolicyTeacher, load_teacher  # noqa: E402
from polydistill.utils import agents_dir, make_env  # noqa: E402

SUITES = {"mt10": 10, "mt50": 50}


def _config(suite: str) -> GeneralistConfig:
    setup, recipe = read_recipe(agents_dir() / f"metaworld_{suite}.yaml")
    assert setup.name == "generalist"
    return from_dict(GeneralistConfig, recipe)


@pytest.mark.parametrize(("suite", "n"), SUITES.items())
def test_recipes_list_every_task_on_one_sawyer_with_its_scripted_expert(suite: str, n: int) -> None:
    import metaworld.env_dict as d

    cfg = _config(suite)
    names = [t.name for t in cfg.tasks]
    want = d.MT10_V3 if suite == "mt10" else d.MT50_V3
    assert len(names) == n and set(names) == set(want)
    assert cfg.success_key == "success"
    for t in cfg.tasks:
        assert (t.env_id, t.embodiment, t.task, t.env_kwargs["env_name"]) == ("Meta-World/MT1", "sawyer",
                                                                               t.name, t.name)
        module, name = t.teacher.split(":")
        assert module == "metaworld.policies" and hasattr(importlib.import_module(module), name)


@pytest.mark.parametrize("task", list(__import__("metaworld.env_dict").env_dict.MT10_V3))
def test_scripted_experts_solve_their_mt10_task_through_the_teacher_interface(task: str) -> None:
    cfg = _config("mt10")
    t = next(x for x in cfg.tasks if x.name == task)
    env = make_env(t.env_id, t.env_kwargs)
    teacher = load_teacher(t.teacher, env.observation_space, env.action_space)
    env.close()
    assert isinstance(teacher, PolicyTeacher) and teacher.per_row
    r = evaluate(t.env_id, teacher.act, n_episodes=4, n_envs=2, env_kwargs=t.env_kwargs,
                 success_key="success")
    # the experts are not perfect: peg-insert-side-v3's misses some goals (measured 0.5-0.8)
    assert r.success_rate is not None and r.success_rate >= 0.5, (task, r.successes)


def test_goals_come_from_the_env_seed_so_evaluation_can_use_unseen_ones() -> None:
    def goals(seed: int) -> set[tuple[float, ...]]:
        env = make_env("Meta-World/MT1", {"env_name": "reach-v3", "seed": seed})
        out = {tuple(np.round(env.reset(seed=k)[0][36:39], 6)) for k in range(20)}
        env.close()
        return out

    train, held_out = goals(0), goals(1000)
    assert len(train) > 5 and not train & held_out


def test_every_env_copy_draws_its_first_goal_from_its_reset_seed() -> None:
    firsts = []
    for k in range(4):
        env = make_env("Meta-World/MT1", {"env_name": "reach-v3", "seed": 0})
        firsts.append(tuple(np.round(env.reset(seed=100 + k)[0][36:39], 6)))
        env.close()
    again = make_env("Meta-World/MT1", {"env_name": "reach-v3", "seed": 0})
    assert len(set(firsts)) > 1 and tuple(np.round(again.reset(seed=100)[0][36:39], 6)) == firsts[0]


def test_a_small_mt10_distillation_runs_and_reports_success(tmp_path: Path) -> None:
    cfg = _config("mt10")
    tasks = tuple(t for t in cfg.tasks if t.name in ("reach-v3", "drawer-close-v3"))
    student = StudentConfig(hidden=(64, 64), architecture="moe")
    run = GeneralistRun(GeneralistConfig(tasks=tasks, total_steps=4000, rounds=2, n_envs=2,
                                         updates_per_step=0.1, success_key="success", student=student))
    run.learn()
    assert run.table.has_tasks and run.table.names == ["sawyer"]
    student = __import__("polydistill").load_student(run.save(tmp_path / "s"))
    assert student.tasks == ["reach-v3", "drawer-close-v3"]
    rows = GeneralistRun.evaluate_student(student, EvalOptions(episodes=2, env_kwargs=(("seed", 1000),)))
    assert [r.name for r in rows] == ["reach-v3", "drawer-close-v3"]
    for r in rows:
        assert r.extra["teacher_success"] == 1.0 and 0.0 <= r.extra["success"] <= 1.0


def test_the_bc_baseline_can_run_on_fewer_seeds_than_the_students() -> None:
    from polydistill.bench import BenchOptions
    from polydistill.bench.metaworld import grid

    _, methods, _, jobs = grid(BenchOptions(suite="mt10", seeds=3, bc_seeds=1))
    runs = {m: sorted(j[1] for j in jobs if j[2] == m) for m in methods}
    assert runs == {"dense": [0, 1, 2], "multihead": [0, 1, 2], "moe": [0, 1, 2], "bc": [0]}
    _, _, _, same = grid(BenchOptions(suite="mt10", seeds=3))
    assert sorted(j[1] for j in same if j[2] == "bc") == [0, 1, 2]


def test_finetuning_a_metaworld_student_tracks_success_and_keeps_a_scripted_teacher_as_reference(
        tmp_path: Path) -> None:
    from polydistill.finetune import finetune, load_finetune_config

    cfg = _config("mt10")
    tasks = tuple(t for t in cfg.tasks if t.name == "reach-v3")
    run = GeneralistRun(GeneralistConfig(tasks=tasks, total_steps=2000, rounds=1, n_envs=2,
                                         updates_per_step=0.1, success_key="success",
                                         student=StudentConfig(hidden=(32, 32), architecture="moe")))
    run.learn()
    path = run.save(tmp_path / "s")
    ft = load_finetune_config(overrides={"n_envs": 2, "n_steps": 250, "batch_size": 250, "n_epochs": 2,
                                         "critic_warmup_steps": 500, "eval_every": 500, "eval_episodes": 2,
                                         "confirm_episodes": 2, "log_std_init": -1.5})
    summary = finetune(path, tmp_path / "ft", steps=1500, config=ft, progress_bar=False)
    # the student's recipe names the success key: every evaluation records success beside the return
    assert summary["success_key"] == "success"
    assert all(set(c["success"]) == {"reach-v3"} and 0.0 <= c["success"]["reach-v3"] <= 1.0
               for c in summary["curve"])
    assert summary["success_before"]["reach-v3"] == summary["curve"][0]["success"]["reach-v3"]
    # a scripted expert has no distribution: the regulariser pulls the mean toward its action
    assert summary["references"] == {"reach-v3": "teacher"}
    # a constant starting log-std (here -1.5), times std_scale, on the MoE student too (no head fit)
    start = -1.5 + np.log(ft.std_scale)
    assert summary["exploration_log_std"]["reach-v3"] == pytest.approx([start] * 4, abs=0.05)
    deployed = __import__("polydistill").load_student(tmp_path / "ft")
    assert [s["stage"] for s in deployed.metadata["stages"]] == ["distill", "finetune"]
    obs, _ = make_env("Meta-World/MT1", {"env_name": "reach-v3", "seed": 0}).reset(seed=0)
    assert np.isfinite(deployed.predict(obs, embodiment="sawyer", task="reach-v3")).all()
    # evaluate reports the pre-fine-tuning student's success beside the fine-tuned one's
    from polydistill.finetune.run import add_pre_finetune
    from polydistill.setups import get_setup

    options, setup = EvalOptions(episodes=2), get_setup("generalist")
    rows = add_pre_finetune(setup.evaluate(deployed, options), tmp_path / "ft", setup, options)
    assert [r.name for r in rows] == ["reach-v3"]
    assert 0.0 <= rows[0].extra["before_success"] <= 1.0 and 0.0 <= rows[0].extra["success"] <= 1.0
