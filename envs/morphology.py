"""Morphology variants: scale limb lengths, masses and actuator gear of a MuJoCo body.

The scaling is applied to the MJCF through :class:`mujoco.MjSpec` before compilation, so the
compiler recomputes inertias from the scaled geometry exactly as it would for a hand-edited XML.

Example:
    >>> from polydistill.envs.morphology import Morphology
    >>> Morphology(length=1.15, mass=0.9).is_nominal
    False

"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import mujoco
import numpy as np

from polydistill.errors import ConfigError

__all__ = ["Morphology", "build_model"]


@dataclass(frozen=True)
class Morphology:
    """Scale factors applied to a body's MJCF (1.0 everywhere is the nominal body)."""

    length: float = 1.0
    """Uniform scale of every limb length and body offset (capsule radii are kept)."""
    mass: float = 1.0
    """Scale of every body's mass and inertia (a uniform density change)."""
    gear: float = 1.0
    """Scale of every actuator's gear (motor strength)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, int | float) and math.isfinite(value) and 0.2 <= value <= 5.0):
                raise ConfigError(
                    f"Morphology.{name} must be a finite scale in [0.2, 5.0], got {value!r}"
                )

    @property
    def is_nominal(self) -> bool:
        """Whether every factor is 1 (the unmodified body)."""
        return self.length == 1.0 and self.mass == 1.0 and self.gear == 1.0


def _scale_lengths(spec: mujoco.MjSpec, s: float) -> None:
    for body in spec.bodies:
        if body.name == "world":
            continue
        body.pos = np.asarray(body.pos) * s
    for geom in spec.geoms:
        if geom.type == mujoco.mjtGeom.mjGEOM_PLANE:
            continue
        geom.pos = np.asarray(geom.pos) * s
        fromto = np.asarray(geom.fromto)
        if not np.isnan(fromto[0]):
            geom.fromto = fromto * s
        elif geom.type in (mujoco.mjtGeom.mjGEOM_CAPSULE, mujoco.mjtGeom.mjGEOM_CYLINDER):
            size = np.asarray(geom.size).copy()
            size[1] *= s  # half-length; the radius stays
            geom.size = size
    for joint in spec.joints:
        joint.pos = np.asarray(joint.pos) * s
    for site in spec.sites:
        site.pos = np.asarray(site.pos) * s


def build_model(xml_path: str, morphology: Morphology) -> mujoco.MjModel:
    """Compile ``xml_path`` with ``morphology`` applied.

    Args:
        xml_path: Path of the nominal MJCF file.
        morphology: Scale factors to apply.

    Returns:
        The compiled model; masses and inertias follow the scaled geometry.
    """
    spec = mujoco.MjSpec.from_file(xml_path)
    if morphology.length != 1.0:
        _scale_lengths(spec, morphology.length)
    if morphology.gear != 1.0:
        for actuator in spec.actuators:
            gear = np.asarray(actuator.gear).copy()
            gear[0] *= morphology.gear
            actuator.gear = gear
    with warnings.catch_warnings():
        # Gymnasium's swimmer.xml still uses the deprecated `settotalmass`; harmless here.
        warnings.filterwarnings("ignore", message=".*settotalmass.*")
        model = spec.compile()
    if morphology.mass != 1.0:
        model.body_mass[:] *= morphology.mass
        model.body_inertia[:] *= morphology.mass
    return model
