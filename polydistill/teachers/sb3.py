"""stable-baselines3 models (with their ``VecNormalize`` statistics) as frozen teachers.

Warning:
    SB3 ``.zip`` files and ``vecnormalize.pkl`` are pickle-based. They are external input: load
    them only from paths you trust. polydistill's own checkpoints never use pickle.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from polydistill.errors import TeacherError
from polydistill.teachers.base import (
    LABEL_LOG_STD_MAX,
    LABEL_LOG_STD_MIN,
    ActionTarget,
    ObsNormalizer,
    Teacher,
    clip_action,
)

__all__ = ["SB3Teacher", "load_vecnormalize_stats"]


def _sb3_algo_name(path: Path) -> str:
    """Read the algorithm of an SB3 zip from its JSON ``data`` entry (no unpickling)."""
    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise TeacherError(f"{str(path)!r} is not a stable-baselines3 model zip: {exc}") from exc
    module = str(data.get("policy_class", {}).get("__module__", ""))
    for name in ("ppo", "a2c", "sac", "td3", "ddpg", "dqn"):
        if f".{name}." in module or module.endswith(f".{name}"):
            return name
    if module.endswith("common.policies"):
        # PPO and A2C share ActorCriticPolicy; PPO alone has a clip range.
        return "ppo" if "clip_range" in data else "a2c"
    raise TeacherError(f"cannot tell the SB3 algorithm of {str(path)!r} (policy module {module!r})")


class _SpacesOnlyEnv(gym.Env):
    """An env that only carries spaces: SB3's ``VecNormalize.load`` needs one to attach to."""

    def __init__(self, observation_space: gym.spaces.Space, action_space: gym.spaces.Space) -> None:
        self.observation_space = observation_space
        self.action_space = action_space


def load_vecnormalize_stats(path: str | Path, observation_space: gym.spaces.Space,
                            action_space: gym.spaces.Space) -> ObsNormalizer | None:
    """Read observation statistics with SB3's own ``VecNormalize.load`` (pickle: trusted paths).

    Returns ``None`` if the file normalizes rewards only.

    Raises:
        TeacherError: if the file is unreadable or its statistics do not fit the spaces.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = DummyVecEnv([lambda: _SpacesOnlyEnv(observation_space, action_space)])
    try:
        vn = VecNormalize.load(str(path), venv)
    except Exception as exc:  # unpickling and space checks raise many types
        raise TeacherError(f"cannot read VecNormalize statistics from {str(path)!r}: {exc}") from exc
    if not vn.norm_obs:
        return None
    rms = vn.obs_rms
    if isinstance(rms, dict):
        raise TeacherError("dict-observation VecNormalize statistics are not supported yet")
    return ObsNormalizer(
        mean=np.asarray(rms.mean, dtype=np.float64),
        var=np.asarray(rms.var, dtype=np.float64),
        clip=float(vn.clip_obs),
        epsilon=float(vn.epsilon),
    )


class SB3Teacher(Teacher):
    """A stable-baselines3 model (PPO, A2C, SAC, TD3, DDPG, DQN) as a frozen teacher.

    Example:
        >>> teacher = SB3Teacher.load("runs/teachers/hopper/model.zip")  # doctest: +SKIP
        >>> teacher.action_dist(obs_batch).mean.shape  # doctest: +SKIP
    """

    def __init__(self, model: Any, normalizer: ObsNormalizer | None = None) -> None:
        self.model = model
        self.policy = model.policy
        self.policy.set_training_mode(False)
        for p in self.policy.parameters():
            p.requires_grad_(False)
        self.normalizer = normalizer
        self.observation_space = model.observation_space
        self.action_space = model.action_space
        if not isinstance(self.observation_space, gym.spaces.Box):
            raise TeacherError(
                f"only Box observation spaces are supported, got {self.observation_space}"
            )

    @classmethod
    def load(cls, path: str | Path, vecnormalize: str | Path | None = None) -> SB3Teacher:
        """Load an SB3 zip; picks up ``vecnormalize.pkl`` beside it unless one is named.

        Raises:
            TeacherError: if the file is missing or not an SB3 model.
        """
        path = Path(path)
        if not path.is_file():
            raise TeacherError(f"teacher file not found: expected an SB3 .zip at {str(path)!r}")
        algo = _sb3_algo_name(path)
        import stable_baselines3 as sb3

        cls_map = {"ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC, "td3": sb3.TD3,
                   "ddpg": sb3.DDPG, "dqn": sb3.DQN}
        try:
            model = cls_map[algo].load(path, device="cpu")
        except Exception as exc:  # SB3 raises many types for damaged zips
            raise TeacherError(f"cannot load SB3 {algo.upper()} model {str(path)!r}: {exc}") from exc
        if vecnormalize is None:
            candidate = path.parent / "vecnormalize.pkl"
            vecnormalize = candidate if candidate.is_file() else None
        normalizer = (
            load_vecnormalize_stats(vecnormalize, model.observation_space, model.action_space)
            if vecnormalize is not None else None
        )
        return cls(model, normalizer)

    @torch.inference_mode()
    def action_dist(self, obs: np.ndarray) -> ActionTarget:
        """Label raw observations with the SB3 policy's action distribution."""
        obs = self._check_obs(obs)
        x = self.normalizer(obs) if self.normalizer is not None else obs
        obs_t = torch.as_tensor(x, dtype=torch.float32)
        policy = self.policy
        space = self.action_space
        from stable_baselines3.common.distributions import DiagGaussianDistribution
        from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy

        if isinstance(policy, ActorCriticPolicy) and type(policy.action_dist) is DiagGaussianDistribution:
            # fast path (profiled: a third of the labelling time was torch.distributions
            # bookkeeping): the same layers as get_distribution, without building a Normal
            # BasePolicy's version, as get_distribution does: ActorCriticPolicy's override returns
            # a (pi, vf) tuple when the extractors are not shared
            features = BasePolicy.extract_features(policy, obs_t, policy.pi_features_extractor)
            mean_t = policy.action_net(policy.mlp_extractor.forward_actor(features))
            if policy.squash_output:
                raise TeacherError("squashed on-policy (gSDE squash) teachers are not supported")
            mean = mean_t.numpy().astype(np.float64)
            log_std = policy.log_std.expand_as(mean_t).numpy().astype(np.float64)
            return ActionTarget("gaussian", clip_action(space, mean), mean, log_std)
        if isinstance(policy, ActorCriticPolicy):
            dist = policy.get_distribution(obs_t)
            d = dist.distribution
            if isinstance(d, torch.distributions.Categorical):
                logits = d.logits.numpy()
                return ActionTarget("categorical", logits.argmax(-1), logits=logits)
            if isinstance(d, torch.distributions.Normal):
                mean = d.mean.numpy().astype(np.float64)
                log_std = torch.log(d.stddev).numpy().astype(np.float64)
                if policy.squash_output:
                    raise TeacherError("squashed on-policy (gSDE squash) teachers are not supported")
                return ActionTarget("gaussian", clip_action(space, mean), mean, log_std)
            raise TeacherError(f"unsupported SB3 action distribution {type(d).__name__}")
        if hasattr(policy, "actor") and hasattr(policy.actor, "get_action_dist_params"):
            # SAC: tanh-squashed Gaussian. Map to env units; std by the delta method.
            if getattr(policy.actor, "use_sde", False):
                raise TeacherError("SAC teachers trained with gSDE (use_sde=True) are not supported")
            mu, log_std, _ = policy.actor.get_action_dist_params(obs_t)
            t = torch.tanh(mu)
            low = torch.as_tensor(space.low, dtype=torch.float32)
            high = torch.as_tensor(space.high, dtype=torch.float32)
            half = (high - low) / 2
            mean = (low + (t + 1.0) * half).numpy().astype(np.float64)
            std = ((1 - t**2).clamp_min(1e-6) * log_std.exp() * half).numpy().astype(np.float64)
            log_std_env = np.clip(np.log(std), LABEL_LOG_STD_MIN, LABEL_LOG_STD_MAX)
            return ActionTarget("gaussian", clip_action(space, mean), mean, log_std_env)
        if hasattr(policy, "q_net"):  # DQN
            q = policy.q_net(obs_t).numpy()
            return ActionTarget("categorical", q.argmax(-1), logits=q)
        # TD3 / DDPG: deterministic actor with tanh output in [-1, 1]
        scaled = policy.actor(obs_t).numpy()
        action = policy.unscale_action(scaled).astype(np.float64)
        return ActionTarget("deterministic", clip_action(space, action), mean=action)
