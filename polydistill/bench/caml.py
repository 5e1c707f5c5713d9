"""``benchmark caml``: teacher vs CAML students vs reduced-modality RL vs single-agent auxiliary.

For each env and seed: the CAML student (DAgger from the shared-knowledge teacher, with
messages built from deployable modalities as the recipe sets), the same student distilled from
the world's learned team teacher (``teacher: learned``: PPO with parameter sharing on the shared
view, shipped in ``agents/teachers/caml-*``), the same student acting alone
(``message_dim`` 0), the single-agent auxiliary-modality student (alone, with a teacher that
knows only what its own agent senses) and PPO with parameter sharing on the deployable
modalities alone; every method is also evaluated with one agent fewer and one more than it
trained with.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np

from polydistill.bench import BenchOptions
from polydistill.bench.stats import effective_workers, finish_report, interval_stats, run_cells
from polydistill.config import override
from polydistill.errors import ConfigError
from polydistill.evaluation.episodes import TeamResult, evaluate_team
from polydistill.setups import read_recipe
from polydistill.setups.caml import CamlConfig, CamlRun, _make_parallel, team_teacher
from polydistill.teachers import ScriptedExpert
from polydistill.utils import agents_dir
from polydistill.wrappers.sb3 import sb3_team_policy

__all__ = ["run", "caml_recipe", "CAML_ENVS", "LEARNED_TEACHERS", "sb3_team_policy"]

CAML_ENVS = {"intersection": "caml_intersection.yaml", "rendezvous": "caml_rendezvous.yaml"}
"""Benchmark env name -> shipped CAML recipe in ``agents/``."""
LEARNED_TEACHERS = {"intersection": "teachers/caml-intersection", "rendezvous": "teachers/caml-rendezvous"}
"""Benchmark env name -> its shipped learned team teacher (PPO with parameter sharing on the
shared view, ``agents/team_teachers.yaml``): the ``teacher: learned`` rows."""
RL_STEPS = 300_000
"""Agent-steps of interaction of the reduced-modality PPO baseline (scaled with ``--steps``)."""
METHODS = ("caml_student", "caml_student_learned", "caml_student_alone", "reduced_rl", "single_agent_aux")


def caml_recipe(name: str) -> CamlConfig:
    """The shipped config of benchmark env ``name``.

    Raises:
        ConfigError: for an unknown name.
    """
    if name not in CAML_ENVS:
        raise ConfigError(f"unknown CAML benchmark env {name!r}; valid: {sorted(CAML_ENVS)}")
    _, recipe = read_recipe(agents_dir() / CAML_ENVS[name])
    return CamlRun.config_from(recipe)  # type: ignore[return-value]


def _team_size(config: CamlConfig) -> int:
    if config.env_kwargs.get("n_agents"):
        return int(config.env_kwargs["n_agents"])
    env = _make_parallel(config.env, {})
    env.close()
    return len(env.possible_agents)


def _figures(result: TeamResult) -> dict[str, float]:
    return {"return": result.mean_return, "accident_rate": result.accident_rate}


def _ppo_policy(config: CamlConfig, rl_steps: int) -> Any:
    """PPO with parameter sharing on the deployable modalities, as a team policy."""
    from stable_baselines3 import PPO

    from polydistill.wrappers.sb3 import ParallelVecEnv

    mods = tuple(config.team.modalities)
    venv = ParallelVecEnv(functools.partial(_make_parallel, config.env, config.env_kwargs), 8, mods,
                          seed=config.seed)
    model = PPO("MlpPolicy", venv, n_steps=256, batch_size=256, seed=config.seed, verbose=0,
                policy_kwargs={"net_arch": list(config.student.hidden)})
    model.learn(rl_steps)
    venv.close()
    return sb3_team_policy(model, mods)


def _cell(config: CamlConfig, method: str, episodes: int, rl_steps: int) -> dict[str, Any]:
    """One cell: train ``method`` with ``config``; evaluate it with teams of n-1, n and n+1."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    n = _team_size(config)
    sizes = [k for k in (n - 1, n, n + 1) if k >= 1]
    figs = {}
    if method == "reduced_rl":
        act = _ppo_policy(config, rl_steps)
        for k in sizes:
            make = functools.partial(_make_parallel, config.env, {**config.env_kwargs, "n_agents": k})
            figs[k] = _figures(evaluate_team(make, act, episodes))
    else:
        run_ = CamlRun(config, progress_bar=False)
        try:
            run_.learn()
            figs = {k: _figures(run_.evaluate_policy(episodes, n_agents=k)) for k in sizes}
        finally:
            run_.close()
    return {"figures": figs[n], "by_team_size": {str(k): v for k, v in figs.items()},
            "wall_s": time.perf_counter() - t0}


def run(options: BenchOptions) -> dict[str, Any]:
    """Every env x seed x method; writes ``options.out`` and returns it."""
    envs = options.envs or tuple(CAML_ENVS)
    episodes = options.episodes or 20
    jobs, rl_budget = [], {}
    for name in envs:
        base = caml_recipe(name)
        rl_budget[name] = RL_STEPS
        if options.steps is not None:
            rl_budget[name] = int(RL_STEPS * options.steps / base.total_steps)
            base = override(base, {"total_steps": int(options.steps)})
        for seed in range(options.seeds):
            cfg = override(base, {"seed": seed})
            alone = override(cfg, {"team.message_dim": 0})
            learned = override(cfg, {"teacher": LEARNED_TEACHERS[name]})
            jobs += [(name, seed, "caml_student", cfg), (name, seed, "caml_student_learned", learned),
                     (name, seed, "caml_student_alone", alone),
                     (name, seed, "reduced_rl", cfg),
                     (name, seed, "single_agent_aux", override(alone, {"teacher": "own"}))]
    t0 = time.perf_counter()
    cells = [(n, s, m, cfg, m, episodes, rl_budget[n]) for n, s, m, cfg in jobs]
    results = run_cells(cells, _cell, options.workers, "caml benchmark", options.progress_bar,
                        options.cells_dir)
    rows = []
    for name in envs:
        cfg = caml_recipe(name)
        n = _team_size(cfg)
        by_size = {str(k): _figures(evaluate_team(
            functools.partial(_make_parallel, cfg.env, {**cfg.env_kwargs,
                                                        "n_agents": k}), ScriptedExpert("shared"),
            episodes)) for k in (n - 1, n, n + 1) if k >= 1}
        methods: dict[str, Any] = {"teacher": {**by_size[str(n)], "by_team_size": by_size}}
        # The learned teacher's shared view has one row per agent: it drives teams of its size.
        learned = _figures(evaluate_team(functools.partial(_make_parallel, cfg.env, cfg.env_kwargs),
                                         team_teacher(LEARNED_TEACHERS[name]), episodes))
        methods["teacher_learned"] = {**learned, "by_team_size": {str(n): learned}}
        for method in METHODS:
            cells_ = [results[(name, s, method)] for s in range(options.seeds)]
            per = {k: [c["figures"][k] for c in cells_] for k in ("return", "accident_rate")}
            figs: dict[str, Any] = {k: float(np.mean(v)) for k, v in per.items()}
            figs["return_std"] = float(np.std(per["return"]))
            figs.update(returns=per["return"], accident_rates=per["accident_rate"],
                        return_stats=interval_stats(per["return"]),
                        accident_rate_stats=interval_stats(per["accident_rate"]))
            figs["by_team_size"] = {size: {k: float(np.mean([c["by_team_size"][size][k] for c in cells_]))
                                           for k in ("return", "accident_rate")}
                                    for size in cells_[0]["by_team_size"]}
            methods[method] = figs
        rows.append({"name": cfg.env, "methods": methods,
                     "caml_ratio": methods["caml_student"]["return"] / methods["teacher"]["return"],
                     "learned_ratio": methods["caml_student_learned"]["return"]
                     / methods["teacher_learned"]["return"]})
    report = {"setup": "caml", "seeds": options.seeds, "envs": rows, "episodes": episodes,
              "workers": effective_workers(len(jobs), options.workers), "wall_s": time.perf_counter() - t0}
    lines = ["| env | method | return | return IQM [95% CI] | accident rate | return, one agent fewer "
             "| one more |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        for method, f in r["methods"].items():
            sizes = f.get("by_team_size", {})
            keys = sorted(sizes, key=int)
            fewer = f"{sizes[keys[0]]['return']:.2f}" if len(keys) == 3 else "-"
            more = f"{sizes[keys[-1]]['return']:.2f}" if keys else "-"
            st = f.get("return_stats")
            iqm = "-" if st is None else f"{st['iqm']:.2f} [{st['iqm_ci95'][0]:.2f}, {st['iqm_ci95'][1]:.2f}]"
            lines.append(f"| {r['name']} | {method} | {f['return']:.2f} | {iqm} | {f['accident_rate']:.3f} | "
                         f"{fewer} | {more} |")
    return finish_report(report, "\n".join(lines), options.out)
