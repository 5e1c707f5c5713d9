"""RL fine-tuning of distilled students: stable-baselines3's PPO with the student as its actor.

Distillation stops at the teacher; a short PPO stage after it can take the student past
(COMPASS's residual RL stage, kickstarting, Distral). ``polydistill finetune`` runs it on one
task or many (one vector env, each task routed to its token), with the pieces that make PPO
from a distilled actor work, each switchable in ``agents/finetune.yaml``: a critic warm-up
with the actor frozen, a KL pull toward the teacher that fades out, the student's own
log-std as the exploration noise, and its observation normalisation left unchanged. The
result is a normal student checkpoint (:func:`polydistill.load_student`).

Example:
    >>> from polydistill.finetune import finetune, load_finetune_config  # doctest: +SKIP
    >>> finetune("runs/quickstart/student", "runs/ft", steps=100_000)  # doctest: +SKIP
"""

from polydistill.finetune.config import FinetuneConfig, RegularizerConfig, load_finetune_config
from polydistill.finetune.run import PRE_FINETUNE, FinetuneTask, finetune, resolve_finetune_tasks

__all__ = ["FinetuneConfig", "RegularizerConfig", "load_finetune_config", "FinetuneTask", "finetune",
           "resolve_finetune_tasks", "PRE_FINETUNE"]
