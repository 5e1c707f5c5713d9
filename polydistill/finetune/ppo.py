"""stable-baselines3's PPO with the two stages a distilled actor needs: critic warm-up, kickstarting.

:class:`KickstartPPO` collects rollouts exactly as SB3's PPO does; its update is SB3's clipped
surrogate with two additions, each switchable in the recipe:

* **critic warm-up**: for the first ``critic_warmup_steps`` env steps the actor's parameters
  take no gradient (only the value loss is optimised), so a fresh critic learns the distilled
  policy's values before its advantages move the policy; the actor stays bit-identical;
* **kickstarting** (Schmitt et al. 2018): ``weight(t) * KL(reference || student)`` on every
  minibatch, where the reference is the task's teacher (or the pre-fine-tuning student) and
  the weight decays over fine-tuning steps.

The reference's labels for a rollout are computed once, batched per task, when the update
starts (the references are frozen, so this equals labelling during collection).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.utils import explained_variance

from polydistill.finetune.config import RegularizerConfig

__all__ = ["KickstartPPO", "Reference", "gaussian_kl"]

Reference = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
"""Raw observations ``(N, obs_dim)`` of one task -> reference mean ``(N, a)`` and log-std (or None)."""


def gaussian_kl(ref_mean: torch.Tensor, ref_log_std: torch.Tensor, mean: torch.Tensor,
                log_std: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(reference || student) of diagonal Gaussians ``(B, A)``, summed over ``mask``ed dims: ``(B,)``."""
    var, ref_var = torch.exp(2 * log_std), torch.exp(2 * ref_log_std)
    kl = log_std - ref_log_std + (ref_var + (ref_mean - mean) ** 2) / (2 * var) - 0.5
    return (kl * mask).sum(-1)


class KickstartPPO(PPO):
    """PPO with critic warm-up and a decaying pull toward per-task references.

    Args:
        *args: As :class:`stable_baselines3.PPO` (the policy is
            :class:`~polydistill.finetune.policy.StudentActorCritic`).
        references: One reference per env of the vector env (None: no regulariser there);
            envs of one task share one object, so labels are computed per task in one batch.
        obs_dims: Raw observation length of each env's task.
        action_dims: Action length of each env's task.
        regularizer: The kickstarting term.
        critic_warmup_steps: Env steps with the actor frozen.
        actor_lr: ``progress_remaining -> learning rate`` of the actor (the critic follows
            SB3's ``learning_rate``).
        **kwargs: As :class:`stable_baselines3.PPO`.
    """

    def __init__(self, *args: Any, references: Sequence[Reference | None] = (),
                 obs_dims: Sequence[int] = (), action_dims: Sequence[int] = (),
                 regularizer: RegularizerConfig | None = None, critic_warmup_steps: int = 0,
                 actor_lr: Callable[[float], float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.references = list(references)
        self.obs_dims, self.action_dims = list(obs_dims), list(action_dims)
        self.regularizer = regularizer or RegularizerConfig(coef=0.0)
        self.critic_warmup_steps = int(critic_warmup_steps)
        self.actor_lr = actor_lr
        if self.references and len(self.references) != self.n_envs:
            raise ValueError(f"{len(self.references)} references for {self.n_envs} envs")

    # ----------------------------------------------------------------- stages
    @property
    def actor_frozen(self) -> bool:
        """Whether the update now is part of the critic warm-up."""
        return self.num_timesteps <= self.critic_warmup_steps

    def regularizer_weight(self) -> float:
        """Weight of the kickstarting term now (its decay counts from the end of the warm-up)."""
        if all(r is None for r in self.references) or self.regularizer.coef == 0:
            return 0.0
        return self.regularizer.weight(self.num_timesteps - self.critic_warmup_steps)

    def _reference_labels(self, buf: RolloutBuffer) -> tuple[np.ndarray, ...]:
        """Reference labels of the rollout buffer, in its flat order.

        Returns:
            Mean, log-std and action mask ``(n_steps * n_envs, A)``, and whether each row's
            reference has a log-std ``(n_steps * n_envs,)``.
        """
        n_steps, n_envs = buf.buffer_size, buf.n_envs
        a = int(np.prod(self.action_space.shape))  # type: ignore[arg-type]
        mean = np.zeros((n_steps, n_envs, a), np.float32)
        log_std = np.zeros((n_steps, n_envs, a), np.float32)
        mask = np.zeros((n_steps, n_envs, a), np.float32)
        has_std = np.zeros((n_steps, n_envs, 1), np.float32)
        groups: dict[int, list[int]] = {}
        for j, ref in enumerate(self.references):
            if ref is not None:
                groups.setdefault(id(ref), []).append(j)
        for envs in groups.values():
            ref, d, k = self.references[envs[0]], self.obs_dims[envs[0]], self.action_dims[envs[0]]
            obs = buf.observations[:, envs, :d].reshape(-1, d)  # (n_steps * len(envs), d)
            m, s = ref(obs)  # type: ignore[misc]
            mean[:, envs, :k] = m.reshape(n_steps, len(envs), k)
            if s is not None:
                log_std[:, envs, :k] = s.reshape(n_steps, len(envs), k)
                has_std[:, envs] = 1.0
            mask[:, envs, :k] = 1.0
        flat = [RolloutBuffer.swap_and_flatten(x) for x in (mean, log_std, mask, has_std)]
        return flat[0], flat[1], flat[2], flat[3][:, 0]

    def _set_learning_rates(self) -> None:
        p = self._current_progress_remaining
        for group in self.policy.optimizer.param_groups:
            if group.get("name") == "actor" and self.actor_lr is not None:
                group["lr"] = self.actor_lr(p)
            else:
                group["lr"] = self.lr_schedule(p)

    # ----------------------------------------------------------------- the update
    def train(self) -> None:
        """One PPO update (SB3's, plus the warm-up and the regulariser; see the module docstring)."""
        self.policy.set_training_mode(True)
        self._set_learning_rates()
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        frozen, weight = self.actor_frozen, self.regularizer_weight()
        if frozen:
            weight = 0.0
        actor = self.policy.actor_parameters()  # type: ignore[operator]
        for p in actor:
            p.requires_grad_(not frozen)
        buf = self.rollout_buffer
        use_ref = weight > 0
        if use_ref:
            labels = self._reference_labels(buf)
            ref_mean, ref_log_std, ref_mask, ref_has_std = (torch.as_tensor(x) for x in labels)
            if self.regularizer.loss == "mse":
                ref_has_std = torch.zeros_like(ref_has_std)
        for _ in buf.get(buf.buffer_size * buf.n_envs):  # flattens the buffer; the batches come below
            break
        n = buf.buffer_size * buf.n_envs
        pg_losses, value_losses, entropy_losses, reg_losses, clip_fractions = [], [], [], [], []
        approx_kl_divs: list[float] = []
        continue_training = True
        for _epoch in range(self.n_epochs):
            approx_kl_divs = []
            order = np.random.permutation(n)
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                data = buf._get_samples(idx)
                values, log_prob, entropy = self.policy.evaluate_actions(data.observations, data.actions)
                values = values.flatten()
                value_loss = F.mse_loss(data.returns, values)
                value_losses.append(value_loss.item())
                loss = self.vf_coef * value_loss
                log_ratio = log_prob - data.old_log_prob
                with torch.no_grad():
                    approx_kl = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).item()
                approx_kl_divs.append(approx_kl)
                if not frozen:
                    adv = data.advantages
                    if self.normalize_advantage and len(adv) > 1:
                        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                    ratio = torch.exp(log_ratio)
                    policy_loss = -torch.min(adv * ratio,
                                             adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)).mean()
                    entropy_loss = -torch.mean(entropy) if entropy is not None else -torch.mean(-log_prob)
                    pg_losses.append(policy_loss.item())
                    entropy_losses.append(entropy_loss.item())
                    clip_fractions.append(torch.mean((torch.abs(ratio - 1) > clip_range).float()).item())
                    loss = loss + policy_loss + self.ent_coef * entropy_loss
                    if use_ref:
                        mean, log_std, _ = self.policy.student_output(data.observations)  # type: ignore[operator]
                        i = torch.as_tensor(idx)
                        kl = gaussian_kl(ref_mean[i], ref_log_std[i], mean, log_std, ref_mask[i])
                        mse = ((mean - ref_mean[i]) ** 2 * ref_mask[i]).sum(-1)
                        reg_loss = torch.where(ref_has_std[i] > 0, kl, mse).mean()
                        reg_losses.append(reg_loss.item())
                        loss = loss + weight * reg_loss
                    if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                        continue_training = False
                        break
                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break
        for p in actor:
            p.requires_grad_(True)
        explained_var = explained_variance(buf.values.flatten(), buf.returns.flatten())
        rec = self.logger.record
        rec("train/value_loss", float(np.mean(value_losses)) if value_losses else 0.0)
        if pg_losses:
            rec("train/policy_gradient_loss", float(np.mean(pg_losses)))
            rec("train/entropy_loss", float(np.mean(entropy_losses)))
            rec("train/clip_fraction", float(np.mean(clip_fractions)))
        rec("train/approx_kl", float(np.mean(approx_kl_divs)) if approx_kl_divs else 0.0)
        rec("train/explained_variance", float(explained_var))
        rec("train/n_updates", self._n_updates, exclude="tensorboard")
        rec("train/clip_range", clip_range)
        rec("finetune/actor_frozen", float(frozen))
        rec("finetune/regularizer_weight", weight)
        if reg_losses:
            rec("finetune/regularizer", float(np.mean(reg_losses)))
        for group in self.policy.optimizer.param_groups:
            rec(f"finetune/lr_{group.get('name', 'all')}", group["lr"])
