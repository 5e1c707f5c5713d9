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
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydistill.buffer import BufferConfig, DistillationBuffer, FieldSpec
from polydistill.collector import BetaSchedule
from polydistill.config import override
from polydistill.distiller import Distiller, DistillerConfig
from polydistill.errors import ConfigError, TeacherError, TrainingError
from polydistill.evaluation import EvalResult, evaluate, make_env
from polydistill.run_state import ResumableRun
from polydistill.student import StudentConfig
from polydistill.teacher import Teacher, check_teacher_fits, load_teacher
from polydistill.utils import (
    round_schedule,
    seed_everything,
    spawn_seeds,
)
from polydistill.vec_env import ReplayVectorEnv
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
    seq_len: int = 16
    """Recurrent students only (``vision.recurrent_size > 0``): steps per training sequence."""
    burn_in: int = 4
    """Recurrent students only: leading steps of a sequence that only warm the state up (no
    loss) unless an episode starts there. Sequences overlap by this much, so every labelled
    step is trained on once."""
    seed: int = 0
    """Seed of everything."""
    torch_threads: int = 1
    """torch intra-op threads (0: torch's default)."""

    def __post_init__(self) -> None:
        if not 0 <= self.burn_in < self.seq_len:
            raise ConfigError(
                f"VisionDistillConfig: need 0 <= burn_in < seq_len, got burn_in={self.burn_in}, "
                f"seq_len={self.seq_len}"
            )


class VisionTrainer(ResumableRun):
    """DAgger from a privileged teacher into a (vision or blind) student."""

    def __init__(self, config: VisionDistillConfig, teacher: Teacher | None = None,
                 progress_bar: bool = True, run_dir: str | Path | None = None) -> None:
        """Build the run.

        Args:
            config: The run's configuration.
            teacher: The privileged teacher (default: loaded from ``config.teacher``).
            progress_bar: Show a tqdm bar over rounds.
            run_dir: Folder of resumable run states (``run_dir/checkpoints``), committed after
                every round; see :meth:`resume`.
        """
        self.config = config
        self.progress_bar = progress_bar
        self.checkpoint_dir = Path(run_dir) / "checkpoints" if run_dir is not None else None
        self.round = 0
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
        self.recurrent = self.student.recurrent
        # A buffer row is one step, or (recurrent) one sequence of seq_len steps of which
        # seq_len - burn_in are new; capacity and batch size stay counted in labelled steps.
        self.steps_per_row = config.seq_len - config.burn_in if self.recurrent else 1
        """Labelled env steps one buffer row adds (one training sample per step)."""
        dcfg, bcfg = config.distiller, config.buffer
        if self.recurrent:
            dcfg = override(dcfg, {"batch_size": max(1, round(dcfg.batch_size / self.steps_per_row))})
            bcfg = override(bcfg, {"capacity": -(-bcfg.capacity // self.steps_per_row)})
        self.distiller = Distiller(self.student, dcfg)
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
        if self.recurrent:
            fields["first"] = FieldSpec((), "bool")
            fields = {k: FieldSpec((config.seq_len, *f.shape), f.dtype) for k, f in fields.items()}
        self.buffer = DistillationBuffer(fields, 1, bcfg, seed=config.seed)
        mix_seed, env_seed = spawn_seeds(config.seed, 2)
        self.rng = np.random.default_rng(mix_seed)
        self.venv = ReplayVectorEnv(
            [lambda: make_env(config.env_id, config.env_kwargs) for _ in range(config.n_envs)],
            seed=env_seed)
        self.obs = self.venv.reset()
        self._ep_ret = np.zeros(config.n_envs)
        self.total_steps = 0
        self.history: list[dict[str, float]] = []
        # recurrent collection: the student's state per env copy, episode-start flags, the
        # last seq_len steps of every copy, and steps since the last sequence was written
        self._state = self.student.initial_state(config.n_envs)
        self._first = np.ones(config.n_envs, dtype=bool)
        self._window: deque[dict[str, np.ndarray]] = deque(maxlen=config.seq_len)
        self._since = 0

    def student_input(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The student's view of a batch of Dict observations (never a privileged group)."""
        view = self.groups.student_obs(obs)
        return {"proprio": torch.as_tensor(view["proprio"], dtype=torch.float32),
                **({"pixels": torch.as_tensor(view["pixels"])} if "pixels" in view else {})}

    def _labels(self, obs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Buffer rows and teacher actions of one vector step (all ``n`` copies)."""
        tgt = self.teacher.action_dist(self.groups.teacher_obs(obs))
        labels = [tgt.action] + ([tgt.mean, tgt.log_std] if self.with_dist else [])
        if any(x is None or not np.all(np.isfinite(x)) for x in labels):
            raise TeacherError("the privileged teacher produced missing or non-finite labels")
        n = tgt.action.shape[0]
        rows: dict[str, np.ndarray] = {
            "proprio": obs["proprio"].astype(np.float32), "emb": np.zeros(n, dtype=np.int64),
            "mask": np.ones(tgt.action.shape, bool), "action": tgt.action.astype(np.float32),
        }
        if self.with_dist:
            rows["mean"] = tgt.mean.astype(np.float32)  # type: ignore[union-attr]
            rows["log_std"] = tgt.log_std.astype(np.float32)  # type: ignore[union-attr]
        if "pixels" in self.buffer.fields:
            rows["pixels"] = obs["pixels"]
        return rows, tgt.action

    @torch.inference_mode()
    def _collect_sequences(self, steps: int, beta: float) -> tuple[int, float, list[float]]:
        """Recurrent collection: overlapping sequences; the student's state runs every step."""
        cfg, n = self.config, self.config.n_envs
        stride = self.steps_per_row
        emb = torch.zeros(n, dtype=torch.long)
        written, teacher_steps, returns, seen = 0, 0, [], []
        ep_ret = self._ep_ret
        while written < steps:
            rows, teacher_action = self._labels(self.obs)
            rows["first"] = self._first.copy()
            self._window.append(rows)
            seen.append(rows["proprio"])
            mine, self._state = self.student.step(self.student_input(self.obs), emb, self._state,
                                                  torch.from_numpy(self._first))
            use_t = self.rng.random(n) < beta
            action = np.where(use_t[:, None], teacher_action, mine.numpy().astype(np.float64))
            teacher_steps += int(use_t.sum())
            if not np.all(np.isfinite(action)):
                raise TrainingError("non-finite action; refusing to step")
            self.obs, rew, term, trunc = self.venv.step(action)
            self._first = term | trunc
            ep_ret += rew
            for i in np.flatnonzero(self._first):
                returns.append(float(ep_ret[i]))
                ep_ret[i] = 0.0
            self._since += 1
            if len(self._window) == cfg.seq_len and self._since >= stride:
                k = min(n, -(-(steps - written) // stride))
                seq = {key: np.stack([w[key][:k] for w in self._window], axis=1) for key in rows}
                # burn-in steps carry no loss unless the state is exact there (episode began)
                started = np.logical_or.accumulate(seq["first"], axis=1)
                trained = started | (np.arange(cfg.seq_len) >= cfg.burn_in)[None, :]
                seq["mask"] &= trained[:, :, None]
                self.buffer.add(0, seq)
                written += k * stride
                self._since = 0
        self.student.update_normalizer(np.concatenate(seen), 0)
        return written, teacher_steps / (len(seen) * n), returns

    @torch.inference_mode()
    def collect(self, steps: int, beta: float) -> dict[str, float]:
        """Collect ``steps`` labelled steps with teacher probability ``beta``.

        Feed-forward students get exactly ``steps``; recurrent ones whole sequences, so up to
        ``n_envs * (seq_len - burn_in)`` more.
        """
        t0 = time.perf_counter()
        self.student.eval()
        if self.recurrent:
            written, teacher_frac, returns = self._collect_sequences(steps, beta)
            self.total_steps += written
            out = {"collect/steps_per_s": written / (time.perf_counter() - t0),
                   "collect/teacher_frac": teacher_frac, "collect/beta": beta}
            if returns:
                out["rollout/ep_return"] = float(np.mean(returns))
            return out
        n = self.config.n_envs
        emb = torch.zeros(n, dtype=torch.long)
        written, teacher_steps, returns = 0, 0, []
        seen: list[np.ndarray] = []
        ep_ret = self._ep_ret
        while written < steps:
            k = min(n, steps - written)
            obs = self.obs
            rows, action = self._labels(obs)
            self.buffer.add(0, {key: v[:k] for key, v in rows.items()})
            seen.append(obs["proprio"][:k])
            if beta < 1.0:
                mine = self.student.act(self.student_input(obs), emb).numpy().astype(np.float64)
                use_t = self.rng.random(n) < beta
                action = np.where(use_t[:, None], action, mine)
                teacher_steps += int(use_t[:k].sum())
            else:
                teacher_steps += k
            if not np.all(np.isfinite(action)):
                raise TrainingError("non-finite action; refusing to step")
            self.obs, rew, term, trunc = self.venv.step(action)
            ep_ret += rew
            for i in np.flatnonzero(term | trunc):
                returns.append(float(ep_ret[i]))
                ep_ret[i] = 0.0
            written += k
        self.student.update_normalizer(np.concatenate(seen), 0)
        self.total_steps += written
        dt = time.perf_counter() - t0
        out = {"collect/steps_per_s": written / dt, "collect/teacher_frac": teacher_steps / written,
               "collect/beta": beta}
        if returns:
            out["rollout/ep_return"] = float(np.mean(returns))
        return out

    def learn(self, max_rounds: int | None = None) -> VisionStudent:
        """Run the remaining rounds (at most ``max_rounds`` of them); returns the student."""
        from tqdm.auto import tqdm

        cfg = self.config
        per_round, updates = round_schedule(cfg.total_steps, cfg.rounds, cfg.updates_per_step)
        self._start_or_continue()
        stop = cfg.rounds if max_rounds is None else min(cfg.rounds, self.round + max_rounds)
        for r in tqdm(range(self.round, stop), desc="distill (vision)", disable=not self.progress_bar,
                      initial=self.round, total=cfg.rounds):
            m = self.collect(per_round[r], cfg.beta.value(r, cfg.rounds))
            m.update(self.distiller.train_round(self.buffer, updates[r], sum(updates)))
            if "distill/samples_per_s" in m:  # labelled steps, not sequences
                m["distill/samples_per_s"] *= self.steps_per_row
            self.history.append({"round": float(r + 1), "env_steps": float(self.total_steps), **m})
            self.round = r + 1
            self.commit()
        return self.student

    def state_dict(self) -> dict[str, Any]:
        """The whole run at a round boundary.

        That is: student, optimizer, buffer rows and cursors, the mixing RNG, the env copies'
        replayable state, the recurrent collection state (hidden states, open sequences),
        global RNGs, history and config.
        """
        return {
            **self._core_state(), "total_steps": self.total_steps,
            "rng": self.rng.bit_generator.state, "venv": self.venv.state_dict(),
            "ep_ret": self._ep_ret.copy(), "hidden": self._state.clone(), "first": self._first.copy(),
            "window": list(self._window), "since": self._since,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (replays each env copy to its saved state).

        Raises:
            CheckpointError: if the state belongs to another config or an env does not replay
                identically (:meth:`resume` also reports a damaged state as one).
        """
        self._load_core_state(state)
        self.rng.bit_generator.state = state["rng"]
        self.venv.load_state_dict(state["venv"])
        self.obs = self.venv.obs
        self._ep_ret = np.asarray(state["ep_ret"], dtype=np.float64).copy()
        self._state = state["hidden"].clone()
        self._first = np.asarray(state["first"], dtype=bool).copy()
        self._window = deque(state["window"], maxlen=self.config.seq_len)
        self._since = int(state["since"])
        self.total_steps = int(state["total_steps"])

    def evaluate(self, episodes: int = 10, seed: int = 100_000) -> EvalResult:
        """Return of the student acting alone (deterministic mean action)."""
        self.student.eval()
        emb0 = torch.zeros(1, dtype=torch.long)
        state: dict[str, Any] = {"h": None, "first": None}

        @torch.inference_mode()
        def act(obs: dict[str, np.ndarray]) -> np.ndarray:
            x = self.student_input(obs)
            n = x["proprio"].shape[0]
            if state["h"] is None:
                state["h"], state["first"] = self.student.initial_state(n), np.ones(n, bool)
            a, state["h"] = self.student.step(x, emb0.expand(n), state["h"],
                                              torch.from_numpy(state["first"]))
            state["first"] = np.zeros(n, bool)
            return a.numpy()

        def episode_end(done: np.ndarray) -> None:
            state["first"] = state["first"] | done

        return evaluate(self.config.env_id, act, n_episodes=episodes, seed=seed,
                        env_kwargs=self.config.env_kwargs, on_episode_end=episode_end)

    def evaluate_teacher(self, episodes: int = 10, seed: int = 100_000) -> EvalResult:
        """Return of the privileged teacher on the same seeds."""
        keys = self.config.teacher_groups
        return evaluate(self.config.env_id, lambda o: self.teacher.act(flatten_groups(o, keys)),
                        n_episodes=episodes, seed=seed,
                        env_kwargs={**self.config.env_kwargs, "pixels": False})

    def close(self) -> None:
        """Close the envs."""
        self.venv.close()
