"""The worlds of polydistill: embodiments, morphology variants and task variants.

Importing this package registers every environment with Gymnasium under the ``polydistill/``
namespace (``gymnasium.make("polydistill/Hopper-v0")``).

Two suites share four embodiments whose observation and action spaces all differ, morphology
variants of them, and a family of target-velocity tasks on one body. Each entry is either a
*training* task (its teacher is distilled into the generalist) or a *held-out* task (never seen
in distillation; a specialist trained on it alone is the yardstick). ``locomotion``, the first
suite (the default until the hopper sizes below), is:

==============  ===================================  ==============  =======  ==============
task            env id                               embodiment      split    variant
==============  ===================================  ==============  =======  ==============
hopper          polydistill/Hopper-v0                hopper          train    nominal
hopper-heavy    polydistill/Hopper-Heavy-v0          hopper-heavy    train    mass x1.3
hopper-long     polydistill/Hopper-Long-v0           (hopper)        heldout  limbs x1.15
cheetah-vel1    polydistill/HalfCheetahVelBody-v0    halfcheetah     train    target 1 m/s
cheetah-vel2    polydistill/HalfCheetahVelBody-v0    halfcheetah     train    target 2 m/s
cheetah-vel1.5  polydistill/HalfCheetahVelBody-v0    halfcheetah     heldout  target 1.5 m/s
swimmer         polydistill/Swimmer-v0               swimmer         train    nominal
swimmer-long    polydistill/Swimmer-Long-v0          (swimmer)       heldout  limbs x1.2
pendulum        polydistill/DoublePendulum-v0        pendulum        train    nominal
pendulum-heavy  polydistill/DoublePendulum-Heavy-v0  (pendulum)      heldout  mass x1.5
==============  ===================================  ==============  =======  ==============

Observation/action sizes: hopper 11/3, halfcheetah 18/6 (17 + target velocity), swimmer 8/2,
pendulum 9/1. Morphology variants are embodiments of their own (their dynamics differ, so the
student gets a distinct token); the velocity tasks share the ``halfcheetah`` token because the
target is part of the observation. A held-out morphology is driven zero-shot with the token of
the body in parentheses; a held-out velocity (1.5 m/s, between the trained 1 and 2) tests
interpolation. Held-out specialists are trained only to serve as the yardstick.

The default suite, ``locomotion-sizes`` (:data:`DEFAULT_SUITE`), is ``locomotion`` with its hoppers
made members of the ``hopper-size`` body family, whose observation ends with the body's size and
weight (normalised), all on the ``hopper`` token and labelled by the family's privileged teacher
(``hopper-size-family``):

================  ===================================  =======  ===================================
task              env id                               split    body
================  ===================================  =======  ===================================
hopper            polydistill/HopperSizeBody-v0        train    length 1, mass 1
hopper-heavy      polydistill/HopperSizeBody-v0        train    length 1, mass 1.3
hopper-sizes      polydistill/HopperSizeFamily-v0      train    16 training bodies + 48 of the
                                                                ranges (``pool``), weight 3
hopper-size-long  polydistill/HopperSizeBody-v0        heldout  length 1.15, mass 1 (inside the
                                                                ranges; the body of hopper-long)
================  ===================================  =======  ===================================

Every training task has its own specialist teacher except the two velocity tasks: they are
members of the ``cheetah-vel`` body family (``env_kwargs: {body: {target_velocity: ...}}``) and
share its privileged family teacher (``cheetah-vel-family``, trained over 16 targets in 0.5-2.5
m/s), so the student learns one consistent velocity-conditioned gait and interpolates between
the targets. Specialists of single targets each found their own gait: distilled side by side,
the student reached only half of the 1.5 m/s specialist.

Example:
    >>> import gymnasium as gym
    >>> import polydistill.envs
    >>> env = gym.make("polydistill/Hopper-Heavy-v0")
    >>> env.observation_space.shape, env.action_space.shape
    ((11,), (3,))

"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from polydistill.errors import ConfigError
from polydistill.weights import check_weight

__all__ = ["TaskSpec", "SUITES", "DEFAULT_SUITE", "get_suite", "list_parallel_envs", "list_suites",
           "make_parallel", "register_envs", "make_body", "body_descriptor", "list_families"]


@dataclass(frozen=True)
class TaskSpec:
    """One task of a suite: an env id, the body it runs on, and its split."""

    name: str
    """Short unique name within the suite (used for teacher folders and report rows)."""
    env_id: str
    """Gymnasium id, e.g. ``polydistill/Hopper-v0``."""
    embodiment: str
    """Embodiment (student token). Tasks on one embodiment share spaces and dynamics; morphology
    variants are embodiments of their own, task variants (goal in the observation) are not."""
    split: Literal["train", "heldout"] = "train"
    """``train``: distilled into the student; ``heldout``: evaluated only."""
    proxy: str | None = None
    """For a held-out embodiment the student never saw: the trained embodiment whose token it
    is driven with (same spaces), i.e. zero-shot transfer."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``gymnasium.make``."""
    teacher_family: str | None = None
    """For a member of a body family (its env takes ``body=``): label it with the family's
    privileged teacher (folder ``<family>-family``, trained on the family's env with domain
    randomisation) instead of a specialist of its own. Training tasks only."""
    weight: float = 1.0
    """Relative share of the distillation: of each round's env steps, of the buffer's rows and
    of every batch's rows (a family task that spans many bodies needs more data than a single
    body). Each task's loss is still averaged on its own (``distiller.balance_tasks``), so a
    heavier task is fit on more data, not pulled harder."""

    def __post_init__(self) -> None:
        check_weight(self.name, self.weight)

    @property
    def teacher_name(self) -> str:
        """Folder of the task's teacher under a teachers directory."""
        return f"{self.teacher_family}-family" if self.teacher_family else self.name

    @property
    def teacher_env_id(self) -> str:
        """Env id the task's teacher trains on: the task's own, or its family's."""
        if self.teacher_family is None:
            return self.env_id
        from polydistill.envs.families import get_family

        return get_family(self.teacher_family).family_env_id


_BASE: dict[str, tuple[str, int]] = {
    "polydistill/Hopper-v0": ("polydistill.envs.locomotion:MorphHopperEnv", 1000),
    "polydistill/HalfCheetahVel-v0": ("polydistill.envs.locomotion:HalfCheetahVelEnv", 1000),
    "polydistill/Swimmer-v0": ("polydistill.envs.locomotion:MorphSwimmerEnv", 1000),
    "polydistill/DoublePendulum-v0": ("polydistill.envs.locomotion:MorphDoublePendulumEnv", 1000),
    "polydistill/HopperBody-v0": ("polydistill.envs.families:HopperBodyEnv", 1000),
    "polydistill/HopperSizeBody-v0": ("polydistill.envs.families:HopperSizeBodyEnv", 1000),
    "polydistill/HalfCheetahBody-v0": ("polydistill.envs.families:HalfCheetahBodyEnv", 1000),
    "polydistill/SwimmerBody-v0": ("polydistill.envs.families:SwimmerBodyEnv", 1000),
    "polydistill/HalfCheetahVelBody-v0": ("polydistill.envs.families:HalfCheetahVelBodyEnv", 1000),
}

_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "polydistill/Hopper-Heavy-v0": ("polydistill/Hopper-v0", {"mass": 1.3}),
    "polydistill/Hopper-Long-v0": ("polydistill/Hopper-v0", {"length": 1.15}),
    "polydistill/HalfCheetah-Vel1-v0": ("polydistill/HalfCheetahVel-v0", {"target_velocity": 1.0}),
    "polydistill/HalfCheetah-Vel1.5-v0": ("polydistill/HalfCheetahVel-v0", {"target_velocity": 1.5}),
    "polydistill/HalfCheetah-Vel2-v0": ("polydistill/HalfCheetahVel-v0", {"target_velocity": 2.0}),
    "polydistill/HalfCheetah-Vel3-v0": ("polydistill/HalfCheetahVel-v0", {"target_velocity": 3.0}),
    "polydistill/Swimmer-Long-v0": ("polydistill/Swimmer-v0", {"length": 1.2}),
    "polydistill/DoublePendulum-Heavy-v0": ("polydistill/DoublePendulum-v0", {"mass": 1.5}),
}

_FAMILY_IDS: dict[str, str] = {
    "polydistill/HopperFamily-v0": "hopper",
    "polydistill/HopperSizeFamily-v0": "hopper-size",
    "polydistill/HalfCheetahFamily-v0": "halfcheetah",
    "polydistill/SwimmerFamily-v0": "swimmer",
    "polydistill/HalfCheetahVelFamily-v0": "cheetah-vel",
}
"""Domain randomisation over a body family's training split, descriptor in the observation
(``polydistill.envs.families.FamilyEnv``): what a family's privileged teacher trains on."""

_VEL_BODY = "polydistill/HalfCheetahVelBody-v0"
_SIZE_BODY = "polydistill/HopperSizeBody-v0"

SUITES: dict[str, tuple[TaskSpec, ...]] = {
    "locomotion": (
        TaskSpec("hopper", "polydistill/Hopper-v0", "hopper"),
        TaskSpec("hopper-heavy", "polydistill/Hopper-Heavy-v0", "hopper-heavy"),
        TaskSpec("hopper-long", "polydistill/Hopper-Long-v0", "hopper-long", "heldout", "hopper"),
        TaskSpec("cheetah-vel1", _VEL_BODY, "halfcheetah", kwargs={"body": {"target_velocity": 1.0}},
                 teacher_family="cheetah-vel"),
        TaskSpec("cheetah-vel2", _VEL_BODY, "halfcheetah", kwargs={"body": {"target_velocity": 2.0}},
                 teacher_family="cheetah-vel"),
        TaskSpec("cheetah-vel1.5", _VEL_BODY, "halfcheetah", "heldout",
                 kwargs={"body": {"target_velocity": 1.5}}),
        TaskSpec("swimmer", "polydistill/Swimmer-v0", "swimmer"),
        TaskSpec("swimmer-long", "polydistill/Swimmer-Long-v0", "swimmer-long", "heldout",
                 "swimmer"),
        TaskSpec("pendulum", "polydistill/DoublePendulum-v0", "pendulum"),
        TaskSpec("pendulum-heavy", "polydistill/DoublePendulum-Heavy-v0", "pendulum-heavy",
                 "heldout", "pendulum"),
    ),
}
SUITES["locomotion-sizes"] = (
    TaskSpec("hopper", _SIZE_BODY, "hopper", kwargs={"body": {"length": 1.0, "mass": 1.0}},
             teacher_family="hopper-size"),
    TaskSpec("hopper-heavy", _SIZE_BODY, "hopper", kwargs={"body": {"length": 1.0, "mass": 1.3}},
             teacher_family="hopper-size"),
    TaskSpec("hopper-sizes", "polydistill/HopperSizeFamily-v0", "hopper", kwargs={"pool": 48},
             teacher_family="hopper-size", weight=3.0),
    TaskSpec("hopper-size-long", _SIZE_BODY, "hopper", "heldout",
             kwargs={"body": {"length": 1.15, "mass": 1.0}}),
    *(t for t in SUITES["locomotion"] if not t.name.startswith("hopper")),
)
"""Named task suites; ``locomotion-sizes`` is the default (:data:`DEFAULT_SUITE`): ``locomotion``
with its hoppers made members of the ``hopper-size`` family. They observe their size and weight,
share the ``hopper`` token and the family's teacher; ``hopper-sizes`` drives the family's 16
training bodies and 48 more drawn inside its ranges, with three times a single task's share of
the run (``weight``); ``hopper-size-long`` (every limb x1.15) is held out inside the ranges. On
``locomotion`` a student drives that body with the nominal hopper's token and falls (0.24-0.29
of its specialist); here it reaches 0.965-0.970 on 5 of 6 seeds, 0.470 on the sixth (see the
README)."""

DEFAULT_SUITE = "locomotion-sizes"
"""The suite of the quickstart, of ``agents/distill.yaml`` and of ``GeneralistConfig``."""


_VISION: dict[str, str] = {
    "polydistill/PointGoalVision-v0": "point_goal",
    "polydistill/ReachVision-v0": "reach",
}
"""Vision tasks (``polydistill.envs.vision``): Dict observations ``proprio``/``privileged``/``pixels``."""


def register_envs() -> None:
    """Register every polydistill env id with Gymnasium (idempotent)."""
    for env_id, task in _VISION.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="polydistill.envs.vision:make_vision_env",
                         max_episode_steps=100, kwargs={"task": task})
    for env_id, (entry_point, steps) in _BASE.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry_point, max_episode_steps=steps)
    for env_id, family in _FAMILY_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="polydistill.envs.families:FamilyEnv", max_episode_steps=1000,
                         kwargs={"family": family})
    for env_id, (base, kwargs) in _VARIANTS.items():
        if env_id not in gym.registry:
            entry_point, steps = _BASE[base]
            gym.register(env_id, entry_point=entry_point, max_episode_steps=steps, kwargs=kwargs)


_PARALLEL: dict[str, str] = {
    "intersection_v0": "polydistill.envs.intersection:IntersectionEnv",
    "rendezvous_v0": "polydistill.envs.rendezvous:RendezvousEnv",
    "mamujoco_v0": "polydistill.envs.mamujoco:MaMuJoCoEnv",  # the [mamujoco] extra
}
"""Multi-agent PettingZoo ``ParallelEnv`` worlds: name -> ``module:class``."""


def list_parallel_envs() -> list[str]:
    """Names of the multi-agent (PettingZoo ``ParallelEnv``) envs polydistill ships."""
    return sorted(_PARALLEL)


def make_parallel(name: str, **kwargs: Any) -> Any:
    """Build the shipped multi-agent env ``name`` (see :func:`list_parallel_envs`).

    Raises:
        ConfigError: for an unknown name (the message lists the valid ones).
    """
    import importlib

    if name not in _PARALLEL:
        raise ConfigError(
            f"unknown multi-agent env {name!r}; valid: {', '.join(list_parallel_envs())}"
        )
    module, cls = _PARALLEL[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


def _family_suites() -> dict[str, tuple[TaskSpec, ...]]:
    """One suite per body family, ``<family>-bodies``: its training bodies, then the held-out ones.

    Task names are the body names (``hopper-train-00``, ``hopper-interp-01``, ...); every task
    runs the family's single-body env with its parameters, so ``train-teacher --suite
    hopper-bodies --task hopper-interp-00`` trains one body's specialist.
    """
    from polydistill.envs.families import FAMILIES

    out = {}
    for fam in FAMILIES.values():
        tasks = []
        for split in ("train", "interp", "extrap"):
            for name, body in zip(fam.body_names(split), fam.split(split), strict=True):  # type: ignore[arg-type]
                tasks.append(TaskSpec(name, fam.env_id, fam.name, "train" if split == "train" else "heldout",
                                      fam.name if split != "train" else None, {"body": body}))
        out[f"{fam.name}-bodies"] = tuple(tasks)
    return out


def list_suites() -> list[str]:
    """Names of the shipped task suites (``locomotion`` and one ``<family>-bodies`` per body family)."""
    return sorted([*SUITES, *_family_suites()])


def get_suite(name: str) -> tuple[TaskSpec, ...]:
    """Return the tasks of suite ``name``.

    Raises:
        ConfigError: if no suite has that name (the message lists the valid ones).
    """
    if name in SUITES:
        return SUITES[name]
    if name.endswith("-bodies"):
        family = _family_suites()
        if name in family:
            return family[name]
    raise ConfigError(f"unknown suite {name!r}; valid suites: {', '.join(list_suites())}")


def make_body(family: str, params: dict[str, Any] | None = None, seed: int | None = None,
              **kwargs: Any) -> gym.Env:
    """One body of a procedural family (see :func:`polydistill.envs.families.make_body`)."""
    from polydistill.envs.families import make_body as _make_body

    return _make_body(family, params, seed, **kwargs)


def body_descriptor(env: gym.Env) -> np.ndarray:
    """A family body's normalised parameters (see :func:`polydistill.envs.families.body_descriptor`)."""
    from polydistill.envs.families import body_descriptor as _body_descriptor

    return _body_descriptor(env)


def list_families() -> list[str]:
    """Names of the procedural body families (``polydistill.envs.families``)."""
    from polydistill.envs.families import list_families as _list_families

    return _list_families()


register_envs()
