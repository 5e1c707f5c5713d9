"""RL fine-tuning of distilled students (``polydistill finetune``) on a tiny world with a timid teacher."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import finetune_fixture as fx  # noqa: E402  (tests/ is on sys.path; registers the test ids)
import numpy as np
import pytest
import torch

from polydistill.buffer import BufferConfig
from polydistill.cli import main
from polydistill.deploy.checkpoint import load_student
from polydistill.distill.distiller import DistillerConfig
from polydistill.envs.families import get_family
from polydistill.errors import ConfigError
from polydistill.evaluation import evaluate
from polydistill.finetune import (
    PRE_FINETUNE,
    FinetuneConfig,
    finetune,
    load_finetune_config,
    resolve_finetune_tasks,
)
from polydistill.finetune.config import RegularizerConfig
from polydistill.finetune.policy import StudentActorCritic, TokenRouted
from polydistill.finetune.ppo import KickstartPPO, gaussian_kl
from polydistill.finetune.run import _Route, _student_reference
from polydistill.setups.generalist import GeneralistConfig, GeneralistRun, TaskConfig
from polydistill.students import StudentConfig
from polydistill.utils import make_env

TEACHER = "finetune_fixture:timid_teacher"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> Path:
    """A student of two bodies (observations of 2 and 4 values) distilled from the timid teacher."""
    cfg = GeneralistConfig(
        tasks=(TaskConfig("reach", fx.ENV_ID, TEACHER, "point"),
               TaskConfig("reach-wide", fx.WIDE_ENV_ID, TEACHER, "wide")),
        total_steps=4000, rounds=3, n_envs=4, updates_per_step=0.5, seed=0,
        student=StudentConfig(hidden=(64, 64)), distiller=DistillerConfig(batch_size=128, lr=1e-3),
        buffer=BufferConfig(capacity=4000))
    run = GeneralistRun(cfg, progress_bar=False)
    run.learn()
    path = run.save(tmp_path_factory.mktemp("distilled") / "student")
    run.close()
    return path


def _small(**fields) -> FinetuneConfig:  # noqa: ANN003
    base = dict(n_envs=4, n_steps=128, batch_size=128, critic_warmup_steps=2000, eval_every=4000,
                eval_episodes=10, regularizer=RegularizerConfig(decay_steps=5000))
    return FinetuneConfig(**{**base, **fields})


def _returns(path: Path, seed: int = 123) -> dict[str, float]:
    s = load_student(path)
    return {name: evaluate(env, lambda o, e=emb: s.predict(o, embodiment=e), n_episodes=20,
                           seed=seed).mean_return
            for name, env, emb in (("reach", fx.ENV_ID, "point"), ("reach-wide", fx.WIDE_ENV_ID, "wide"))}


@pytest.mark.slow
def test_finetuning_improves_a_distilled_student_on_every_task(distilled: Path, tmp_path: Path) -> None:
    before = _returns(distilled)
    teacher = evaluate(fx.ENV_ID, fx.timid_teacher, n_episodes=20, seed=123).mean_return
    assert before["reach"] == pytest.approx(teacher, abs=0.25), "distillation copies the timid teacher"
    summary = finetune(distilled, tmp_path / "ft", steps=32_000, config=_small(), progress_bar=False)
    after = _returns(tmp_path / "ft")
    for name in before:  # the best policy gets ~-1.4, the teacher ~-2.3 (fresh seeds, not the run's)
        assert after[name] > before[name] + 0.3, (name, before[name], after[name])
    meta = load_student(tmp_path / "ft").metadata
    assert [s["stage"] for s in meta["stages"]] == ["distill", "finetune"]
    assert meta["stages"][1]["references"] == {"reach": "teacher", "reach-wide": "teacher"}
    assert meta["tasks"] == load_student(distilled).metadata["tasks"]  # the distillation record is kept
    assert summary["curve"][0]["step"] == 0 and summary["curve"][-1]["step"] == summary["steps"]
    assert 30_000 < summary["steps"] <= 32_000  # whole rollouts, never past --steps
    assert summary["regularizer_decay_steps"] == 5000  # the recipe's span, as given
    assert (tmp_path / "ft" / PRE_FINETUNE).read_bytes() == Path(distilled).read_bytes()
    assert json.loads((tmp_path / "ft" / "finetune.json").read_text())["kept_step"] == summary["kept_step"]
    assert list((tmp_path / "ft" / "tb").iterdir())


def _model(student, warmup: int, references=(), coef: float = 0.0,  # noqa: ANN001
           log_std: np.ndarray | None = None) -> KickstartPPO:
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: TokenRouted(make_env(fx.ENV_ID), student.table, 0)] * 2)
    return KickstartPPO(StudentActorCritic, venv, n_steps=128, batch_size=64, n_epochs=2, seed=0,
                        device="cpu",
                        policy_kwargs={"student": student, "actor_lr": 1e-3, "log_std": log_std},
                        critic_warmup_steps=warmup,
                        references=list(references), obs_dims=[2, 2], action_dims=[1, 1],
                        regularizer=RegularizerConfig(coef=coef))


def test_critic_warmup_leaves_the_actor_bit_identical(distilled: Path) -> None:
    student = copy.deepcopy(load_student(distilled).student).train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    model = _model(student, warmup=10**9)
    critic = [p.detach().clone() for p in model.policy.critic.parameters()]
    model.learn(1024)
    for k, v in student.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(critic, model.policy.critic.parameters(), strict=True))
    # ... and once the warm-up is over, the actor moves.
    model.critic_warmup_steps = 0
    model.learn(512, reset_num_timesteps=False)
    after = student.state_dict()
    assert any(not torch.equal(v, before[k]) for k, v in after.items() if v.is_floating_point())


def test_parameter_exploration_is_state_independent_and_frozen_in_the_warmup(distilled: Path) -> None:
    student = copy.deepcopy(load_student(distilled).student).train()
    start = np.array([[-1.5], [-0.7]], np.float32)  # token rows point, wide
    model = _model(student, warmup=10**9, log_std=start)
    obs = np.random.default_rng(0).uniform(-1, 1, (32, 2)).astype(np.float32)
    routed = torch.from_numpy(np.concatenate([obs, np.zeros((32, 3), np.float32)], 1))  # row 0
    _, log_std, _ = model.policy.student_output(routed)
    assert torch.equal(log_std, torch.full((32, 1), -1.5))  # whatever the state
    model.learn(512)
    assert np.array_equal(model.policy.log_std.detach().numpy(), start)  # frozen with the actor
    model.critic_warmup_steps = 0
    model.learn(512, reset_num_timesteps=False)
    moved = model.policy.log_std.detach().numpy()
    assert moved[0, 0] != start[0, 0] and np.array_equal(moved[1], start[1])  # only the row that acted
    with pytest.raises(ConfigError, match="token rows, actions"):
        _model(student, warmup=0, log_std=np.zeros((2, 2), np.float32))


def test_teacher_kl_is_zero_when_the_student_equals_the_teacher(distilled: Path) -> None:
    student = copy.deepcopy(load_student(distilled).student)
    policy = _model(student, warmup=0).policy
    obs = np.random.default_rng(0).uniform(-1, 1, (64, 2)).astype(np.float32)
    routed = torch.from_numpy(np.concatenate([obs, np.zeros((64, 3), np.float32)], 1))  # padded to 4, row 0
    ref_mean, ref_log_std = (torch.from_numpy(x) for x in _student_reference(student, _Route(0))(obs))
    mean, log_std, _ = policy.student_output(routed)
    mask = torch.ones_like(mean)
    kl = gaussian_kl(ref_mean, ref_log_std, mean[:, :1], log_std[:, :1], mask[:, :1])
    assert torch.all(kl.abs() < 1e-6), kl.abs().max()
    with torch.no_grad():
        student.head.bias[0] += 0.3  # move the mean: the pull is positive
    mean, log_std, _ = policy.student_output(routed)
    assert torch.all(gaussian_kl(ref_mean, ref_log_std, mean[:, :1], log_std[:, :1], mask[:, :1]) > 1e-3)


def test_kickstarting_weight_decays_on_its_schedule() -> None:
    lin = RegularizerConfig(coef=2.0, decay="linear", decay_steps=100)
    assert [lin.weight(t) for t in (0, 50, 100, 200)] == [2.0, 1.0, 0.0, 0.0]
    exp = RegularizerConfig(coef=1.0, decay="exponential", decay_steps=100)
    assert exp.weight(25) == pytest.approx(0.5)
    assert RegularizerConfig(coef=0.5, decay="constant").weight(10**9) == 0.5
    run = RegularizerConfig(coef=1.0, decay="linear", decay_steps="run")
    with pytest.raises(ConfigError, match="resolved by the run"):
        run.weight(0)  # 'run' means nothing until the run knows its length
    assert run.for_run(400).weight(200) == 0.5 and lin.for_run(400) is lin
    with pytest.raises(ConfigError, match="decay_steps"):
        RegularizerConfig(decay_steps=0)


@pytest.mark.slow
def test_finetuned_checkpoint_loads_with_torch_only_and_exports_to_onnx(distilled: Path,
                                                                        tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    out = tmp_path / "ft"
    cfg = _small(critic_warmup_steps=1000, eval_every=0, eval_episodes=2, select="last")
    finetune(distilled, out, steps=3000, config=cfg, progress_bar=False)
    code = ("import sys; sys.modules['stable_baselines3'] = None; sys.modules['gymnasium'] = None\n"
            "import numpy as np\nfrom polydistill.deploy.checkpoint import load_student\n"
            f"s = load_student({str(out)!r})\n"
            "print(float(s.predict(np.array([0.5, 1.0], np.float32), embodiment='point')[0]))\n"
            "assert 'stable_baselines3' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    s = load_student(out)
    expected = float(s.predict(np.array([0.5, 1.0]), embodiment="point")[0])
    assert float(res.stdout.split()[-1]) == pytest.approx(expected)
    for emb, dim in (("point", 2), ("wide", 4)):
        obs = np.random.default_rng(1).uniform(-1, 1, (16, dim)).astype(np.float32)
        path = s.export(tmp_path / f"{emb}.onnx", embodiment=emb)
        got = ort.InferenceSession(str(path)).run(None, {"obs": obs})[0]
        np.testing.assert_allclose(got, s.predict(obs, embodiment=emb), atol=1e-5, rtol=0)


@pytest.mark.parametrize("args, message", [
    (["--task", "nope"], "unknown task(s) ['nope']"),
    (["--env-id", fx.ENV_ID, "--embodiment", "hopper"], "needs embodiment 'hopper'"),
    (["--steps", "0"], "--steps must be > 0"),
    (["--steps", "-5"], "--steps must be > 0"),
    (["--set", "regularizer.coef=-1"], "regularizer.coef must be >= 0"),
])
def test_bad_finetune_input_exits_2_with_one_error_line(distilled: Path, tmp_path: Path, capsys, args,  # noqa: ANN001
                                                        message: str) -> None:
    argv = ["finetune", "--student", str(distilled), "--out", str(tmp_path / "ft")]
    if "--steps" not in args:
        argv += ["--steps", "1000"]
    assert main(argv + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "ft").exists()


def test_tasks_resolve_from_the_student_or_an_env_id(distilled: Path) -> None:
    s = load_student(distilled)
    assert [t.name for t in resolve_finetune_tasks(s)] == ["reach", "reach-wide"]
    (t,) = resolve_finetune_tasks(s, ["reach-wide"])
    assert (t.embodiment, t.teacher, t.split) == ("wide", TEACHER, "train")
    (t,) = resolve_finetune_tasks(s, env_id=fx.ENV_ID, embodiment="point")
    assert t.teacher is None and t.embodiment == "point"
    with pytest.raises(ConfigError, match="--embodiment is required"):
        resolve_finetune_tasks(s, env_id=fx.ENV_ID)


def test_the_shipped_recipe_loads_and_bad_fields_are_refused(tmp_path: Path) -> None:
    cfg = load_finetune_config()
    assert cfg.critic_warmup_steps > 0 and cfg.regularizer.coef > 0 and cfg.log_std_init == "teacher"
    assert load_finetune_config(None, ["regularizer.coef=0"]).regularizer.coef == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_envs: 4\nactor_lr: 1e-4\n")
    with pytest.raises(ConfigError, match="actor_lr"):
        load_finetune_config(bad)
    with pytest.raises(ConfigError, match="select"):
        FinetuneConfig(select="median")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="log_std_init"):
        FinetuneConfig(log_std_init="wide")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="std_scale_no_teacher"):
        FinetuneConfig(std_scale_no_teacher=0.0)
    with pytest.raises(ConfigError, match="exploration"):
        FinetuneConfig(exploration="noisy")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no_teacher"):
        load_finetune_config(None, ["regularizer.no_teacher=teacher"])


def test_log_std_fit_matches_the_teachers_noise_and_leaves_the_mean_alone(distilled: Path,
                                                                          monkeypatch) -> None:  # noqa: ANN001
    import polydistill.finetune.run as ft

    def gaussian_teacher(spec: str, task):  # noqa: ANN001, ANN202  (a teacher whose noise depends on x)
        return lambda obs: (fx.timid_teacher(obs), -1.0 - 0.5 * np.abs(obs[:, :1]))

    monkeypatch.setattr(ft, "_teacher_reference", gaussian_teacher)
    s = load_student(distilled)
    student = ft._fresh_copy(s.student)
    tasks = resolve_finetune_tasks(s)
    rows = [student.table.id(t.embodiment) for t in tasks]
    obs = np.random.default_rng(0).uniform(-1, 1, (256, 2)).astype(np.float32)
    obs[:, 1] = 1.0
    x, e = torch.from_numpy(student.table.pad_obs(obs, rows[0])), torch.zeros(256, dtype=torch.long) + rows[0]
    mean_before = student(x, e).mean.detach().clone()
    assert ft._fit_log_std(student, tasks, [ft._route(student, t) for t in tasks], tasks) == \
        {t.name: TEACHER for t in tasks}
    out = student(x, e)
    assert torch.equal(out.mean.detach(), mean_before)
    err = (out.log_std[:, 0].detach().numpy() - (-1.0 - 0.5 * np.abs(obs[:, 0]))).__abs__()
    assert err.mean() < 0.1, err.mean()  # fitted on the student's own states, checked on these


@pytest.mark.slow
def test_evaluate_reports_the_student_before_fine_tuning(distilled: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "ft"
    finetune(distilled, out, steps=2048, config=_small(critic_warmup_steps=0, eval_every=0, eval_episodes=2),
             progress_bar=False)
    assert main(["evaluate", "--student", str(out), "--episodes", "4"]) == 0
    table = capsys.readouterr().out
    assert "before" in table and "before_ratio" in table
    row = next(line for line in table.splitlines() if line.startswith("| reach |"))
    assert row.count("|") == 9  # task, split, token, teacher, student, ratio, before, before_ratio


@pytest.mark.slow
def test_finetune_benchmark_reports_every_column_within_the_budget(tmp_path: Path) -> None:
    from polydistill.bench import BenchOptions, run_benchmark

    out = tmp_path / "r.json"
    rep = run_benchmark("finetune", BenchOptions(seeds=1, out=str(out), quick=True, workers=1,
                                                 envs=("swimmer", "swimmer-long"), progress_bar=False))
    assert rep["setup"] == "finetune" and rep["seeds"] == 1 and 0 < rep["budget_fraction"] <= 0.1
    by = {t["name"]: t for t in rep["tasks"]}
    assert (by["swimmer"]["split"], by["swimmer-long"]["split"]) == ("train", "heldout")
    for t in rep["tasks"]:
        for key in ("teacher_return", "distilled_ratio", "finetuned_ratio", "finetuned_ratio_std"):
            assert np.isfinite(t[key]), (t["name"], key)
        assert 0 < t["finetune_steps"] <= rep["budget_fraction"] * t["specialist_steps"]
        done = json.loads((tmp_path / "r-runs" / rep["suite"] / f"ft-{t['name']}-seed0" / "finetune.json")
                          .read_text())
        assert done["steps"] <= t["finetune_steps"]  # whole rollouts, never past the budget
    assert np.isfinite(by["swimmer"]["scratch_ratio"]) and by["swimmer-long"]["scratch_ratio"] is None
    assert set(by["swimmer"]["ablations"]) == {"no_regularizer", "no_warmup"}
    assert out.with_suffix(".md").read_text().count("| swimmer") == 2
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_scratch_baseline_trains_on_the_task_itself_not_on_its_teachers_family() -> None:
    from polydistill.bench.finetune import _budget, _scratch_recipe
    from polydistill.evaluation.report import suite_eval_tasks
    from polydistill.setups.generalist import default_teachers_dir

    tasks = {t.name: t for t in suite_eval_tasks("locomotion-sizes", str(default_teachers_dir()))}
    for name in ("hopper-heavy", "hopper-sizes", "cheetah-vel2", "swimmer"):
        task = tasks[name]
        specialist, budget = _budget(task, 0.1)
        env_id, recipe = _scratch_recipe(task, budget)
        manifest = json.loads((Path(task.teacher or "") / "manifest.json").read_text())
        assert env_id == task.env_id and recipe.env_kwargs == dict(task.env_kwargs), name
        assert recipe.train_env_kwargs == {} and recipe.algo == manifest["recipe"]["algo"], name
        assert 0 < recipe.n_timesteps <= budget == round(0.1 * specialist), name
    # a family-labelled task: the teacher trained over the family, the baseline on the one body
    assert dict(tasks["hopper-heavy"].env_kwargs) == {"body": {"length": 1.0, "mass": 1.3}}


def test_best_student_is_kept_only_if_it_also_beats_the_start_on_fresh_seeds(  # noqa: ANN001
        distilled: Path, tmp_path: Path, monkeypatch) -> None:
    import polydistill.finetune.run as ft

    calls = {"periodic": 0}

    def fake(student, tasks, rows, episodes, seed=ft.EVAL_SEED, success_key=None):  # noqa: ANN001
        assert success_key is None  # the pendulum student records no success key
        if seed == ft.EVAL_SEED:  # periodic evaluations: every one looks better than the start
            calls["periodic"] += 1
            return {t.name: float(calls["periodic"]) for t in tasks}, None
        # fresh seeds: the start (the distilled weights) wins
        same = all(torch.equal(v, w) for v, w in zip(student.state_dict().values(),
                                                     load_student(distilled).student.state_dict().values(),
                                                     strict=True))
        return {t.name: 1.0 if same else 0.0 for t in tasks}, None

    monkeypatch.setattr(ft, "_evaluate_tasks", fake)
    cfg = _small(critic_warmup_steps=500, eval_every=1000, log_std_init="student")
    summary = ft.finetune(distilled, tmp_path / "a", steps=3000, config=cfg, progress_bar=False)
    assert summary["confirm"]["confirmed"] is False and summary["kept_step"] == 0
    kept, base = load_student(tmp_path / "a").student, load_student(distilled).student
    assert all(torch.equal(v, w) for v, w in zip(kept.state_dict().values(), base.state_dict().values(),
                                                 strict=True))
    cfg = _small(critic_warmup_steps=500, eval_every=1000, log_std_init="student", confirm_episodes=0)
    summary = ft.finetune(distilled, tmp_path / "b", steps=3000, config=cfg, progress_bar=False)
    assert summary["confirm"] is None and summary["kept_step"] > 0  # unchecked: the best evaluation wins


def test_selection_ranks_success_before_return() -> None:
    from polydistill.finetune.run import _score

    start = ({"a": 100.0, "b": 50.0}, {"a": 0.5, "b": 0.5})
    more_success = ({"a": 80.0, "b": 40.0}, {"a": 0.7, "b": 0.5})
    more_return = ({"a": 200.0, "b": 100.0}, {"a": 0.5, "b": 0.4})
    # less return but more success beats far more return with less success
    assert _score(more_success, start) > (0.0, 0.0) > _score(more_return, start)
    assert _score(more_success, start)[0] == pytest.approx(0.1)
    assert _score(more_return, start)[0] == pytest.approx(-0.05) and _score(more_return, start) < (0.0, 0.0)
    # without a success key, only the relative return counts
    assert _score(({"a": 110.0}, None), ({"a": 100.0}, None)) == pytest.approx((0.0, 0.1))


# ------------------------------------------------------------------ morphology students (body families)
SWIM_TRAIN, SWIM_HELD = ("swimmer-train-02", "swimmer-train-05"), "swimmer-interp-00"  # 4, 2 and 4 joints


@pytest.fixture(scope="module")
def swimmer_students(tmp_path_factory) -> dict[str, Path]:  # noqa: ANN001
    """Tiny swimmer-family students (two training bodies of different joint counts), per kind."""
    from polydistill.setups.morphology import MorphologyConfig, MorphologyRun

    out = {}
    for kind in ("token", "descriptor", "history", "joints"):
        cfg = MorphologyConfig(family="swimmer", bodies=SWIM_TRAIN, total_steps=1200, rounds=2, n_envs=2,
                               updates_per_step=0.05, distiller=DistillerConfig(batch_size=32),
                               student=StudentConfig(hidden=(32, 32), kind=kind, history=3),
                               buffer=BufferConfig(capacity=1200))
        run = MorphologyRun(cfg, progress_bar=False)
        run.learn()
        out[kind] = run.save(tmp_path_factory.mktemp(kind) / "s")
        run.close()
    return out


@pytest.mark.parametrize("kind", ["token", "descriptor", "joints"])
def test_the_routed_view_gives_a_morphology_student_what_predict_gives_it(  # noqa: ANN201
        swimmer_students, kind: str):  # noqa: ANN001
    import polydistill.finetune.run as ft
    from polydistill.finetune.policy import StudentInput

    deployed = load_student(swimmer_students[kind])
    student = deployed.student
    view = StudentInput(student)
    for t in resolve_finetune_tasks(deployed, [*SWIM_TRAIN, SWIM_HELD]):
        route = ft._route(student, t)
        env = TokenRouted(make_env(t.env_id, dict(t.env_kwargs)), student.table, route.row, route.body,
                          route.obs_dim)
        obs, _ = env.reset(seed=0)
        raw, _ = env.env.reset(seed=0)
        got, _, emb = view.split(torch.from_numpy(obs[None]))
        want, want_emb, _ = student.prepare(raw[None], body=route.body)
        assert torch.equal(emb, want_emb)
        if isinstance(want, dict):
            assert all(torch.equal(got[k], want[k]) for k in want)
        else:
            assert torch.equal(got, want)
        env.close()


def test_a_morphology_student_fine_tunes_on_training_and_held_out_bodies(  # noqa: ANN201
        swimmer_students, tmp_path: Path):  # noqa: ANN001
    path = swimmer_students["descriptor"]
    deployed = load_student(path)
    tasks = resolve_finetune_tasks(deployed, [*SWIM_TRAIN, SWIM_HELD])
    assert [t.split for t in tasks] == ["train", "train", "interp"]
    summary = finetune(path, tmp_path / "ft", tasks, steps=3 * 2 * 64 * 3,
                       config=_small(n_steps=64, batch_size=64, critic_warmup_steps=0, eval_every=0,
                                     eval_episodes=1, confirm_episodes=0, select="last"),
                       progress_bar=False)
    # training bodies are held to the family teacher; the held-out one is free, and explores
    # with the family teacher's noise on its own body (it shares a layout with a training body)
    assert summary["references"] == {SWIM_TRAIN[0]: "teacher", SWIM_TRAIN[1]: "teacher", SWIM_HELD: "none"}
    assert all(v is not None for v in summary["log_std_from"].values())
    tuned = load_student(tmp_path / "ft")
    assert tuned.student.kind == "descriptor" and [s["stage"] for s in tuned.metadata["stages"]] == \
        ["distill", "finetune"]
    before = load_student(tmp_path / "ft" / "pre_finetune.safetensors")
    obs = make_env(tasks[2].env_id, dict(tasks[2].env_kwargs)).reset(seed=0)[0]
    desc = get_family("swimmer").descriptor(dict(tasks[2].env_kwargs)["body"])
    a, b = tuned.predict(obs, body=desc), before.predict(obs, body=desc)
    assert np.isfinite(a).all() and not np.array_equal(a, b)  # it moved, and deploys with body=


def test_the_routed_history_is_the_one_distillation_and_predict_build(swimmer_students) -> None:  # noqa: ANN001
    """Rows ``[padded observation, executed action, 1]``, oldest first; a reset empties them."""
    import polydistill.finetune.run as ft
    from polydistill.finetune.policy import StudentInput

    deployed = load_student(swimmer_students["history"])
    student = deployed.student
    view = StudentInput(student)
    t = resolve_finetune_tasks(deployed, [SWIM_TRAIN[1]])[0]  # 2 joints: padded into the 4-joint layout
    route = ft._route(student, t)
    env = TokenRouted(make_env(t.env_id, dict(t.env_kwargs)), student.table, route.row, None, route.obs_dim,
                      history=ft._routed_history(student, route, t))
    obs, _ = env.reset(seed=0)
    raw, _ = env.env.reset(seed=0)
    rng = np.random.default_rng(0)
    deployed.reset()
    for step in range(5):
        x, _, emb = view.split(torch.from_numpy(obs[None]))
        want, want_emb, _ = student.prepare(raw[None], body=route.body)
        assert torch.equal(emb, want_emb) and torch.equal(x["obs"], want["obs"])
        # the history the deployed student holds for this step (its state before acting)
        held = torch.zeros_like(x["hist"]) if deployed._state is None else deployed._state
        assert torch.allclose(x["hist"], held), step
        a = deployed.predict(raw)  # its own action, executed: the deployed history pushes the same
        assert a.shape == (2,)
        obs, *_ = env.step(np.concatenate([a, rng.normal(size=2)]))  # padding beyond the body is cut
        raw = obs[: route.obs_dim]  # the routed observation starts with the raw one
    assert (x["hist"][0, :, -1] == 1).all()  # after 4 steps of k=3 every row is real
    env.reset(seed=1)
    assert not env.history.rows.any()
    env.close()


def test_history_and_joints_students_fine_tune_and_deploy(swimmer_students, tmp_path: Path) -> None:  # noqa: ANN001
    for kind in ("history", "joints"):
        path = swimmer_students[kind]
        tasks = resolve_finetune_tasks(load_student(path), [*SWIM_TRAIN, SWIM_HELD])
        summary = finetune(path, tmp_path / kind, tasks, steps=3 * 2 * 64 * 2,
                           config=_small(n_steps=64, batch_size=64, critic_warmup_steps=0, eval_every=0,
                                         eval_episodes=1, confirm_episodes=0, select="last",
                                         regularizer=RegularizerConfig(decay_steps="run")),
                           progress_bar=False)
        assert summary["references"][SWIM_TRAIN[0]] == "teacher", kind
        assert summary["regularizer_decay_steps"] == summary["steps"] == 3 * 4 * 64  # 'run': every step
        assert all(v is not None for v in summary["log_std_from"].values()), kind  # the family teacher's
        assert all(np.isfinite(v) for v in summary["returns_after"].values()), kind
        tuned = load_student(tmp_path / kind)
        before = load_student(tmp_path / kind / "pre_finetune.safetensors")
        assert tuned.student.kind == kind
        held = tasks[2]
        obs = make_env(held.env_id, dict(held.env_kwargs)).reset(seed=0)[0]
        desc = get_family("swimmer").descriptor(dict(held.env_kwargs)["body"])
        kw = {} if kind == "history" else {"body": desc}
        a, b = tuned.predict(obs, **kw), before.predict(obs, **kw)
        assert np.isfinite(a).all() and not np.array_equal(a, b), kind  # it moved; deploys as before


def test_kinds_that_cannot_be_fine_tuned_say_so(swimmer_students, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="history student cannot be held to its pre-fine-tuning"):
        tasks = resolve_finetune_tasks(load_student(swimmer_students["history"]), [SWIM_HELD])
        finetune(swimmer_students["history"], tmp_path / "h", tasks, steps=1000,
                 config=_small(regularizer=RegularizerConfig(no_teacher="student")))
    with pytest.raises(ConfigError, match="unknown swimmer bodies"):
        resolve_finetune_tasks(load_student(swimmer_students["token"]), ["swimmer-train-99"])
    with pytest.raises(ConfigError, match="family's bodies"):
        resolve_finetune_tasks(load_student(swimmer_students["token"]), env_id="polydistill/Swimmer-v0")
