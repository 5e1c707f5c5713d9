"""What a fine-tuning run is configured by (``agents/finetune.yaml``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from polydistill.config import from_dict, load_yaml, override
from polydistill.errors import ConfigError

__all__ = ["RegularizerConfig", "FinetuneConfig", "load_finetune_config", "default_finetune_recipe"]


@dataclass(frozen=True)
class RegularizerConfig:
    """Kickstarting: a loss that pulls the student toward a reference policy, fading out.

    The reference of a task is its teacher where the student was distilled from one
    (``reference: teacher``); a task without a teacher (a held-out body) is held to nothing by
    default (``no_teacher: none``), or to the student as it was before fine-tuning. The weight
    is ``coef`` at the start and decays over ``decay_steps`` env steps of fine-tuning (counted
    after the critic warm-up; ``run``: all of them, so it reaches 0 at the run's end).
    """

    coef: float = 1.0
    """Initial weight of the term (0 switches the regulariser off)."""
    loss: Literal["kl", "mse"] = "kl"
    """``kl``: KL(reference || student) of the Gaussians, summed over action dims (a reference
    without a distribution falls back to ``mse``); ``mse``: squared distance of the means."""
    decay: Literal["linear", "exponential", "constant"] = "linear"
    """``linear``: to 0 at ``decay_steps``; ``exponential``: halves every ``decay_steps / 4``;
    ``constant``: ``coef`` throughout."""
    decay_steps: int | Literal["run"] = 50_000
    """Env steps over which the weight decays, or ``run``: every step of the run after the critic
    warm-up, resolved by :func:`~polydistill.finetune.run.finetune` (:meth:`for_run`). A fixed
    span shorter than the run leaves its tail unregularised: cheetah-vel2, 300,000 steps, the
    seed-1 student of ``benchmark finetune``: with 50,000 its evaluations slid from 890 to 700
    after 150,000 steps and the kept student made 0.736 of the teacher on the benchmark's
    episodes (0.876 on 50 fresh ones), against 0.998 (0.989) decaying over the whole run and
    0.982 (0.996) held constant; the student before fine-tuning: 0.968 (0.958)."""
    reference: Literal["teacher", "student"] = "teacher"
    """What a task is held to: its teacher, or always the pre-fine-tuning student."""
    no_teacher: Literal["none", "student"] = "none"
    """What a task without a teacher is held to under ``reference: teacher``: nothing, or the
    pre-fine-tuning student. Holding a held-out body to a student that drives it badly holds it
    back (hopper-long, 100,000 steps, actor lr 1e-4: 3,308 held to the student vs 3,485 free;
    the specialist makes 3,482)."""

    def __post_init__(self) -> None:
        if self.coef < 0:
            raise ConfigError(f"regularizer.coef must be >= 0, got {self.coef}")
        if self.loss not in ("kl", "mse"):
            raise ConfigError(f"regularizer.loss: expected kl or mse, got {self.loss!r}")
        if self.decay not in ("linear", "exponential", "constant"):
            raise ConfigError("regularizer.decay: expected linear, exponential or constant, "
                              f"got {self.decay!r}")
        if self.decay_steps != "run" and not (isinstance(self.decay_steps, int) and self.decay_steps >= 1):
            raise ConfigError(f"regularizer.decay_steps: expected an int >= 1 or 'run', "
                              f"got {self.decay_steps!r}")
        if self.no_teacher not in ("none", "student"):
            raise ConfigError(f"regularizer.no_teacher: expected none or student, got {self.no_teacher!r}")
        if self.reference not in ("teacher", "student"):
            raise ConfigError(f"regularizer.reference: expected teacher or student, got {self.reference!r}")

    def for_run(self, steps: int) -> RegularizerConfig:
        """The config with ``decay_steps: run`` resolved to ``steps`` (the run's steps after warm-up)."""
        return replace(self, decay_steps=max(1, int(steps))) if self.decay_steps == "run" else self

    def weight(self, steps: float) -> float:
        """The weight after ``steps`` env steps of fine-tuning (0 before any, by design ``coef``).

        Raises:
            ConfigError: for ``decay_steps: run`` not yet resolved (:meth:`for_run`).
        """
        if self.decay_steps == "run":
            raise ConfigError("regularizer.decay_steps 'run' is resolved by the run (for_run) before use")
        t = max(float(steps), 0.0)
        if self.decay == "constant":
            return self.coef
        if self.decay == "linear":
            return self.coef * max(0.0, 1.0 - t / self.decay_steps)
        return self.coef * 0.5 ** (4.0 * t / self.decay_steps)


@dataclass(frozen=True)
class FinetuneConfig:
    """PPO (stable-baselines3) from a distilled student; every field can be set with ``--set``."""

    n_envs: int = 8
    """Env copies per task (all tasks step in one ``DummyVecEnv``)."""
    n_steps: int = 512
    """Steps per env per PPO rollout."""
    batch_size: int = 512
    """PPO minibatch size."""
    n_epochs: int = 10
    """PPO epochs per rollout."""
    learning_rate: float = 3e-4
    """Critic learning rate."""
    actor_learning_rate: float = 3e-5
    """Actor (student) learning rate: far below the critic's, so a good policy is refined,
    not overwritten by the first noisy advantages."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """Both learning rates constant, or decayed linearly to 0 over the run."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """PPO ratio clip."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Gradient norm clip."""
    target_kl: float | None = 0.02
    """Stop a rollout's epochs once the approximate KL to the behaviour policy exceeds 1.5x this."""
    normalize_reward: bool = True
    """Scale rewards by a running estimate of the return's std (``VecNormalize``, rewards only:
    observations keep the student's own normalisation, unchanged)."""
    critic_warmup_steps: int = 20_000
    """Env steps at the start during which only the critic learns (the actor is frozen); 0 skips
    the warm-up. Counted in the run's ``steps``."""
    value_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the critic (an MLP on the student's normalised input and token)."""
    log_std_init: Literal["teacher", "student"] | float = "teacher"
    """Exploration noise at the start. ``teacher``: the student's log-std output is fitted (least
    squares on its head's log-std rows; the mean is untouched) to the log-std of the teachers
    it was distilled from, on states of its own rollouts; this is what a student distilled with
    the default ``mse`` loss needs, since that loss never trains its log-std. A held-out task
    takes the teacher of the training task whose token it borrows. ``student``: keep the
    log-std learned in distillation (students distilled with a KL loss). A number: that
    constant log-std everywhere (any architecture; ``teacher`` needs a single Gaussian head).
    Where no teacher has a Gaussian (scripted experts such as Meta-World's), ``teacher`` keeps
    the student's own log-std output and a warning says so: after mse distillation that is
    the untrained head's, about 0 (std 1, times ``std_scale``)."""
    std_scale: float = 0.25
    """Multiplies the starting exploration std (after ``log_std_init``). A distilled student
    is more brittle under noise than the teacher that was trained with it (hopper, 5 episodes:
    the teacher's own noise takes the teacher from 3,576 to 2,576 and the student from 3,568 to
    1,079; at 0.4 of it, 3,570 and 2,787), and PPO then learns from rollouts that fall: at the
    teacher's std hopper-heavy collapsed from 3,088 to ~1,150 within 30,000 steps; at 0.5 it
    swung between 1,900 and 3,100; at 0.25 it stayed within 3,040-3,110. With
    ``exploration: student`` it scales the log-std output of every task."""
    std_scale_no_teacher: float = 1.0
    """The scale for tasks without a teacher (held-out bodies), under ``exploration:
    parameter``: a student that drives a body badly must find a new gait, not polish its own
    (hopper-long, 100,000 steps: 3,487 at 1.0 vs 1,023 at 0.25; the specialist makes 3,482)."""
    exploration: Literal["parameter", "student"] = "parameter"
    """Where the exploration std comes from. ``parameter``: a state-independent log-std per
    token row (SB3's own design), started at the row's log-std output (after ``log_std_init``
    and ``std_scale``) averaged over the student's states; the checkpoint keeps the student's
    log-std output as it started. ``student``: the student's state-dependent log-std output,
    trained with the rest; its gradient also moves the trunk the mean shares."""
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    """Kickstarting toward the teacher."""
    eval_every: int = 10_000
    """Evaluate every task deterministically every this many env steps (the learning curve;
    0: only at the start and the end)."""
    eval_episodes: int = 10
    """Episodes per task of each periodic evaluation (their seeds are never the benchmark's)."""
    select: Literal["best", "last"] = "best"
    """Which student to keep: the one of the periodic evaluation with the best mean
    return relative to the start (the start itself included), or the last."""
    confirm_episodes: int = 20
    """With ``select: best``: episodes per task on which the best evaluated student must also
    beat the start, on seeds no periodic evaluation used, or the start is kept (0: no check).
    The best of ten noisy evaluations is biased upward: on hopper (seed 0) the student of step
    90,000 was kept for 3,572 on its evaluation seeds (the start: 3,563) and made 3,448 on the
    benchmark's, against 3,567 for the start."""
    success_key: str | None = None
    """``info`` key of the env's success flag (Meta-World: ``success``). None: the student's own
    (its distillation recipe's ``success_key``), else none. With one, every evaluation records
    the success rate beside the return, and selection ranks success first, then return."""
    seed: int = 0
    """Seed of PPO and the envs."""

    def __post_init__(self) -> None:
        for name in ("n_envs", "n_steps", "batch_size", "n_epochs", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"FinetuneConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "actor_learning_rate", "clip_range", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"FinetuneConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ConfigError(f"FinetuneConfig: gamma in (0, 1] and gae_lambda in [0, 1], got "
                              f"{self.gamma} and {self.gae_lambda}")
        if self.critic_warmup_steps < 0 or self.eval_every < 0:
            raise ConfigError("FinetuneConfig.critic_warmup_steps and eval_every must be >= 0")
        if not self.value_hidden or any(h < 1 for h in self.value_hidden):
            raise ConfigError(f"FinetuneConfig.value_hidden must be positive widths, got {self.value_hidden}")
        if self.lr_schedule not in ("constant", "linear"):
            raise ConfigError("FinetuneConfig.lr_schedule: expected constant or linear, "
                              f"got {self.lr_schedule!r}")
        if isinstance(self.log_std_init, str) and self.log_std_init not in ("teacher", "student"):
            raise ConfigError(f"FinetuneConfig.log_std_init: expected teacher, student or a number, got "
                              f"{self.log_std_init!r}")
        for name in ("std_scale", "std_scale_no_teacher"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 < v < math.inf):
                raise ConfigError(f"FinetuneConfig.{name}: expected a number > 0, got {v!r}")
        if self.exploration not in ("parameter", "student"):
            raise ConfigError("FinetuneConfig.exploration: expected parameter or student, "
                              f"got {self.exploration!r}")
        if not (isinstance(self.confirm_episodes, int) and self.confirm_episodes >= 0):
            raise ConfigError("FinetuneConfig.confirm_episodes: expected an int >= 0, "
                              f"got {self.confirm_episodes!r}")
        if self.select not in ("best", "last"):
            raise ConfigError(f"FinetuneConfig.select: expected best or last, got {self.select!r}")


def default_finetune_recipe() -> Path:
    """The shipped recipe, ``agents/finetune.yaml``."""
    from polydistill.utils import agents_dir

    return agents_dir() / "finetune.yaml"


def load_finetune_config(path: str | Path | None = None,
                         overrides: list[str] | dict[str, Any] | None = None) -> FinetuneConfig:
    """A :class:`FinetuneConfig` from a recipe (default: the shipped one) and ``--set`` overrides.

    Raises:
        ConfigError: for a missing or malformed recipe, an unknown field or a bad value.
    """
    data = load_yaml(default_finetune_recipe() if path is None else path)
    data.pop("setup", None)
    cfg = from_dict(FinetuneConfig, data, "finetune recipe")
    return override(cfg, overrides or [])
