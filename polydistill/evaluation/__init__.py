"""Evaluation: episodes of a policy (Gymnasium and PettingZoo), report files and videos."""

from polydistill.evaluation.episodes import EvalResult, TeamResult, evaluate, evaluate_team, make_vector_env

__all__ = ["EvalResult", "TeamResult", "evaluate", "evaluate_team", "make_vector_env"]
