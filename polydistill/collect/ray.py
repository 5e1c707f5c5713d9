"""Scale-out on Ray: rollouts collected by Ray actors (teachers: ``polydistill.teachers.train``).

Nothing here is a home-made scheduler: Ray places the work, moves the data and notices dead
processes. Without an address a local Ray instance is started (``ray.init(num_cpus=...)``);
with ``address`` or ``RAY_ADDRESS`` set the work joins an existing cluster, started with::

    ray start --head --port=6379                 # on the head node
    ray start --address=HEAD_IP:6379             # on every worker node
    RAY_ADDRESS=HEAD_IP:6379 polydistill train-teacher --suite locomotion --ray

Every node needs the same Python environment with polydistill installed; output folders must
be on a file system every node sees.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from polydistill.errors import CheckpointError, ConfigError, PolydistillError, WorkerError

__all__ = ["init_ray", "RolloutWorker", "RolloutPool"]

log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("Ray is not installed: pip install 'polydistill[ray]' (or ray>=2.9)") from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Connect to Ray once per process and return the ``ray`` module.

    Args:
        address: A cluster address (``HOST:PORT``), ``"auto"``, or ``None`` for ``RAY_ADDRESS``
            if set, else a new local instance.
        num_cpus: CPUs of a new local instance (default: all of this machine's).
    """
    ray = _ray()
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        if address is None:
            kwargs["num_cpus"] = num_cpus
            # workers start from this interpreter's environment (MUJOCO_GL, threads)
            kwargs["runtime_env"] = {"env_vars": {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
                                                  "OMP_NUM_THREADS": "1"}}
        ray.init(address=address, **kwargs)
    return ray


# ---------------------------------------------------------------------------- rollouts
class RolloutWorker:
    """Holds the rollouts (env copies, adapters, teachers) of some tasks and collects their rows.

    Runs as a Ray actor (see :class:`RolloutPool`); the student is rebuilt here from its kind's
    metadata, and receives the learner's weights every round.
    """

    def __init__(self, tasks: list[Any], student_meta: dict[str, Any], n_envs: int, student_action: str,
                 teacher_action: str, record: bool = False) -> None:
        import torch

        from polydistill.collect.rollout import Rollout
        from polydistill.students import student_class

        torch.set_num_threads(1)
        import polydistill.envs  # noqa: F401  (registers ids in this process)

        self.student = student_class(student_meta["student"]).from_metadata(student_meta)
        self.rollouts = {t.name: Rollout(t, n_envs, student_action, teacher_action, record) for t in tasks}

    def collect(self, student_state: dict[str, Any], quotas: dict[str, int], beta: float) -> dict[str, Any]:
        """Load the student's weights, then collect ``quotas[task]`` steps of each own task."""
        from polydistill.collect.rollout import collect_together

        self.student.load_state_dict(student_state)
        return collect_together(self.rollouts, self.student, quotas, beta)

    def state_dict(self) -> dict[str, Any]:
        """Replayable state of every own task (``Rollout.state_dict``)."""
        return {n: r.state_dict() for n, r in self.rollouts.items()}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        """Restore every own task.

        Raises:
            CheckpointError: for a damaged or incomplete state (as the local path reports it).
        """
        try:
            for n, r in self.rollouts.items():
                r.load_state_dict(states[n])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"rollout state of a Ray worker is incomplete or damaged: {exc!r}"
                                  ) from None

    def pid(self) -> int:
        """Process id of this worker (tests kill it to check that death is noticed)."""
        return os.getpid()

    def close(self) -> None:
        """Close the env copies."""
        for r in self.rollouts.values():
            r.close()


class RolloutPool:
    """Tasks spread round-robin over ``workers`` Ray actors; one call per round.

    A worker that dies (killed, out of memory, crashed env) raises :class:`WorkerError` as
    soon as Ray reports it (seconds), never a hang; ``timeout_s`` also bounds a worker that
    stops answering.
    """

    def __init__(self, tasks: list[Any], student: Any, workers: int, address: str | None = None, *,
                 n_envs: int, student_action: str, teacher_action: str, timeout_s: float = 3600.0,
                 record: bool = False) -> None:
        ray = init_ray(address, num_cpus=None)
        self.student = student
        self.timeout_s = timeout_s
        self.task_names = [t.name for t in tasks]
        n = min(workers, len(tasks))
        if n < workers:
            log.info("%d rollout workers asked for %d tasks: using %d", workers, len(tasks), n)
        self.assignment = [list(range(len(tasks)))[w::n] for w in range(n)]
        actor = ray.remote(num_cpus=1)(RolloutWorker)
        self.actors = [
            actor.remote([tasks[i] for i in idx], student.metadata(), n_envs, student_action, teacher_action,
                         record)
            for idx in self.assignment
        ]
        try:
            self._get([a.pid.remote() for a in self.actors], "starting")
        except BaseException:
            self.close()  # no orphaned actors holding CPUs
            raise

    def _get(self, refs: list[Any], what: str) -> list[Any]:
        ray = _ray()
        try:
            return ray.get(refs, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise WorkerError(f"a rollout worker did not answer within {self.timeout_s:.0f} s "
                              f"while {what}") from None
        except ray.exceptions.RayActorError as exc:
            raise WorkerError(f"a rollout worker died while {what}: {exc}") from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            if isinstance(cause, PolydistillError):
                raise cause from None  # the worker's own typed error (bad teacher, NaN obs)
            raise WorkerError(f"a rollout worker failed while {what}: {cause!r}") from None
        except ray.exceptions.RayError as exc:  # lost objects, out of memory, crashed workers
            raise WorkerError(f"Ray failed while {what}: {exc!r}") from None

    def collect(self, quotas: dict[str, int], beta: float) -> dict[str, Any]:
        """Broadcast the student's weights once, collect on every worker, merge by task."""
        ray = _ray()
        weights = ray.put({k: v.detach().clone() for k, v in self.student.state_dict().items()})
        refs = [a.collect.remote(weights, {k: quotas[k] for k in self._names(w)}, beta)
                for w, a in enumerate(self.actors)]
        out: dict[str, Any] = {}
        for part in self._get(refs, "collecting"):
            out.update(part)
        return out

    def _names(self, w: int) -> list[str]:
        return [self.task_names[i] for i in self.assignment[w]]

    def state_dict(self) -> dict[str, Any]:
        """Replayable state of every task, gathered from the workers."""
        out: dict[str, Any] = {}
        for part in self._get([a.state_dict.remote() for a in self.actors], "saving state"):
            out.update(part)
        return out

    def load_state_dict(self, states: dict[str, Any]) -> None:
        """Send each worker its tasks' saved state."""
        refs = [a.load_state_dict.remote({k: states[k] for k in self._names(w)})
                for w, a in enumerate(self.actors)]
        self._get(refs, "restoring state")

    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return self._get([a.pid.remote() for a in self.actors], "reporting pids")

    def close(self) -> None:
        """Stop the workers."""
        ray = _ray()
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 (already dead)
                pass
        self.actors = []
