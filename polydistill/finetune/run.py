"""``polydistill finetune``: PPO from a distilled student, back into a student checkpoint.

:func:`finetune` loads a student, routes each chosen task to its token (one vector env for all
of them, :class:`~polydistill.finetune.policy.TokenRouted`), runs
:class:`~polydistill.finetune.ppo.KickstartPPO` with the student as the actor, evaluates every
task deterministically along the way (the learning curve) and writes a normal student
checkpoint whose metadata keeps the history of both stages. The pre-fine-tuning student is
copied beside it (``pre_finetune.safetensors``) so ``evaluate`` can report the two side by side.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydistill.config import to_dict
from polydistill.deploy.checkpoint import DeployedStudent, load_student, resolve_student_path, save_student
from polydistill.errors import ConfigError, TrainingError
from polydistill.evaluation.episodes import evaluate
from polydistill.evaluation.report import EvalTask
from polydistill.finetune.config import FinetuneConfig
from polydistill.students.base import Student
from polydistill.students.generalist import GeneralistStudent
from polydistill.students.morphology import JointStudent
from polydistill.utils import atomic_write_json, library_versions, make_env, seed_everything

__all__ = ["FinetuneTask", "resolve_finetune_tasks", "finetune", "add_pre_finetune", "PRE_FINETUNE",
           "EVAL_SEED"]

log = logging.getLogger(__name__)

PRE_FINETUNE = "pre_finetune.safetensors"
"""Name of the copy of the pre-fine-tuning student beside the fine-tuned one."""
EVAL_SEED = 70_000
"""First seed of the fine-tuning run's own evaluations (``evaluate`` and the benchmarks use 100,000)."""
CONFIRM_SEED = 80_000
"""First seed of the confirmation of the best evaluated student against the start."""

_REGENERATED = ("format", "format_version", "student", "student_config", "embodiments", "task_tokens",
                "created", "versions", "sha256")


FinetuneTask = EvalTask
"""One task to fine-tune on: an :class:`~polydistill.evaluation.report.EvalTask` whose
``teacher`` is the regulariser's reference (None for a held-out body, which has none) and whose
``embodiment`` is the token that drives it (a held-out body's proxy)."""


def resolve_finetune_tasks(student: DeployedStudent, names: Sequence[str] | None = None,
                           env_id: str | None = None, embodiment: str | None = None,
                           teacher: str | None = None, teachers_dir: str | None = None) -> list[FinetuneTask]:
    """The tasks a fine-tuning run steps in.

    ``names`` are looked up among the student's own distillation tasks (with their teachers),
    then among the tasks of the suite it was distilled on (held-out ones drive their proxy
    token and have no teacher: the regulariser holds them to the pre-fine-tuning student).
    ``env_id`` (with ``embodiment`` where the student has several) fine-tunes on any env.
    With neither, every distillation task of the student.

    Raises:
        ConfigError: for an unknown task name, an embodiment the student lacks, or both
            ``names`` and ``env_id``.
    """
    meta = student.metadata
    if meta.get("morphology"):
        if env_id:
            raise ConfigError("a morphology student fine-tunes on its family's bodies: pass --task BODY")
        return _family_tasks(student, names)
    own = [FinetuneTask(t["name"], t["env_id"], t["embodiment"], "train", teacher=t.get("teacher"),
                        env_kwargs=tuple(sorted(t.get("env_kwargs", {}).items())), task=t.get("task"))
           for t in meta.get("tasks", [])]
    if names and env_id:
        raise ConfigError("--task and --env-id are exclusive")
    if env_id:
        emb = embodiment or (student.embodiments[0] if len(student.embodiments) == 1 else None)
        if emb is None:
            raise ConfigError("--embodiment is required with --env-id: the student drives "
                              f"{student.embodiments}")
        tasks = [FinetuneTask(env_id.split("/")[-1], env_id, emb, "train", teacher=teacher)]
    elif not names:
        if not own:
            raise ConfigError("this student records no distillation tasks; pass --task or --env-id")
        tasks = own
    else:
        known = {t.name: t for t in own}
        suite = meta.get("suite")
        if suite and any(n not in known for n in names):
            from polydistill.evaluation.report import suite_eval_tasks
            from polydistill.setups.generalist import default_teachers_dir

            for t in suite_eval_tasks(suite, teachers_dir or default_teachers_dir()):
                if t.name not in known:
                    # a held-out task's teacher is its yardstick, not a reference
                    known[t.name] = t if t.split == "train" else replace(t, teacher=None)
        bad = [n for n in names if n not in known]
        if bad:
            raise ConfigError(f"unknown task(s) {bad}; this student knows {sorted(known)}")
        tasks = [known[n] for n in dict.fromkeys(names)]
    for t in tasks:
        if t.embodiment not in student.embodiments:
            raise ConfigError(f"task {t.name!r} needs embodiment {t.embodiment!r}; the student drives "
                              f"{student.embodiments}")
        try:
            student.table.id(t.embodiment, t.task)
        except Exception as exc:
            raise ConfigError(f"task {t.name!r}: {exc}") from None
    return tasks


def _family_tasks(student: DeployedStudent, names: Sequence[str] | None) -> list[FinetuneTask]:
    """Bodies of a morphology student's family as tasks (default: its training bodies).

    A training body's reference is the family teacher (the distillation's, given the body's
    true descriptor); a held-out body has none, like a held-out task of a suite.
    """
    from polydistill.envs.families import body_layout, get_family
    from polydistill.setups.morphology import default_family_teacher, family_bodies

    meta = student.metadata
    family = meta["morphology"]["family"]
    known = family_bodies(family)
    trained = [b["name"] for b in meta["morphology"]["bodies"]]
    names = list(dict.fromkeys(names or trained))
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"unknown {family} bodies {bad}; the family has {list(known)}")
    teacher = str((meta.get("config") or {}).get("teacher") or default_family_teacher(family))
    fam, spec = get_family(family), student.student.spec  # type: ignore[attr-defined]
    out = []
    for n in names:
        b = known[n]
        layout = spec.layout_name(spec.layout.index(body_layout(family, b.params)))
        out.append(FinetuneTask(n, fam.env_id, layout, "train" if n in trained else b.split,
                                teacher=teacher if n in trained else None,
                                env_kwargs=(("body", dict(b.params)),)))
    return out


def _teacher_reference(spec: str, task: FinetuneTask) -> Any:
    from polydistill.evaluation.report import task_teacher

    teacher = task_teacher(spec, task.env_id, dict(task.env_kwargs))

    def ref(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        # The clipped mean: the student was distilled to the action the teacher takes (a mean
        # beyond the bounds acts as the bound), so the unclipped one would pull it off for nothing.
        t = teacher.action_dist(obs)
        return t.action, t.log_std

    return ref


def _fresh_copy(student: Student) -> Student:
    """A deep copy without the original's cached fast paths (they would read the original's weights)."""
    twin = copy.deepcopy(student)
    for key in ("_policies", "_norm_cache"):
        twin.__dict__.pop(key, None)
    return twin


@dataclass(frozen=True)
class _Route:
    """How one task reaches the student: its token row, and the body descriptor it reads (if any)."""

    row: int
    body: np.ndarray | None = None
    obs_dim: int | None = None
    """The env's observation length where the student pads it into a layout (morphology)."""


def _route(student: Student, task: FinetuneTask) -> _Route:
    """The route of ``task``: its token, or for a morphology student its body's row and descriptor."""
    spec = getattr(student, "spec", None)
    if spec is None:
        return _Route(student.table.id(task.embodiment, task.task))
    from polydistill.envs.families import body_layout, get_family

    params = dict(task.env_kwargs).get("body")
    if not isinstance(params, dict):
        raise ConfigError(f"task {task.name!r}: a {spec.family} morphology student fine-tunes on family "
                          "bodies (env_kwargs body=PARAMS)")
    body = np.asarray(get_family(spec.family).descriptor(params), np.float32)
    obs_dim = body_layout(spec.family, params).obs_dim  # the body's observation length
    try:  # the row predict() would drive this body with
        _, emb, _ = student.prepare(np.zeros((1, obs_dim), np.float32), body=body)
    except Exception as exc:
        raise ConfigError(f"task {task.name!r}: {exc}") from None
    return _Route(int(emb[0]), body, obs_dim)


def _routed_history(student: Student, route: _Route, task: FinetuneTask) -> Any:
    """The env-kept history of a ``history`` student on ``task``'s body (its family layout's padding)."""
    from polydistill.envs.families import body_layout
    from polydistill.finetune.policy import RoutedHistory

    spec = student.spec  # type: ignore[attr-defined]
    layout = body_layout(spec.family, dict(task.env_kwargs)["body"])
    k, width = student.config.history, student.history_width  # type: ignore[attr-defined]
    obs_width = spec.layout.obs_dim
    return RoutedHistory(k, obs_width, width - obs_width - 1,
                         lambda o: spec.layout.pad(np.asarray(o)[None], layout, np.float32)[0])


def _net_inputs(student: Student, route: _Route, obs: np.ndarray,
                hist: np.ndarray | None = None) -> tuple[Any, torch.Tensor]:
    """The network input of raw observations ``(N, obs_dim)`` of one task, and their token rows.

    A ``history`` student also needs the history of each observation (``hist``, ``(N, k, W)``).
    """
    if route.body is None:
        x = torch.from_numpy(student.table.pad_obs(obs.astype(np.float32), route.row))
        return x, torch.full((len(x),), route.row, dtype=torch.long)
    x, emb, _ = student.prepare(obs, body=route.body)  # type: ignore[call-arg]
    if student.recurrent:
        if hist is None:
            raise TrainingError("a history student's inputs need the history of each observation")
        x = {**x, "hist": torch.from_numpy(np.ascontiguousarray(hist, dtype=np.float32))}
    return x, emb


def _student_reference(student: Student, route: _Route) -> Any:
    frozen = _fresh_copy(student).eval()
    k = frozen.table.embodiments[route.row].action_dim

    @torch.inference_mode()
    def ref(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        out = frozen(*_net_inputs(frozen, route, obs))
        return out.mean[:, :k].numpy(), out.log_std[:, :k].numpy()  # type: ignore[index]

    return ref


class _RecurrentAct:
    """A ``history`` student acting deterministically on a batch of episodes, keeping their histories.

    ``on_episode_end`` (for :func:`~polydistill.evaluation.episodes.evaluate`) empties the
    histories of ended episodes; ``hist`` is the history each row of the last call acted on.
    """

    def __init__(self, student: Student, route: _Route) -> None:
        self.student, self.route = student, route
        self.state: torch.Tensor | None = None
        self.first: np.ndarray | None = None
        self.hist: np.ndarray | None = None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x, emb, _ = self.student.prepare(np.asarray(obs), body=self.route.body)  # type: ignore[call-arg]
            n = emb.shape[0]
            if self.state is None or self.first is None or self.state.shape[0] != n:
                self.state = self.student.initial_state(n)  # type: ignore[operator]
                self.first = np.ones(n, dtype=bool)
            self.hist = self.state.numpy() * (~self.first)[:, None, None]
            a, self.state = self.student.step(x, emb, self.state,  # type: ignore[operator]
                                              torch.from_numpy(self.first.copy()))
            self.first = np.zeros(n, dtype=bool)
            return self.student.table.unpad_action(a.numpy(), int(emb[0]))

    def on_episode_end(self, done: np.ndarray) -> None:
        """Start new histories where ``done``."""
        if self.first is not None:
            self.first |= np.asarray(done, dtype=bool)


def _policy_act(student: Student, route: _Route) -> Any:
    """Deterministic actions of ``student`` on raw observations of ``route``'s task.

    A ``history`` student's acting keeps state: it is a :class:`_RecurrentAct` (pass its
    ``on_episode_end`` to ``evaluate``).
    """
    if student.recurrent:
        return _RecurrentAct(student, route)
    if route.body is not None:
        def deployed(obs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x, emb = _net_inputs(student, route, np.asarray(obs))
                return student.deploy_act(x, emb, True)

        return deployed
    act = student.policy(route.row)

    def f(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return act(torch.from_numpy(np.asarray(obs, dtype=np.float32))).numpy()

    return f


Scores = tuple[dict[str, float], dict[str, float] | None]
"""Mean return per task, and success rate per task (None without a success key)."""


def _evaluate_tasks(student: Student, tasks: Sequence[FinetuneTask], routes: Sequence[_Route],
                    episodes: int, seed: int = EVAL_SEED, success_key: str | None = None) -> Scores:
    returns, success = {}, {}
    for t, route in zip(tasks, routes, strict=True):
        act = _policy_act(student, route)
        r = evaluate(t.env_id, act, n_episodes=episodes, seed=seed, env_kwargs=dict(t.env_kwargs),
                     success_key=success_key, on_episode_end=getattr(act, "on_episode_end", None))
        returns[t.name] = r.mean_return
        if r.success_rate is not None:
            success[t.name] = r.success_rate
    return returns, (success if success_key is not None else None)


def _score(got: Scores, start: Scores) -> tuple[float, float]:
    """How much better than the start, compared in order: success, then return.

    The mean success-rate gain (0 without a success key), then the mean return gain relative
    to each task's starting return.
    """
    (returns, success), (base, base_success) = got, start
    gain = float(np.mean([(returns[k] - base[k]) / max(abs(base[k]), 1.0) for k in base]))
    if success is None or base_success is None:
        return 0.0, gain
    return float(np.mean([success[k] - base_success[k] for k in base_success])), gain


def _has_gaussian_head(student: Student) -> bool:
    """Whether one linear head gives the student's means and log-stds (whose log-std rows can be set)."""
    head = getattr(student, "head", None)
    return isinstance(head, torch.nn.Linear) and head.out_features == 2 * student.table.max_action_dim


def _log_std_head(student: Student) -> torch.nn.Linear:
    if not _has_gaussian_head(student):
        what = student.kind if student.kind != "generalist" else student.config.architecture
        raise ConfigError(f"log_std_init: the {what} student has no single Gaussian head whose log-std "
                          "could be set; use log_std_init: student, or exploration: parameter")
    return student.head  # type: ignore[return-value]


def _reset_log_std(student: Student, value: float) -> None:
    head, a = _log_std_head(student), student.table.max_action_dim
    with torch.no_grad():
        head.weight[a:] = 0.0
        head.bias[a:] = value


def _scale_std(student: Student, scale: float) -> None:
    head, a = _log_std_head(student), student.table.max_action_dim
    with torch.no_grad():
        head.bias[a:] += math.log(scale)


def _std_teacher(task: FinetuneTask, tasks: Sequence[FinetuneTask],
                 own: Sequence[FinetuneTask]) -> str | None:
    """The teacher whose noise a task explores with: its own, else that of a training task on its token."""
    if task.teacher:
        return task.teacher
    for t in [*tasks, *own]:
        if t.teacher and t.embodiment == task.embodiment and t.task == task.task:
            return t.teacher
    return None


States = tuple[np.ndarray, np.ndarray | None]
"""Raw observations ``(N, obs_dim)`` and, for a ``history`` student, the history of each ``(N, k, W)``."""


def _student_states(student: Student, task: FinetuneTask, route: _Route, n: int,
                    cache: dict[str, States] | None = None) -> States:
    """Observations ``(~n, obs_dim)`` of whole deterministic episodes of the student on ``task``.

    With ``cache``, a task's states are collected once (the log-std fit leaves the mean, and so
    the episodes, as they were). A ``history`` student's histories come with them.
    """
    if cache is not None and task.name in cache:
        return cache[task.name]
    states: list[np.ndarray] = []
    hists: list[np.ndarray] = []
    act = _policy_act(student, route)

    def record(obs: np.ndarray) -> np.ndarray:
        states.append(np.asarray(obs, dtype=np.float32))
        a = act(obs)
        if isinstance(act, _RecurrentAct):
            hists.append(act.hist)  # type: ignore[arg-type]
        return a

    env = make_env(task.env_id, dict(task.env_kwargs))
    horizon = (env.spec.max_episode_steps if env.spec else None) or 1000
    env.close()
    episodes = min(max(2, math.ceil(n / horizon)), 100)
    evaluate(task.env_id, record, n_episodes=episodes, seed=EVAL_SEED + 1000,
             env_kwargs=dict(task.env_kwargs), on_episode_end=getattr(act, "on_episode_end", None))
    out = (np.concatenate(states), np.concatenate(hists) if hists else None)
    if cache is not None:
        cache[task.name] = out
    return out


def _mean_log_std(student: Student, tasks: Sequence[FinetuneTask], routes: Sequence[_Route],
                  states_per_task: int = 2000, cache: dict[str, States] | None = None) -> np.ndarray:
    """Each task row's log-std output averaged over the student's own states: ``(token rows, A)``.

    The start of the state-independent exploration parameter; rows of no task are 0.
    """
    table = student.table
    out = np.zeros((len(table.action_mask), table.max_action_dim), np.float32)
    for t, route in zip(tasks, routes, strict=True):
        obs, hist = _student_states(student, t, route, states_per_task, cache)
        with torch.no_grad():
            log_std = student(*_net_inputs(student, route, obs, hist)).log_std
        out[route.row] = log_std.mean(0).numpy()  # type: ignore[union-attr]
    return out


def _teacher_log_std(student: Student, tasks: Sequence[FinetuneTask], routes: Sequence[_Route],
                     own: Sequence[FinetuneTask], states_per_task: int = 2000,
                     cache: dict[str, States] | None = None) -> tuple[np.ndarray, dict[str, str | None]]:
    """Exploration log-std per token row from the teachers' log-std on the student's own states.

    For students whose log-std no single head gives (the ``joints`` transformer's per-joint
    heads), under ``exploration: parameter``: a row's start is its teacher's log-std averaged
    over the student's states (what the least-squares fit of :func:`_fit_log_std`, averaged the
    same way, gives); a row without a teacher with a Gaussian starts from the student's own.
    Returns the ``(token rows, A)`` starts and the teacher used per task.
    """
    out = _mean_log_std(student, tasks, routes, states_per_task, cache)
    used: dict[str, str | None] = {}
    for route, _, _, target in _teacher_log_stds(student, tasks, routes, own, used, states_per_task, cache):
        out[route.row, : target.shape[1]] = target.mean(0)
    return out, used


def _teacher_log_stds(student: Student, tasks: Sequence[FinetuneTask], routes: Sequence[_Route],
                      own: Sequence[FinetuneTask], used: dict[str, str | None], states_per_task: int,
                      cache: dict[str, States] | None) -> Any:
    """Per task whose teacher has a Gaussian: its route, the student's states and the teacher's log-std.

    Yields ``(route, obs, hist, teacher log-std (N, k))``; ``used`` gets the teacher of every
    task (None where it has none, or none with a Gaussian).
    """
    for t, route in zip(tasks, routes, strict=True):
        spec = used[t.name] = _std_teacher(t, tasks, own)
        if spec is None:
            continue
        obs, hist = _student_states(student, t, route, states_per_task, cache)
        target = _teacher_reference(spec, t)(obs)[1]
        if target is None:
            used[t.name] = None
            continue
        yield route, obs, hist, target


def _fit_log_std(student: Student, tasks: Sequence[FinetuneTask], routes: Sequence[_Route],
                 own: Sequence[FinetuneTask], states_per_task: int = 2000,
                 ridge: float = 1e-3, cache: dict[str, States] | None = None) -> dict[str, str | None]:
    """Least-squares fit of the head's log-std rows to the teachers' log-std on the student's states.

    Only the log-std half of the head changes, so the mean (and every deterministic action)
    stays exactly as distilled. Returns the teacher used per task (None: none, not fitted);
    where no task has a teacher with a Gaussian distribution nothing changes (a warning says so).
    """
    a = student.table.max_action_dim
    feats, targets, masks = [], [], []
    used: dict[str, str | None] = {}
    for route, obs, hist, target in _teacher_log_stds(student, tasks, routes, own, used, states_per_task,
                                                      cache):
        k = target.shape[1]
        with torch.no_grad():
            feats.append(student.features(*_net_inputs(student, route, obs, hist)).double())
        y = np.zeros((len(obs), a))
        y[:, :k] = target
        m = np.zeros((len(obs), a), bool)
        m[:, :k] = True
        targets.append(torch.from_numpy(y))
        masks.append(torch.from_numpy(m))
    if not feats:
        log.warning("log_std_init: teacher: no task has a teacher with a Gaussian distribution; the student "
                    "explores with its own log-std (set log_std_init to a number to choose one)")
        return {name: None for name in used}
    head = _log_std_head(student)
    f, y, m = torch.cat(feats), torch.cat(targets), torch.cat(masks)
    f = torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype)], 1)  # (N, H + 1): features and the bias
    with torch.no_grad():
        for j in range(a):
            sel = m[:, j]
            if not sel.any():
                continue
            fj, yj = f[sel], y[sel, j]
            gram = fj.T @ fj + ridge * len(fj) * torch.eye(fj.shape[1], dtype=fj.dtype)
            w = torch.linalg.solve(gram, fj.T @ yj)
            head.weight[a + j] = w[:-1].to(head.weight.dtype)
            head.bias[a + j] = w[-1].to(head.bias.dtype)
    return used


def finetune(student_path: str | Path, out: str | Path, tasks: Sequence[FinetuneTask] | None = None,
             steps: int = 100_000, config: FinetuneConfig | None = None, progress_bar: bool = True,
             command: str | None = None) -> dict[str, Any]:
    """Fine-tune a distilled student with PPO on ``tasks`` and save it to ``out``.

    Args:
        student_path: The distilled student (folder or ``.safetensors``).
        out: Folder of the fine-tuned student (``student.safetensors``, the pre-fine-tuning
            copy, ``finetune.json`` with the learning curves, TensorBoard logs under ``tb/``).
        tasks: What to fine-tune on (default: the student's distillation tasks).
        steps: Env steps of fine-tuning, all tasks together, critic warm-up included.
        config: PPO and the fine-tuning pieces (default: ``agents/finetune.yaml``).
        progress_bar: Show SB3's progress bar.
        command: The command line, recorded in the metadata.

    Returns:
        The run's summary (also ``out/finetune.json``): tasks, curves, returns before and after.

    Raises:
        ConfigError: for ``steps <= 0``, a student kind that cannot be fine-tuned, or bad tasks.
    """
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from polydistill.finetune.config import load_finetune_config
    from polydistill.finetune.policy import StudentActorCritic, StudentInput, TokenRouted
    from polydistill.finetune.ppo import KickstartPPO

    if int(steps) <= 0:
        raise ConfigError(f"--steps must be > 0, got {steps}")
    cfg = config or load_finetune_config()
    deployed = load_student(student_path)
    base = deployed.student
    view = StudentInput(base)  # refuses the kinds that cannot be fine-tuned, saying why
    if not isinstance(base, GeneralistStudent | JointStudent) or base.discrete:
        raise ConfigError(f"fine-tuning takes continuous-action generalist students; this one is a "
                          f"{base.kind!r} student of setup {deployed.metadata.get('setup')!r}")
    tasks = list(tasks) if tasks else resolve_finetune_tasks(deployed)
    seed_everything(cfg.seed)
    torch.set_num_threads(1)
    student = _fresh_copy(base).train()
    table = student.table
    routes = [_route(student, t) for t in tasks]
    rows = [r.row for r in routes]
    success_key = cfg.success_key or deployed.metadata.get("success_key")
    std_from: dict[str, Any] = {}
    states: dict[str, States] = {}  # the student's own states per task, for both log-std steps
    constant = None if isinstance(cfg.log_std_init, str) else float(cfg.log_std_init)
    from_teachers = None  # exploration starts taken from the teachers directly (no single head to fit)
    if cfg.log_std_init == "teacher":
        own = resolve_finetune_tasks(deployed) if deployed.metadata.get("tasks") or \
            deployed.metadata.get("morphology") else []
        if _has_gaussian_head(student) or cfg.exploration != "parameter":
            std_from = _fit_log_std(student, tasks, routes, own, cache=states)
        else:
            from_teachers, std_from = _teacher_log_std(student, tasks, routes, own, cache=states)
    elif constant is not None and cfg.exploration != "parameter":
        _reset_log_std(student, constant)
    explore = None
    if cfg.exploration == "parameter":
        # per token row: a row that drives a task without a teacher explores with that scale
        explore = from_teachers if from_teachers is not None else \
            _mean_log_std(student, tasks, routes, cache=states) if constant is None else \
            np.full((len(table.action_mask), table.max_action_dim), constant, np.float32)
        untaught = {r for t, r in zip(tasks, rows, strict=True) if not t.teacher}
        for r in set(rows):
            explore[r] += math.log(cfg.std_scale_no_teacher if r in untaught else cfg.std_scale)
    elif cfg.std_scale != 1.0:
        _scale_std(student, cfg.std_scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    reg = cfg.regularizer
    refs: list[Any] = []
    ref_kinds: dict[str, str] = {}
    for t, route in zip(tasks, routes, strict=True):
        if reg.coef == 0:
            ref, kind = None, "none"
        elif reg.reference == "teacher" and t.teacher:
            ref, kind = _teacher_reference(t.teacher, t), "teacher"
        elif reg.reference == "teacher" and reg.no_teacher == "none":
            ref, kind = None, "none"
        elif base.recurrent:
            raise ConfigError(f"task {t.name!r}: a history student cannot be held to its pre-fine-tuning "
                              "self (that reference would need the rollout's history); use "
                              "regularizer.no_teacher: none or regularizer.reference: teacher")
        else:
            ref, kind = _student_reference(base, route), "pre-finetune student"
        ref_kinds[t.name] = kind
        refs += [ref] * cfg.n_envs
    obs_dims = [r.obs_dim or table.embodiments[r.row].obs_dim for r in routes for _ in range(cfg.n_envs)]
    act_dims = [table.embodiments[r].action_dim for r in rows for _ in range(cfg.n_envs)]
    task_of_env = [t.name for t in tasks for _ in range(cfg.n_envs)]

    def maker(t: FinetuneTask, r: _Route) -> Any:
        def make() -> Any:
            env = make_env(t.env_id, dict(t.env_kwargs))
            if view.hist_shape is None:
                return Monitor(TokenRouted(env, table, r.row, r.body, r.obs_dim))
            history = _routed_history(student, r, t)
            return Monitor(TokenRouted(env, table, r.row, None, r.obs_dim, history=history))

        return make

    venv: Any = DummyVecEnv([maker(t, r) for t, r in zip(tasks, routes, strict=True)
                             for _ in range(cfg.n_envs)])
    venv.seed(cfg.seed)
    if cfg.normalize_reward:
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=cfg.gamma)

    def schedule(lr: float) -> Any:
        if cfg.lr_schedule == "linear":
            return lambda p: lr * p
        return lambda p: lr

    # The budget is a ceiling: whole rollouts only (SB3 would finish the one that crosses it),
    # with shorter rollouts where one of n_steps would not fit.
    n_envs = len(obs_dims)
    n_steps = min(cfg.n_steps, int(steps) // n_envs)
    if n_steps < 1:
        raise ConfigError(f"--steps {steps} is fewer than one step of each of the {n_envs} envs "
                          f"({len(tasks)} task(s) x n_envs={cfg.n_envs})")
    total = int(steps) // (n_steps * n_envs) * n_steps * n_envs
    reg = reg.for_run(total - cfg.critic_warmup_steps)  # decay_steps: run -> the steps after warm-up
    model = KickstartPPO(
        StudentActorCritic, venv, learning_rate=schedule(cfg.learning_rate), n_steps=n_steps,
        batch_size=min(cfg.batch_size, n_steps * n_envs), n_epochs=cfg.n_epochs,
        gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range, ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm, target_kl=cfg.target_kl, seed=cfg.seed, device="cpu",
        verbose=0, tensorboard_log=str(out / "tb"),
        policy_kwargs={"student": student, "value_hidden": tuple(cfg.value_hidden),
                       "actor_lr": cfg.actor_learning_rate, "log_std": explore},
        references=refs, obs_dims=obs_dims, action_dims=act_dims, regularizer=reg,
        critic_warmup_steps=cfg.critic_warmup_steps, actor_lr=schedule(cfg.actor_learning_rate))
    actor = model.policy.student  # type: ignore[attr-defined]

    t0 = time.time()
    def scores(episodes: int = cfg.eval_episodes, seed: int = EVAL_SEED) -> Scores:
        return _evaluate_tasks(actor, tasks, routes, episodes, seed, success_key)

    def point(step: int, got: Scores) -> dict[str, Any]:
        return {"step": step, "returns": got[0], **({} if got[1] is None else {"success": got[1]})}

    start = scores()
    start_state = copy.deepcopy(actor.state_dict())
    curve = [point(0, start)]
    best: dict[str, Any] = {"score": (0.0, 0.0), "step": 0, "state": copy.deepcopy(actor.state_dict())}
    train_returns: dict[str, list[float]] = {t.name: [] for t in tasks}

    class _Track(BaseCallback):
        """Per-task episode returns to TensorBoard; periodic evaluations (the curve, the best student)."""

        def __init__(self) -> None:
            super().__init__()
            self.next_eval = cfg.eval_every or math.inf

        def _on_step(self) -> bool:
            for j, info in enumerate(self.locals["infos"]):
                ep = info.get("episode")
                if ep is not None:
                    train_returns[task_of_env[j]].append(float(ep["r"]))
                    self.logger.record_mean(f"rollout/ep_return/{task_of_env[j]}", float(ep["r"]))
            if self.num_timesteps >= self.next_eval:
                self.next_eval += cfg.eval_every
                self.evaluate()
            return True

        def evaluate(self) -> None:
            got = scores()
            curve.append(point(int(self.num_timesteps), got))
            for name, r in got[0].items():
                self.logger.record(f"eval/return/{name}", r)
            for name, r in (got[1] or {}).items():
                self.logger.record(f"eval/success/{name}", r)
            score = _score(got, start)
            if score > best["score"]:
                best.update(score=score, step=int(self.num_timesteps),
                            state=copy.deepcopy(actor.state_dict()))

    track = _Track()
    model.learn(total, callback=track, progress_bar=progress_bar, tb_log_name="finetune")
    if curve[-1]["step"] != model.num_timesteps:
        track.num_timesteps = model.num_timesteps
        track.evaluate()
    seconds = time.time() - t0
    venv.close()
    confirm: dict[str, Any] | None = None
    if cfg.select == "best":
        kept = best["step"]
        if kept and cfg.confirm_episodes:
            # the best of many noisy evaluations is biased upward: it must also beat the start
            # on seeds none of them used, or the start is kept
            actor.load_state_dict(best["state"])
            got = scores(cfg.confirm_episodes, CONFIRM_SEED)
            actor.load_state_dict(start_state)
            base_got = scores(cfg.confirm_episodes, CONFIRM_SEED)
            confirm = {"step": kept, "returns": got[0], "start_returns": base_got[0],
                       "confirmed": _score(got, base_got) > (0.0, 0.0)}
            if success_key is not None:
                confirm.update(success=got[1], start_success=base_got[1])
            if not confirm["confirmed"]:
                log.info("the best evaluation (step %d) did not beat the start on fresh seeds: %s vs %s; "
                         "keeping the start", kept, got, base_got)
                kept, best["state"] = 0, start_state
        actor.load_state_dict(best["state"])
    else:
        kept = int(model.num_timesteps)
    kept_point = next(c for c in curve if c["step"] == kept)
    final = kept_point["returns"]
    if not all(np.isfinite(v) for v in final.values()):
        raise TrainingError("fine-tuning ended with non-finite evaluation returns")

    base_file = resolve_student_path(student_path)
    base_meta = deployed.metadata
    stages = list(base_meta.get("stages") or [
        {"stage": "distill", "setup": base_meta.get("setup"), "created": base_meta.get("created"),
         "sha256": base_meta.get("sha256"), "config": base_meta.get("config")}])
    stage = {
        "stage": "finetune", "from": str(base_file), "from_sha256": base_meta.get("sha256"),
        "tasks": [asdict(t) for t in tasks], "steps": int(model.num_timesteps), "kept_step": kept,
        "seconds": round(seconds, 1), "config": to_dict(cfg), "references": ref_kinds,
        "regularizer_decay_steps": reg.decay_steps,
        "log_std_from": std_from or cfg.log_std_init,
        "exploration_log_std": None if explore is None else {
            t.name: model.policy.log_std[r, :table.embodiments[r].action_dim].tolist()  # type: ignore[index]
            for t, r in zip(tasks, rows, strict=True)},
        "returns_before": start[0], "returns_after": final, "success_key": success_key,
        "success_before": start[1], "success_after": kept_point.get("success"),
        "curve": curve, "confirm": confirm,
        "versions": library_versions(), "command": command,
    }
    extra = {k: v for k, v in base_meta.items() if k not in _REGENERATED and k not in ("stages", "finetune")}
    extra.update(stages=[*stages, stage],
                 finetune={"pre_finetune": PRE_FINETUNE, "tasks": [t.name for t in tasks]})
    actor.eval()
    shutil.copyfile(base_file, out / PRE_FINETUNE)
    file = save_student(out, actor, extra=extra)
    summary = {**stage, "student": str(file),
               "train_episode_returns": {k: v[-20:] for k, v in train_returns.items()}}
    atomic_write_json(out / "finetune.json", summary)
    log.info("fine-tuned %s on %s for %d steps (%.0f s); kept step %d", student_path,
             [t.name for t in tasks], model.num_timesteps, seconds, kept)
    for name in start[0]:
        log.info("  %-16s before %9.1f  after %9.1f", name, start[0][name], final[name])
    return summary


def add_pre_finetune(rows: list[Any], student_path: str | Path, setup: Any, options: Any) -> list[Any]:
    """``rows`` of a fine-tuned student with the pre-fine-tuning student's figures beside them.

    Each row gains ``before`` (that student's return on the same seeds) and ``before_ratio``
    (over the row's yardstick), and ``before_success`` where the rows report success. Rows
    are returned unchanged where the copy is missing.
    """
    import dataclasses

    from polydistill.evaluation.report import ratio

    pre = resolve_student_path(student_path).parent / PRE_FINETUNE
    if not pre.is_file():
        log.warning("no %s beside %s: evaluating the fine-tuned student alone", PRE_FINETUNE, student_path)
        return rows
    before = {r.name: r for r in setup.evaluate(load_student(pre), options)}
    out = []
    for r in rows:
        b = before.get(r.name)
        extra = {**r.extra, "before": None if b is None else b.student_return,
                 "before_ratio": None if b is None else ratio(b.student_return, r.teacher_return)}
        if "success" in r.extra:
            extra["before_success"] = None if b is None else b.extra.get("success")
        out.append(dataclasses.replace(r, extra=extra))
    return out
