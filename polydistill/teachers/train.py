"""Train one specialist teacher with stable-baselines3 from an rl-zoo3-style YAML recipe.

A recipe file maps env ids to :class:`TeacherRecipe` fields; a ``default`` entry serves any env
id the file does not name, so a user can train a teacher for any Gymnasium env::

    default:            {algo: ppo, n_envs: 8, n_timesteps: 1.0e6, normalize: true}
    polydistill/Hopper-v0:
      algo: ppo
      n_timesteps: 1.0e6
      hyperparams: {n_steps: 256, batch_size: 64}
      policy_kwargs: {net_arch: [64, 64], activation_fn: tanh}

The run folder receives ``model.zip``, ``vecnormalize.pkl`` (when normalizing), ``manifest.json``
(env id, seed, steps, measured mean return, versions, the command that reproduces it) and a
TensorBoard log under ``tb/``. With ``checkpoint_every`` it also keeps ``checkpoint/`` (model,
replay buffer of an off-policy algorithm, normalisation statistics, step count), from which
``train_teacher(..., resume=True)`` continues a run that was stopped, or extends a finished one.
"""

from __future__ import annotations

import inspect
import json
import logging
import shlex
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from polydistill.config import from_dict, load_yaml, to_dict
from polydistill.errors import CheckpointError, ConfigError, TrainingError
from polydistill.evaluation.episodes import evaluate
from polydistill.students.base import ACTIVATIONS
from polydistill.teachers.sb3 import SB3Teacher
from polydistill.utils import agents_dir, atomic_write_json, library_versions, make_env, shipped_path

__all__ = ["TeacherRecipe", "load_recipe", "clear_run_folder", "save_selected",
           "suite_teacher_recipe", "train_teacher", "default_recipe_path",
           "TeacherJob", "TeacherOutcome", "train_teachers_ray", "summarize", "CHECKPOINT_DIR"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TeacherRecipe:
    """How to train one SB3 specialist (rl-zoo3 style)."""

    algo: Literal["ppo", "a2c", "sac", "td3"] = "ppo"
    """SB3 algorithm."""
    n_timesteps: int = 1_000_000
    """Total environment steps of training."""
    n_envs: int = 8
    """Parallel env copies (``DummyVecEnv``: fastest for MuJoCo on few cores)."""
    normalize: bool = True
    """Wrap in ``VecNormalize`` (observations and rewards); stats saved beside the model."""
    policy: str = "MlpPolicy"
    """SB3 policy name."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """``policy_kwargs``; ``activation_fn`` may be a name (tanh, relu, elu, gelu, silu)."""
    hyperparams: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the SB3 algorithm (checked against its signature). As in rl-zoo3,
    ``learning_rate`` and ``clip_range`` may be ``"lin_<value>"``: decayed linearly from
    ``value`` to 0 over training, and an off-policy algorithm's exploration noise is
    ``noise_type: normal | ornstein-uhlenbeck`` with ``noise_std`` (of every action entry)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra ``gymnasium.make`` arguments."""
    train_env_kwargs: dict[str, Any] = field(default_factory=dict)
    """More ``gymnasium.make`` arguments for the training envs only, not the evaluation ones:
    how training draws its episodes (e.g. ``{balance: steps}`` for a body family) without
    changing what the evaluations measure."""
    obs_groups: tuple[str, ...] = ()
    """For Dict-observation envs: the groups the teacher reads, concatenated into one vector
    (e.g. ``[proprio, privileged]`` for a privileged teacher)."""
    shared_view: tuple[str, ...] = ()
    """For a multi-agent team teacher (``train-teacher --parallel-env``): the modalities
    :class:`~polydistill.wrappers.pettingzoo.SharedView` stacks across the team, so
    ``obs_groups`` may name ``shared/<modality>``, ``shared/present``, ``shared/is_me`` and
    ``shared/rel_pose`` (the collaborative view a CAML teacher reads)."""
    eval_freq: int = 50_000
    """Evaluate every this many environment steps (0 disables the callback)."""
    n_eval_episodes: int = 5
    """Episodes per periodic evaluation."""
    final_eval_episodes: int = 10
    """Episodes of the final evaluation recorded in the manifest."""
    keep_best: bool = True
    """Ship the checkpoint with the best periodic evaluation (with its own VecNormalize
    statistics) instead of the last one; PPO's return is noisy from update to update. The
    manifest's return is always re-measured on fresh seeds."""
    init_from: str | None = None
    """A teacher folder (``model.zip``, and ``vecnormalize.pkl`` if this recipe normalises)
    of the same algorithm and network whose weights and statistics start this teacher: a
    single-body specialist starts its family's teacher. Observation entries this env has
    beyond the source's (appended at the end, e.g. a body descriptor) start with zero input
    weights, mean 0 and variance 1, so training starts from the source's policy. A relative
    path is looked up under the ``agents`` folder (``teachers/hopper``)."""


def default_recipe_path() -> Path:
    """Path of the shipped teacher recipes (``agents/teachers.yaml``)."""
    return agents_dir() / "teachers.yaml"


def load_recipe(env_id: str, path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> TeacherRecipe:
    """Load the recipe for ``env_id`` from a recipe file (default entry as fallback).

    Raises:
        ConfigError: if the file has neither an entry for ``env_id`` nor ``default``, or a field
            is unknown.
    """
    data = load_yaml(path or default_recipe_path())
    if env_id not in data and "default" not in data:
        raise ConfigError(
            f"recipe file has no entry for {env_id!r} and no 'default'; entries: {sorted(data)}"
        )
    entries = {k: data.get(k) or {} for k in ("default", env_id)}
    for k, v in entries.items():
        if not isinstance(v, dict):
            raise ConfigError(f"recipe entry {k!r} must be a mapping of TeacherRecipe fields, got {v!r}")
    merged = {**entries["default"], **entries[env_id]}
    for key, value in (overrides or {}).items():
        top, _, sub = key.partition(".")
        if sub:  # "hyperparams.learning_rate=1e-3" merges into the recipe's dict
            if not isinstance(merged.get(top, {}), dict):
                raise ConfigError(f"override {key!r}: {top!r} is not a mapping in the recipe")
            merged[top] = {**merged.get(top, {}), sub: value}
        else:
            merged[key] = value
    return from_dict(TeacherRecipe, merged, f"recipe[{env_id}]")


def suite_teacher_recipe(task: Any, path: str | Path | None = None,
                         overrides: dict[str, Any] | None = None) -> tuple[str, TeacherRecipe]:
    """The env id and recipe that train a suite task's teacher (``polydistill.envs.TaskSpec``).

    A family teacher trains on its family's env; a specialist on its task's env, with the
    task's env keywords (a family body's ``body``) merged into the recipe's.
    """
    env_id = task.teacher_env_id
    recipe = load_recipe(env_id, path, overrides)
    if task.teacher_family is None and task.kwargs:
        recipe = replace(recipe, env_kwargs={**recipe.env_kwargs, **task.kwargs})
    return env_id, recipe


def _algo_class(name: str) -> type:
    import stable_baselines3 as sb3

    return {"ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC, "td3": sb3.TD3}[name]


def _policy_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    kw = dict(raw)
    act = kw.get("activation_fn")
    if isinstance(act, str):
        if act not in ACTIVATIONS:
            raise ConfigError(
                f"policy_kwargs.activation_fn: unknown {act!r}; valid: {', '.join(ACTIVATIONS)}"
            )
        kw["activation_fn"] = ACTIVATIONS[act]
    return kw


def _check_hyperparams(algo_cls: type, hyperparams: dict[str, Any]) -> None:
    valid = set(inspect.signature(algo_cls.__init__).parameters) - {
        "self", "policy", "env", "policy_kwargs", "tensorboard_log", "seed", "verbose", "device",
        "_init_setup_model",
    }
    if "action_noise" in valid:  # off-policy: rl-zoo3's noise keys stand for it
        valid |= set(_NOISE_KEYS)
        _check_noise(hyperparams)
    unknown = sorted(set(hyperparams) - valid)
    if unknown:
        raise ConfigError(
            f"hyperparams: {unknown} are not {algo_cls.__name__} arguments; "
            f"valid: {', '.join(sorted(valid))}"
        )


_SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")
_NOISE_KEYS = ("noise_type", "noise_std")
_NOISES = ("normal", "ornstein-uhlenbeck")
_NOISE_STD = 0.1
"""``noise_std`` when a recipe names only ``noise_type`` (rl-zoo3's usual value)."""


def _check_noise(hyperparams: dict[str, Any]) -> None:
    kind = hyperparams.get("noise_type")
    if kind is not None and kind not in _NOISES:
        raise ConfigError(f"hyperparams.noise_type: expected one of {', '.join(_NOISES)}, got {kind!r}")
    std = hyperparams.get("noise_std", _NOISE_STD)
    if not (isinstance(std, (int, float)) and not isinstance(std, bool) and std > 0):
        raise ConfigError(f"hyperparams.noise_std: expected a positive number, got {std!r}")
    if "noise_std" in hyperparams and kind is None:
        raise ConfigError("hyperparams.noise_std needs a noise_type")


def _action_noise(hyperparams: dict[str, Any], action_space: Any) -> dict[str, Any]:
    """``hyperparams`` with rl-zoo3's ``noise_type`` / ``noise_std`` made SB3's ``action_noise``."""
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    out = {k: v for k, v in hyperparams.items() if k not in _NOISE_KEYS}
    kind = hyperparams.get("noise_type")
    if kind is not None:
        n = int(np.prod(action_space.shape))
        cls = NormalActionNoise if kind == "normal" else OrnsteinUhlenbeckActionNoise
        sigma = float(hyperparams.get("noise_std", _NOISE_STD)) * np.ones(n)
        out["action_noise"] = cls(mean=np.zeros(n), sigma=sigma)
    return out


def _linear(start: float) -> Any:
    def schedule(progress_remaining: float) -> float:
        return progress_remaining * start

    return schedule


def _hyperparams(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with every ``"lin_<value>"`` schedule (rl-zoo3's notation) made a callable.

    Raises:
        ConfigError: for a ``lin_`` value that is not a positive number, or on another key.
    """
    out = dict(raw)
    for key, value in raw.items():
        if not (isinstance(value, str) and value.startswith("lin_")):
            continue
        if key not in _SCHEDULED:
            raise ConfigError(f"hyperparams.{key}: a 'lin_' schedule is only valid for "
                              f"{', '.join(_SCHEDULED)}, got {value!r}")
        try:
            start = float(value[4:])
        except ValueError:
            start = float("nan")
        if not (np.isfinite(start) and start > 0):
            raise ConfigError(f"hyperparams.{key}: expected 'lin_<positive number>', got {value!r}")
        out[key] = _linear(start)
    return out


def _init_path(raw: str) -> Path:
    path = shipped_path(raw)
    if not (path / "model.zip").is_file():
        raise ConfigError(f"init_from: no model.zip in {str(path)!r}")
    return path


def _widen(name: str, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``old`` in ``new``'s shape: equal shapes copy; a wider input layer gets zero weights."""
    if new.shape == old.shape:
        return old.clone()
    if new.dim() == 2 and old.dim() == 2 and new.shape[0] == old.shape[0] and new.shape[1] > old.shape[1]:
        out = torch.zeros_like(new)
        out[:, : old.shape[1]] = old
        return out
    raise ConfigError(f"init_from: parameter {name!r} has shape {tuple(old.shape)} in the source, "
                      f"{tuple(new.shape)} here (same algorithm and network needed)")


def warm_start(model: Any, venv: Any, source: str | Path, algo_cls: type) -> dict[str, Any]:
    """Start ``model`` (and ``venv``'s VecNormalize statistics) from the teacher in ``source``.

    See :attr:`TeacherRecipe.init_from`. Returns what was copied (for the manifest).

    Raises:
        ConfigError: for a missing source, another network, or fewer observation entries here.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from polydistill.teachers.sb3 import _SpacesOnlyEnv

    path = _init_path(str(source))
    src = algo_cls.load(path / "model.zip", device="cpu")
    n_src, n_new = src.observation_space.shape[0], model.observation_space.shape[0]
    if n_new < n_src or src.action_space.shape != model.action_space.shape:
        raise ConfigError(f"init_from: the source reads {n_src} observations and acts {src.action_space}; "
                          f"here {n_new} and {model.action_space} (an env may only add observations)")
    new_state, old_state = model.policy.state_dict(), src.policy.state_dict()
    missing = sorted(set(new_state) ^ set(old_state))
    if missing:
        raise ConfigError(f"init_from: the networks differ (parameters {missing[:4]}...)")
    model.policy.load_state_dict({k: _widen(k, v, old_state[k]) for k, v in new_state.items()})
    stats = isinstance(venv, VecNormalize) and (path / "vecnormalize.pkl").is_file()
    if stats:
        holder = DummyVecEnv([lambda: _SpacesOnlyEnv(src.observation_space, src.action_space)])
        vn = VecNormalize.load(str(path / "vecnormalize.pkl"), holder)  # SB3's pickle: a trusted path
        venv.obs_rms.mean[:n_src], venv.obs_rms.var[:n_src] = vn.obs_rms.mean, vn.obs_rms.var
        venv.obs_rms.mean[n_src:], venv.obs_rms.var[n_src:] = 0.0, 1.0
        venv.obs_rms.count = vn.obs_rms.count
        venv.ret_rms = vn.ret_rms
    return {"from": str(source), "observations_added": int(n_new - n_src), "statistics": bool(stats)}


def clear_run_folder(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and remove an earlier teacher's files from it.

    A reused folder must not leak an earlier run's files into this teacher.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "best", ignore_errors=True)
    for stale in ("model.zip", "vecnormalize.pkl", "final_model.zip", "final_vecnormalize.pkl",
                  "manifest.json"):
        (out / stale).unlink(missing_ok=True)
    return out


def save_selected(model: Any, venv: Any, out: Path, recipe: TeacherRecipe) -> str:
    """Write the teacher the recipe selects to ``out``; returns ``"best"`` or ``"final"``.

    ``"best"``: the best periodic evaluation's checkpoint in ``out/best`` (the last one is kept
    as ``final_*``); ``"final"``: the last one.
    """
    if recipe.keep_best and (out / "best" / "model.zip").is_file():
        model.save(out / "final_model.zip")
        if recipe.normalize:
            venv.save(str(out / "final_vecnormalize.pkl"))
        for name in ("model.zip", "vecnormalize.pkl"):
            if (out / "best" / name).is_file():
                shutil.copyfile(out / "best" / name, out / name)
        return "best"
    model.save(out / "model.zip")
    if recipe.normalize:
        venv.save(str(out / "vecnormalize.pkl"))
    return "final"


class _SaveWithStats:
    """``callback_on_new_best`` that saves the model *and* its VecNormalize statistics."""

    def __new__(cls, folder: Path) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class _Cb(BaseCallback):
            def _on_step(self) -> bool:
                folder.mkdir(parents=True, exist_ok=True)
                self.model.save(folder / "model.zip")
                vn = self.model.get_vec_normalize_env()
                if vn is not None:
                    vn.save(str(folder / "vecnormalize.pkl"))
                return True

        return _Cb()


CHECKPOINT_DIR = "checkpoint"
"""Folder (inside a teacher's run folder) of the last checkpoint."""


def _checkpoint_path(out: Path) -> Path | None:
    """The run's last complete checkpoint, or ``None``.

    That is ``checkpoint/``, or ``checkpoint.old/`` when a kill fell between the two renames
    that replace it.
    """
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        if (out / name / "state.json").is_file() and (out / name / "model.zip").is_file():
            return out / name
    return None


def _save_checkpoint(model: Any, out: Path, state: dict[str, Any]) -> None:
    """Write model, replay buffer, statistics and ``state.json`` to ``out/checkpoint``.

    The files go to a temporary folder first, which then replaces the previous checkpoint by
    two renames, so a kill at any moment leaves one complete checkpoint on disk.
    """
    tmp, final, old = out / (CHECKPOINT_DIR + ".tmp"), out / CHECKPOINT_DIR, out / (CHECKPOINT_DIR + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / "model.zip")
    if hasattr(model, "replay_buffer") and model.replay_buffer is not None:
        model.save_replay_buffer(tmp / "replay_buffer.pkl")
    vn = model.get_vec_normalize_env()
    if vn is not None:
        vn.save(str(tmp / "vecnormalize.pkl"))
    if (out / "best").is_dir():  # the best evaluation's model belongs to the same moment
        shutil.copytree(out / "best", tmp / "best")
    atomic_write_json(tmp / "state.json", state)  # written last: its presence marks a complete folder
    if final.exists():  # only while a complete checkpoint/ exists may checkpoint.old/ go
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _truncate_last_transition(buffer: Any) -> None:
    """Mark the newest stored transition of a resumed replay buffer as a time-limit cut.

    The resumed run starts new episodes, whose transitions land right after it; an n-step
    return (SB3's ``NStepReplayBuffer``) would otherwise run on across the resume into another
    episode. A one-step target reads ``timeouts`` only where ``dones`` is set, so it is unchanged.
    """
    if buffer.pos == 0 and not buffer.full:
        return
    last = (buffer.pos - 1) % buffer.buffer_size
    buffer.timeouts[last] = np.logical_or(buffer.timeouts[last], np.logical_not(buffer.dones[last]))


class _Checkpointer:
    """Callback that checkpoints the run every ``every`` env steps and at its end.

    It saves between a rollout and the next, where the model has learned from every step it
    counts and an off-policy replay buffer holds every transition (SB3 stores a step's
    transition after the per-step callbacks run).
    """

    def __new__(cls, out: Path, every: int, state: Any) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class _Cb(BaseCallback):
            last = 0

            def _init_callback(self) -> None:
                self.last = self.model.num_timesteps  # a resumed run counts from its checkpoint

            def _save(self) -> None:
                self.last = self.model.num_timesteps
                _save_checkpoint(self.model, out, state(self.last))

            def _on_rollout_start(self) -> None:
                if self.model.num_timesteps - self.last >= every:
                    self._save()

            def _on_step(self) -> bool:
                return True

            def _on_training_end(self) -> None:
                if self.model.num_timesteps > self.last:
                    self._save()

        return _Cb()


def _check_resumable(state: dict[str, Any], env_id: str, seed: int, recipe: TeacherRecipe) -> None:
    """A checkpoint continues only the run it was taken from (its ``n_timesteps`` may grow)."""
    if state.get("env_id") != env_id or state.get("seed") != seed:
        raise ConfigError(f"resume: the checkpoint is of {state.get('env_id')!r} seed {state.get('seed')}; "
                          f"asked for {env_id!r} seed {seed}")
    then, now = dict(state.get("recipe", {})), json.loads(json.dumps(to_dict(recipe)))
    then.pop("n_timesteps", None)
    now.pop("n_timesteps", None)
    differ = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
    if differ:
        raise ConfigError(f"resume: the recipe differs from the checkpoint's in {differ} "
                          f"(only n_timesteps may change)")


def _restore_evaluations(evaluator: Any, path: Path, state: dict[str, Any]) -> None:
    """Carry the first part's evaluations (and the best one) into a resumed run's callback."""
    if state.get("best_mean_reward") is not None:
        evaluator.best_mean_reward = float(state["best_mean_reward"])
    # EvalCallback fires on its call count: continue the first part's schedule
    evaluator.n_calls = int(state["num_timesteps"]) // max(int(state["recipe"].get("n_envs", 1)), 1)
    if path.is_file():
        with np.load(path) as data:
            keep = data["timesteps"] <= int(state["num_timesteps"])
            evaluator.evaluations_timesteps = [int(t) for t in data["timesteps"][keep]]
            evaluator.evaluations_results = [list(r) for r in data["results"][keep]]
            evaluator.evaluations_length = [list(r) for r in data["ep_lengths"][keep]]


def train_teacher(
    env_id: str,
    out_dir: str | Path,
    recipe: TeacherRecipe | None = None,
    seed: int = 0,
    progress_bar: bool = True,
    command: str | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> dict[str, Any]:
    """Train a specialist on ``env_id`` and write model, statistics and manifest to ``out_dir``.

    Args:
        env_id: Any registered Gymnasium id with a Box observation space.
        out_dir: Run folder (created).
        recipe: Training recipe; ``load_recipe(env_id)`` when omitted.
        seed: Seed of the algorithm and the envs.
        progress_bar: Show SB3's progress bar.
        command: Command line recorded in the manifest as the way to reproduce this teacher.
        checkpoint_every: Checkpoint the run to ``out_dir/checkpoint`` every this many env steps
            (0: never). Off-policy algorithms save their replay buffer too.
        resume: Continue from ``out_dir/checkpoint`` (same env, seed and recipe; ``n_timesteps``
            may be larger, which extends a finished run). The model, replay buffer, statistics,
            step count, best evaluation and training time carry over; the envs restart from a
            fresh seeded reset, so a resumed run is not bit-identical to an uninterrupted one.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).

    Raises:
        CheckpointError: ``resume`` without a checkpoint in ``out_dir``.
        ConfigError: ``resume`` with another env, seed or recipe than the checkpoint's.
    """
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
    from stable_baselines3.common.vec_env import VecNormalize

    recipe = recipe or load_recipe(env_id)
    train_kwargs = {**recipe.env_kwargs, **recipe.train_env_kwargs}
    make_env(env_id, train_kwargs).close()  # unknown id / bad kwargs: ConfigError
    algo_cls = _algo_class(recipe.algo)
    _check_hyperparams(algo_cls, recipe.hyperparams)
    hyperparams = _hyperparams(recipe.hyperparams)
    if checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every must be >= 0 env steps; got {checkpoint_every}")
    ckpt: Path | None = None
    state: dict[str, Any] = {}
    if resume:
        ckpt = _checkpoint_path(Path(out_dir))
        if ckpt is None:
            raise CheckpointError(f"resume: no checkpoint in {str(Path(out_dir) / CHECKPOINT_DIR)!r} "
                                  f"(train with checkpoint_every > 0 to write one)")
        state = json.loads((ckpt / "state.json").read_text())
        _check_resumable(state, env_id, seed, recipe)
        out = Path(out_dir)
        checkpoint_every = checkpoint_every or int(state.get("checkpoint_every", 0))
        if (ckpt / "best").is_dir():  # best/ as it was at the checkpoint
            shutil.rmtree(out / "best", ignore_errors=True)
            shutil.copytree(ckpt / "best", out / "best")
    else:
        out = clear_run_folder(out_dir)
        for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old", CHECKPOINT_DIR + ".tmp", "eval"):
            shutil.rmtree(out / name, ignore_errors=True)
    done_steps = int(state.get("num_timesteps", 0))
    torch.set_num_threads(1)  # small MLPs: threads cost more than they give on few cores

    wrap: dict[str, Any] = {}
    if recipe.obs_groups:
        from polydistill.wrappers.gymnasium import ConcatGroups

        wrap = {"wrapper_class": ConcatGroups, "wrapper_kwargs": {"keys": recipe.obs_groups}}
    # a resumed run's envs restart on seeds its first part did not use
    venv = make_vec_env(env_id, n_envs=recipe.n_envs, seed=seed + done_steps, env_kwargs=train_kwargs,
                        **wrap)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000, env_kwargs=recipe.env_kwargs,
                            **wrap)
    if recipe.normalize:
        if ckpt is not None:
            venv = VecNormalize.load(str(ckpt / "vecnormalize.pkl"), venv)  # SB3's pickle, our own file
        else:
            venv = VecNormalize(venv, norm_obs=True, norm_reward=True)
        eval_env = VecNormalize(eval_env, norm_obs=True, norm_reward=False, training=False)
    if ckpt is not None:
        model = algo_cls.load(ckpt / "model.zip", env=venv, device="cpu", tensorboard_log=str(out / "tb"))
        if (ckpt / "replay_buffer.pkl").is_file():
            model.load_replay_buffer(ckpt / "replay_buffer.pkl")
            _truncate_last_transition(model.replay_buffer)
        # `load` re-seeds the envs and generators with the run's seed; the resumed part draws anew
        model.set_random_seed(seed + done_steps)
        # an on-policy run stops at a whole rollout; an off-policy `n_steps` is its n-step return
        slack = model.n_steps * recipe.n_envs if isinstance(model, OnPolicyAlgorithm) else 0
        if done_steps > recipe.n_timesteps + slack:
            raise ConfigError(f"resume: the checkpoint is at step {done_steps:,}, past n_timesteps "
                              f"{recipe.n_timesteps:,}")
        started = state.get("init_from")
        log.info("resuming %s from step %d of %d (%s)", env_id, done_steps, recipe.n_timesteps, ckpt)
    else:
        hyperparams = _action_noise(hyperparams, venv.action_space)
        model = algo_cls(
            recipe.policy, venv, seed=seed, verbose=0, device="cpu",
            tensorboard_log=str(out / "tb"), policy_kwargs=_policy_kwargs(recipe.policy_kwargs),
            **hyperparams,
        )
        started = warm_start(model, venv, recipe.init_from, algo_cls) if recipe.init_from else None
    callbacks: list[Any] = []
    best_dir = out / "best"
    evaluator = None
    if recipe.eval_freq > 0:
        on_best = _SaveWithStats(best_dir) if recipe.keep_best else None
        evaluator = EvalCallback(
            eval_env, eval_freq=max(recipe.eval_freq // recipe.n_envs, 1),
            n_eval_episodes=recipe.n_eval_episodes, log_path=str(out / "eval"),
            deterministic=True, verbose=0, callback_on_new_best=on_best,
        )
        if ckpt is not None:
            _restore_evaluations(evaluator, out / "eval" / "evaluations.npz", state)
        callbacks.append(evaluator)
    trained_before = float(state.get("train_seconds", 0.0))
    resumed = [*state.get("resumed_at", []), done_steps] if ckpt is not None else []
    t0 = time.time()
    if checkpoint_every > 0:
        def snapshot(step: int) -> dict[str, Any]:
            return {"env_id": env_id, "seed": seed, "num_timesteps": int(step), "recipe": to_dict(recipe),
                    "train_seconds": trained_before + time.time() - t0,
                    "best_mean_reward": None if evaluator is None else float(evaluator.best_mean_reward),
                    "init_from": started, "resumed_at": resumed, "checkpoint_every": checkpoint_every}

        callbacks.append(_Checkpointer(out, checkpoint_every, snapshot))
    model.learn(max(recipe.n_timesteps - done_steps, 0), callback=callbacks, progress_bar=progress_bar,
                tb_log_name="teacher", reset_num_timesteps=ckpt is None)
    train_s = trained_before + time.time() - t0
    selected = save_selected(model, venv, out, recipe)
    venv.close()
    eval_env.close()

    # Measure the saved teacher through the same adapter distillation uses.
    teacher = SB3Teacher.load(out / "model.zip")
    act = teacher.act
    if recipe.obs_groups:
        from polydistill.wrappers.gymnasium import flatten_groups

        def act(obs: Any) -> np.ndarray:
            return teacher.act(flatten_groups(obs, recipe.obs_groups))

    result = evaluate(env_id, act, n_episodes=recipe.final_eval_episodes,
                      seed=seed + 20_000, env_kwargs=recipe.env_kwargs)
    manifest = {
        "kind": "polydistill.teacher",
        "env_id": env_id,
        "algo": recipe.algo,
        "seed": seed,
        "n_timesteps": recipe.n_timesteps,
        "train_seconds": round(train_s, 1),
        "selected": selected,
        "mean_return": result.mean_return,
        "std_return": result.std_return,
        "eval_episodes": len(result.returns),
        "observation_shape": list(teacher.observation_space.shape),
        "action_space": repr(teacher.action_space),
        "obs_groups": list(recipe.obs_groups),
        "recipe": to_dict(recipe),
        **({"init_from": started} if started else {}),
        **({"resumed_at": resumed} if resumed else {}),
        "versions": library_versions(),
        "reproduce": command or (
            f"polydistill train-teacher --env-id {shlex.quote(env_id)} --seed {seed} "
            f"--out {shlex.quote(str(out))}"
        ),
        "files": {"model": "model.zip",
                  "vecnormalize": "vecnormalize.pkl" if recipe.normalize else None},
        "format_note": "model.zip and vecnormalize.pkl are SB3 pickle-based files",
    }
    atomic_write_json(out / "manifest.json", manifest)
    log.info("teacher %s: mean return %.1f +- %.1f (%d episodes, %.0fs training)", env_id,
             result.mean_return, result.std_return, len(result.returns), train_s)
    if not np.isfinite(result.mean_return):
        raise TrainingError(f"teacher evaluation on {env_id} produced no finite return")
    return manifest


# ---------------------------------------------------------------------------- on Ray
@dataclass(frozen=True)
class TeacherJob:
    """One specialist to train."""

    env_id: str
    out: str
    recipe: Any
    seed: int
    command: str = ""
    name: str = ""


@dataclass
class TeacherOutcome:
    """What became of one :class:`TeacherJob`."""

    job: TeacherJob
    ok: bool
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def _train_one(job: TeacherJob) -> dict[str, Any]:
    torch.set_num_threads(1)
    import polydistill.envs  # noqa: F401

    return train_teacher(job.env_id, Path(job.out), job.recipe, seed=job.seed, progress_bar=False,
                         command=job.command)


def train_teachers_ray(jobs: list[TeacherJob], address: str | None = None,
                       num_cpus: int | None = None) -> list[TeacherOutcome]:
    """Train every job concurrently as a Ray task (one CPU each); one failure loses no other.

    Returns:
        One outcome per job, in job order, with its metrics or its error.
    """
    from polydistill.collect.ray import init_ray

    ray = init_ray(address, num_cpus)
    task = ray.remote(num_cpus=1, max_retries=0)(_train_one)
    t0 = time.perf_counter()
    refs = {task.remote(j): i for i, j in enumerate(jobs)}
    outcomes: list[TeacherOutcome | None] = [None] * len(jobs)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        i = refs[done[0]]
        job = jobs[i]
        try:
            metrics = ray.get(done[0])
            outcomes[i] = TeacherOutcome(job, True, time.perf_counter() - t0, metrics)
            log.info("%s: mean return %.1f +- %.1f (%.0f s)", job.name or job.env_id,
                     metrics["mean_return"], metrics["std_return"], time.perf_counter() - t0)
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            outcomes[i] = TeacherOutcome(job, False, time.perf_counter() - t0, error=repr(cause))
            log.error("%s failed: %r", job.name or job.env_id, cause)
    return [o for o in outcomes if o is not None]


def summarize(outcomes: list[TeacherOutcome]) -> str:
    """A markdown table of teacher outcomes."""
    lines = ["| teacher | status | mean return | finished after (s) |", "|---|---|---:|---:|"]
    for o in outcomes:
        ret = f"{o.metrics['mean_return']:.1f}" if o.ok else "-"
        lines.append(f"| {o.job.name or o.job.env_id} | {'ok' if o.ok else 'FAILED: ' + o.error[:120]} "
                     f"| {ret} | {o.seconds:.0f} |")
    return "\n".join(lines)

