"""``benchmark perf``: polydistill's speed measured against the limits, side by side, in one run.

Every figure is measured on this machine in this process (Ray parts in Ray workers), with one
torch thread, after a warm-up. Both sides of a comparison are measured in alternation, and each
ratio is reported as the median of its paired repeats with their min and max: on a shared
machine a single figure says little (load swings ratios by a third from run to run).

- **collection**: labelled env steps/s (DAgger, beta 0.5: teacher labels every step, the
  student acts on about half) vs plain gymnasium ``SyncVectorEnv`` stepping with random
  actions vs raw ``mujoco.mj_step`` of the same model.
- **training**: samples/s of ``Distiller.train_round`` on a buffer vs a bare torch loop
  (random rows of the same tensors, same network and optimizer, plain MSE).
- **inference**: latency of ``load_student(...).predict`` (one observation; a batch of 256)
  vs SB3 ``model.predict`` of a policy with the same hidden layers, and the exported ONNX
  model in onnxruntime.
- **scale_out**: teachers trained one after another vs as Ray tasks on 2 CPUs; collection
  with 1 vs 2 Ray rollout workers.
- **growth**: collection time, buffer memory and training speed for 1, 2, 4, 8 embodiments,
  and for buffer capacities from 10k to 1M rows.
- **task_growth** (with the ``metaworld`` extra): labelled collection of 1, 16, 32 and 50
  Meta-World tasks (scripted experts labelling every step, DAgger beta 0.5) vs plain stepping
  of the same envs with random actions.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydistill.buffer import BufferConfig, DistillationBuffer
from polydistill.distill.distiller import Distiller, DistillerConfig, make_optimizer
from polydistill.errors import WorkerError
from polydistill.setups.generalist import (
    GeneralistConfig,
    GeneralistRun,
    TaskConfig,
    default_teachers_dir,
    generalist_fields,
)
from polydistill.students import Embodiment, EmbodimentTable, GeneralistStudent, StudentConfig
from polydistill.utils import atomic_write_bytes, atomic_write_json, library_versions, make_env

__all__ = ["PerfBudget", "run_perf_benchmark", "run", "measure_collection", "measure_training",
           "measure_inference", "measure_scale_out", "measure_growth", "measure_task_growth", "paired"]

log = logging.getLogger(__name__)

GROWTH_TASKS = ("hopper", "cheetah-vel1", "swimmer", "pendulum", "hopper-heavy", "cheetah-vel2",
                "hopper-long", "swimmer-long")
"""Shipped teachers used for the growth curve (8 tasks, each given its own embodiment token)."""


@dataclass(frozen=True)
class PerfBudget:
    """How much work each measurement does (``quick`` is for tests: figures only indicative)."""

    collect_steps: int = 24_000
    repeats: int = 5
    train_updates: int = 200
    predict_calls: int = 3000
    teacher_steps: int = 81_920
    scale_collect_steps: int = 8_000
    growth_steps: int = 2_000
    growth_updates: int = 100
    buffer_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    scale_repeats: int = 3
    """Paired repeats of the (expensive) scale-out measurements."""
    task_counts: tuple[int, ...] = (1, 16, 32, 50)
    """Meta-World task counts of the task-growth table."""
    task_steps: int = 200
    """Labelled env steps per task in one task-growth measurement."""
    task_repeats: int = 3

    @classmethod
    def quick(cls) -> PerfBudget:
        """Tiny budgets: every code path runs in about a minute."""
        return cls(collect_steps=800, repeats=2, train_updates=5, predict_calls=50,
                   teacher_steps=512, scale_collect_steps=400, growth_steps=200, growth_updates=3,
                   buffer_sizes=(2_000, 20_000), scale_repeats=1, task_counts=(1, 2), task_steps=20,
                   task_repeats=1)


def paired(ours: list[float], reference: list[float]) -> dict[str, float]:
    """Ratios ``ours[i] / reference[i]`` of alternating repeats: median, min and max."""
    r = [a / b for a, b in zip(ours, reference, strict=True)]
    return {"median": float(statistics.median(r)), "min": float(min(r)), "max": float(max(r)),
            "pairs": len(r)}


def _suite_task(name: str) -> Any:
    from polydistill.envs import get_suite

    return next(t for t in get_suite("locomotion") if t.name == name)


def _collector(names: tuple[str, ...], n_envs: int = 8, workers: int = 0, seed: int = 0,
               own_token: bool = False, capacity: int = 200_000) -> GeneralistRun:
    """A generalist run (its collector and buffer) over the suite tasks ``names``, shipped teachers."""
    specs = [_suite_task(n) for n in names]
    tasks = tuple(TaskConfig(s.name, s.env_id, str(default_teachers_dir() / s.teacher_name),
                             s.name if own_token else s.embodiment, dict(s.kwargs)) for s in specs)
    return GeneralistRun(GeneralistConfig(tasks=tasks, n_envs=n_envs, workers=workers, seed=seed,
                                          buffer=BufferConfig(capacity=capacity)), progress_bar=False)


def measure_collection(budget: PerfBudget, n_envs: int = 8) -> dict[str, float]:
    """Labelled collection vs plain vector stepping vs raw ``mj_step`` on Hopper."""
    import gymnasium as gym
    import mujoco

    task = _suite_task("hopper")
    run_ = _collector(("hopper",), n_envs)
    col, buf = run_.collector, run_.buffer
    col.collect([n_envs * 100], 0.5, buf)  # warm-up

    def labelled(beta: float) -> float:
        t0 = time.perf_counter()
        col.collect([budget.collect_steps], beta, buf)
        return budget.collect_steps / (time.perf_counter() - t0)

    venv = gym.vector.SyncVectorEnv([lambda: make_env(task.env_id) for _ in range(n_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    venv.reset(seed=0)
    venv.action_space.seed(0)
    vsteps = budget.collect_steps // n_envs
    actions = [venv.action_space.sample() for _ in range(vsteps)]

    def vector() -> float:
        t0 = time.perf_counter()
        for a in actions:
            venv.step(a)
        return vsteps * n_envs / (time.perf_counter() - t0)

    env = make_env(task.env_id)
    env.reset(seed=0)
    model, data = env.unwrapped.model, env.unwrapped.data
    frame_skip = int(env.unwrapped.frame_skip)

    def raw() -> float:
        n = budget.collect_steps * frame_skip
        t0 = time.perf_counter()
        for _ in range(n):
            mujoco.mj_step(model, data)
        return n / (time.perf_counter() - t0)

    dagger, bc, vec, mj = [], [], [], []
    for _ in range(budget.repeats):  # alternate, so load changes hit every side alike
        dagger.append(labelled(0.5))
        bc.append(labelled(1.0))
        vec.append(vector())
        mj.append(raw())
    run_.close()
    venv.close()
    env.close()
    med = statistics.median
    return {"labeled_sps": float(med(dagger)), "labeled_bc_sps": float(med(bc)),
            "vector_sps": float(med(vec)), "raw_mj_sps": float(med(mj)),
            "frame_skip": frame_skip, "raw_env_step_equiv_sps": float(med(mj)) / frame_skip,
            "labeled_vs_vector": paired(dagger, vec), "labeled_bc_vs_vector": paired(bc, vec),
            "labeled_vs_raw": paired(dagger, [m / frame_skip for m in mj]),
            "n_envs": n_envs, "env_id": task.env_id}


# ---------------------------------------------------------------------------- training
def _synthetic_table() -> EmbodimentTable:
    import gymnasium as gym

    dims = [("hopper", 11, 3), ("halfcheetah", 18, 6), ("swimmer", 8, 2), ("pendulum", 11, 1)]
    return EmbodimentTable([
        Embodiment.from_spaces(n, gym.spaces.Box(-np.inf, np.inf, (o,)), gym.spaces.Box(-1, 1, (a,)))
        for n, o, a in dims
    ])


def _filled_buffer(table: EmbodimentTable, capacity: int, seed: int = 0) -> DistillationBuffer:
    rng = np.random.default_rng(seed)
    buf = DistillationBuffer(generalist_fields(table, False), len(table), BufferConfig(capacity=capacity))
    n = buf.part
    for t in range(len(table)):
        a = table.max_action_dim
        buf.add(t, {"obs": rng.standard_normal((n, table.max_obs_dim)).astype(np.float32),
                    "emb": np.full(n, t), "action": rng.uniform(-1, 1, (n, a)).astype(np.float32),
                    "mask": np.broadcast_to(table.action_mask[t], (n, a))})
    return buf


def measure_training(budget: PerfBudget, capacity: int = 200_000) -> dict[str, float]:
    """Distiller vs a bare torch loop on the same network, tensors and optimizer."""
    table = _synthetic_table()
    buf = _filled_buffer(table, capacity)
    torch.manual_seed(0)
    student = GeneralistStudent(table, StudentConfig())
    dist = Distiller(student, DistillerConfig())
    twin = GeneralistStudent(table, StudentConfig())
    twin.load_state_dict(student.state_dict())
    opt = make_optimizer(twin.parameters(), dist.config)  # the very same optimizer setup
    x, e = torch.from_numpy(buf.data["obs"]), torch.from_numpy(buf.data["emb"])
    a, m = torch.from_numpy(buf.data["action"]), torch.from_numpy(buf.data["mask"])
    bs, n_up = dist.config.batch_size, budget.train_updates

    def distiller() -> float:
        t0 = time.perf_counter()
        dist.train_round(buf, n_up, 10 * n_up)
        return n_up * bs / (time.perf_counter() - t0)

    def bare() -> float:
        t0 = time.perf_counter()
        for _ in range(n_up):
            idx = torch.randint(0, x.shape[0], (bs,))
            out = twin(x[idx], e[idx])
            loss = ((out.mean - a[idx]).pow(2) * m[idx]).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return n_up * bs / (time.perf_counter() - t0)

    distiller(), bare()  # warm-up
    d, b = [], []
    for _ in range(2 * budget.repeats):  # adjacent pairs see the same machine load
        d.append(distiller())
        b.append(bare())
    return {"distiller_sps": float(statistics.median(d)), "bare_torch_sps": float(statistics.median(b)),
            "ratio_median_of_pairs": paired(d, b)["median"], "distiller_vs_bare": paired(d, b),
            "batch_size": bs, "hidden": list(student.config.hidden), "embodiments": len(table)}


# ---------------------------------------------------------------------------- inference
def _latency_us(fn: Callable[[], Any], calls: int) -> float:
    for _ in range(max(5, calls // 20)):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e3


def measure_inference(budget: PerfBudget) -> dict[str, float]:
    """Per-call latency of ``predict`` vs SB3's ``predict`` vs the exported ONNX model."""
    import stable_baselines3 as sb3

    from polydistill.deploy import load_student, save_student

    task = _suite_task("hopper")
    env = make_env(task.env_id)
    table = EmbodimentTable([Embodiment.from_spaces("hopper", env.observation_space, env.action_space)])
    student = GeneralistStudent(table, StudentConfig())
    obs, _ = env.reset(seed=0)
    student.update_normalizer(np.stack([env.observation_space.sample() for _ in range(64)]).clip(-5, 5), 0)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        save_student(Path(tmp) / "s.safetensors", student)
        policy = load_student(Path(tmp) / "s.safetensors")
        batch = np.repeat(obs[None], 256, axis=0)
        hidden = list(student.config.hidden)
        model = sb3.PPO("MlpPolicy", env, policy_kwargs={"net_arch": {"pi": hidden, "vf": hidden}},
                        device="cpu", seed=0)
        ours, sb3_us = [], []
        for _ in range(budget.repeats):  # alternate, so load changes hit both sides alike
            ours.append(_latency_us(lambda: policy.predict(obs), budget.predict_calls))
            sb3_us.append(_latency_us(lambda: model.predict(obs, deterministic=True), budget.predict_calls))
        out["predict_us"], out["sb3_predict_us"] = statistics.median(ours), statistics.median(sb3_us)
        out["sb3_vs_predict"] = paired(sb3_us, ours)  # type: ignore[assignment]
        out["predict_batch256_us"] = _latency_us(lambda: policy.predict(batch), budget.predict_calls // 4)
        try:
            import onnxruntime as ort
        except ImportError:
            log.warning("onnxruntime not installed: no ONNX latency (pip install 'polydistill[export]')")
            out["onnx_us"] = float("nan")
        else:
            path = policy.export(Path(tmp) / "s.onnx", "onnx")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            x = obs[None].astype(np.float32)
            out["onnx_us"] = _latency_us(lambda: sess.run(None, {name: x}), budget.predict_calls)
    env.close()
    out["hidden"] = hidden  # type: ignore[assignment]
    return out


# ---------------------------------------------------------------------------- scale-out
def measure_scale_out(budget: PerfBudget, out_dir: Path) -> dict[str, Any]:
    """Two teachers sequentially vs as Ray tasks; collection with 1 vs 2 Ray workers (paired repeats)."""
    from polydistill.collect.ray import init_ray
    from polydistill.teachers.train import TeacherJob, load_recipe, train_teacher, train_teachers_ray

    ray = init_ray(num_cpus=2)
    res: dict[str, Any] = {}
    names = ("hopper", "swimmer")
    per_task = budget.scale_collect_steps // len(names)
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(budget.scale_repeats):
        for workers in (1, 2):  # two CPUs hold one pool at a time: a fresh pool per measurement
            run_ = _collector(names, workers=workers)
            run_.collector.collect([per_task // 4] * 2, 0.5, run_.buffer)  # warm-up (imports, weights)
            t = time.perf_counter()
            run_.collector.collect([per_task] * 2, 0.5, run_.buffer)
            rates[workers].append(per_task * len(names) / (time.perf_counter() - t))
            run_.close()
    res["collect_sps_1_worker"], res["collect_sps_2_workers"] = (statistics.median(rates[w]) for w in (1, 2))
    res["collect_2_vs_1_workers"] = paired(rates[2], rates[1])
    # Start two Ray worker processes with the training stack imported, so the timing below is
    # the training itself (the cold start is reported separately).
    t0 = time.perf_counter()
    warm = ray.remote(num_cpus=1)(_warm_worker)
    ray.get([warm.remote() for _ in range(2)])
    res["ray_worker_warmup_s"] = time.perf_counter() - t0
    env_ids = ["polydistill/Hopper-v0", "polydistill/Swimmer-v0"]
    overrides = {"n_timesteps": budget.teacher_steps, "eval_freq": 0, "final_eval_episodes": 2, "n_envs": 4}
    seq, par = [], []
    for r in range(budget.scale_repeats):
        jobs = [TeacherJob(e, str(out_dir / f"teacher{r}-{i}"), load_recipe(e, None, overrides), i, name=e)
                for i, e in enumerate(env_ids)]
        t0 = time.perf_counter()
        for j in jobs:
            train_teacher(j.env_id, Path(j.out + "-seq"), j.recipe, seed=j.seed, progress_bar=False)
        seq.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        outcomes = train_teachers_ray(jobs)
        par.append(time.perf_counter() - t0)
        failed = [o.error for o in outcomes if not o.ok]
        if failed:  # a fast failure must not pass for a speed-up
            raise WorkerError(f"Ray teacher training failed, no scale-out figure: {failed}")
    res.update({"teachers_sequential_s": statistics.median(seq), "teachers_ray_s": statistics.median(par),
                "teachers_sequential_vs_ray": paired(seq, par), "n_teachers": len(env_ids),
                "teacher_steps": budget.teacher_steps})
    return res


def _warm_worker() -> int:
    """Import the teacher-training stack in a Ray worker and hold it briefly.

    Holding it makes two concurrent calls land on two different workers.
    """
    import polydistill.envs  # noqa: F401
    import polydistill.teachers.train  # noqa: F401

    time.sleep(1.0)
    return os.getpid()


# ---------------------------------------------------------------------------- growth
def measure_growth(budget: PerfBudget) -> list[dict[str, float]]:
    """Collection time, buffer memory and training speed vs embodiments and buffer size."""
    rows: list[dict[str, float]] = []
    for k in (1, 2, 4, 8):
        cap = 25_000 * k
        run_ = _collector(GROWTH_TASKS[:k], own_token=True, capacity=cap)
        col, buf = run_.collector, run_.buffer
        col.collect([200] * k, 0.5, buf)
        t0 = time.perf_counter()
        col.collect([budget.growth_steps] * k, 0.5, buf)
        collect_s = time.perf_counter() - t0
        dist = Distiller(run_.student, DistillerConfig())
        dist.train_round(buf, 2, 100)
        t0 = time.perf_counter()
        dist.train_round(buf, budget.growth_updates, 10 * budget.growth_updates)
        train_s = time.perf_counter() - t0
        rows.append({"kind": "embodiments", "embodiments": k,
                     "collect_steps_per_task": budget.growth_steps,
                     "collect_s": collect_s, "collect_sps": k * budget.growth_steps / collect_s,
                     "buffer_rows": cap, "buffer_mb": buf.nbytes / 2**20,
                     "train_sps": budget.growth_updates * dist.config.batch_size / train_s})
        run_.close()
    table = _synthetic_table()
    for cap in budget.buffer_sizes:
        t0 = time.perf_counter()
        buf = _filled_buffer(table, cap)
        fill_s = time.perf_counter() - t0
        dist = Distiller(GeneralistStudent(table, StudentConfig()), DistillerConfig())
        dist.train_round(buf, 2, 100)
        t0 = time.perf_counter()
        dist.train_round(buf, budget.growth_updates, 10 * budget.growth_updates)
        train_s = time.perf_counter() - t0
        rows.append({"kind": "buffer_size", "embodiments": len(table), "buffer_rows": cap,
                     "buffer_mb": buf.nbytes / 2**20, "fill_s": fill_s,
                     "train_sps": budget.growth_updates * dist.config.batch_size / train_s})
        del buf
    return rows


def measure_task_growth(budget: PerfBudget, n_envs: int = 0,
                        architecture: str | None = None) -> list[dict[str, Any]]:
    """Labelled collection of k Meta-World tasks vs plain stepping of the same envs (empty without it).

    Args:
        budget: Task counts, steps per task and repeats.
        n_envs: Env copies per task (default: the MT50 recipe's).
        architecture: Student architecture (default: the MT50 recipe's).
    """
    try:
        from polydistill.bench.metaworld import suite_config

        config = suite_config("mt50")
    except Exception as exc:  # the extra is not installed
        log.info("perf: task growth skipped (%s)", exc)
        return []
    if architecture is not None:
        from polydistill.config import override

        config = override(config, {"student": {"architecture": architecture}})
    rows = [_task_growth_row(config, k, budget, n_envs or config.n_envs) for k in budget.task_counts]
    for r in rows:
        log.info("perf: %d Meta-World tasks: labelled %.0f vs plain %.0f env steps/s", r["tasks"],
                 r["labelled_sps"], r["plain_sps"])
    return rows


def _task_growth_row(config: GeneralistConfig, k: int, budget: PerfBudget, n_envs: int) -> dict[str, Any]:

    from polydistill.config import override

    tasks, steps = config.tasks[:k], budget.task_steps
    run_ = GeneralistRun(override(config, {"tasks": tasks, "n_envs": n_envs, "workers": 0,
                                           "buffer": {"capacity": k * steps * 2}}), progress_bar=False)
    venvs: list[Any] = []
    try:
        return _task_growth_pairs(run_, venvs, tasks, k, budget, n_envs)
    finally:
        run_.close()
        for v in venvs:
            v.close()


def _task_growth_pairs(run_: GeneralistRun, venvs: list[Any], tasks: Any, k: int, budget: PerfBudget,
                       n_envs: int) -> dict[str, Any]:
    import gymnasium as gym

    steps = budget.task_steps
    col, buf = run_.collector, run_.buffer
    col.collect([n_envs * 5] * k, 0.5, buf)  # warm-up
    venvs += [gym.vector.SyncVectorEnv([lambda t=t: make_env(t.env_id, t.env_kwargs)] * n_envs,
                                       autoreset_mode=gym.vector.AutoresetMode.SAME_STEP) for t in tasks]
    for i, v in enumerate(venvs):
        v.reset(seed=i)
        v.action_space.seed(i)
    n_steps = steps // n_envs
    actions = [[v.action_space.sample() for _ in range(n_steps)] for v in venvs]

    def labelled() -> float:
        t0 = time.perf_counter()
        col.collect([steps] * k, 0.5, buf)
        return k * steps / (time.perf_counter() - t0)

    def plain() -> float:
        t0 = time.perf_counter()
        for j in range(n_steps):
            for v, a in zip(venvs, actions, strict=True):
                v.step(a[j])
        return k * n_steps * n_envs / (time.perf_counter() - t0)

    ours, ref = [], []
    for _ in range(budget.task_repeats):  # alternate, so load changes hit both sides alike
        ours.append(labelled())
        ref.append(plain())
    return {"tasks": k, "n_envs_per_task": n_envs, "steps_per_task": steps,
            "labelled_sps": float(statistics.median(ours)), "plain_sps": float(statistics.median(ref)),
            "labelled_vs_plain": paired(ours, ref)}


# ---------------------------------------------------------------------------- report
def _markdown(r: dict[str, Any]) -> str:
    c, t, i, s = r["collection"], r["training"], r["inference"], r["scale_out"]

    def ratio(p: dict[str, float], pct: bool = True) -> str:
        f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.2f}x")
        return f"{f(p['median'])} ({f(p['min'])}-{f(p['max'])})"

    lines = [
        "| measurement | polydistill | reference | ratio: median of pairs (min-max) | target |",
        "|---|---:|---:|---:|---|",
        f"| labelled collection, DAgger beta 0.5 (env steps/s) | {c['labeled_sps']:,.0f} | "
        f"{c['vector_sps']:,.0f} (gymnasium vector, random actions) | {ratio(c['labeled_vs_vector'])} "
        "| >= 70% |",
        f"| labelled collection, teacher acting (env steps/s) | {c['labeled_bc_sps']:,.0f} | "
        f"{c['vector_sps']:,.0f} | {ratio(c['labeled_bc_vs_vector'])} | |",
        f"| raw `mj_step` (calls/s; {c['frame_skip']} per env step) | | {c['raw_mj_sps']:,.0f} "
        f"(= {c['raw_env_step_equiv_sps']:,.0f} env steps/s) | {ratio(c['labeled_vs_raw'])} | |",
        f"| student training (samples/s) | {t['distiller_sps']:,.0f} | {t['bare_torch_sps']:,.0f} "
        f"(bare torch loop) | {ratio(t['distiller_vs_bare'])} | >= 90% |",
        f"| `predict`, one observation (us) | {i['predict_us']:.0f} | {i['sb3_predict_us']:.0f} "
        f"(SB3 `model.predict`) | {ratio(i['sb3_vs_predict'], False)} faster | >= 2x |",
        f"| `predict`, batch of 256 (us) | {i['predict_batch256_us']:.0f} | | | |",
        f"| exported ONNX in onnxruntime, one observation (us) | {i['onnx_us']:.0f} | | | |",
        f"| {s['n_teachers']} teachers ({s['teacher_steps']:,} steps each), wall s | "
        f"{s['teachers_ray_s']:.1f} (Ray, 2 CPUs) | {s['teachers_sequential_s']:.1f} (sequential) | "
        f"{ratio(s['teachers_sequential_vs_ray'], False)} | ~2x |",
        f"| collection with Ray workers (env steps/s) | {s['collect_sps_2_workers']:,.0f} (2 workers) | "
        f"{s['collect_sps_1_worker']:,.0f} (1 worker) | {ratio(s['collect_2_vs_1_workers'], False)} | |",
        "",
        "| embodiments | collection env steps/s | buffer capacity (rows) | buffer MiB | training samples/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for g in r["growth"]:
        if g["kind"] == "embodiments":
            lines.append(f"| {g['embodiments']} | {g['collect_sps']:,.0f} | {g['buffer_rows']:,} | "
                         f"{g['buffer_mb']:.1f} | {g['train_sps']:,.0f} |")
    lines += ["", "| buffer capacity (rows, 4 embodiments) | MiB | training samples/s |", "|---:|---:|---:|"]
    for g in r["growth"]:
        if g["kind"] == "buffer_size":
            lines.append(f"| {g['buffer_rows']:,} | {g['buffer_mb']:.1f} | {g['train_sps']:,.0f} |")
    if r.get("task_growth"):
        lines += ["", "| Meta-World tasks | labelled collection, DAgger beta 0.5 (env steps/s) "
                  "| plain stepping, random actions (env steps/s) | ratio: median (min-max) | target |",
                  "|---:|---:|---:|---:|---|"]
        for g in r["task_growth"]:
            lines.append(f"| {g['tasks']} | {g['labelled_sps']:,.0f} | {g['plain_sps']:,.0f} | "
                         f"{ratio(g['labelled_vs_plain'])} | {'>= 80%' if g['tasks'] == 50 else ''} |")
    return "\n".join(lines)


def run(options: Any) -> dict[str, Any]:
    """``benchmark perf`` (``options.quick``: tiny budgets)."""
    return run_perf_benchmark(options.out, PerfBudget.quick() if options.quick else None)


def run_perf_benchmark(out: str | Path = "perf.json", budget: PerfBudget | None = None,
                       sections: tuple[str, ...] = ("collection", "training", "inference",
                                                    "scale_out", "growth", "task_growth")) -> dict[str, Any]:
    """Measure every section and write ``out`` (JSON) and ``out`` with ``.md`` (table)."""
    import polydistill.envs  # noqa: F401

    budget = budget or PerfBudget()
    torch.set_num_threads(1)
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = Path(out)
    report: dict[str, Any] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        steps = {
            "collection": lambda: measure_collection(budget),
            "training": lambda: measure_training(budget),
            "inference": lambda: measure_inference(budget),
            "scale_out": lambda: measure_scale_out(budget, Path(tmp)),
            "growth": lambda: measure_growth(budget),
            "task_growth": lambda: measure_task_growth(budget),
        }
        for name in sections:
            t0 = time.perf_counter()
            log.info("perf: measuring %s", name)
            report[name] = steps[name]()
            log.info("perf: %s done in %.0f s", name, time.perf_counter() - t0)
    report["seconds"] = time.perf_counter() - t_all
    report["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    report["versions"] = library_versions()
    quick = " --quick" if budget == PerfBudget.quick() else ""
    report["command"] = f"python scripts/benchmark.py perf --out {out}{quick}"
    if all(k in report for k in ("collection", "training", "inference", "scale_out", "growth")):
        report["markdown"] = _markdown(report)
        atomic_write_bytes(out.with_suffix(".md"), (report["markdown"] + "\n").encode())
    atomic_write_json(out, report)
    from polydistill.evaluation.html import write_html_report_safe

    write_html_report_safe(out)
    return report
