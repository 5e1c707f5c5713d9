"""The one error family of polydistill.

Every error raised for bad user input derives from :class:`PolydistillError`, so callers can
catch it in one place. Messages name the field, what was expected and what came.
"""

from __future__ import annotations

__all__ = [
    "PolydistillError",
    "ConfigError",
    "ObservationError",
    "CheckpointError",
    "SpaceMismatchError",
    "TeacherError",
    "TrainingError",
    "WorkerError",
]


class PolydistillError(Exception):
    """Base class of every error polydistill raises for bad input."""


class ConfigError(PolydistillError, ValueError):
    """A configuration value, name or recipe is invalid."""


class ObservationError(PolydistillError, ValueError):
    """An observation has the wrong shape, dtype, keys, values or embodiment."""


class CheckpointError(PolydistillError, OSError):
    """A checkpoint is missing, unreadable, corrupted or of an unsupported format."""


class SpaceMismatchError(PolydistillError, ValueError):
    """Observation or action spaces of two components do not agree."""


class TeacherError(PolydistillError, ValueError):
    """A teacher cannot be loaded or does not fit the environment it is asked to label."""


class TrainingError(PolydistillError, RuntimeError):
    """Training or collection produced non-finite values and stopped instead of going on."""


class WorkerError(PolydistillError, RuntimeError):
    """A rollout or training worker died, failed or stopped answering."""
