"""Frozen teachers: the interface, torch modules and plain callables (SB3 zips: ``teachers.sb3``).

A teacher maps a batch of *its own* observations to an :class:`ActionTarget` (the action
distribution it would act with) and never trains. Every adapter applies the teacher's own
observation normalization, so callers always pass raw environment observations.

Warning:
    SB3 ``.zip`` files and ``vecnormalize.pkl`` are pickle-based. They are external input: load
    them only from paths you trust. polydistill's own checkpoints never use pickle.

"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from polydistill.errors import ConfigError, SpaceMismatchError, TeacherError

__all__ = [
    "ActionTarget",
    "Teacher",
    "TorchTeacher",
    "CallableTeacher",
    "ObsNormalizer",
    "load_teacher",
    "import_teacher",
    "PolicyTeacher",
    "check_teacher_fits",
    "clip_action",
]

LABEL_LOG_STD_MIN, LABEL_LOG_STD_MAX = -5.0, 2.0
"""Teacher log-std labels are clamped here: a saturated squashed Gaussian would otherwise give
labels near log(0) that make the KL losses explode."""


@dataclass
class ActionTarget:
    """What a teacher says about a batch of states (all arrays have batch size ``N``)."""

    kind: Literal["gaussian", "categorical", "deterministic"]
    """Distribution family of the teacher's action head."""
    action: np.ndarray
    """The action the teacher would take (mean / argmax), in env units, clipped: (N, A) or (N,)."""
    mean: np.ndarray | None = None
    """Gaussian mean in env units, unclipped: (N, A)."""
    log_std: np.ndarray | None = None
    """Gaussian log standard deviation: (N, A)."""
    logits: np.ndarray | None = None
    """Categorical logits: (N, n)."""


@dataclass(frozen=True)
class ObsNormalizer:
    """Running-mean-std observation normalization, as SB3's ``VecNormalize`` applies it."""

    mean: np.ndarray
    var: np.ndarray
    clip: float = 10.0
    epsilon: float = 1e-8

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Normalize ``obs`` (…, D) and clip to ``[-clip, clip]``."""
        return np.clip((obs - self.mean) / np.sqrt(self.var + self.epsilon), -self.clip, self.clip)


class Teacher(ABC):
    """A frozen policy that labels states with its action distribution."""

    observation_space: gym.spaces.Box
    action_space: gym.spaces.Space

    @abstractmethod
    def action_dist(self, obs: np.ndarray) -> ActionTarget:
        """Label a batch of raw observations ``(N, obs_dim)``."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        """The teacher's deterministic action for a batch of raw observations."""
        return self.action_dist(obs).action

    def _check_obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        shape = self.observation_space.shape
        if obs.ndim != len(shape) + 1 or obs.shape[1:] != shape:
            raise SpaceMismatchError(
                f"teacher expects observations of shape (N, {', '.join(map(str, shape))}), "
                f"got {obs.shape}"
            )
        return obs


def clip_action(space: gym.spaces.Space, a: np.ndarray) -> np.ndarray:
    """Clip ``a`` to a Box's bounds (other spaces pass through)."""
    if isinstance(space, gym.spaces.Box):
        return np.clip(a, space.low, space.high).astype(space.dtype, copy=False)
    return a


class TorchTeacher(Teacher):
    """A ``torch.nn.Module`` teacher.

    The module maps a float32 observation batch to either a tensor of actions (deterministic),
    a ``(mean, log_std)`` pair (Gaussian), or a ``torch.distributions`` object.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Space,
        normalizer: ObsNormalizer | None = None,
    ) -> None:
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.observation_space = observation_space
        self.action_space = action_space
        self.normalizer = normalizer

    @torch.inference_mode()
    def action_dist(self, obs: np.ndarray) -> ActionTarget:
        """Label raw observations with the module's output."""
        obs = self._check_obs(obs)
        x = self.normalizer(obs) if self.normalizer is not None else obs
        out = self.module(torch.as_tensor(x, dtype=torch.float32))
        return _target_from_output(out, self.action_space)


class CallableTeacher(Teacher):
    """A plain function ``f(obs_batch) -> actions`` (or ``(mean, log_std)``) as a teacher."""

    def __init__(
        self,
        fn: Callable[[np.ndarray], Any],
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Space,
    ) -> None:
        self.fn = fn
        self.observation_space = observation_space
        self.action_space = action_space

    def action_dist(self, obs: np.ndarray) -> ActionTarget:
        """Label raw observations with the function's output."""
        return _target_from_output(self.fn(self._check_obs(obs)), self.action_space)


def _to_np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _target_from_output(out: Any, space: gym.spaces.Space) -> ActionTarget:
    target = _raw_target(out, space)
    n = target.action.shape[0]
    want = (n,) if isinstance(space, gym.spaces.Discrete) else (n, *space.shape)
    if target.action.shape != want:
        raise TeacherError(f"teacher returned actions of shape {target.action.shape}, expected {want}")
    if target.log_std is not None:
        target.log_std = np.clip(target.log_std, LABEL_LOG_STD_MIN, LABEL_LOG_STD_MAX)
    return target


def _raw_target(out: Any, space: gym.spaces.Space) -> ActionTarget:
    if isinstance(out, torch.distributions.Categorical):
        logits = _to_np(out.logits)
        return ActionTarget("categorical", logits.argmax(-1), logits=logits)
    if isinstance(out, torch.distributions.Normal):
        mean = _to_np(out.mean).astype(np.float64)
        return ActionTarget("gaussian", clip_action(space, mean), mean,
                            np.log(_to_np(out.stddev)).astype(np.float64))
    if isinstance(out, tuple) and len(out) == 2:
        mean = _to_np(out[0]).astype(np.float64)
        log_std = np.broadcast_to(_to_np(out[1]), mean.shape).astype(np.float64)
        return ActionTarget("gaussian", clip_action(space, mean), mean, log_std)
    a = _to_np(out)
    if isinstance(space, gym.spaces.Discrete):
        if a.ndim == 2:  # logits
            return ActionTarget("categorical", a.argmax(-1), logits=a.astype(np.float64))
        return ActionTarget("deterministic", a.astype(np.int64))
    a = a.astype(np.float64)
    return ActionTarget("deterministic", clip_action(space, a), mean=a)


def is_import_path(spec: Any) -> bool:
    """Whether ``spec`` reads as ``"package.module:Name"`` (an import path, not a file)."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        return False
    module, name = spec.split(":")
    parts = (*module.split("."), *name.split("."))
    return bool(module) and bool(name) and all(p.isidentifier() for p in parts)


class PolicyTeacher(Teacher):
    """A deterministic teacher from any object: ``get_action(obs)`` or ``__call__(obs)``.

    Objects with ``get_action`` (Meta-World's scripted policies, the rllab/garage convention)
    take one observation and are called once per row. A plain callable is probed once with a
    two-row batch: if it answers with one action per row it labels whole batches, otherwise it
    is called per row. Actions are clipped to the env's bounds (box spaces) before they reach
    the env or the buffer; a non-finite action is a :class:`TeacherError`.

    Args:
        policy: The object or function.
        observation_space: The env's observation space.
        action_space: The env's action space.
        name: What the teacher is called in errors (e.g. its import path).
    """

    def __init__(self, policy: Any, observation_space: gym.spaces.Box, action_space: gym.spaces.Space,
                 name: str = "teacher") -> None:
        fn = getattr(policy, "get_action", None)
        self.per_row = callable(fn)
        if fn is None or not callable(fn):
            if not callable(policy):
                raise TeacherError(f"{name}: expected an object with get_action(obs) or a callable, "
                                   f"got {type(policy).__name__}")
            fn = policy
        self.fn, self.name = fn, name
        self.observation_space, self.action_space = observation_space, action_space
        if not self.per_row:
            probe = np.stack([observation_space.sample(), observation_space.sample()]).astype(np.float64)
            try:
                out = np.asarray(fn(probe))
                self.per_row = out.shape != (2, *(() if self._discrete else action_space.shape))
            except Exception:  # a function of one observation fails on a batch
                self.per_row = True

    @property
    def _discrete(self) -> bool:
        return isinstance(self.action_space, gym.spaces.Discrete)

    def action_dist(self, obs: np.ndarray) -> ActionTarget:
        """Label raw observations (one call per row for single-observation policies)."""
        obs = self._check_obs(obs)
        try:
            out = (np.stack([np.asarray(self.fn(o)) for o in obs]) if self.per_row
                   else np.asarray(self.fn(obs)))
        except Exception as exc:
            raise TeacherError(f"{self.name} failed on a batch of shape {obs.shape}: {exc!r}") from exc
        if self._discrete:
            out = out.astype(np.int64)
        elif not np.all(np.isfinite(out)):
            raise TeacherError(f"{self.name} returned a non-finite action")
        want = (len(obs),) if self._discrete else (len(obs), *self.action_space.shape)
        if out.shape != want:
            raise TeacherError(f"{self.name} returned actions of shape {out.shape}, expected {want}")
        a = clip_action(self.action_space, out.astype(np.float64) if not self._discrete else out)
        return ActionTarget("deterministic", a, mean=None if self._discrete else a)


def import_teacher(path: str, observation_space: gym.spaces.Box, action_space: gym.spaces.Space) -> Teacher:
    """The teacher at import path ``"package.module:Name"``: a class (made with no arguments) or a function.

    Raises:
        TeacherError: if the module does not import, has no such name, or the object has
            neither ``get_action`` nor ``__call__`` (the message names what was tried).
    """
    import importlib

    module, name = path.split(":")
    try:
        obj: Any = importlib.import_module(module)
    except Exception as exc:
        raise TeacherError(f"teacher {path!r}: cannot import module {module!r} ({exc!r})") from None
    for part in name.split("."):
        if not hasattr(obj, part):
            raise TeacherError(f"teacher {path!r}: module {module!r} has no attribute {name!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise TeacherError(f"teacher {path!r}: {name}() failed ({exc!r}); classes are made "
                               "with no arguments") from None
    if isinstance(obj, Teacher):
        return obj
    if not callable(getattr(obj, "get_action", None)) and not callable(obj):
        raise TeacherError(f"teacher {path!r}: {type(obj).__name__} has neither get_action(obs) nor "
                           "__call__(obs)")
    return PolicyTeacher(obj, observation_space, action_space, name=f"teacher {path!r}")


def load_teacher(spec: str | Path | Teacher, observation_space: gym.spaces.Box | None = None,
                 action_space: gym.spaces.Space | None = None) -> Teacher:
    """Load a teacher: an SB3 zip path (or a folder holding ``model.zip``), or an import path.

    Args:
        spec: ``"path/model.zip"``, ``"folder"`` or ``"package.module:Name"`` (see
            :func:`import_teacher`).
        observation_space: The env's observation space (import paths need it).
        action_space: The env's action space (import paths need it).

    Raises:
        TeacherError: if nothing loadable is found there.
    """
    if isinstance(spec, Teacher):
        return spec
    if is_import_path(spec) and not Path(spec).exists():
        if observation_space is None or action_space is None:
            raise TeacherError(f"teacher {spec!r}: an import-path teacher needs the env's spaces")
        return import_teacher(str(spec), observation_space, action_space)
    p = Path(spec)
    if p.is_dir():
        p = p / "model.zip"
    if p.suffix != ".zip":
        raise TeacherError(f"expected an SB3 .zip teacher (a folder with model.zip, or an import path "
                           f"'package.module:Name'), got {str(spec)!r}")
    from polydistill.teachers.sb3 import SB3Teacher

    return SB3Teacher.load(p)


def check_teacher_fits(teacher: Teacher, env_obs: gym.spaces.Space, env_act: gym.spaces.Space,
                       name: str = "teacher") -> None:
    """Refuse a teacher whose spaces do not match the env it is asked to label.

    Raises:
        SpaceMismatchError: naming the space, what the env has and what the teacher has.
    """
    if not isinstance(env_obs, gym.spaces.Box):
        raise ConfigError(f"{name}: only Box observation spaces are supported, got {env_obs}")
    if tuple(teacher.observation_space.shape) != tuple(env_obs.shape):
        raise SpaceMismatchError(
            f"{name}: env observations have shape {env_obs.shape} but the teacher expects "
            f"{teacher.observation_space.shape}"
        )
    ta, ea = teacher.action_space, env_act
    if type(ta) is not type(ea):
        raise SpaceMismatchError(f"{name}: env action space is {ea} but the teacher acts in {ta}")
    if isinstance(ea, gym.spaces.Box) and tuple(ta.shape) != tuple(ea.shape):
        raise SpaceMismatchError(
            f"{name}: env actions have shape {ea.shape} but the teacher outputs {ta.shape}"
        )
    if isinstance(ea, gym.spaces.Discrete) and ta.n != ea.n:
        raise SpaceMismatchError(f"{name}: env has {ea.n} discrete actions, the teacher {ta.n}")
