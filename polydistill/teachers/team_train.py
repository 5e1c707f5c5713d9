"""Train a learned team teacher: PPO with parameter sharing on a multi-agent world's shared view.

The CAML worlds ship scripted privileged experts; this trains their learned counterpart. One
SB3 policy is shared by every agent (:class:`~polydistill.wrappers.sb3.ParallelVecEnv`: ``M``
env copies of ``N`` agents are ``M * N`` vector slots), and each agent reads its own modalities
plus :class:`~polydistill.wrappers.pettingzoo.SharedView`'s stack of the whole team's (the
multi-modal data CAML shares in training). The recipe is a
:class:`~polydistill.teachers.train.TeacherRecipe` from ``agents/team_teachers.yaml``, keyed by
the world's name: ``obs_groups`` names what the policy reads, ``shared_view`` what is shared.

Periodic evaluations run whole team episodes (:func:`~polydistill.evaluation.evaluate_team`,
mean return per agent), log ``eval/mean_return`` and ``eval/accident_rate`` to TensorBoard and,
with ``keep_best``, keep the best checkpoint with its statistics. The folder receives
``model.zip``, ``vecnormalize.pkl``, ``manifest.json`` (kind ``polydistill.team_teacher``) and
``tb/``; :class:`~polydistill.teachers.PolicyTeamTeacher` loads it, and a CAML recipe names it
as ``teacher: PATH``.
"""

from __future__ import annotations

import functools
import logging
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydistill.config import load_yaml, to_dict
from polydistill.errors import ConfigError, TrainingError
from polydistill.evaluation.episodes import TeamResult, evaluate_team
from polydistill.teachers.sb3 import SB3Teacher
from polydistill.teachers.team import TEAM_TEACHER_KIND, PolicyTeamTeacher
from polydistill.teachers.train import (
    TeacherRecipe,
    _algo_class,
    _check_hyperparams,
    _hyperparams,
    _policy_kwargs,
    clear_run_folder,
    load_recipe,
    save_selected,
)
from polydistill.utils import agents_dir, atomic_write_json, library_versions

__all__ = ["default_team_recipe_path", "load_team_recipe", "train_team_teacher"]

log = logging.getLogger(__name__)

_ON_POLICY = ("ppo", "a2c")


def default_team_recipe_path() -> Path:
    """Path of the shipped team-teacher recipes (``agents/team_teachers.yaml``)."""
    return agents_dir() / "team_teachers.yaml"


def load_team_recipe(env: str, path: str | Path | None = None,
                     overrides: dict[str, Any] | None = None) -> TeacherRecipe:
    """The recipe of world ``env``'s team teacher (see :func:`~polydistill.teachers.train.load_recipe`).

    Raises:
        ConfigError: for a missing entry, an unknown field, an off-policy algorithm or a
            recipe that names no ``obs_groups``.
    """
    path = path or default_team_recipe_path()
    load_yaml(path)  # a missing file: ConfigError naming it
    recipe = load_recipe(env, path, overrides)
    if recipe.algo not in _ON_POLICY:
        raise ConfigError(f"team teacher recipe[{env}].algo: expected one of {list(_ON_POLICY)} (parameter "
                          f"sharing over agents that leave mid-episode), got {recipe.algo!r}")
    if not recipe.obs_groups:
        raise ConfigError(f"team teacher recipe[{env}].obs_groups: expected the modalities the policy "
                          "reads (e.g. [state, shared/lidar, shared/present]), got none")
    return recipe


def _make(env: str, kwargs: dict[str, Any], shared: tuple[str, ...]) -> Any:
    from polydistill.envs import make_parallel
    from polydistill.wrappers.pettingzoo import SharedView

    world = make_parallel(env, **kwargs)
    return SharedView(world, shared) if shared else world


def _evaluate(make: Any, model: Any, venv: Any, modalities: tuple[str, ...], episodes: int,
              seed: int) -> TeamResult:
    """The current policy (deterministic, frozen statistics) on whole team episodes."""
    from polydistill.wrappers.sb3 import sb3_team_policy

    normalize = venv.normalize_obs if venv is not None else None
    return evaluate_team(make, sb3_team_policy(model, modalities, normalize), episodes, seed)


class _TeamEval:
    """Periodic team evaluations: TensorBoard scalars and, with ``folder``, the best checkpoint."""

    def __new__(cls, make: Any, modalities: tuple[str, ...], every: int, episodes: int, seed: int,
                folder: Path | None) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class _Cb(BaseCallback):
            best = -np.inf
            last = 0

            def _on_step(self) -> bool:
                if self.num_timesteps - self.last < every:
                    return True
                self.last = self.num_timesteps
                venv = self.model.get_vec_normalize_env()
                r = _evaluate(make, self.model, venv, modalities, episodes, seed)
                self.logger.record("eval/mean_return", r.mean_return)
                self.logger.record("eval/accident_rate", r.accident_rate)
                if folder is not None and r.mean_return > self.best:
                    self.best = r.mean_return
                    folder.mkdir(parents=True, exist_ok=True)
                    self.model.save(folder / "model.zip")
                    if venv is not None:
                        venv.save(str(folder / "vecnormalize.pkl"))
                return True

        return _Cb()


def train_team_teacher(env: str, out_dir: str | Path, recipe: TeacherRecipe | None = None, seed: int = 0,
                       progress_bar: bool = True, command: str | None = None) -> dict[str, Any]:
    """Train world ``env``'s team teacher and write model, statistics and manifest to ``out_dir``.

    Args:
        env: A name of :func:`polydistill.envs.list_parallel_envs`.
        out_dir: Run folder (created; earlier model files in it are removed first).
        recipe: Training recipe; :func:`load_team_recipe` when omitted.
        seed: Seed of the algorithm and the env copies.
        progress_bar: Show SB3's progress bar.
        command: Command line recorded in the manifest as the way to reproduce this teacher.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``), with the teacher's mean
        return per agent and accident rate measured on fresh seeds.

    Raises:
        ConfigError: for an unknown world, a modality it lacks or a bad recipe.
        TrainingError: if the final evaluation gives no finite return.
    """
    from stable_baselines3.common.vec_env import VecNormalize

    from polydistill.wrappers.sb3 import ParallelVecEnv

    recipe = recipe or load_team_recipe(env)
    algo_cls = _algo_class(recipe.algo)
    if recipe.algo not in _ON_POLICY:
        raise ConfigError(f"train_team_teacher: algo must be one of {list(_ON_POLICY)}, got {recipe.algo!r}")
    if not recipe.obs_groups:
        raise ConfigError("train_team_teacher: the recipe's obs_groups (what the policy reads) is empty")
    _check_hyperparams(algo_cls, recipe.hyperparams)
    train_kwargs = {**recipe.env_kwargs, **recipe.train_env_kwargs}
    shared = tuple(recipe.shared_view)
    modalities = tuple(recipe.obs_groups)
    make_train = functools.partial(_make, env, train_kwargs, shared)
    make_eval = functools.partial(_make, env, dict(recipe.env_kwargs), shared)
    out = clear_run_folder(out_dir)
    torch.set_num_threads(1)

    venv: Any = ParallelVecEnv(make_train, recipe.n_envs, modalities, seed=seed)  # ConfigError: modality
    if recipe.normalize:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=True)
    model = algo_cls(recipe.policy, venv, seed=seed, verbose=0, device="cpu", tensorboard_log=str(out / "tb"),
                     policy_kwargs=_policy_kwargs(recipe.policy_kwargs), **_hyperparams(recipe.hyperparams))
    best_dir = out / "best"
    callbacks = []
    if recipe.eval_freq > 0:
        callbacks.append(_TeamEval(make_eval, modalities, recipe.eval_freq, recipe.n_eval_episodes,
                                   seed + 10_000, best_dir if recipe.keep_best else None))
    t0 = time.time()
    model.learn(recipe.n_timesteps, callback=callbacks, progress_bar=progress_bar, tb_log_name="team_teacher")
    train_s = time.time() - t0
    selected = save_selected(model, venv, out, recipe)
    venv.close()

    # Measure the saved teacher through the class distillation uses, on fresh seeds.
    teacher = PolicyTeamTeacher(SB3Teacher.load(out / "model.zip"), modalities, shared)
    make_world = functools.partial(_make, env, dict(recipe.env_kwargs), ())
    result = evaluate_team(make_world, teacher, recipe.final_eval_episodes, seed + 20_000)
    manifest = {
        "kind": TEAM_TEACHER_KIND,
        "env": env,
        "env_kwargs": dict(recipe.env_kwargs),
        "algo": recipe.algo,
        "seed": seed,
        "n_timesteps": recipe.n_timesteps,
        "timesteps_unit": "agent-steps",
        "train_seconds": round(train_s, 1),
        "selected": selected,
        "mean_return": result.mean_return,
        "std_return": result.std_return,
        "accident_rate": result.accident_rate,
        "eval_episodes": len(result.returns),
        "obs_groups": list(modalities),
        "shared_view": list(shared),
        "observation_shape": list(teacher.teacher.observation_space.shape),
        "action_space": repr(teacher.teacher.action_space),
        "recipe": to_dict(recipe),
        "versions": library_versions(),
        "reproduce": command or (f"polydistill train-teacher --parallel-env {shlex.quote(env)} --seed {seed} "
                                 f"--out {shlex.quote(str(out))}"),
        "files": {"model": "model.zip", "vecnormalize": "vecnormalize.pkl" if recipe.normalize else None},
        "format_note": "model.zip and vecnormalize.pkl are SB3 pickle-based files",
    }
    atomic_write_json(out / "manifest.json", manifest)
    log.info("team teacher %s: mean return %.2f +- %.2f, accident rate %.3f (%d episodes, %.0fs training)",
             env, result.mean_return, result.std_return, result.accident_rate, len(result.returns), train_s)
    if not np.isfinite(result.mean_return):
        raise TrainingError(f"team teacher evaluation on {env} produced no finite return")
    return manifest
