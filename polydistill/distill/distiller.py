"""One gradient update of the student from a buffer batch, with a loss from the registry."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from polydistill.buffer import DistillationBuffer
from polydistill.distill.losses import LossBatch, make_loss
from polydistill.errors import ConfigError, TrainingError
from polydistill.students.base import Student

__all__ = ["DistillerConfig", "Distiller", "make_optimizer"]


@dataclass(frozen=True)
class DistillerConfig:
    """Optimisation of the student."""

    loss: str = "auto"
    """Loss name (see ``polydistill.distill.losses.list_losses()``); ``auto`` picks ``mse`` for
    continuous and ``categorical_kl`` for discrete students."""
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the loss (e.g. ``{delta: 0.1}`` for huber)."""
    lr: float = 1e-3
    """Adam learning rate."""
    lr_final: float = 1e-4
    """Learning rate at the end of training (cosine decay from ``lr``)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    batch_size: int = 512
    """Rows per update (split over tasks evenly, or by their weights; see the buffer)."""
    balance_tasks: bool = True
    """Average the loss per task first, so every teacher weighs the same in a batch."""
    agreement_tol: float = 0.1
    """A continuous action agrees with the teacher when every dim is within this fraction of
    its half-range."""

    def __post_init__(self) -> None:
        if not (self.lr > 0 and self.lr_final > 0):
            raise ConfigError(f"DistillerConfig.lr and lr_final must be > 0, got {self.lr}, {self.lr_final}")
        if self.batch_size < 1:
            raise ConfigError(f"DistillerConfig.batch_size must be >= 1, got {self.batch_size}")
        if not (self.max_grad_norm >= 0 and self.weight_decay >= 0 and self.agreement_tol > 0):
            raise ConfigError(
                "DistillerConfig: need max_grad_norm >= 0, weight_decay >= 0 and agreement_tol > 0, "
                f"got {self.max_grad_norm}, {self.weight_decay}, {self.agreement_tol}"
            )


METRICS_EVERY = 8
"""``train_round`` measures agreement and action error on every this-many-th batch (they are
logged as round means; computing them on every batch cost ~6% of training speed)."""


def make_optimizer(params: Any, config: DistillerConfig) -> torch.optim.Optimizer:
    """AdamW for the student, fused where torch has the kernel.

    The fused step measured 2.8x faster on CPU than the default per-tensor loop; without the
    kernel (older torch, other device or dtype) the default implementation is used.
    """
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device/dtype without it
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _draw(buffer: Any, batch_size: int) -> dict[str, np.ndarray]:
    """A batch from ``buffer``, into its reusable arrays when it has them (no allocation)."""
    if isinstance(buffer, DistillationBuffer):
        return buffer.sample(batch_size, reuse=True)
    return buffer.sample(batch_size)  # any other object with sample(batch_size)


class Distiller:
    """Owns the optimizer and the loss; ``update(batch)`` is one gradient step."""

    def __init__(self, student: Student, config: DistillerConfig | None = None) -> None:
        self.student = student
        self.config = config or DistillerConfig()
        kind = student.table.action_kind
        name = self.config.loss
        if name == "auto":
            name = "categorical_kl" if kind == "discrete" else "mse"
        self.loss_name = name
        self.loss = make_loss(name, **self.config.loss_kwargs)
        if self.loss.action_kind != kind:
            raise ConfigError(
                f"loss {name!r} is for {self.loss.action_kind} actions but the student "
                f"has {kind} actions"
            )
        self.optimizer = make_optimizer(student.parameters(), self.config)
        self.updates = 0

    def set_progress_lr(self, progress: float) -> None:
        """Cosine-decay the learning rate from ``lr`` to ``lr_final`` as progress goes 0 -> 1."""
        c = self.config
        p = min(max(progress, 0.0), 1.0)
        lr = c.lr_final + 0.5 * (c.lr - c.lr_final) * (1 + np.cos(np.pi * p))
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def _tensors(self, batch: dict[str, np.ndarray]) -> tuple[Any, torch.Tensor, LossBatch]:
        obs = self.student.batch_obs(batch)
        emb = torch.from_numpy(batch["emb"])
        mask = torch.from_numpy(batch["mask"])
        scale = self.student.action_scale[emb]
        lb = LossBatch(
            action=torch.from_numpy(batch["action"]), mask=mask, scale=scale,
            mean=torch.from_numpy(batch["mean"]) if "mean" in batch else None,
            log_std=torch.from_numpy(batch["log_std"]) if "log_std" in batch else None,
            logits=torch.from_numpy(batch["logits"]) if "logits" in batch else None,
        )
        return obs, emb, lb

    def _row_weights(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        """Per-row loss weights ``(B,)``.

        Each task weighs the same, and (for continuous students) each row is averaged over its
        real action dimensions.
        """
        n = len(batch["emb"])
        if self.config.balance_tasks and "task" in batch:
            task = np.asarray(batch["task"])
            counts = np.bincount(task)
            w = 1.0 / (counts[task] * np.count_nonzero(counts))
        else:
            w = np.full(n, 1.0 / n)
        if self.config.balance_tasks and not self.student.discrete:
            w = w / np.maximum(batch["mask"].sum(-1), 1)
        return torch.from_numpy(w.astype(np.float32))

    def compute_loss(self, batch: dict[str, np.ndarray], progress: float = 0.0, metrics: bool = True
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of the student on ``batch`` (with graph) and its metrics.

        With ``metrics=False`` only ``distill/loss`` is reported (cheaper: the agreement and
        error metrics cost about a fifth of a small network's forward pass). A student with an
        auxiliary loss (:meth:`Student.auxiliary_loss`) adds it to the returned loss and reports
        it as ``distill/aux_loss``; ``distill/loss`` stays the distillation term alone.
        """
        obs, emb, lb = self._tensors(batch)
        out = self.student(obs, emb)
        aux = self.student.auxiliary_loss(batch)  # right after the forward pass it may reuse
        loss = self._distill_loss(self.loss(out, lb, progress), batch, lb)
        info = self._metrics(out, emb, lb, loss, metrics)
        if aux is not None:
            loss = loss + aux
            info["distill/aux_loss"] = aux.item()
        return loss, info

    def _distill_loss(self, per_sample: torch.Tensor, batch: dict[str, np.ndarray], lb: LossBatch
                      ) -> torch.Tensor:
        """The loss's per-row (or per-step) values reduced to one scalar (tasks balanced)."""
        if per_sample.ndim == 1:  # one fused weighted sum (profiled: the generic path cost 5%)
            return (per_sample * self._row_weights(batch)).sum()
        if self.config.balance_tasks and not self.student.discrete:
            # per action dimension, so a 6-dof body does not weigh 6x a 1-dof one
            per_sample = per_sample / lb.mask.sum(-1).clamp_min(1)
        if per_sample.ndim == 2:  # sequences (B, T): mean over the steps that carry a loss
            trained = lb.mask.any(-1) if not self.student.discrete else torch.ones_like(per_sample)
            per_sample = (per_sample * trained).sum(-1) / trained.sum(-1).clamp_min(1)
        if self.config.balance_tasks and "task" in batch:
            task = torch.from_numpy(np.asarray(batch["task"]))
            n = int(task.max()) + 1
            sums = torch.zeros(n, dtype=per_sample.dtype).index_add_(0, task, per_sample)
            counts = torch.bincount(task, minlength=n).to(per_sample.dtype)
            present = counts > 0
            return (sums[present] / counts[present]).mean()
        return per_sample.mean()

    @torch.no_grad()
    def _metrics(self, out: Any, emb: torch.Tensor, lb: LossBatch, loss: torch.Tensor,
                 full: bool) -> dict[str, float]:
        if not full:
            return {"distill/loss": loss.item()}
        if self.student.discrete:
            assert out.logits is not None
            agree = (out.logits.argmax(-1) == lb.action).float().mean()
            mae = torch.tensor(float("nan"))
        else:
            assert out.mean is not None
            mean = self.student.clip_action(out.mean, emb)
            err = ((mean - lb.action).abs() / lb.scale) * lb.mask
            agree = (err <= self.config.agreement_tol).all(-1).float().mean()
            mae = err.sum() / lb.mask.sum()
        return {"distill/loss": loss.item(), "distill/teacher_agreement": float(agree),
                "distill/action_mae": float(mae)}

    def update(self, batch: dict[str, np.ndarray], progress: float = 0.0,
               metrics: bool = True) -> dict[str, float]:
        """One gradient step on ``batch``; returns its metrics (only the loss without ``metrics``).

        Raises:
            TrainingError: if the loss is not finite (the student is left unchanged).
        """
        if not self.student.training:
            self.student.train()
        loss, out = self.compute_loss(batch, progress, metrics)
        if not torch.isfinite(loss):
            raise TrainingError(f"non-finite distillation loss ({loss.item()}, auxiliary term included) at "
                                f"update {self.updates}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm > 0:
            out["distill/grad_norm"] = self._clip_grads(self.config.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        return out

    @torch.no_grad()
    def _clip_grads(self, max_norm: float) -> float:
        """Scale the gradients to a global norm of at most ``max_norm``; returns the norm.

        The scaling of ``clip_grad_norm_`` (factor ``max_norm / (norm + 1e-6)`` when below 1)
        without its per-call grouping and checks (profiled: they cost 7% of a training step of
        the default student); gradients within the bound are left untouched rather than
        multiplied by 1.

        Raises:
            TrainingError: if the gradient norm is not finite (the student is left unchanged).
        """
        grads = [p.grad for p in self.student.parameters() if p.grad is not None]
        if not grads:
            return 0.0
        total = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        if not np.isfinite(total):
            raise TrainingError(f"non-finite gradient norm ({total}) at update {self.updates}")
        if total + 1e-6 > max_norm:
            torch._foreach_mul_(grads, max_norm / (total + 1e-6))
        return total

    def train_round(self, buffer: Any, n_updates: int, total_updates: int) -> dict[str, float]:
        """``n_updates`` steps on buffer batches, lr following overall progress; mean metrics.

        Args:
            buffer: Anything with ``sample(batch_size)`` (a :class:`DistillationBuffer`).
            n_updates: Updates in this round.
            total_updates: Updates of the whole run (sets progress for the lr and TAID).
        """
        t0 = time.perf_counter()
        agg: dict[str, list[float]] = {}
        for i in range(n_updates):
            progress = (self.updates + 1) / max(1, total_updates)
            self.set_progress_lr(progress)
            full = i % METRICS_EVERY == 0 or i == n_updates - 1
            for k, v in self.update(_draw(buffer, self.config.batch_size), progress, full).items():
                agg.setdefault(k, []).append(v)
        out = {k: float(np.mean(v)) for k, v in agg.items()}
        if n_updates:
            out["distill/samples_per_s"] = (n_updates * self.config.batch_size
                                            / (time.perf_counter() - t0))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state and update count."""
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
