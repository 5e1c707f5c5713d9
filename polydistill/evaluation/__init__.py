"""Evaluation: episodes of a policy (Gymnasium and PettingZoo), report files and videos."""

from polydistill.evaluation.episodes import EvalResult, TeamResult, evaluate, evaluate_team

__all__ = ["EvalResult", "TeamResult", "evaluate", "evaluate_team"]
