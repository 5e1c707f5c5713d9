"""polydistill: policy distillation from specialist teachers into generalist students."""

from polydistill.deploy import DeployedStudent, load_student, save_student
from polydistill.errors import (
    CheckpointError,
    ConfigError,
    ObservationError,
    PolydistillError,
    SpaceMismatchError,
    TeacherError,
    TrainingError,
    WorkerError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load_student",
    "save_student",
    "DeployedStudent",
    "PolydistillError",
    "ConfigError",
    "ObservationError",
    "CheckpointError",
    "SpaceMismatchError",
    "TeacherError",
    "TrainingError",
    "WorkerError",
]
