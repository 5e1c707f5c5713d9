"""Distillation losses, by name.

Each loss maps a student output and a batch of teacher targets to a *per-sample* loss ``(B,)``;
the distiller averages per task so every teacher weighs the same. Continuous losses work in
action units divided by each embodiment's action half-range (``action_scale``), so a body with
large action bounds does not drown the others (the KL losses are invariant to that rescaling).

=================  ==========  =================================================================
name               actions     definition
=================  ==========  =================================================================
``mse``            continuous  ``|mu_s - a_t|^2`` on the teacher's (clipped) deterministic action
``huber``          continuous  smooth-L1 of the same difference (``delta`` kwarg)
``forward_kl``     continuous  ``KL(teacher || student)`` of the diagonal Gaussians
``reverse_kl``     continuous  ``KL(student || teacher)``
``symmetric_kl``   continuous  Jeffreys divergence ``(KL(t||s) + KL(s||t)) / 2``
``taid``           continuous  ``KL(p_t || student)``, ``p_t`` interpolating the detached student
                               toward the teacher as training progresses (TAID, Shing et al. 2025)
``categorical_kl`` discrete    ``T^2 KL(softmax(z_t/T) || softmax(z_s/T))``, temperature ``T``
``categorical_js`` discrete    Jensen-Shannon divergence of the two categoricals
``categorical_ce`` discrete    cross-entropy of the teacher's action id (needs no teacher logits)
=================  ==========  =================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from polydistill.errors import ConfigError
from polydistill.students.base import StudentOutput

__all__ = ["LossBatch", "Loss", "LOSSES", "make_loss", "list_losses"]


@dataclass
class LossBatch:
    """Teacher targets of a batch, as tensors."""

    action: torch.Tensor
    """(B, A) teacher's deterministic action (continuous, clipped) or (B,) ids (discrete)."""
    mask: torch.Tensor
    """(B, A) bool: real (non-padded) action dims."""
    scale: torch.Tensor
    """(B, A) per-dimension action half-range used for balancing."""
    mean: torch.Tensor | None = None
    """(B, A) teacher Gaussian mean."""
    log_std: torch.Tensor | None = None
    """(B, A) teacher Gaussian log-std."""
    logits: torch.Tensor | None = None
    """(B, n) teacher logits."""


class Loss:
    """Base class: ``loss(student_out, batch, progress) -> (B,)`` per-sample loss."""

    name: str = ""
    action_kind: str = "continuous"
    needs_distribution: bool = False
    """Whether teachers must provide a distribution (mean + log-std, or logits)."""

    def __call__(self, out: StudentOutput, batch: LossBatch, progress: float) -> torch.Tensor:
        """Per-sample loss; ``progress`` in [0, 1] is the fraction of training done."""
        raise NotImplementedError


def _gauss_kl(mu_p: torch.Tensor, ls_p: torch.Tensor, mu_q: torch.Tensor, ls_q: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians summed over the masked dims -> (B,)."""
    var_p, var_q = (2 * ls_p).exp(), (2 * ls_q).exp()
    kl = ls_q - ls_p + (var_p + (mu_p - mu_q) ** 2) / (2 * var_q) - 0.5
    return (kl * mask).sum(-1)


def _require(t: torch.Tensor | None, what: str, loss: str) -> torch.Tensor:
    if t is None:
        raise ConfigError(f"loss {loss!r} needs the teacher's {what}, which this batch lacks")
    return t


class MSELoss(Loss):
    """Squared error between the student mean and the teacher action (scale-balanced)."""

    name = "mse"

    def __call__(self, out: StudentOutput, batch: LossBatch, progress: float) -> torch.Tensor:
        mu = _require(out.mean, "mean", self.name)
        d = (mu - batch.action) / batch.scale
        return (d.pow(2) * batch.mask).sum(-1)


class HuberLoss(Loss):
    """Smooth-L1 between the student mean and the teacher action (scale-balanced)."""

    name = "huber"

    def __init__(self, delta: float = 0.1) -> None:
        if delta <= 0:
            raise ConfigError(f"huber: delta must be > 0, got {delta}")
        self.delta = delta

    def __call__(self, out: StudentOutput, batch: LossBatch, progress: float) -> torch.Tensor:
        mu = _require(out.mean, "mean", self.name)
        h = F.huber_loss(mu / batch.scale, batch.action / batch.scale, reduction="none",
                         delta=self.delta)
        return (h * batch.mask).sum(-1)


class ForwardKL(Loss):
    """KL(teacher || student): mode-covering; the standard policy-distillation loss."""

    name = "forward_kl"
    needs_distribution = True

    def __call__(self, out: StudentOutput, batch: LossBatch, progress: float) -> torch.Tensor:
        return _gauss_kl(_require(batch.mean, "mean", self.name),
                         _require(batch.log_std, "log_std", self.name),
                         out.mean, out.log_std, batch.mask)  # type: ignore[arg-type]


class ReverseKL(Loss):
    """KL(student || teacher): mode-seeking."""

    name = "reverse_kl"
    needs_distribution = True

    def __call__(self, out: StudentOutput, batch: LossBatch, progress: float) -> torch.Tensor:
        return _gauss_kl(out.mean, out.log_std,  # type: ignore[arg-type]
                         _require(batch.mean, "mean", self.name),
                         _require(batch.log_std, "log_std", self.name), batch.mask)


class SymmetricKL(Loss):
    """Jeffreys divergence: the mean of forward and reverse KL."""

    name = "symmetric_kl"
    needs_distribution = True

    def __call__(self, out: StudentOutput, batch: LossBatch, progress: float) -> torch.Tensor:
        mu_t = _require(batch.mean, "mean", self.name)
        ls_t = _require(batch.log_std, "log_std", self.name)
        mu_s, ls_s = _require(out.mean, "mean", self.name), _require(out.log_std, "log_std", self.name)
        return 0.5 * (_gauss_kl(mu_t, ls_t, mu_s, ls_s, batch.mask)
                      + _gauss_kl(mu_s, ls_s, mu_t, ls_t, batch.mask))


class TAIDLoss(Loss):
    """Temporally interpolated target: ``p_t = (1 - t) * student.detach() + t * teacher``.

    Mean and log-std are interpolated; ``t`` rises linearly from ``t_start`` to 1 over
    ``ramp`` of the training progress, so early targets stay near what the student can already
    express and end exactly at the teacher.
    """

    name = "taid"
    needs_distribution = True

    def __init__(self, t_start: float = 0.4, ramp: float = 0.8) -> None:
        if not 0.0 <= t_start <= 1.0 or not 0.0 < ramp <= 1.0:
            raise ConfigError(f"taid: need 0 <= t_start <= 1 and 0 < ramp <= 1, got {t_start}, {ramp}")
        self.t_start, self.ramp = t_start, ramp

    def t(self, progress: float) -> float:
        """Interpolation weight toward the teacher at ``progress``."""
        return min(1.0, self.t_start + (1.0 - self.t_start) * progress / self.ramp)

    def __call__(self, out: StudentOutput, batch: LossBatch, progress: float) -> torch.Tensor:
        t = self.t(progress)
        mu_t = _require(batch.mean, "mean", self.name)
        ls_t = _require(batch.log_std, "log_std", self.name)
        mu_s, ls_s = out.mean, out.log_std
        assert mu_s is not None and ls_s is not None
        mu_p = (1 - t) * mu_s.detach() + t * mu_t
        ls_p = (1 - t) * ls_s.detach() + t * ls_t
        return _gauss_kl(mu_p, ls_p, mu_s, ls_s, batch.mask)


class CategoricalKL(Loss):
    """Temperature-softened KL(teacher || student) of categoricals (Hinton et al.)."""

    name = "categorical_kl"
    action_kind = "discrete"
    needs_distribution = True

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ConfigError(f"categorical_kl: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def __call__(self, out: StudentOutput, batch: LossBatch, progress: float) -> torch.Tensor:
        T = self.temperature
        zt = _require(batch.logits, "logits", self.name).masked_fill(~batch.mask, -math.inf)
        zs = _require(out.logits, "logits", self.name)
        lp_t = torch.log_softmax(zt / T, -1)
        lp_s = torch.log_softmax(zs / T, -1)
        kl = torch.where(batch.mask, lp_t.exp() * (lp_t - lp_s), torch.zeros_like(lp_t))
        return kl.sum(-1) * T * T


class CategoricalJS(Loss):
    """Jensen-Shannon divergence of teacher and student categoricals."""

    name = "categorical_js"
    action_kind = "discrete"
    needs_distribution = True

    def __call__(self, out: StudentOutput, batch: LossBatch, progress: float) -> torch.Tensor:
        zt = _require(batch.logits, "logits", self.name).masked_fill(~batch.mask, -math.inf)
        p = torch.softmax(zt, -1)
        q = torch.softmax(_require(out.logits, "logits", self.name), -1)
        m = 0.5 * (p + q)
        def kl(a: torch.Tensor) -> torch.Tensor:
            r = a * (torch.log(a.clamp_min(1e-12)) - torch.log(m.clamp_min(1e-12)))
            return torch.where(batch.mask, r, torch.zeros_like(r)).sum(-1)
        return 0.5 * (kl(p) + kl(q))


class CategoricalCE(Loss):
    """Cross-entropy of the teacher's chosen action: behaviour cloning for discrete actions."""

    name = "categorical_ce"
    action_kind = "discrete"

    def __call__(self, out: StudentOutput, batch: LossBatch, progress: float) -> torch.Tensor:
        logits = _require(out.logits, "logits", self.name)
        return F.cross_entropy(logits, batch.action.long(), reduction="none")


LOSSES: dict[str, Callable[..., Loss]] = {
    cls.name: cls
    for cls in (MSELoss, HuberLoss, ForwardKL, ReverseKL, SymmetricKL, TAIDLoss, CategoricalKL,
                CategoricalJS, CategoricalCE)
}
"""Registry of loss constructors by name."""


def list_losses() -> list[str]:
    """Names of the registered losses."""
    return sorted(LOSSES)


def make_loss(name: str, **kwargs: Any) -> Loss:
    """Build the loss ``name`` with its keyword arguments.

    Raises:
        ConfigError: for an unknown name (listing the valid ones) or bad arguments.
    """
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; valid losses: {', '.join(list_losses())}")
    try:
        return LOSSES[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"loss {name!r}: bad arguments {kwargs}: {exc}") from None
