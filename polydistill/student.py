"""The generalist student: one network for every embodiment of an :class:`EmbodimentTable`.

Input: the observation normalized with the embodiment's own running statistics, zero-padded to
the widest embodiment, concatenated with a one-hot embodiment token (the COMPASS pattern).
Output: a diagonal Gaussian (mean, log-std) over the widest action vector for continuous
embodiments, or masked logits for discrete ones. Padded action dims are masked everywhere.

Needs only torch and NumPy, so a deployed student runs without gymnasium or SB3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from polydistill.embodiment import EmbodimentTable
from polydistill.errors import ConfigError, ObservationError

__all__ = ["StudentConfig", "StudentOutput", "GeneralistStudent", "ACTIVATIONS"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU,
}


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of the generalist student."""

    hidden: tuple[int, ...] = (256, 256)
    """Widths of the hidden layers of the shared trunk."""
    activation: Literal["elu", "relu", "tanh", "gelu", "silu"] = "elu"
    """Hidden activation."""
    log_std_min: float = -5.0
    """Lower clamp of the predicted log standard deviation."""
    log_std_max: float = 1.0
    """Upper clamp of the predicted log standard deviation."""
    obs_clip: float = 10.0
    """Normalized observations are clipped to ``[-obs_clip, obs_clip]``."""

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"StudentConfig.hidden must be positive widths, got {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"StudentConfig.activation: unknown {self.activation!r}; "
                f"valid: {', '.join(ACTIVATIONS)}"
            )
        if not self.log_std_min < self.log_std_max:
            raise ConfigError("StudentConfig.log_std_min must be below log_std_max")
        if not self.obs_clip > 0:
            raise ConfigError(f"StudentConfig.obs_clip must be > 0, got {self.obs_clip}")


@dataclass
class StudentOutput:
    """Action distribution parameters for a batch (padded to the widest embodiment)."""

    mean: torch.Tensor | None = None
    """(B, A) Gaussian mean in env units."""
    log_std: torch.Tensor | None = None
    """(B, A) Gaussian log-std."""
    logits: torch.Tensor | None = None
    """(B, n) categorical logits; invalid actions are ``-inf``-masked."""


class GeneralistStudent(nn.Module):
    """One policy network for all embodiments of ``table``."""

    obs_keys: tuple[str, ...] = ("obs",)
    """Buffer fields this student reads (see :meth:`batch_obs`)."""

    def __init__(self, table: EmbodimentTable, config: StudentConfig | None = None,
                 extra_features: int = 0) -> None:
        super().__init__()
        self.table = table
        self.config = config or StudentConfig()
        e, d, a = len(table), table.max_obs_dim, table.max_action_dim
        self.discrete = table.action_kind == "discrete"
        act = ACTIVATIONS[self.config.activation]
        layers: list[nn.Module] = []
        width = d + e + extra_features  # padded obs + token (+ e.g. image features)
        for h in self.config.hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.feature_dim = width
        self.head = nn.Linear(width, a if self.discrete else 2 * a)
        with torch.no_grad():  # small initial actions, moderate initial std
            self.head.weight.mul_(0.01)
            self.head.bias.zero_()
        # Observation statistics per embodiment (float64 for exact, order-independent updates).
        self.register_buffer("obs_mean", torch.zeros(e, d, dtype=torch.float64))
        self.register_buffer("obs_var", torch.ones(e, d, dtype=torch.float64))
        self.register_buffer("obs_count", torch.zeros(e, dtype=torch.float64))
        self.register_buffer("action_mask", torch.tensor(table.action_mask))
        self.register_buffer("action_low", torch.tensor(table.action_low))
        self.register_buffer("action_high", torch.tensor(table.action_high))
        self.register_buffer("action_scale", torch.tensor(table.action_scale))

    # ----------------------------------------------------------------- normalization
    @torch.no_grad()
    def update_normalizer(self, obs: np.ndarray, emb_id: int) -> None:
        """Fold a raw batch ``(N, obs_dim)`` of embodiment ``emb_id`` into its statistics.

        Raises:
            ObservationError: for a batch of the wrong shape or with non-finite values (they
                would poison the statistics for good).
        """
        dim = self.table.embodiments[emb_id].obs_dim
        if obs.ndim != 2 or obs.shape[1] != dim:
            raise ObservationError(f"normalizer update: expected shape (N, {dim}), got {obs.shape}")
        if obs.shape[0] == 0:
            return
        if not np.all(np.isfinite(obs)):
            raise ObservationError("normalizer update: observations contain NaN or inf")
        x = torch.tensor(obs, dtype=torch.float64)  # a copy: arrays from Ray are read-only
        n = float(x.shape[0])
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)
        count = self.obs_count[emb_id]
        mean, var = self.obs_mean[emb_id, :dim], self.obs_var[emb_id, :dim]
        tot = count + n
        delta = b_mean - mean
        new_mean = mean + delta * n / tot
        m2 = var * count + b_var * n + delta.pow(2) * count * n / tot
        self.obs_mean[emb_id, :dim] = new_mean
        self.obs_var[emb_id, :dim] = m2 / tot
        self.obs_count[emb_id] = tot

    def _norm_stats(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of every embodiment in ``dtype``, recomputed only when they change.

        Keyed by the buffers' storage and version counters (a new buffer from ``.to()`` or
        ``load_state_dict(assign=True)`` has new storage; every in-place update bumps the
        version), so a changed statistic is never served from the cache. Profiled,
        recomputing them per call was a third of the student's forward time in collection.
        """
        key = (self.obs_mean.data_ptr(), self.obs_var.data_ptr(), self.obs_mean._version,
               self.obs_var._version, self.obs_mean.device, dtype, torch.is_inference_mode_enabled())
        cache = self.__dict__.get("_norm_cache")
        if cache is None or cache[0] != key:
            with torch.no_grad():
                stats = (self.obs_mean.to(dtype), torch.sqrt(self.obs_var + 1e-8).to(dtype))
            cache = (key, stats)
            self.__dict__["_norm_cache"] = cache
        return cache[1]

    def normalize(self, obs: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Normalize padded raw observations ``(B, D)`` with each row's embodiment statistics."""
        mean, std = self._norm_stats(obs.dtype)
        clip = self.config.obs_clip
        return torch.clamp((obs - mean[emb]) / std[emb], -clip, clip)

    # ----------------------------------------------------------------- network
    def batch_obs(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        """The student's input from a buffer batch."""
        return torch.from_numpy(np.ascontiguousarray(batch["obs"]))

    def features(self, obs: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Trunk features ``(B, H)`` of padded raw observations ``(B, D)`` and token ids ``(B,)``."""
        token = nn.functional.one_hot(emb, len(self.table)).to(obs.dtype)
        return self.trunk(torch.cat([self.normalize(obs, emb), token], dim=-1))

    def forward(self, obs: torch.Tensor, emb: torch.Tensor) -> StudentOutput:  # type: ignore[override]
        """Action distribution of padded raw observations ``(B, D)`` with token ids ``(B,)``."""
        return self.output(self.features(obs, emb), emb)

    def output(self, features: torch.Tensor, emb: torch.Tensor) -> StudentOutput:
        """Action distribution from trunk (or core) features ``(..., H)`` and token ids ``(...)``."""
        out = self.head(features)
        mask = self.action_mask[emb]
        if self.discrete:
            return StudentOutput(logits=out.masked_fill(~mask, float("-inf")))
        mean, log_std = out.chunk(2, dim=-1)
        log_std = log_std.clamp(self.config.log_std_min, self.config.log_std_max)
        return StudentOutput(mean=mean * mask, log_std=log_std * mask)

    def act(self, obs: torch.Tensor, emb: torch.Tensor, deterministic: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions ``(B, A)`` (continuous: clipped to bounds, padded dims 0) or ``(B,)`` ids."""
        return self.action_from(self.forward(obs, emb), emb, deterministic, generator)

    def action_from(self, out: StudentOutput, emb: torch.Tensor, deterministic: bool = True,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions of a computed :class:`StudentOutput` (see :meth:`act`)."""
        if self.discrete:
            assert out.logits is not None
            if deterministic:
                return out.logits.argmax(-1)
            probs = torch.softmax(out.logits, -1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        assert out.mean is not None and out.log_std is not None
        a = out.mean
        if not deterministic:
            noise = torch.randn(a.shape, generator=generator, dtype=a.dtype)
            a = a + noise * out.log_std.exp()
        return self.clip_action(a, emb)

    @torch.no_grad()
    def frozen_policy(self, emb_id: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The deterministic policy of one embodiment with its constants folded in.

        Deployment fast path (profiled: the generic forward spent 60% of a single-observation
        call in small bookkeeping ops): the embodiment token is folded into the first layer's
        bias, padding is dropped (only the embodiment's own input columns and output rows are
        kept), and the normalizer and bounds are constants. A snapshot: later weight changes do
        not reach it.

        Returns:
            ``f(obs)``: raw float32 observations ``(B, obs_dim)`` -> clipped actions
            ``(B, action_dim)`` (or action ids ``(B,)`` for a discrete student).
        """
        e = self.table.embodiments[emb_id]
        d, big_d = e.obs_dim, self.table.max_obs_dim
        mean, std = (t[emb_id, :d].to(torch.float32).clone()
                     for t in (self.obs_mean, torch.sqrt(self.obs_var + 1e-8)))
        clip = float(self.config.obs_clip)
        layers: list[tuple[torch.Tensor, torch.Tensor] | nn.Module] = []
        first = True
        for mod in self.trunk:
            if isinstance(mod, nn.Linear):
                w, b = mod.weight.detach(), mod.bias.detach()
                if first:  # input = [normalized obs (padded to D), one-hot token]
                    w, b = w[:, :d], b + w[:, big_d + emb_id]
                    first = False
                layers.append((w.clone(), b.clone()))
            else:
                layers.append(mod)
        hw, hb = self.head.weight.detach(), self.head.bias.detach()
        a = e.action_dim
        hw, hb = hw[:a].clone(), hb[:a].clone()  # logits, or the mean half's real dims
        discrete = self.discrete
        low = self.action_low[emb_id, :a].to(torch.float32).clone()
        high = self.action_high[emb_id, :a].to(torch.float32).clone()
        linear = nn.functional.linear

        def policy(obs: torch.Tensor) -> torch.Tensor:
            x = torch.clamp((obs - mean) / std, -clip, clip)
            for layer in layers:
                x = linear(x, *layer) if isinstance(layer, tuple) else layer(x)
            out = linear(x, hw, hb)
            return out.argmax(-1) if discrete else torch.maximum(torch.minimum(out, high), low)

        return policy

    def clip_action(self, action: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Clip padded continuous actions ``(B, A)`` to each row's bounds; padded dims -> 0."""
        low, high = self.action_low[emb], self.action_high[emb]
        return torch.maximum(torch.minimum(action, high), low) * self.action_mask[emb]
