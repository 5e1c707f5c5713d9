"""Collaborative auxiliary-modality learning (CAML) on PettingZoo: teacher -> per-agent students.

The teacher acts on what *all* agents sense (their shared multi-modal data: here the env's
scripted privileged expert with ``knowledge="shared"``); students read only their own
deployable modalities (:class:`~polydistill.team_student.TeamStudent`) and learn by DAgger
on their own joint rollouts: every step of every live agent is labelled by the teacher,
while the behaviour is the students' (with teacher probability ``beta`` per agent). The
single-agent auxiliary-modality baseline is the same run with a teacher that knows only
what the agent itself senses (``teacher="own"``).

Observations are stored per team step, ``(N, D)`` with a presence mask, so agents that leave
mid-episode simply stop being labelled, and message-passing students train on real teams.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from polydistill.buffer import BufferConfig, DistillationBuffer, FieldSpec
from polydistill.collector import BetaSchedule
from polydistill.distiller import Distiller, DistillerConfig
from polydistill.errors import CheckpointError, ConfigError, TeacherError, TrainingError
from polydistill.run_state import ResumableRun
from polydistill.student import StudentConfig
from polydistill.team_student import TeamConfig, TeamStudent, flatten_modalities
from polydistill.utils import (
    round_schedule,
    seed_everything,
    spawn_seeds,
)
from polydistill.vec_env import same_observations

__all__ = ["CamlConfig", "CamlTrainer", "TeamResult", "evaluate_team", "flatten_modalities"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CamlConfig:
    """A CAML distillation run on one shipped multi-agent env."""

    env: str = "intersection_v0"
    """Name from ``polydistill.envs.list_parallel_envs()``."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments (e.g. ``n_agents``)."""
    teacher: Literal["shared", "own", "full"] = "shared"
    """What the scripted teacher knows: ``shared`` (CAML: all agents' sensing), ``own`` (the
    single-agent auxiliary-modality baseline) or ``full`` (an oracle)."""
    team: TeamConfig = field(default_factory=TeamConfig)
    """Deployable modalities and messages."""
    total_steps: int = 100_000
    """Labelled agent-steps in total."""
    rounds: int = 8
    """DAgger rounds."""
    n_envs: int = 8
    """Env copies stepped together."""
    updates_per_step: float = 0.05
    """Gradient updates per labelled agent-step."""
    beta: BetaSchedule = field(default_factory=BetaSchedule)
    """Teacher-acts probability per round."""
    student: StudentConfig = field(default_factory=lambda: StudentConfig(hidden=(256, 256)))
    """Trunk and head of the per-agent student."""
    distiller: DistillerConfig = field(default_factory=lambda: DistillerConfig(batch_size=64))
    """Loss and optimisation; ``batch_size`` counts team steps."""
    buffer: BufferConfig = field(default_factory=lambda: BufferConfig(capacity=50_000))
    """Bounded buffer of team steps."""
    seed: int = 0
    """Seed of everything."""
    torch_threads: int = 1
    """torch intra-op threads (0: torch's default)."""


@dataclass
class TeamResult:
    """Per-episode team figures of a policy."""

    returns: list[float] = field(default_factory=list)
    """Mean over agents of each agent's episode return."""
    accidents: list[float] = field(default_factory=list)
    """Fraction of the episode's agents involved in at least one collision."""

    @property
    def mean_return(self) -> float:
        """Mean team return over episodes."""
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def accident_rate(self) -> float:
        """Mean fraction of agents that collided."""
        return float(np.mean(self.accidents)) if self.accidents else float("nan")


def evaluate_team(make: Callable[[], Any], act: Callable[[Any, dict[str, Any]], dict[str, np.ndarray]],
                  episodes: int = 20, seed: int = 100_000) -> TeamResult:
    """Run ``episodes`` episodes of ``act(env, obs) -> actions`` (episode ``k`` has seed ``seed + k``)."""
    env = make()
    result = TeamResult()
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k)
            ret = {a: 0.0 for a in env.agents}
            crashed: set[str] = set()
            while env.agents:
                obs, rew, _, _, infos = env.step(act(env, {a: obs[a] for a in env.agents}))
                for a, r in rew.items():
                    ret[a] += r
                crashed |= {a for a, i in infos.items() if i.get("collision")}
            result.returns.append(float(np.mean(list(ret.values()))))
            result.accidents.append(len(crashed) / len(ret))
    finally:
        env.close()
    return result


TeamPolicy = Callable[[Any, dict[str, Any]], dict[str, np.ndarray]]
"""``act(env, obs) -> {agent: action}`` for the live agents' observations ``obs``."""


class CamlTrainer(ResumableRun):
    """DAgger from the shared-knowledge teacher into per-agent students (module docstring).

    Args:
        config: The run.
        progress_bar: Show a progress bar over rounds.
        make_env: Builds one env copy; default ``make_parallel(config.env, **config.env_kwargs)``.
            Any PettingZoo ``ParallelEnv`` with ``Dict`` observations holding the deployable
            modalities plugs in here (wrap flat ones in ``ModalityGroups``, add ``SharedView``
            for a teacher that reads everyone's data).
        teacher: ``act(env, obs)`` giving the teacher's actions for the live agents (it may read
            every modality of ``obs`` and the env); default: the env's scripted expert with
            ``config.teacher`` knowledge.

    Raises:
        TeacherError: if no ``teacher`` is given and the env has no scripted expert.
        ConfigError: if the env lacks a deployable modality.
    """

    def __init__(self, config: CamlConfig, progress_bar: bool = True,
                 make_env: Callable[[], Any] | None = None, teacher: TeamPolicy | None = None,
                 run_dir: str | Path | None = None) -> None:
        from polydistill.envs import make_parallel

        self.config = config
        self.progress_bar = progress_bar
        self.checkpoint_dir = Path(run_dir) / "checkpoints" if run_dir is not None else None
        self.round = 0
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        seed_everything(config.seed)
        self._custom_env = make_env is not None
        self._make = make_env or (lambda: make_parallel(config.env, **config.env_kwargs))
        self.envs = [self._make() for _ in range(config.n_envs)]
        probe = self.envs[0]
        if teacher is None:
            if not callable(getattr(probe.unwrapped, "expert_actions", None)):
                raise TeacherError(
                    f"env {config.env!r} has no scripted expert (expert_actions): pass teacher=act(env, obs)"
                )
            knowledge = config.teacher

            def teacher(env: Any, obs: dict[str, Any]) -> dict[str, np.ndarray]:
                return env.unwrapped.expert_actions(knowledge)

        self.teacher = teacher
        self.agents = list(probe.possible_agents)
        self._slot = {a: k for k, a in enumerate(self.agents)}
        space = probe.observation_space(self.agents[0])
        have = getattr(space, "spaces", {})
        missing = [m for m in config.team.modalities if m not in have]
        if missing:
            raise ConfigError(
                f"CamlConfig.team.modalities: {config.env!r} has no modality {missing}; it has {sorted(have)}"
            )
        self.sizes = tuple(int(np.prod(space[m].shape)) for m in config.team.modalities)
        act = probe.action_space(self.agents[0])
        torch.manual_seed(config.seed)
        self.student = TeamStudent(sum(self.sizes), act.low, act.high, config.student, config.team,
                                   self.sizes)
        self.distiller = Distiller(self.student, config.distiller)
        n, d, a = len(self.agents), sum(self.sizes), act.shape[0]
        fields = {"obs": FieldSpec((n, d), "float32"), "present": FieldSpec((n,), "bool"),
                  "emb": FieldSpec((n,), "int64"), "mask": FieldSpec((n, a), "bool"),
                  "action": FieldSpec((n, a), "float32")}
        self.buffer = DistillationBuffer(fields, 1, config.buffer, seed=config.seed)
        mix_seed, env_seed = spawn_seeds(config.seed, 2)
        self.rng = np.random.default_rng(mix_seed)
        self._env_rng = np.random.default_rng(env_seed)
        # each copy's episode seed and the joint actions since its reset: its whole state, so a
        # resumed run rebuilds it by reset + replay instead of pickling the simulator
        self._ep_seed = [0] * len(self.envs)
        self._log: list[list[np.ndarray]] = [[] for _ in self.envs]
        self.obs = [self._reset(i) for i in range(len(self.envs))]
        self.total_steps = 0
        self.history: list[dict[str, float]] = []

    def _team(self, obs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        x = np.zeros((len(self.agents), sum(self.sizes)), np.float32)
        present = np.zeros(len(self.agents), bool)
        for k, agent in enumerate(self.agents):
            if agent in obs:
                x[k] = flatten_modalities({m: obs[agent][m] for m in self.config.team.modalities},
                                          self.config.team.modalities, self.sizes)
                present[k] = True
        return x, present

    @torch.inference_mode()
    def collect(self, steps: int, beta: float) -> dict[str, float]:
        """Collect at least ``steps`` labelled agent-steps (whole team steps) with teacher prob. ``beta``."""
        n = len(self.agents)
        written, teacher_steps, seen = 0, 0, []
        t0 = time.perf_counter()
        self.student.eval()
        while written < steps:
            teams = [self._team({a: o[a] for a in e.agents})
                     for e, o in zip(self.envs, self.obs, strict=True)]
            x = np.stack([t[0] for t in teams])
            present = np.stack([t[1] for t in teams])
            labels = np.zeros((len(self.envs), n, self.student.table.max_action_dim), np.float32)
            for i, (e, o) in enumerate(zip(self.envs, self.obs, strict=True)):
                for agent, act in self.teacher(e, {a: o[a] for a in e.agents}).items():
                    labels[i, self._slot[agent]] = act
            if not np.all(np.isfinite(labels)):
                raise TeacherError("the teacher produced non-finite actions")
            emb = torch.zeros(x.shape[:2], dtype=torch.long)
            mine = self.student.act({"obs": torch.from_numpy(x), "present": torch.from_numpy(present)},
                                    emb).numpy()
            use_t = self.rng.random(present.shape) < beta
            action = np.where(use_t[..., None], labels, mine)
            if not np.all(np.isfinite(action)):
                raise TrainingError("non-finite action; refusing to step")
            self.buffer.add(0, {"obs": x, "present": present, "emb": np.zeros(present.shape, np.int64),
                                "mask": np.repeat(present[..., None], labels.shape[-1], -1),
                                "action": labels})
            seen.append(x[present])
            written += int(present.sum())
            teacher_steps += int((use_t & present).sum())
            for i, e in enumerate(self.envs):
                acts = {a: action[i, self._slot[a]] for a in e.agents}
                self._log[i].append(action[i].copy())
                self.obs[i], *_ = e.step(acts)
                if not e.agents:
                    self.obs[i] = self._reset(i)
        self.student.update_normalizer(np.concatenate(seen), 0)
        self.total_steps += written
        return {"collect/agent_steps_per_s": written / (time.perf_counter() - t0),
                "collect/teacher_frac": teacher_steps / written, "collect/beta": beta}

    def _reset(self, i: int) -> Any:
        """Start a new seeded episode in copy ``i``; returns its observations."""
        self._ep_seed[i] = int(self._env_rng.integers(1 << 31))
        self._log[i] = []
        return self.envs[i].reset(seed=self._ep_seed[i])[0]

    def learn(self, max_rounds: int | None = None) -> TeamStudent:
        """Run the remaining rounds (at most ``max_rounds`` of them); returns the student."""
        from tqdm.auto import tqdm

        cfg = self.config
        per_round, updates = round_schedule(cfg.total_steps, cfg.rounds, cfg.updates_per_step)
        self._start_or_continue()
        stop = cfg.rounds if max_rounds is None else min(cfg.rounds, self.round + max_rounds)
        for r in tqdm(range(self.round, stop), desc="distill (caml)", disable=not self.progress_bar,
                      initial=self.round, total=cfg.rounds):
            m = self.collect(per_round[r], cfg.beta.value(r, cfg.rounds))
            m.update(self.distiller.train_round(self.buffer, updates[r], sum(updates)))
            self.history.append({"round": float(r + 1), "agent_steps": float(self.total_steps), **m})
            log.info("round %d: %s", r + 1, {k: round(v, 4) for k, v in m.items()})
            self.round = r + 1
            self.commit()
        return self.student

    def state_dict(self) -> dict[str, Any]:
        """The whole run at a round boundary (student, optimizer, buffer, RNGs, env replays)."""
        n, a = len(self.agents), self.student.table.max_action_dim
        return {
            **self._core_state(), "total_steps": self.total_steps,
            "rng": self.rng.bit_generator.state, "env_rng": self._env_rng.bit_generator.state,
            "ep_seed": list(self._ep_seed),
            "actions": [np.stack(lg) if lg else np.zeros((0, n, a), np.float32) for lg in self._log],
            "obs": self.obs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`.

        Each env copy is reset with its episode seed and its joint actions are replayed; the
        replayed observations must equal the saved ones.

        Raises:
            CheckpointError: for another config or an env that does not replay identically
                (not deterministic under seeded reset); :meth:`resume` also reports a damaged
                state as one.
        """
        self._load_core_state(state)
        self.rng.bit_generator.state = state["rng"]
        self._env_rng.bit_generator.state = state["env_rng"]
        seeds, actions = list(state["ep_seed"]), list(state["actions"])
        if len(seeds) != len(self.envs) or len(actions) != len(self.envs):
            raise CheckpointError(f"state holds {len(seeds)} env copies, this run has {len(self.envs)}")
        for i, e in enumerate(self.envs):
            self._ep_seed[i], self._log[i] = int(seeds[i]), []
            obs = e.reset(seed=self._ep_seed[i])[0]
            for row in actions[i]:
                obs, *_ = e.step({a: row[self._slot[a]] for a in e.agents})
                self._log[i].append(np.array(row, copy=True))
            if not same_observations(obs, state["obs"][i]):
                raise CheckpointError(
                    f"replaying env copy {i} gave other observations than were saved: the env is "
                    "not deterministic under seeded reset + the same actions")
            self.obs[i] = obs
        self.total_steps = int(state["total_steps"])

    def policy(self) -> Callable[[Any, dict[str, Any]], dict[str, np.ndarray]]:
        """``act(env, obs)`` of the students, for :func:`evaluate_team` (any number of agents)."""
        mods, sizes = self.config.team.modalities, self.sizes

        @torch.inference_mode()
        def act(env: Any, obs: dict[str, Any]) -> dict[str, np.ndarray]:
            agents = list(obs)
            x = np.stack([flatten_modalities({m: obs[a][m] for m in mods}, mods, sizes) for a in agents])
            t = {"obs": torch.from_numpy(x)[None], "present": torch.ones(1, len(agents), dtype=torch.bool)}
            self.student.eval()
            a = self.student.act(t, torch.zeros(1, len(agents), dtype=torch.long))[0].numpy()
            return {agent: a[k] for k, agent in enumerate(agents)}

        return act

    def _builder(self, make_env: Callable[[], Any] | None, env_kwargs: dict[str, Any]) -> Callable[[], Any]:
        from polydistill.envs import make_parallel

        if make_env is not None:
            return make_env
        if not env_kwargs:
            return self._make
        if self._custom_env:
            raise ConfigError("this run uses a custom make_env: pass make_env=... instead of env kwargs")
        kwargs = {**self.config.env_kwargs, **env_kwargs}
        return lambda: make_parallel(self.config.env, **kwargs)

    def evaluate(self, episodes: int = 20, seed: int = 100_000, make_env: Callable[[], Any] | None = None,
                 **env_kwargs: Any) -> TeamResult:
        """Students acting on their deployable modalities.

        ``env_kwargs`` override the shipped env's arguments (e.g. ``n_agents=5``); ``make_env``
        evaluates on any other env (e.g. a team of another size of a plugged-in env).
        """
        return evaluate_team(self._builder(make_env, env_kwargs), self.policy(), episodes, seed)

    def evaluate_teacher(self, episodes: int = 20, seed: int = 100_000, knowledge: str | None = None,
                         make_env: Callable[[], Any] | None = None, **env_kwargs: Any) -> TeamResult:
        """The teacher on the same seeds (``knowledge`` picks another scripted expert's view)."""
        teacher = self.teacher
        if knowledge is not None:
            def teacher(env: Any, obs: dict[str, Any]) -> dict[str, np.ndarray]:
                return env.unwrapped.expert_actions(knowledge)

        return evaluate_team(self._builder(make_env, env_kwargs), teacher, episodes, seed)

    def close(self) -> None:
        """Close the envs."""
        for e in self.envs:
            e.close()
