"""Task weights: one check and one "all equal" test shared by tasks, runs and buffers.

numpy only, so ``polydistill.envs`` (the suites' ``TaskSpec``) can use it without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from polydistill.errors import ConfigError

__all__ = ["check_weight", "check_weights", "equal_weights", "uneven_weights", "partition_sizes",
           "capacity_for", "split_evenly", "split_weighted"]


def check_weight(task: str, weight: float) -> None:
    """Raise unless one task's weight is finite and > 0.

    Raises:
        ConfigError: naming the task and the weight it got.
    """
    if not (np.isfinite(weight) and weight > 0):
        raise ConfigError(f"task {task!r}: weight must be finite and > 0, got {weight}")


def check_weights(weights: Sequence[float] | None, n_tasks: int) -> np.ndarray:
    """Per-task weights as a float64 array (all ones for ``None``).

    Raises:
        ConfigError: if there is not one weight per task, or one is not finite and > 0.
    """
    if weights is None:
        return np.ones(n_tasks)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_tasks,):
        raise ConfigError(f"expected one weight per task ({n_tasks}), got {list(weights)}")
    if not (np.all(np.isfinite(w)) and np.all(w > 0)):
        raise ConfigError(f"task weights must be finite and > 0, got {w.tolist()}")
    return w


def equal_weights(weights: Sequence[float] | np.ndarray) -> bool:
    """Whether every weight equals the first (an even split; also true for one task or none)."""
    w = np.asarray(weights, dtype=np.float64)
    return bool(w.size == 0 or np.all(w == w[0]))


def uneven_weights(weights: Sequence[float]) -> list[float] | None:
    """``weights`` as floats, or ``None`` where all are equal (an even split)."""
    return None if equal_weights(weights) else [float(w) for w in weights]


def partition_sizes(capacity: int, weights: np.ndarray) -> np.ndarray:
    """Rows of each task's buffer partition (int64).

    ``capacity // n`` each for equal weights, else ``floor(capacity * w / sum(w))``.
    """
    if equal_weights(weights):
        return np.full(len(weights), capacity // len(weights), dtype=np.int64)
    return np.floor(capacity * weights / weights.sum()).astype(np.int64)


def capacity_for(rows: Sequence[int], weights: np.ndarray) -> int:
    """The smallest capacity whose :func:`partition_sizes` hold ``rows[i]`` rows for every task."""
    need = int(np.ceil((np.asarray(rows) * weights.sum() / weights).max()))
    while np.any(partition_sizes(need, weights) < np.asarray(rows)):
        need += 1
    return need


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers differing by at most one (earlier parts larger)."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def split_weighted(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split into integers in proportion to ``weights``.

    The largest remainders round up (earlier parts first on ties); equal weights give
    :func:`split_evenly` exactly.
    """
    if equal_weights(weights):
        return split_evenly(total, len(weights))
    w = np.asarray(weights, dtype=np.float64)
    share = total * w / w.sum()
    out = np.floor(share).astype(np.int64)
    rest = int(total - out.sum())
    out[np.argsort(-(share - out), kind="stable")[:rest]] += 1
    return [int(x) for x in out]
