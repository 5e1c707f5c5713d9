"""Teachers: frozen policies that label every state the student visits.

:class:`Teacher` labels observation batches (SB3 zips and import paths via :func:`load_teacher`,
torch modules, functions, objects with ``get_action``); :class:`TeamTeacher` labels the live
agents of a multi-agent env copy (a world's scripted expert, a single-agent :class:`JointTeacher`
of a whole robot, or a :class:`PolicyTeamTeacher` learned with parameter sharing).
"""

from polydistill.teachers.base import (
    ActionTarget,
    CallableTeacher,
    ObsNormalizer,
    PolicyTeacher,
    Teacher,
    TorchTeacher,
    check_teacher_fits,
    clip_action,
    import_teacher,
    load_teacher,
)
from polydistill.teachers.sb3 import SB3Teacher, load_vecnormalize_stats
from polydistill.teachers.team import JointTeacher, PolicyTeamTeacher, ScriptedExpert, TeamTeacher

__all__ = ["ActionTarget", "CallableTeacher", "ObsNormalizer", "PolicyTeacher", "Teacher", "TorchTeacher",
           "import_teacher",
           "check_teacher_fits",
           "clip_action", "load_teacher", "SB3Teacher", "load_vecnormalize_stats", "ScriptedExpert",
           "TeamTeacher", "JointTeacher", "PolicyTeamTeacher"]
