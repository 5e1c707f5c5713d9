"""Privileged teacher -> vision student: the second setup on the same machinery.

The teacher reads ``proprio + privileged`` (a flat vector, as it was trained); the student reads
``proprio + pixels`` through :class:`~polydistill.wrappers.ObsGroups`, checked once at start.
Collection is DAgger as in the generalist setup (teacher labels every state the behaviour
policy visits); pixels are stored as uint8 in the same bounded :class:`DistillationBuffer`
(memory-mapped on disk with ``buffer.storage: disk``), and the same :class:`Distiller` and
losses train the student.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from polydistill.buffer import BufferConfig, DistillationBuffer, FieldSpec
from polydistill.collector import BetaSchedule
from polydistill.distiller import Distiller, DistillerConfig
from polydistill.errors import ConfigError, TeacherError, TrainingError
from polydistill.evaluation import EvalResult, evaluate, make_env, make_vector_env
from polydistill.student import StudentConfig
from polydistill.teacher import Teacher, check_teacher_fits, load_teacher
from polydistill.utils import seed_everything, spawn_seeds, split_evenly
from polydistill.vision_student import VisionConfig, VisionStudent, random_shift
from polydistill.wrappers import ObsGroups, flatten_groups

__all__ = ["VisionConfig", "VisionStudent", "VisionDistillConfig", "VisionTrainer", "random_shift"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VisionDistillConfig:
    """A privileged-teacher -> vision-student run."""

    env_id: str = "polydistill/PointGoalVision-v0"
    """A Dict-observation env with the groups named below."""
    teacher: str = ""
    """SB3 teacher (zip or folder) trained on the concatenated ``obs_groups.teacher`` groups."""
    teacher_groups: tuple[str, ...] = ("proprio", "privileged")
    """Groups the teacher reads, concatenated in this order."""
    student_groups: tuple[str, ...] = ("proprio", "pixels")
    """Groups the student reads; ``("proprio",)`` is the blind control."""
    privileged_groups: tuple[str, ...] = ("privileged",)
    """Groups the student must never read."""
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"size": 64})
    """``gymnasium.make`` arguments (image size, frame stack)."""
    total_steps: int = 40_000
    """Labelled env steps in total."""
    rounds: int = 8
    """DAgger rounds."""
    n_envs: int = 8
    """Env copies."""
    updates_per_step: float = 0.1
    """Gradient updates per collected step."""
    beta: BetaSchedule = field(default_factory=BetaSchedule)
    """Teacher-acts probability per round (constant 1.0 = teacher-rollout cloning)."""
    student: StudentConfig = field(default_factory=StudentConfig)
    """Trunk and head of the student."""
    vision: VisionConfig = field(default_factory=VisionConfig)
    """Image encoder."""
    distiller: DistillerConfig = field(default_factory=lambda: DistillerConfig(batch_size=256))
    """Loss and optimisation."""
    buffer: BufferConfig = field(default_factory=lambda: BufferConfig(capacity=40_000))
    """Bounded buffer; ``storage: disk`` memory-maps the uint8 images."""
    seed: int = 0
    """Seed of everything."""
    torch_threads: int = 1
    """torch intra-op threads (0: torch's default)."""


class VisionTrainer:
    """DAgger from a privileged teacher into a (vision or blind) student."""

    def __init__(self, config: VisionDistillConfig, teacher: Teacher | None = None,
                 progress_bar: bool = True) -> None:
        self.config = config
        self.progress_bar = progress_bar
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        seed_everything(config.seed)
        self.groups = ObsGroups(config.teacher_groups, config.student_groups,
                                config.privileged_groups)
        env = make_env(config.env_id, config.env_kwargs)
        self.groups.check(env.observation_space)
        space = env.observation_space.spaces
        env.close()
        if teacher is None:
            if not config.teacher:
                raise ConfigError("VisionDistillConfig.teacher: path of the privileged teacher is required")
            teacher = load_teacher(config.teacher)
        t_dim = sum(space[k].shape[0] for k in config.teacher_groups)
        from gymnasium import spaces as gspaces

        check_teacher_fits(teacher, gspaces.Box(-np.inf, np.inf, (t_dim,)),
                           make_env(config.env_id, {**config.env_kwargs, "pixels": False}).action_space,
                           "privileged teacher")
        self.teacher = teacher
        act_space = teacher.action_space
        pixel_shape = tuple(space["pixels"].shape) if "pixels" in config.student_groups else None
        torch.manual_seed(config.seed)
        self.student = VisionStudent(space["proprio"].shape[0], act_space.low, act_space.high,
                                     pixel_shape, config.student, config.vision)  # type: ignore[arg-type]
        self.distiller = Distiller(self.student, config.distiller)
        a = len(act_space.low)
        self.with_dist = self.distiller.loss.needs_distribution
        if self.with_dist:
            probe_env = make_env(config.env_id, {**config.env_kwargs, "pixels": False})
            probe, _ = probe_env.reset(seed=0)
            probe_env.close()
            if self.teacher.action_dist(self.groups.teacher_obs(probe)[None]).kind != "gaussian":
                raise ConfigError(
                    f"loss {self.distiller.loss_name!r} needs a Gaussian teacher; this teacher gives "
                    "actions only (use loss mse or huber)"
                )
        fields = {"proprio": FieldSpec(space["proprio"].shape, "float32"),
                  "emb": FieldSpec((), "int64"), "mask": FieldSpec((a,), "bool"),
                  "action": FieldSpec((a,), "float32")}
        if self.with_dist:
            fields["mean"] = FieldSpec((a,), "float32")
            fields["log_std"] = FieldSpec((a,), "float32")
        if pixel_shape is not None:
            fields["pixels"] = FieldSpec(pixel_shape, "uint8")  # type: ignore[arg-type]
        self.buffer = DistillationBuffer(fields, 1, config.buffer, seed=config.seed)
        mix_seed, env_seed = spawn_seeds(config.seed, 2)
        self.rng = np.random.default_rng(mix_seed)
        self.venv = make_vector_env(config.env_id, config.n_envs, config.env_kwargs)
        self.obs, _ = self.venv.reset(seed=env_seed)
        self.total_steps = 0
        self.history: list[dict[str, float]] = []

    def student_input(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The student's view of a batch of Dict observations (never a privileged group)."""
        view = self.groups.student_obs(obs)
        return {"proprio": torch.as_tensor(view["proprio"], dtype=torch.float32),
                **({"pixels": torch.as_tensor(view["pixels"])} if "pixels" in view else {})}

    @torch.inference_mode()
    def collect(self, steps: int, beta: float) -> dict[str, float]:
        """Collect exactly ``steps`` labelled steps with teacher probability ``beta``."""
        n = self.config.n_envs
        emb = torch.zeros(n, dtype=torch.long)
        written, teacher_steps, returns = 0, 0, []
        seen: list[np.ndarray] = []
        ep_ret = getattr(self, "_ep_ret", np.zeros(n))
        t0 = time.perf_counter()
        self.student.eval()
        while written < steps:
            k = min(n, steps - written)
            obs = self.obs
            tgt = self.teacher.action_dist(self.groups.teacher_obs(obs))
            labels = [tgt.action] + ([tgt.mean, tgt.log_std] if self.with_dist else [])
            if any(x is None or not np.all(np.isfinite(x)) for x in labels):
                raise TeacherError("the privileged teacher produced missing or non-finite labels")
            rows: dict[str, np.ndarray] = {
                "proprio": obs["proprio"][:k].astype(np.float32),
                "emb": np.zeros(k, dtype=np.int64), "mask": np.ones((k, tgt.action.shape[1]), bool),
                "action": tgt.action[:k].astype(np.float32),
            }
            if self.with_dist:
                rows["mean"] = tgt.mean[:k].astype(np.float32)  # type: ignore[index]
                rows["log_std"] = tgt.log_std[:k].astype(np.float32)  # type: ignore[index]
            if "pixels" in self.buffer.fields:
                rows["pixels"] = obs["pixels"][:k]
            self.buffer.add(0, rows)
            seen.append(obs["proprio"][:k])
            action = tgt.action
            if beta < 1.0:
                mine = self.student.act(self.student_input(obs), emb).numpy().astype(np.float64)
                use_t = self.rng.random(n) < beta
                action = np.where(use_t[:, None], tgt.action, mine)
                teacher_steps += int(use_t[:k].sum())
            else:
                teacher_steps += k
            if not np.all(np.isfinite(action)):
                raise TrainingError("non-finite action; refusing to step")
            self.obs, rew, term, trunc, _ = self.venv.step(action)
            ep_ret += rew
            for i in np.flatnonzero(term | trunc):
                returns.append(float(ep_ret[i]))
                ep_ret[i] = 0.0
            written += k
        self._ep_ret = ep_ret
        self.student.update_normalizer(np.concatenate(seen), 0)
        self.total_steps += written
        dt = time.perf_counter() - t0
        out = {"collect/steps_per_s": written / dt, "collect/teacher_frac": teacher_steps / written,
               "collect/beta": beta}
        if returns:
            out["rollout/ep_return"] = float(np.mean(returns))
        return out

    def learn(self) -> VisionStudent:
        """Run every round; returns the trained student."""
        from tqdm.auto import tqdm

        cfg = self.config
        per_round = split_evenly(cfg.total_steps, cfg.rounds)
        updates = [int(round(cfg.updates_per_step * s)) for s in per_round]
        for r in tqdm(range(cfg.rounds), desc="distill (vision)", disable=not self.progress_bar):
            m = self.collect(per_round[r], cfg.beta.value(r, cfg.rounds))
            m.update(self.distiller.train_round(self.buffer, updates[r], sum(updates)))
            self.history.append({"round": float(r + 1), "env_steps": float(self.total_steps), **m})
        return self.student

    def evaluate(self, episodes: int = 10, seed: int = 100_000) -> EvalResult:
        """Return of the student acting alone (deterministic mean action)."""
        self.student.eval()
        emb0 = torch.zeros(1, dtype=torch.long)

        @torch.inference_mode()
        def act(obs: dict[str, np.ndarray]) -> np.ndarray:
            x = self.student_input(obs)
            return self.student.act(x, emb0.expand(x["proprio"].shape[0])).numpy()

        return evaluate(self.config.env_id, act, n_episodes=episodes, seed=seed,
                        env_kwargs=self.config.env_kwargs)

    def evaluate_teacher(self, episodes: int = 10, seed: int = 100_000) -> EvalResult:
        """Return of the privileged teacher on the same seeds."""
        keys = self.config.teacher_groups
        return evaluate(self.config.env_id, lambda o: self.teacher.act(flatten_groups(o, keys)),
                        n_episodes=episodes, seed=seed,
                        env_kwargs={**self.config.env_kwargs, "pixels": False})

    def close(self) -> None:
        """Close the envs."""
        self.venv.close()
