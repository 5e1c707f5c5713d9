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
