"""Deployment: student checkpoints (safetensors + JSON), ``load_student`` and export."""

from polydistill.deploy.checkpoint import (
    DeployedStudent,
    load_student,
    read_student_metadata,
    resolve_student_path,
    save_student,
)
from polydistill.deploy.export import export_student

__all__ = [
    "DeployedStudent",
    "load_student",
    "read_student_metadata",
    "save_student",
    "resolve_student_path",
    "export_student",
]
