"""Teachers: frozen policies that label every state the student visits.

Single-agent teachers (:class:`Teacher`) label observation batches: SB3 zips with their
``VecNormalize`` statistics (:class:`SB3Teacher`, from :func:`load_teacher`), torch modules and
plain functions. Team teachers (:class:`TeamTeacher`) label every live agent of a multi-agent
env copy: the worlds' scripted experts (:class:`ScriptedExpert`) or any function. Teachers are
trained with :func:`polydistill.teachers.train.train_teacher`.
"""

from polydistill.teachers.base import (
    ActionTarget,
    CallableTeacher,
    ObsNormalizer,
    Teacher,
    TorchTeacher,
    check_teacher_fits,
    clip_action,
    load_teacher,
)
from polydistill.teachers.sb3 import SB3Teacher, load_vecnormalize_stats
from polydistill.teachers.team import CallableTeamTeacher, ScriptedExpert, TeamTeacher, as_team_teacher

__all__ = ["ActionTarget", "CallableTeacher", "ObsNormalizer", "Teacher", "TorchTeacher",
           "check_teacher_fits",
           "clip_action", "load_teacher", "SB3Teacher", "load_vecnormalize_stats", "CallableTeamTeacher",
           "ScriptedExpert", "TeamTeacher", "as_team_teacher"]
