"""Students by kind, found through :func:`student_class`.

Generalist (``generalist``, ``multihead``, ``moe``), ``vision``, ``team``, and the morphology
kinds (``token``, ``descriptor``, ``history``, ``joints``).

A new kind is one subclass of :class:`Student` with a ``kind`` name and its hooks.
"""

from polydistill.students.base import (
    STUDENT_KINDS,
    Student,
    StudentConfig,
    StudentOutput,
    student_class,
)
from polydistill.students.embodiment import UNSEEN_TASK, Embodiment, EmbodimentTable
from polydistill.students.generalist import GeneralistStudent
from polydistill.students.morphology import (
    MORPH_KINDS,
    DescriptorStudent,
    HistoryStudent,
    JointStudent,
    MorphSpec,
    TokenStudent,
    morph_student,
)
from polydistill.students.multitask import ARCHITECTURES, MoEStudent, MultiHeadStudent, student_for
from polydistill.students.team import TeamConfig, TeamStudent, flatten_modalities
from polydistill.students.vision import VisionConfig, VisionStudent, random_shift

__all__ = ["STUDENT_KINDS", "Student", "StudentConfig", "StudentOutput", "student_class", "Embodiment",
           "EmbodimentTable", "UNSEEN_TASK", "GeneralistStudent", "TeamConfig", "TeamStudent",
           "flatten_modalities", "ARCHITECTURES", "MoEStudent", "MultiHeadStudent", "student_for",
           "VisionConfig", "VisionStudent", "random_shift", "MORPH_KINDS", "MorphSpec", "TokenStudent",
           "DescriptorStudent", "HistoryStudent", "JointStudent", "morph_student"]
