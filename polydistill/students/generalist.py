"""The generalist kind: flat observations of many embodiments, padded, with a token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from polydistill.errors import ConfigError, ObservationError
from polydistill.students.base import Student, need, obs_rows, space_shape

__all__ = ["GeneralistStudent"]


class GeneralistStudent(Student):
    """One policy for every embodiment of its table (observations ``(N, obs_dim)`` per body)."""

    kind = "generalist"

    def _embodiment(self, embodiment: str | None, task: str | None = None) -> int:
        if embodiment is None:
            if len(self.table.bodies) != 1:
                raise ObservationError(
                    f"this student drives several embodiments {self.table.names}; pass embodiment=NAME"
                )
            embodiment = self.table.names[0]
        return self.table.id(embodiment, task)

    def prepare(self, obs: Any, embodiment: str | None = None,
                task: str | None = None) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """``obs`` as a finite float32 ``(N, obs_dim)`` tensor of its embodiment (unpadded).

        Raises:
            ObservationError: unknown embodiment or task, wrong rank/shape, non-numeric dtype,
                empty batch, or non-finite values.
        """
        e = self._embodiment(embodiment, task)
        x, single = obs_rows(obs, self.table.embodiments[e].obs_dim, repr(self.table.embodiments[e].name))
        return (torch.from_numpy(x.astype(np.float32, copy=False)),
                torch.full((x.shape[0],), e, dtype=torch.long), single)

    def deploy_act(self, x: torch.Tensor, emb: torch.Tensor, deterministic: bool) -> np.ndarray:
        """Env actions of raw observations of one embodiment (the fast path when deterministic)."""
        e = int(emb[0])
        if deterministic:
            return self.policy(e)(x).numpy()
        padded = F.pad(x, (0, self.table.max_obs_dim - x.shape[1]))
        return self.table.unpad_action(self.act(padded, emb, deterministic=False).numpy(), e)

    def policy(self, emb_id: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The deterministic policy of one embodiment, without the generic forward's bookkeeping.

        Profiled, the generic forward spent most of a single-observation call in small
        bookkeeping ops (token lookup, masks, gathers). This path does the same arithmetic on
        the same tensors (padded input with its token, every layer, the whole head), so its
        actions equal :meth:`act`'s bit for bit for the same batch; it reads the live weights,
        and the normalizer's statistics again whenever they change, so it never goes stale.
        Call it without gradients (``torch.inference_mode``, as ``predict`` and collection do).

        Returns:
            ``f(obs)``: raw float32 observations ``(B, obs_dim)`` -> clipped actions
            ``(B, action_dim)`` (or action ids ``(B,)`` for a discrete student).
        """
        cache = self.__dict__.setdefault("_policies", {})
        if emb_id in cache:
            return cache[emb_id]
        e, body = self.table.embodiments[emb_id], int(self.table.row_body[emb_id])
        d, a, clip = e.obs_dim, e.action_dim, float(self.config.obs_clip)
        const = torch.zeros(1, self.table.max_obs_dim - d + self.table.code_dim)
        const[0, self.table.max_obs_dim - d:] = self.token_codes[emb_id]  # zero padding, then the token
        layers: list[Any] = [(m.weight, m.bias) if isinstance(m, nn.Linear) else m for m in self.trunk]
        layers.append((self.head.weight, self.head.bias))
        low, high = self.action_low[emb_id, :a].float(), self.action_high[emb_id, :a].float()
        stats: list[Any] = [None]  # (key, mean, std) of this embodiment, kept while they do not change

        def act(obs: torch.Tensor) -> torch.Tensor:
            m, v = self.obs_mean, self.obs_var
            key = (m._version, v._version, m.data_ptr(), v.data_ptr())
            if stats[0] is None or stats[0][0] != key:
                mean, std = self._norm_stats(torch.float32)
                stats[0] = (key, mean[body, :d], std[body, :d])
            x = torch.clamp((obs - stats[0][1]) / stats[0][2], -clip, clip)
            x = torch.cat([x, const.expand(obs.shape[0], -1)], 1)
            for layer in layers:
                x = F.linear(x, *layer) if isinstance(layer, tuple) else layer(x)
            if self.discrete:
                return x[:, :a].argmax(-1)
            return torch.maximum(torch.minimum(x[:, :a], high), low)

        cache[emb_id] = act
        return act

    def check_env(self, env: Any, embodiment: str | None = None) -> None:
        """Refuse an env whose observation or action space is not the embodiment's."""
        e = self.table.body_id(embodiment) if embodiment is not None else self._body0()
        e = int(np.flatnonzero(self.table.row_body == e)[0])
        emb = self.table.embodiments[e]
        need(env, f"observation shape of {emb.name!r}", (emb.obs_dim,), space_shape(env.observation_space))
        self._check_actions(env, env.action_space, e)

    def _body0(self) -> int:
        if len(self.table.bodies) != 1:
            raise ObservationError(
                f"this student drives several embodiments {self.table.names}; pass embodiment=NAME")
        return 0

    def export_spec(self, embodiment: str | None = None,
                    task: str | None = None) -> tuple[int, dict[str, Any], list[str]]:
        """``obs`` float32 ``(B, obs_dim)`` -> ``action`` of one embodiment (and task).

        Raises:
            ConfigError: if a multi-embodiment (or multi-task) student is exported without
                ``embodiment`` (or ``task``).
        """
        try:
            e = self._embodiment(embodiment, task)
        except ObservationError as exc:
            raise ConfigError(f"export: {exc}") from None
        return e, {"obs": ((self.table.embodiments[e].obs_dim,), torch.float32)}, ["action"]

    def export_forward(self, emb_id: int, *inputs: torch.Tensor) -> torch.Tensor:
        """Pad, normalize, add the token, act, clip, cut the padding."""
        x = F.pad(inputs[0].to(torch.float32), (0, self.table.max_obs_dim - inputs[0].shape[1]))
        emb = torch.zeros_like(x[:, 0], dtype=torch.long) + emb_id
        out, n = self(x, emb), self.table.embodiments[emb_id].action_dim
        if self.discrete:
            return out.logits[:, :n].argmax(-1)
        return self.clip_action(out.mean, emb)[:, :n]
