"""Students: one network per kind, found through the kind registry (:func:`student_class`).

==============  =====================================  ===============================================
kind            class                                  reads
==============  =====================================  ===============================================
``generalist``  :class:`GeneralistStudent`             flat observations of many embodiments (token)
``vision``      :class:`VisionStudent`                 proprioception + camera pixels (optional GRU)
``team``        :class:`TeamStudent`                   each agent's deployable modalities (+ messages)
==============  =====================================  ===============================================

A new kind is one subclass of :class:`Student` with a ``kind`` name and its hooks.
"""

from polydistill.students.base import (
    STUDENT_KINDS,
    Student,
    StudentConfig,
    StudentOutput,
    student_class,
)
from polydistill.students.embodiment import Embodiment, EmbodimentTable
from polydistill.students.generalist import GeneralistStudent
from polydistill.students.team import TeamConfig, TeamStudent, flatten_modalities
from polydistill.students.vision import VisionConfig, VisionStudent, random_shift

__all__ = ["STUDENT_KINDS", "Student", "StudentConfig", "StudentOutput", "student_class", "Embodiment",
           "EmbodimentTable", "GeneralistStudent", "TeamConfig", "TeamStudent", "flatten_modalities",
           "VisionConfig", "VisionStudent", "random_shift"]
