"""Generalist students built for many tasks: a multi-head student and a mixture of experts.

Both read what the dense :class:`~polydistill.students.GeneralistStudent` reads (the padded,
normalized observation and the token code) and give the same outputs, so the buffer, the
distiller, checkpoints, ``predict`` and export treat them alike. Their widths are scaled so
that their parameter count is the dense student's of the same :attr:`StudentConfig.hidden`
(within 10%): a comparison between architectures is at one budget.

* :class:`MultiHeadStudent`: a shared trunk and one linear head per token row (per task with
  task tokens, per body without; the multi-head SAC pattern of Meta-World's MT baselines). An
  unseen task's row uses the mean of its body's heads.
* :class:`MoEStudent`: ``experts`` MLPs mixed by a softmax router over the token code and the
  observation (the mixture-of-experts pattern of PMOE and MST-Distill).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polydistill.students.base import ACTIVATIONS, StudentConfig, StudentOutput
from polydistill.students.embodiment import UNSEEN_TASK, EmbodimentTable
from polydistill.students.generalist import GeneralistStudent

__all__ = ["MultiHeadStudent", "MoEStudent", "mlp_params", "ARCHITECTURES", "student_for"]


def mlp_params(sizes: Sequence[int]) -> int:
    """Parameters of an MLP with layer sizes ``sizes`` (input, hidden..., output)."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def _scaled(hidden: Sequence[int], count: Callable[[tuple[int, ...]], int], target: int) -> tuple[int, ...]:
    """``hidden`` scaled by one factor so that ``count(widths)`` is closest to ``target``."""
    best: tuple[int, ...] = tuple(hidden)
    lo, hi = 0.01, 4.0
    for _ in range(60):  # count grows with the scale: bisect, keep the closest
        mid = (lo + hi) / 2
        widths = tuple(max(4, round(h * mid)) for h in hidden)
        if abs(count(widths) - target) < abs(count(best) - target):
            best = widths
        lo, hi = (mid, hi) if count(widths) < target else (lo, mid)
    return best


class _MultiTask(GeneralistStudent):
    """What both multi-task kinds share: width scaling to the dense budget, the generic fast path."""

    def __init__(self, table: EmbodimentTable, config: StudentConfig | None = None) -> None:
        config = config or StudentConfig(architecture=self.architecture)
        out = table.max_action_dim * (1 if table.action_kind == "discrete" else 2)
        inp = table.max_obs_dim + table.code_dim
        self.dense_params = mlp_params([inp, *config.hidden, out])
        widths = _scaled(config.hidden, lambda w: self.count_params(table, config, w, inp, out),
                         self.dense_params)
        super().__init__(table, replace(config, hidden=widths))
        self.config = config  # the recipe's config (metadata rebuilds the same widths from it)
        self.build(table, config, widths, inp, out)

    @staticmethod
    def count_params(table: EmbodimentTable, config: StudentConfig, widths: tuple[int, ...],
                     inp: int, out: int) -> int:
        """Parameters of this architecture at hidden ``widths``."""
        raise NotImplementedError

    def build(self, table: EmbodimentTable, config: StudentConfig, widths: tuple[int, ...],
              inp: int, out: int) -> None:
        """Replace the dense trunk/head by this architecture's modules."""
        raise NotImplementedError

    def policy(self, emb_id: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The deterministic policy of one token row (the generic forward, padding cut)."""
        e = self.table.embodiments[emb_id]
        pad, n = self.table.max_obs_dim - e.obs_dim, e.action_dim

        def act(obs: torch.Tensor) -> torch.Tensor:
            emb = torch.full((obs.shape[0],), emb_id, dtype=torch.long)
            out = self(F.pad(obs, (0, pad)), emb)
            if self.discrete:
                return out.logits[:, :n].argmax(-1)  # type: ignore[index]
            return self.clip_action(out.mean, emb)[:, :n]  # type: ignore[arg-type]

        return act


class MultiHeadStudent(_MultiTask):
    """Shared trunk, one linear head per token row (module docstring)."""

    kind = "multihead"
    architecture = "multihead"

    @staticmethod
    def _n_heads(table: EmbodimentTable) -> int:
        return len(table.task_names) if table.has_tasks else len(table.bodies)

    @staticmethod
    def count_params(table: EmbodimentTable, config: StudentConfig, widths: tuple[int, ...],
                     inp: int, out: int) -> int:
        """Trunk plus one head per task (or body)."""
        return mlp_params([inp, *widths]) + MultiHeadStudent._n_heads(table) * (widths[-1] * out + out)

    def build(self, table: EmbodimentTable, config: StudentConfig, widths: tuple[int, ...],
              inp: int, out: int) -> None:
        """Heads as one ``(heads, H, out)`` tensor; rows map to heads through an averaging matrix."""
        del self.head
        h = self._n_heads(table)
        self.head_weight = nn.Parameter(torch.randn(h, widths[-1], out) * 0.01 / widths[-1] ** 0.5)
        self.head_bias = nn.Parameter(torch.zeros(h, out))
        rows = torch.zeros(len(table), h)
        for i, task in enumerate(table.row_tasks):
            if task is None:
                rows[i, int(table.row_body[i])] = 1.0
            elif task != UNSEEN_TASK:
                rows[i, table.task_names.index(task)] = 1.0
            else:  # the mean of the body's heads
                own = [table.task_names.index(t) for t in table.tasks_of(table.embodiments[i].name)]
                rows[i, own] = 1.0 / len(own)
        self.register_buffer("row_heads", rows, persistent=False)

    def output(self, features: torch.Tensor, emb: torch.Tensor) -> StudentOutput:
        """Each row through its own head."""
        m = self.row_heads[emb]  # (B, heads)
        w = torch.einsum("bh,hio->bio", m, self.head_weight)
        out = torch.einsum("bi,bio->bo", features, w) + m @ self.head_bias
        return self.distribution(out, emb)


class MoEStudent(_MultiTask):
    """Experts mixed by a router over token code and observation (module docstring)."""

    kind = "moe"
    architecture = "moe"

    @staticmethod
    def count_params(table: EmbodimentTable, config: StudentConfig, widths: tuple[int, ...],
                     inp: int, out: int) -> int:
        """``experts`` MLPs plus a linear router."""
        return config.experts * mlp_params([inp, *widths, out]) + inp * config.experts + config.experts

    def build(self, table: EmbodimentTable, config: StudentConfig, widths: tuple[int, ...],
              inp: int, out: int) -> None:
        """Experts as stacked ``(K, in, out)`` weights, one batched matmul per layer."""
        del self.trunk, self.head
        k, sizes = config.experts, [inp, *widths, out]
        self.act_fn = ACTIVATIONS[config.activation]()
        self.expert_w = nn.ParameterList()
        self.expert_b = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:], strict=False):
            w = torch.empty(k, a, b)
            for i in range(k):  # nn.Linear's initialisation, per expert
                nn.init.kaiming_uniform_(w[i].T, a=5 ** 0.5)
            self.expert_w.append(nn.Parameter(w))
            self.expert_b.append(nn.Parameter(torch.empty(k, b).uniform_(-a ** -0.5, a ** -0.5)))
        with torch.no_grad():  # small initial actions, as the dense head
            self.expert_w[-1].mul_(0.01)
            self.expert_b[-1].zero_()
        self.router = nn.Linear(inp, k)
        self.feature_dim = out

    def features(self, obs: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The mixed expert outputs ``(B, out)`` (the router's weights times each expert's)."""
        x = torch.cat([self.normalize(obs, emb), self.token_codes[emb].to(obs.dtype)], dim=-1)
        gate = torch.softmax(self.router(x), dim=-1)  # (B, K)
        h = x.unsqueeze(0).expand(len(self.expert_w[0]), -1, -1)  # (K, B, in)
        for i, (w, b) in enumerate(zip(self.expert_w, self.expert_b, strict=True)):
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if i < len(self.expert_w) - 1:
                h = self.act_fn(h)
        return torch.einsum("bk,kbo->bo", gate, h)

    def output(self, features: torch.Tensor, emb: torch.Tensor) -> StudentOutput:
        """The mixture already is the head's output."""
        return self.distribution(features, emb)

    def policy(self, emb_id: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The deterministic policy of one token row, with the token's constant inputs folded in.

        The padding and the token code are the same for every row of a call, so their part of
        the experts' first layer and of the router is a bias: computed once per weight version
        (every optimizer step bumps it), the first layer becomes one ``(obs_dim, K * width)``
        matmul. Equal to :meth:`act` up to float rounding (the sums run in another order).
        """
        cache = self.__dict__.setdefault("_policies", {})
        if emb_id in cache:
            return cache[emb_id]
        e, body = self.table.embodiments[emb_id], int(self.table.row_body[emb_id])
        d, n, big = e.obs_dim, e.action_dim, self.table.max_obs_dim
        k, clip = len(self.expert_w[0]), float(self.config.obs_clip)
        params = [*self.expert_w, *self.expert_b, self.router.weight, self.router.bias, self.obs_mean,
                  self.obs_var]
        folded: list[Any] = [None]

        def fold() -> tuple[Any, ...]:
            key = tuple((p._version, p.data_ptr()) for p in params)
            if folded[0] is None or folded[0][0] != key:
                code = self.token_codes[emb_id].to(torch.float32)
                w1, b1 = self.expert_w[0], self.expert_b[0]  # (K, in, w), (K, w)
                first_w = w1[:, :d, :].permute(1, 0, 2).reshape(d, -1)  # (d, K * w)
                first_b = (torch.einsum("c,kcw->kw", code, w1[:, big:, :]) + b1).reshape(-1)
                router_w = self.router.weight[:, :d].T
                router_b = self.router.weight[:, big:] @ code + self.router.bias
                mean, std = self._norm_stats(torch.float32)
                folded[0] = (key, first_w, first_b, router_w, router_b, mean[body, :d], std[body, :d],
                             self.action_low[emb_id, :n].float(), self.action_high[emb_id, :n].float())
            return folded[0][1:]

        def act(obs: torch.Tensor) -> torch.Tensor:
            first_w, first_b, router_w, router_b, mean, std, low, high = fold()
            x = torch.clamp((obs - mean) / std, -clip, clip)
            h = self.act_fn(torch.addmm(first_b, x, first_w)).view(len(x), k, -1).transpose(0, 1)
            last = len(self.expert_w) - 1
            for i in range(1, last + 1):
                h = torch.baddbmm(self.expert_b[i].unsqueeze(1), h, self.expert_w[i])
                if i < last:
                    h = self.act_fn(h)
            gate = torch.softmax(torch.addmm(router_b, x, router_w), dim=-1)
            out = torch.einsum("bk,kbo->bo", gate, h)
            if self.discrete:
                return out[:, :n].argmax(-1)
            return torch.maximum(torch.minimum(out[:, :n], high), low)

        cache[emb_id] = act
        return act


ARCHITECTURES: dict[str, type[GeneralistStudent]] = {
    "dense": GeneralistStudent, "multihead": MultiHeadStudent, "moe": MoEStudent}
"""Generalist student classes by :attr:`StudentConfig.architecture`."""


def student_for(table: EmbodimentTable, config: StudentConfig) -> GeneralistStudent:
    """The generalist student of ``config.architecture`` over ``table``."""
    return ARCHITECTURES[config.architecture](table, config)


