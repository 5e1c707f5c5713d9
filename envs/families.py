"""Procedural body families: hoppers, half-cheetahs and swimmers sampled from parameter ranges.

A family is one MuJoCo body plan with per-limb parameters (limb lengths, mass, actuator gear,
joint damping; the swimmer's number of segments). A body is a dict of those parameters; it is
built by editing Gymnasium's v5 MJCF through :class:`mujoco.MjSpec` (or, for swimmers with other
segment counts, by growing the chain), so every body is a real rigid-body model whose masses and
inertias the compiler derives from the edited geometry.

Every family has a documented, seeded split (:meth:`BodyFamily.split`):

=========  ======  ===========================================================================
split      bodies  how they are drawn
=========  ======  ===========================================================================
train      16      uniformly inside every parameter's training range
interp     4       inside the training ranges (never one of the training bodies)
extrap     4       about half the parameters outside their training range (the rest inside)
=========  ======  ===========================================================================

A body's *descriptor* (:func:`body_descriptor`) is its parameter vector normalised so that each
training range maps to [-1, 1]: what a deployed robot knows about itself, the way it knows its
URDF. Values beyond +-1 mean the body is outside the training ranges.

Example:
    >>> from polydistill.envs import make_body, body_descriptor
    >>> env = make_body("hopper", {"thigh_length": 1.1})
    >>> body_descriptor(env).shape
    (7,)

"""

from __future__ import annotations

import functools
import math
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv
from gymnasium.spaces import Box

from polydistill.envs.locomotion import HalfCheetahVelEnv
from polydistill.errors import ConfigError
from polydistill.students.layout import BodyLayout, FamilyLayout

__all__ = ["Param", "BodyFamily", "FAMILIES", "FamilyEnv", "Split", "make_body", "body_descriptor",
           "get_family", "list_families", "build_body", "BodyLayout", "FamilyLayout", "body_layout",
           "family_layout"]

Split = Literal["train", "interp", "extrap"]
SPLIT_SIZES: dict[str, int] = {"train": 16, "interp": 4, "extrap": 4}
"""Bodies per split in every family."""
_SPLIT_IDS = {"train": 0, "interp": 1, "extrap": 2}
_POOL_ID = 3
"""Stream of :meth:`BodyFamily.pool` (beside the splits')."""
_FAMILY_ENTROPY = 20261129
"""Root of every family's split streams: changing it changes every shipped split."""

_ASSETS = Path(gym.__file__).parent / "envs" / "mujoco" / "assets"


@dataclass(frozen=True)
class Param:
    """One body parameter and its training range."""

    name: str
    low: float
    """Training range, lower end."""
    high: float
    """Training range, upper end."""
    nominal: float
    """Value of Gymnasium's body."""
    doc: str
    integer: bool = False
    """Whole numbers only (a segment count)."""
    limit: tuple[float, float] = (0.3, 3.0)
    """What the builder accepts at all (a ``ConfigError`` outside)."""

    @property
    def half(self) -> float:
        """Half-width of the training range."""
        return 0.5 * (self.high - self.low)

    def normalise(self, value: float) -> float:
        """``value`` with the training range mapped to [-1, 1]."""
        return (float(value) - 0.5 * (self.low + self.high)) / self.half if self.half else 0.0

    def check(self, value: Any) -> float:
        """``value`` as a float, or a ``ConfigError`` naming the parameter and its limits."""
        ok = (isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
              and math.isfinite(float(value)))
        if ok and self.integer:
            ok = float(value) == int(value)
        if not ok or not self.limit[0] <= float(value) <= self.limit[1]:
            kind = "a whole number" if self.integer else "a finite number"
            raise ConfigError(f"body parameter {self.name!r} must be {kind} in [{self.limit[0]}, "
                              f"{self.limit[1]}], got {value!r}")
        return float(value)


def _draw(p: Param, rng: np.random.Generator, where: Literal["inside", "inner", "outside"]) -> float:
    if p.integer:
        if where == "outside":
            return float(p.high + 1)
        return float(rng.integers(int(p.low), int(p.high) + 1))
    if where == "inside":
        return float(rng.uniform(p.low, p.high))
    if where == "inner":  # inside, away from the edges
        return float(rng.uniform(p.low + 0.1 * p.half, p.high - 0.1 * p.half))
    width = 0.5 * p.half  # outside: up to half the range's half-width beyond either end
    lo, hi = max(p.limit[0], p.low - width), min(p.limit[1], p.high + width)
    return float(rng.uniform(lo, p.low) if rng.random() < 0.5 else rng.uniform(p.high, hi))


@dataclass(frozen=True)
class BodyFamily:
    """A body plan with parameter ranges, a seeded split and the env class that drives it."""

    name: str
    params: tuple[Param, ...]
    env_id: str
    """Gymnasium id whose ``body`` keyword takes a parameter dict."""
    build: Callable[[dict[str, float]], mujoco.MjSpec] | None
    """Parameters -> the edited spec (not compiled); None for a task family on one body."""
    family_env_id: str
    """Gymnasium id of :class:`FamilyEnv` over the training split (the family teacher's env)."""
    observed: bool = False
    """Members end their own observation with their descriptor (a body the policy is told
    about, as a target velocity is; :class:`FamilyEnv` then appends nothing), so a policy of
    any kind reads it without a privileged view."""

    @property
    def param_names(self) -> list[str]:
        """Parameter names, in descriptor order."""
        return [p.name for p in self.params]

    def nominal(self) -> dict[str, float]:
        """Gymnasium's body."""
        return {p.name: p.nominal for p in self.params}

    def resolve(self, body: dict[str, Any] | None) -> dict[str, float]:
        """Every parameter of ``body`` (missing ones nominal), checked.

        Raises:
            ConfigError: for an unknown name or a value out of the builder's limits.
        """
        body = dict(body or {})
        unknown = sorted(set(body) - set(self.param_names))
        if unknown:
            raise ConfigError(f"{self.name} bodies have no parameter(s) {unknown}; valid: "
                              f"{', '.join(self.param_names)}")
        return {p.name: p.check(body.get(p.name, p.nominal)) for p in self.params}

    def descriptor(self, body: dict[str, Any]) -> np.ndarray:
        """The normalised parameter vector of ``body`` (training ranges -> [-1, 1])."""
        full = self.resolve(body)
        return np.array([p.normalise(full[p.name]) for p in self.params], dtype=np.float64)

    def sample(self, rng: np.random.Generator, where: Literal["inside", "inner"] = "inside"
               ) -> dict[str, float]:
        """One body drawn inside the training ranges."""
        return {p.name: _draw(p, rng, where) for p in self.params}

    def split(self, split: Split) -> list[dict[str, float]]:
        """The family's bodies of ``split`` (the same on every machine and run).

        Raises:
            ConfigError: for an unknown split.
        """
        if split not in SPLIT_SIZES:
            raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLIT_SIZES)}")
        family_id = zlib.crc32(self.name.encode())
        out = []
        for i in range(SPLIT_SIZES[split]):
            rng = np.random.default_rng(np.random.SeedSequence(_FAMILY_ENTROPY,
                                                               spawn_key=(family_id, _SPLIT_IDS[split], i)))
            if split == "extrap":
                outside = rng.permutation(len(self.params))[: max(1, len(self.params) // 2)]
                body = {p.name: _draw(p, rng, "outside" if k in outside else "inner")
                        for k, p in enumerate(self.params)}
            else:
                body = self.sample(rng, "inside" if split == "train" else "inner")
            out.append(body)
        return out

    def pool(self, n: int) -> list[dict[str, float]]:
        """``n`` more bodies drawn inside the training ranges, from their own seeded stream.

        Never a body of any split; the same on every machine and run. A privileged family
        teacher labels any body, so a student may train on these besides the training split
        (``extra_bodies`` of the morphology setup) and see the ranges densely, as the teacher's
        own domain randomisation would.
        """
        family_id = zlib.crc32(self.name.encode())
        return [self.sample(np.random.default_rng(np.random.SeedSequence(
            _FAMILY_ENTROPY, spawn_key=(family_id, _POOL_ID, i)))) for i in range(n)]

    def body_names(self, split: Split) -> list[str]:
        """Names of the split's bodies: ``<family>-<split>-<i>``."""
        return [f"{self.name}-{split}-{i:02d}" for i in range(SPLIT_SIZES[split])]


# ---------------------------------------------------------------------------- spec editing
def _from_file(name: str) -> mujoco.MjSpec:
    return mujoco.MjSpec.from_file(str(_ASSETS / name))


def _origin_at_joint(spec: mujoco.MjSpec, body_name: str) -> None:
    """Move a body's frame to its (single hinge) joint, keeping the world geometry.

    Gymnasium's hopper puts the leg's frame at the leg's centre; with every limb's frame at its
    joint, scaling a limb is scaling its own geoms and its children's offsets.
    """
    body = spec.body(body_name)
    if not np.allclose(body.quat, [1, 0, 0, 0]):
        raise ConfigError(f"cannot re-anchor rotated body {body_name!r}")
    (joint,) = list(body.joints)
    j = np.asarray(joint.pos, dtype=np.float64).copy()
    body.pos = np.asarray(body.pos) + j
    joint.pos = np.zeros(3)
    for g in body.geoms:
        g.pos = np.asarray(g.pos) - j
    for child in body.bodies:
        child.pos = np.asarray(child.pos) - j


def _scale_limb(spec: mujoco.MjSpec, body_name: str, s: float) -> None:
    """Scale one limb's length: its capsules' half-lengths and offsets, and where its children attach."""
    body = spec.body(body_name)
    for g in body.geoms:
        fromto = np.asarray(g.fromto, dtype=np.float64)
        if not np.isnan(fromto[0]):
            g.fromto = fromto * s
        else:
            g.pos = np.asarray(g.pos) * s
            size = np.asarray(g.size, dtype=np.float64).copy()
            size[1] *= s  # half-length; the radius stays
            g.size = size
    for child in body.bodies:
        child.pos = np.asarray(child.pos) * s


def _compile(spec: mujoco.MjSpec) -> mujoco.MjModel:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*settotalmass.*")
        return spec.compile()


@functools.cache
def _raw_nominal_mass(xml: str) -> float:
    spec = _from_file(xml)
    spec.compiler.settotalmass = -1.0
    return float(_compile(spec).body_mass.sum())


def _keep_total_mass_rule(spec: mujoco.MjSpec, xml: str) -> None:
    """Honour an upstream ``settotalmass`` without cancelling the body's own mass changes.

    Gymnasium's half-cheetah rescales its masses to 14 kg, which would undo any change of
    density or limb length. The target becomes 14 kg times the edited body's geometric mass
    over the nominal one's, so the nominal body keeps its 14 kg and a denser or longer body
    weighs more.
    """
    total = float(spec.compiler.settotalmass)
    if total <= 0:
        return
    spec.compiler.settotalmass = -1.0
    raw = float(_compile(spec).body_mass.sum())
    spec.compiler.settotalmass = total * raw / _raw_nominal_mass(xml)


def _scale_common(spec: mujoco.MjSpec, body: dict[str, float], joints: list[str]) -> None:
    """Mass (geom density), gear and joint damping scales shared by every family."""
    for g in spec.geoms:
        if g.type != mujoco.mjtGeom.mjGEOM_PLANE:
            g.density = float(g.density) * body["mass"]
            if float(g.mass) > 0:  # an explicit mass wins over density in MuJoCo
                g.mass = float(g.mass) * body["mass"]
    for a in spec.actuators:
        gear = np.asarray(a.gear, dtype=np.float64).copy()
        gear[0] *= body["gear"]
        a.gear = gear
    for name in joints:  # (families without a damping parameter pass none)
        j = spec.joint(name)
        j.damping = np.asarray(j.damping, dtype=np.float64) * body["damping"]


def _lowest_point(spec: mujoco.MjSpec) -> float:
    """Height of the body's lowest point in its initial pose (capsules and spheres)."""
    model = _compile(spec)
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    low = np.inf
    for g in range(model.ngeom):
        if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_PLANE:
            continue
        r, half = model.geom_size[g, 0], model.geom_size[g, 1]
        axis = data.geom_xmat[g].reshape(3, 3)[:, 2]  # a capsule's axis is its local z
        low = min(low, data.geom_xpos[g, 2] - abs(axis[2]) * half - r)
    return float(low)


@functools.cache
def _nominal_clearance(xml: str) -> float:
    return _lowest_point(_from_file(xml))


def _settle_height(spec: mujoco.MjSpec, root: str, slide_z: str, xml: str) -> None:
    """Lift or lower the root so the lowest point starts as high above the floor as in ``xml``."""
    body = spec.body(root)
    dz = _nominal_clearance(xml) - _lowest_point(spec)
    body.pos = np.asarray(body.pos) + np.array([0.0, 0.0, dz])
    j = spec.joint(slide_z)  # the hopper's rootz reads the height (ref), the cheetah's the offset
    if float(j.ref) != 0.0:
        j.ref = float(j.ref) + dz
    if float(np.asarray(j.pos)[2]) != 0.0:
        j.pos = np.asarray(j.pos) - np.array([0.0, 0.0, dz])


def _build_hopper(body: dict[str, float]) -> mujoco.MjSpec:
    spec = _from_file("hopper.xml")
    for name in ("leg", "foot"):
        _origin_at_joint(spec, name)
    _scale_limb(spec, "torso", body["torso_length"])
    _scale_limb(spec, "thigh", body["thigh_length"])
    _scale_limb(spec, "leg", body["leg_length"])
    _scale_limb(spec, "foot", body["foot_length"])
    _scale_common(spec, body, ["thigh_joint", "leg_joint", "foot_joint"])
    _keep_total_mass_rule(spec, "hopper.xml")
    _settle_height(spec, "torso", "rootz", "hopper.xml")
    return spec


def _build_hopper_size(body: dict[str, float]) -> mujoco.MjSpec:
    """A hopper of the size family: every limb's length and the density scaled alike."""
    s = body["length"]
    return _build_hopper({"torso_length": s, "thigh_length": s, "leg_length": s, "foot_length": s,
                          "mass": body["mass"], "gear": 1.0, "damping": 1.0})


_CHEETAH_BACK, _CHEETAH_FRONT = ("bthigh", "bshin", "bfoot"), ("fthigh", "fshin", "ffoot")


def _build_cheetah(body: dict[str, float]) -> mujoco.MjSpec:
    spec = _from_file("half_cheetah.xml")
    _scale_limb(spec, "torso", body["torso_length"])
    for name in _CHEETAH_BACK:
        _scale_limb(spec, name, body["back_leg_length"])
    for name in _CHEETAH_FRONT:
        _scale_limb(spec, name, body["front_leg_length"])
    _scale_common(spec, body, list(_CHEETAH_BACK + _CHEETAH_FRONT))
    _keep_total_mass_rule(spec, "half_cheetah.xml")
    _settle_height(spec, "torso", "rootz", "half_cheetah.xml")
    return spec


def _build_swimmer(body: dict[str, float]) -> mujoco.MjSpec:
    spec = _from_file("swimmer.xml")
    n = int(body["segments"])
    last = spec.body("back")
    for k in range(3, n):  # grow the chain: segment k hangs off the previous one's tail
        seg = last.add_body(name=f"seg{k}", pos=[-1.0, 0.0, 0.0])
        seg.add_geom(type=mujoco.mjtGeom.mjGEOM_CAPSULE, fromto=[0, 0, 0, -1, 0, 0], size=[0.1, 0, 0],
                     density=1000.0)
        seg.add_joint(name=f"motor{k}_rot", type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 0, 1],
                      limited=mujoco.mjtLimited.mjLIMITED_TRUE, range=[-100.0, 100.0])  # degrees, as the XML
        act = spec.add_actuator(name=f"motor{k}", target=f"motor{k}_rot", trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.gear = np.array([150.0, 0, 0, 0, 0, 0])
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.ctrlrange = np.array([-1.0, 1.0])
        last = seg
    if n < 3:
        raise ConfigError(f"swimmers have at least 3 segments, got {n}")
    for name in ["torso", "mid", "back"] + [f"seg{k}" for k in range(3, n)]:
        _scale_limb(spec, name, body["segment_length"])
    _scale_common(spec, body, [])
    _keep_total_mass_rule(spec, "swimmer.xml")
    return spec


_LEN = "length scale of the "
_GEAR = Param("gear", 0.8, 1.2, 1.0, "gear scale of every motor")
_DAMPING = Param("damping", 0.5, 2.0, 1.0, "damping scale of every actuated joint")


def _mass(part: str) -> Param:
    return Param("mass", 0.8, 1.25, 1.0, f"density scale of every {part}")


FAMILIES: dict[str, BodyFamily] = {
    "hopper": BodyFamily("hopper", (
        Param("torso_length", 0.8, 1.2, 1.0, _LEN + "torso"),
        Param("thigh_length", 0.8, 1.2, 1.0, _LEN + "thigh"),
        Param("leg_length", 0.8, 1.2, 1.0, _LEN + "shin"),
        Param("foot_length", 0.8, 1.2, 1.0, _LEN + "foot"),
        _mass("limb"), _GEAR, _DAMPING,
    ), "polydistill/HopperBody-v0", _build_hopper, "polydistill/HopperFamily-v0"),
    "hopper-size": BodyFamily("hopper-size", (
        Param("length", 0.9, 1.3, 1.0, "length scale of every limb (torso, thigh, shin, foot)"),
        Param("mass", 0.9, 1.4, 1.0, "density scale of every limb"),
    ), "polydistill/HopperSizeBody-v0", _build_hopper_size, "polydistill/HopperSizeFamily-v0",
        observed=True),
    "halfcheetah": BodyFamily("halfcheetah", (
        Param("torso_length", 0.8, 1.2, 1.0, _LEN + "torso"),
        Param("back_leg_length", 0.8, 1.2, 1.0, _LEN + "back leg (thigh, shin, foot)"),
        Param("front_leg_length", 0.8, 1.2, 1.0, _LEN + "front leg (thigh, shin, foot)"),
        _mass("limb"), _GEAR, _DAMPING,
    ), "polydistill/HalfCheetahBody-v0", _build_cheetah, "polydistill/HalfCheetahFamily-v0"),
    "swimmer": BodyFamily("swimmer", (
        Param("segments", 3, 5, 3, "number of segments (joints: segments - 1)", integer=True,
              limit=(3, 8)),
        Param("segment_length", 0.8, 1.2, 1.0, _LEN + "every segment"),
        _mass("segment"), _GEAR,
    ), "polydistill/SwimmerBody-v0", _build_swimmer, "polydistill/SwimmerFamily-v0"),
    "cheetah-vel": BodyFamily("cheetah-vel", (
        Param("target_velocity", 0.5, 2.5, 1.0, "target forward velocity (m/s)", limit=(0.0, 4.0)),
    ), "polydistill/HalfCheetahVelBody-v0", None, "polydistill/HalfCheetahVelFamily-v0"),
}
"""The procedural families; ``extrap`` swimmers outside the segment range have 6 segments.
``hopper-size`` is the ``locomotion-sizes`` suite's hopper family: hoppers that differ in size and weight
only, whose observation ends with their (observed) descriptor.
``cheetah-vel`` is the velocity family: one half-cheetah body, the target velocity (already in
the observation) as its only parameter."""


def list_families() -> list[str]:
    """Names of the body families."""
    return sorted(FAMILIES)


def get_family(name: str) -> BodyFamily:
    """The family ``name``.

    Raises:
        ConfigError: for an unknown name (listing the valid ones).
    """
    if name not in FAMILIES:
        raise ConfigError(f"unknown body family {name!r}; valid: {', '.join(list_families())}")
    return FAMILIES[name]


def build_body(family: str, body: dict[str, Any] | None = None) -> mujoco.MjModel:
    """Compile one body of ``family`` (missing parameters nominal).

    Raises:
        ConfigError: for a task family (its members share one body).
    """
    fam = get_family(family)
    if fam.build is None:
        raise ConfigError(f"{family!r} is a task family on one body; it builds no bodies")
    return _compile(fam.build(fam.resolve(body)))


# ---------------------------------------------------------------------------- envs
class _FamilyMember:
    """An env that is one member of a family: its ``family`` name and ``body`` parameters."""

    family: str
    body: dict[str, float]

    @property
    def body_descriptor(self) -> np.ndarray:
        """The normalised parameters of this body (see :func:`body_descriptor`)."""
        return get_family(self.family).descriptor(self.body)


class _BodyMixin(_FamilyMember):
    """A Gymnasium MuJoCo env whose model is a family body (see :func:`make_body`).

    A member of an ``observed`` family ends its observation with its descriptor.
    """

    width: int
    height: int
    observation_space: Box

    def _observe_descriptor(self) -> None:
        """Widen the observation space by the descriptor (observed families; after ``__init__``)."""
        if get_family(self.family).observed:
            n = self.observation_space.shape[0] + len(get_family(self.family).params)
            self.observation_space = Box(low=-np.inf, high=np.inf, shape=(n,), dtype=np.float64)

    def _get_obs(self) -> np.ndarray:
        obs = super()._get_obs()  # type: ignore[misc]
        return np.concatenate([obs, self.body_descriptor]) if get_family(self.family).observed else obs

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = self.__dict__.pop("_built", None) or build_body(self.family, self.body)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)


class HopperBodyEnv(_BodyMixin, HopperEnv):
    """Gymnasium's Hopper-v5 task on a hopper of the family (the healthy height scales with it)."""

    FAMILY = "hopper"

    def __init__(self, body: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.family, self.body = self.FAMILY, FAMILIES[self.FAMILY].resolve(body)
        self._built = build_body(self.family, self.body)  # compiled once, used by the simulation
        scale = float(self._built.body_pos[1, 2]) / 1.25  # standing height
        kwargs.setdefault("healthy_z_range", (0.7 * scale, float("inf")))
        HopperEnv.__init__(self, **kwargs)
        utils.EzPickle.__init__(self, body, **kwargs)
        self._observe_descriptor()


class HopperSizeBodyEnv(HopperBodyEnv):
    """A hopper of the ``hopper-size`` family: observation 11 + its descriptor (length, mass)."""

    FAMILY = "hopper-size"


class HalfCheetahBodyEnv(_BodyMixin, HalfCheetahEnv):
    """Gymnasium's HalfCheetah-v5 task on a half-cheetah of the family."""

    def __init__(self, body: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.family, self.body = "halfcheetah", FAMILIES["halfcheetah"].resolve(body)
        HalfCheetahEnv.__init__(self, **kwargs)
        utils.EzPickle.__init__(self, body, **kwargs)


class SwimmerBodyEnv(_BodyMixin, SwimmerEnv):
    """Gymnasium's Swimmer-v5 task on a swimmer of the family (obs and action sizes follow the segments)."""

    def __init__(self, body: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.family, self.body = "swimmer", FAMILIES["swimmer"].resolve(body)
        SwimmerEnv.__init__(self, **kwargs)
        utils.EzPickle.__init__(self, body, **kwargs)
        skip = 2 * int(self._exclude_current_positions_from_observation)
        n = self.data.qpos.size + self.data.qvel.size - skip
        self.observation_space = Box(low=-np.inf, high=np.inf, shape=(n,), dtype=np.float64)


class HalfCheetahVelBodyEnv(_FamilyMember, HalfCheetahVelEnv):
    """The velocity family's member: ``HalfCheetahVelEnv`` at ``body["target_velocity"]``."""

    def __init__(self, body: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.family, self.body = "cheetah-vel", FAMILIES["cheetah-vel"].resolve(body)
        HalfCheetahVelEnv.__init__(self, target_velocity=self.body["target_velocity"], **kwargs)
        utils.EzPickle.__init__(self, body, **kwargs)


_ENV_CLASSES: dict[str, type[gym.Env]] = {
    "hopper": HopperBodyEnv, "hopper-size": HopperSizeBodyEnv, "halfcheetah": HalfCheetahBodyEnv,
    "swimmer": SwimmerBodyEnv, "cheetah-vel": HalfCheetahVelBodyEnv}


@functools.cache
def _layout_of(family: str, key: int) -> BodyLayout:
    fam = get_family(family)
    body = next(b for sp in SPLIT_SIZES for b in fam.split(sp) if _layout_key(b) == key)  # type: ignore[arg-type]
    env = _ENV_CLASSES[family](body=body)
    try:
        return BodyLayout.of_env(env)
    finally:
        env.close()


def _layout_key(body: dict[str, float]) -> int:
    return int(body.get("segments", 0))  # only the swimmer's sizes vary within a family


def body_layout(family: str, body: dict[str, Any] | None = None) -> BodyLayout:
    """The observation layout of one body of ``family``."""
    key = _layout_key(get_family(family).resolve(body))
    if key not in {_layout_key(b) for sp in SPLIT_SIZES for b in get_family(family).split(sp)}:  # type: ignore[arg-type]
        env = _ENV_CLASSES[family](body=body)
        try:
            return BodyLayout.of_env(env)
        finally:
            env.close()
    return _layout_of(family, key)


@functools.cache
def family_layout(family: str) -> FamilyLayout:
    """The padded observation of ``family`` over the bodies of all its splits."""
    fam = get_family(family)
    keys = sorted({_layout_key(b) for sp in SPLIT_SIZES for b in fam.split(sp)})  # type: ignore[arg-type]
    return FamilyLayout(tuple(sorted((_layout_of(family, k) for k in keys), key=lambda x: x.joints)))


BALANCE_MODES = ("episodes", "steps")
"""How :class:`FamilyEnv` draws each episode's body."""


class FamilyEnv(gym.Env):
    """Domain randomisation over a family: every episode drives one body of a list.

    The observation is the body's own padded to the family's layout (:func:`family_layout`:
    positions, velocities and extras each zero-padded to the family's largest body over all
    its splits, so a slot means the same quantity on every body), followed by the body's
    descriptor: a *privileged* observation where the descriptor would not be known, as the
    teacher's simulator state in the vision setup. Actions are sized for the largest body; a
    smaller body uses the leading entries. Which body an episode gets is drawn from the reset
    seed's stream, so a seeded run is reproducible. ``info`` carries ``body`` (its index in the
    list).

    Args:
        family: A family name (:func:`list_families`).
        bodies: A split name of the family, or a list of parameter dicts.
        descriptor: Append the body descriptor to the observation (default: unless the
            family's members observe it already).
        pool: Also drive this many bodies of :meth:`BodyFamily.pool` (drawn inside the
            training ranges), so the randomisation covers the ranges densely.
        balance: ``"episodes"`` (default): every body is equally likely each episode, so a body
            the policy falls on early yields few steps. ``"steps"``: a body is drawn with
            probability inversely proportional to its recent episode length (a moving average
            kept by this env; a body not driven yet comes first), so every body yields about
            the same share of the samples. A reset with a seed clears the averages.
        **kwargs: Passed to every body's env (e.g. ``render_mode``).

    Raises:
        ConfigError: for an unknown family or split, or an empty or bad body list.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array", "depth_array"]}

    def __init__(self, family: str, bodies: str | list[dict[str, Any]] = "train",
                 descriptor: bool | None = None, pool: int = 0, balance: str = "episodes",
                 **kwargs: Any) -> None:
        self.family = get_family(family)
        descriptor = not self.family.observed if descriptor is None else descriptor
        if pool < 0:
            raise ConfigError(f"FamilyEnv pool must be >= 0, got {pool}")
        if balance not in BALANCE_MODES:
            raise ConfigError(f"FamilyEnv balance: expected one of {BALANCE_MODES}, got {balance!r}")
        self.balance = balance
        listed = self.family.split(bodies) if isinstance(bodies, str) else list(bodies)  # type: ignore[arg-type]
        listed += self.family.pool(pool)
        if not listed:
            raise ConfigError(f"FamilyEnv({family!r}) needs at least one body")
        self.bodies = [self.family.resolve(b) for b in listed]
        self.descriptor = descriptor
        self._kwargs = kwargs
        self.render_mode = kwargs.get("render_mode")
        if self.render_mode is not None and self.render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"FamilyEnv renders {self.metadata['render_modes']}, got {self.render_mode!r}")
        self._body_layouts = [body_layout(family, b) for b in self.bodies]
        own = family_layout(family)
        self.layout = FamilyLayout(tuple(sorted(set(own.layouts) | set(self._body_layouts),
                                                key=lambda x: x.joints)))
        self.obs_dim, self.act_dim = self.layout.obs_dim, self.layout.act_dim
        env = self._env_for(self.bodies[0], render=False)
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / float(env.unwrapped.dt)))}
        env.close()
        self._envs: dict[int, gym.Env] = {}
        self._current = 0
        self._episode_steps = 0
        self._mean_length = np.full(len(self.bodies), np.nan)  # balance="steps": moving averages
        extra = len(self.family.params) if descriptor else 0
        self.observation_space = Box(-np.inf, np.inf, (self.obs_dim + extra,), np.float64)
        self.action_space = Box(-1.0, 1.0, (self.act_dim,), np.float32)

    def _env_for(self, body: dict[str, float], render: bool = True) -> gym.Env:
        kwargs = self._kwargs if render else {k: v for k, v in self._kwargs.items() if k != "render_mode"}
        return _ENV_CLASSES[self.family.name](body=body, **kwargs)

    def _env(self, i: int) -> gym.Env:
        if i not in self._envs:
            self._envs[i] = self._env_for(self.bodies[i])
        return self._envs[i]

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        out = self.layout.pad(obs, self._body_layouts[self._current])
        if self.descriptor:
            out = np.concatenate([out, self.family.descriptor(self.bodies[self._current])])
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw the episode's body, then reset it (seeded from this env's stream)."""
        super().reset(seed=seed)
        self._current = self._draw_body(fresh=seed is not None)
        self._episode_steps = 0
        obs, info = self._env(self._current).reset(seed=int(self.np_random.integers(2**31)), options=options)
        return self._obs(obs), {**info, "body": self._current}

    def _draw_body(self, fresh: bool) -> int:
        """The next episode's body index (see ``balance``)."""
        if self.balance == "episodes":
            return int(self.np_random.integers(len(self.bodies)))
        lengths = self._mean_length
        if fresh:
            lengths[:] = np.nan
        elif self._episode_steps > 0:
            i, n = self._current, float(self._episode_steps)
            lengths[i] = n if np.isnan(lengths[i]) else 0.8 * lengths[i] + 0.2 * n
        unseen = np.flatnonzero(np.isnan(lengths))
        if unseen.size:
            return int(self.np_random.choice(unseen))
        weights = 1.0 / np.maximum(lengths, 1.0)
        return int(self.np_random.choice(len(self.bodies), p=weights / weights.sum()))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step the current body with the leading entries of ``action``."""
        self._episode_steps += 1
        env = self._env(self._current)
        n = env.action_space.shape[0]
        obs, rew, term, trunc, info = env.step(np.asarray(action, dtype=np.float64)[:n])
        return self._obs(obs), float(rew), bool(term), bool(trunc), {**info, "body": self._current}

    def render(self) -> Any:
        """The current body's frame."""
        return self._env(self._current).render()

    def close(self) -> None:
        """Close every body's env."""
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        super().close()


def make_body(family: str, params: dict[str, Any] | None = None, seed: int | None = None,
              **kwargs: Any) -> gym.Env:
    """A Gymnasium env (with its ``TimeLimit``) driving one body of ``family``.

    Args:
        family: ``hopper``, ``halfcheetah`` or ``swimmer`` (:func:`list_families`).
        params: The body's parameters; missing ones are nominal.
        seed: Without ``params``: draw the body inside the training ranges from this seed
            (neither given: Gymnasium's nominal body).
        **kwargs: Passed to the env (e.g. ``render_mode``).

    Raises:
        ConfigError: for an unknown family or parameter, or a value out of range.
    """
    fam = get_family(family)
    if params is not None and seed is not None:
        raise ConfigError("make_body takes params or seed, not both")
    body = params if params is not None else (
        fam.sample(np.random.default_rng(seed)) if seed is not None else fam.nominal())
    return gym.make(fam.env_id, body=fam.resolve(body), **kwargs)


def body_descriptor(env: gym.Env) -> np.ndarray:
    """The body descriptor of a family env (through any wrappers).

    Raises:
        ConfigError: if the env is not a family body.
    """
    inner = env.unwrapped
    if not isinstance(inner, _FamilyMember):
        raise ConfigError(f"{type(inner).__name__} is not a body of a family (see make_body)")
    return inner.body_descriptor
