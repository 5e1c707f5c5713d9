"""A distilled student as a stable-baselines3 actor-critic, and the env view it acts through.

SB3's PPO sees one flat observation per env: the task's raw observation zero-padded to the
student's widest embodiment, then (for a student that reads a body descriptor) the body's
descriptor, then (for a ``history`` student) its last ``k`` steps, then the student's token row
(one float). :class:`TokenRouted` makes that view of
a task's env and cuts the padded action back to the embodiment's; every task of a multi-task
run therefore has the same spaces and steps in one vector env, each routed to its own token.
A morphology student's padded layout (joint slots, :class:`~polydistill.students.layout.FamilyLayout`)
is made inside the policy (:class:`StudentInput`), so the raw observation stays a prefix
that the regulariser's teacher reads as is. A ``history`` student's history travels with the
env (:class:`RoutedHistory`): each step appends ``[padded observation, executed action, 1]``, as
distillation's collection does, and a reset empties it, so PPO's rollouts and minibatches
carry it like any other observation. :class:`StudentActorCritic` is the policy: the actor *is* the
student (its normaliser, trunk and head, unchanged in structure, so the fine-tuned weights
load back into a normal student checkpoint), and the critic is a new MLP on the student's
normalised input and token.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from polydistill.errors import ConfigError
from polydistill.students.base import ACTIVATIONS, Student
from polydistill.students.embodiment import EmbodimentTable

__all__ = ["TokenRouted", "StudentActorCritic", "StudentInput", "RoutedHistory", "routed_spaces",
           "split_obs"]


def routed_spaces(table: EmbodimentTable, n_body: int = 0,
                  n_hist: int = 0) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """Observation and action space every routed task shares.

    The observation is ``max_obs_dim`` raw values, ``n_body`` descriptor values, ``n_hist``
    history values, then the token row; the action is the widest action vector, bounded by the
    union of the embodiments' bounds (each task clips to its own).
    """
    d, a = table.max_obs_dim, table.max_action_dim
    obs = gym.spaces.Box(-np.inf, np.inf, (d + n_body + n_hist + 1,), np.float32)
    mask = table.action_mask
    low = np.where(mask, table.action_low, np.inf).min(0)
    high = np.where(mask, table.action_high, -np.inf).max(0)
    return obs, gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), (a,), np.float32)


def split_obs(obs: torch.Tensor, table: EmbodimentTable) -> tuple[torch.Tensor, torch.Tensor]:
    """Routed observations ``(B, D [+ P] + 1)`` -> zero-padded raw observations ``(B, D)`` and token rows."""
    d = table.max_obs_dim
    return obs[:, :d], obs[:, -1].round().long()


class StudentInput:
    """How routed observations become a student's network input, per student kind.

    A generalist student reads the zero-padded observation as it is. A morphology student
    reads it in its family's padded layout, made here per token row by an exact 0/1 matrix;
    the ``descriptor`` and ``joints`` kinds also read the body descriptor that the routed
    observation carries, the ``history`` kind its last ``k`` steps (:class:`RoutedHistory`).
    Other recurrent students cannot be fine-tuned (ConfigError).

    Args:
        student: The student.
    """

    def __init__(self, student: Student) -> None:
        self.student, self.table = student, student.table
        spec = getattr(student, "spec", None)
        kind = getattr(student, "kind", "generalist")
        if getattr(student, "recurrent", False) and kind != "history":
            raise ConfigError(f"a recurrent {kind!r} student cannot be fine-tuned (of the recurrent "
                              "students, fine-tuning carries the morphology history kind's state only)")
        self.n_body = spec.n_desc if kind in ("descriptor", "joints") else 0
        self.hist_shape: tuple[int, int] | None = None
        if kind == "history":
            self.hist_shape = (int(student.config.history), int(student.history_width))  # type: ignore[attr-defined]
        self.n_hist = 0 if self.hist_shape is None else self.hist_shape[0] * self.hist_shape[1]
        self.pad: torch.Tensor | None = None
        if spec is not None:
            d = self.table.max_obs_dim
            mats = np.zeros((len(self.table.action_mask), d, d), np.float32)
            for row in range(len(mats)):
                layout = spec.layout.layouts[student._layout_of_row(row)]  # type: ignore[attr-defined]
                mats[row, :layout.obs_dim] = spec.layout.pad(np.eye(layout.obs_dim), layout, np.float32)
            self.pad = torch.from_numpy(mats)

    def split(self, obs: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Routed observations -> the student's input, its padded observation ``(B, D)`` and token rows."""
        x, emb = split_obs(obs.float(), self.table)
        if self.pad is not None:
            x = torch.einsum("bi,bij->bj", x, self.pad[emb])
        d = self.table.max_obs_dim
        if self.n_body:
            return {"obs": x, "body": obs[:, d: d + self.n_body].float()}, x, emb
        if self.hist_shape is not None:
            hist = obs[:, d: d + self.n_hist].float().reshape(-1, *self.hist_shape)
            return {"obs": x, "hist": hist}, x, emb
        return x, x, emb

    def body(self, obs: torch.Tensor) -> torch.Tensor | None:
        """The descriptors a routed batch carries (None: the student reads none)."""
        d = self.table.max_obs_dim
        return obs[:, d: d + self.n_body].float() if self.n_body else None


class RoutedHistory:
    """The history a ``history`` student reads, kept by the env it acts in (see the module docstring).

    Rows are ``[padded observation, executed action (zero-padded), 1]``, oldest first, the way
    distillation's collection builds them (``polydistill.setups.morphology``); a reset empties it.

    Args:
        k: Rows kept (the student's ``history``).
        obs_width: Padded observation length (the family layout's).
        act_width: Padded action length.
        pad: Maps the body's raw observation to its padded layout.
    """

    def __init__(self, k: int, obs_width: int, act_width: int, pad: Any) -> None:
        self.k, self.obs_width, self.act_width, self.pad = int(k), int(obs_width), int(act_width), pad
        self.rows = np.zeros((self.k, self.obs_width + self.act_width + 1), np.float32)
        self.last = np.zeros(self.obs_width, np.float32)

    @property
    def size(self) -> int:
        """Values it adds to the routed observation."""
        return self.rows.size

    def reset(self, obs: np.ndarray) -> None:
        """Empty the history; ``obs`` is the episode's first observation."""
        self.rows[:] = 0.0
        self.last = np.asarray(self.pad(np.asarray(obs)), np.float32).ravel()

    def push(self, action: np.ndarray, obs: np.ndarray) -> None:
        """Append the last observation with the ``action`` executed on it; ``obs`` is the next one."""
        row = np.zeros(self.rows.shape[1], np.float32)
        row[: self.obs_width] = self.last
        a = np.asarray(action, np.float32).ravel()
        row[self.obs_width: self.obs_width + len(a)] = a
        row[-1] = 1.0
        self.rows = np.concatenate([self.rows[1:], row[None]], axis=0)
        self.last = np.asarray(self.pad(np.asarray(obs)), np.float32).ravel()


class TokenRouted(gym.Wrapper):
    """One task's env as the routed view (padded observation + token row; padded action cut).

    Args:
        env: The task's env (flat Box observations of the embodiment's size).
        table: The student's embodiment table.
        row: The token row that drives this task.
        body: The body descriptor to carry (students that read one), None for the others.
        obs_dim: The env's observation length where it differs from the row's (a morphology
            body whose layout the student pads); default: the row's.
        history: The history a ``history`` student reads (None for the other students).

    Example:
        >>> env = TokenRouted(make_env("polydistill/Hopper-v0"), student.table, 0)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, table: EmbodimentTable, row: int, body: np.ndarray | None = None,
                 obs_dim: int | None = None, history: RoutedHistory | None = None) -> None:
        super().__init__(env)
        self.table, self.row = table, int(row)
        e = table.embodiments[self.row]
        want = e.obs_dim if obs_dim is None else int(obs_dim)
        shape = tuple(getattr(env.observation_space, "shape", None) or ())
        if shape != (want,):
            raise ConfigError(f"token {e.name!r} reads observations of shape ({want},), the env "
                              f"{env.spec.id if env.spec else env} gives {shape}")
        if e.action_kind != "continuous":
            raise ConfigError("fine-tuning supports continuous-action students only")
        self._body = None if body is None else np.asarray(body, np.float32).ravel()
        self.history = history
        self.observation_space, self.action_space = routed_spaces(
            table, 0 if self._body is None else len(self._body), 0 if history is None else history.size)
        self._obs_dim, self._act_dim = want, e.action_dim
        self._low = table.action_low[self.row, : e.action_dim]
        self._high = table.action_high[self.row, : e.action_dim]

    def _route(self, obs: Any) -> np.ndarray:
        d = self.table.max_obs_dim
        out = np.zeros(self.observation_space.shape, dtype=np.float32)  # type: ignore[arg-type]
        out[: self._obs_dim] = obs
        if self._body is not None:
            out[d: d + len(self._body)] = self._body
        if self.history is not None:
            out[d: d + self.history.size] = self.history.rows.ravel()
        out[-1] = self.row
        return out

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the task's env; the observation comes routed (padded, with its token)."""
        obs, info = self.env.reset(**kwargs)
        if self.history is not None:
            self.history.reset(obs)
        return self._route(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step with the task's slice of the padded action, clipped to its bounds."""
        a = np.clip(np.asarray(action, dtype=np.float32)[: self._act_dim], self._low, self._high)
        obs, reward, terminated, truncated, info = self.env.step(a)
        if self.history is not None:
            self.history.push(a, obs)
        return self._route(obs), reward, terminated, truncated, info


class StudentActorCritic(ActorCriticPolicy):
    """SB3 actor-critic whose actor is a polydistill student (see the module docstring).

    Args:
        observation_space: The routed observation space (:func:`routed_spaces`).
        action_space: The routed action space.
        lr_schedule: SB3's learning-rate schedule (the critic's; the actor's is ``actor_lr``).
        student: The distilled student; fine-tuned in place.
        value_hidden: Hidden widths of the critic.
        actor_lr: Initial learning rate of the actor's parameters.
        activation: Critic activation (one of :data:`~polydistill.students.base.ACTIVATIONS`).
        log_std: ``(rows, A)`` starting log-std per token row: exploration then uses this
            state-independent parameter (SB3's own design) instead of the student's log-std
            output, whose gradient would move the shared trunk, and with it the mean. None:
            the student's log-std output.
        **kwargs: Passed to :class:`ActorCriticPolicy` (``use_sde`` must stay off).
    """

    def __init__(self, observation_space: gym.spaces.Space, action_space: gym.spaces.Box,
                 lr_schedule: Any, student: Student, value_hidden: tuple[int, ...] = (256, 256),
                 actor_lr: float = 3e-5, activation: str = "tanh", log_std: np.ndarray | None = None,
                 **kwargs: Any) -> None:
        if kwargs.get("use_sde"):
            raise ConfigError("fine-tuning a student does not support gSDE")
        # _build (called by the base __init__) needs these before nn.Module is set up.
        object.__setattr__(self, "_pending", (student, tuple(value_hidden), float(actor_lr), activation,
                                              log_std))
        super().__init__(observation_space, action_space, lr_schedule, net_arch=[], **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        student, hidden, actor_lr, activation, log_std = self.__dict__.pop("_pending")
        self.student = student
        self.table = student.table
        self.view = StudentInput(student)
        self.log_std: nn.Parameter | None = None
        if log_std is not None:
            want = (len(self.table.action_mask), self.table.max_action_dim)
            if np.shape(log_std) != want:
                raise ConfigError(f"log_std: expected shape {want} (token rows, actions), "
                                  f"got {np.shape(log_std)}")
            self.log_std = nn.Parameter(torch.tensor(np.asarray(log_std), dtype=torch.float32))  # a copy
        width = self.table.max_obs_dim + self.table.code_dim + self.view.n_body
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.critic = nn.Sequential(*layers)
        self.action_dist = DiagGaussianDistribution(self.table.max_action_dim)
        self.optimizer = self.optimizer_class(
            [{"params": self.actor_parameters(), "lr": actor_lr, "name": "actor"},
             {"params": list(self.critic.parameters()), "lr": lr_schedule(1), "name": "critic"}],
            **self.optimizer_kwargs)

    # ----------------------------------------------------------------- pieces
    def actor_parameters(self) -> list[nn.Parameter]:
        """The student's parameters and the exploration log-std (what the critic warm-up freezes)."""
        return list(self.student.parameters()) + ([self.log_std] if self.log_std is not None else [])

    def student_output(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, log-std ``(B, A)`` of the student on routed observations, and their token rows."""
        x, _, emb = self.view.split(obs)
        out = self.student(x, emb)
        if self.log_std is None:
            return out.mean, out.log_std, emb  # type: ignore[return-value]
        lo, hi = self.student.config.log_std_min, self.student.config.log_std_max
        log_std = self.log_std[emb].clamp(lo, hi) * self.student.action_mask[emb]
        return out.mean, log_std, emb  # type: ignore[return-value]

    def _distribution(self, obs: torch.Tensor) -> DiagGaussianDistribution:
        mean, log_std, _ = self.student_output(obs)
        return self.action_dist.proba_distribution(mean, log_std)

    def predict_values(self, obs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Critic values ``(B, 1)`` of routed observations."""
        _, x, emb = self.view.split(obs)
        parts = [self.student.normalize(x, emb), self.student.token_codes[emb].to(x.dtype)]
        body = self.view.body(obs)
        return self.critic(torch.cat(parts if body is None else [*parts, body], -1))

    # ----------------------------------------------------------------- what PPO calls
    def forward(self, obs: torch.Tensor, deterministic: bool = False  # type: ignore[override]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Actions, values and log-probabilities of routed observations (SB3's rollout call)."""
        dist = self._distribution(obs)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, self.predict_values(obs), dist.log_prob(actions)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor  # type: ignore[override]
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values, log-probabilities and entropy of ``actions`` (SB3's update call)."""
        dist = self._distribution(obs)
        return self.predict_values(obs), dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs: torch.Tensor) -> DiagGaussianDistribution:  # type: ignore[override]
        """The student's Gaussian over the padded action."""
        return self._distribution(obs)

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:  # type: ignore[override]
        return self._distribution(observation).get_actions(deterministic=deterministic)
