"""Behavioural tests of the distillation loop (collector + buffer + distiller + trainer)."""

from __future__ import annotations

import dataclasses
import hashlib

import gymnasium as gym
import numpy as np
import pytest
import torch

import polydistill.envs  # noqa: F401  (registers the polydistill/ ids)
from polydistill.buffer import BufferConfig
from polydistill.collect.replay import ReplayVectorEnv
from polydistill.distill.distiller import DistillerConfig
from polydistill.distill.run import BetaSchedule
from polydistill.errors import ConfigError, SpaceMismatchError
from polydistill.setups.generalist import GeneralistConfig, GeneralistRun, TaskConfig
from polydistill.students import StudentConfig
from polydistill.teachers import TorchTeacher

HOPPER = "polydistill/Hopper-v0"
PEND = "polydistill/DoublePendulum-v0"


def _torch_teacher(env_id: str, seed: int = 0) -> TorchTeacher:
    env = gym.make(env_id)
    torch.manual_seed(seed)
    d, a = env.observation_space.shape[0], env.action_space.shape[0]
    net = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2 * a))

    class Gauss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean, log_std = self.net(x).chunk(2, -1)
            return mean, log_std.clamp(-3, 0)

    return TorchTeacher(Gauss(), env.observation_space, env.action_space)


def _config(**kw) -> GeneralistConfig:
    base = dict(
        tasks=(TaskConfig("hop", HOPPER, "unused", "hopper"), TaskConfig("pend", PEND, "unused", "pendulum")),
        total_steps=1600, rounds=4, n_envs=4, updates_per_step=0.05,
        student=StudentConfig(hidden=(32, 32)),
        distiller=DistillerConfig(batch_size=64),
        buffer=BufferConfig(capacity=600),
    )
    base.update(kw)
    return GeneralistConfig(**base)


def _teachers() -> dict[str, TorchTeacher]:
    return {"hop": _torch_teacher(HOPPER, 0), "pend": _torch_teacher(PEND, 1)}


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_teacher_never_changes_and_student_does() -> None:
    teachers = _teachers()
    before = {k: _digest(t.module) for k, t in teachers.items()}
    trainer = GeneralistRun(_config(), teachers=teachers, progress_bar=False)
    student_before = _digest(trainer.student)
    trainer.learn()
    trainer.close()
    assert {k: _digest(t.module) for k, t in teachers.items()} == before
    assert _digest(trainer.student) != student_before


def test_same_seed_gives_identical_student_weights() -> None:
    digests = []
    for _ in range(2):
        trainer = GeneralistRun(_config(seed=7), teachers=_teachers(), progress_bar=False)
        trainer.learn()
        trainer.close()
        digests.append(_digest(trainer.student))
    assert digests[0] == digests[1]
    trainer = GeneralistRun(_config(seed=8), teachers=_teachers(), progress_bar=False)
    trainer.learn()
    trainer.close()
    assert _digest(trainer.student) != digests[0]


def test_buffer_stays_within_bound_over_many_rounds() -> None:
    trainer = GeneralistRun(_config(rounds=12, total_steps=12 * 800), teachers=_teachers(),
                             progress_bar=False)
    nbytes = trainer.buffer.nbytes
    trainer.learn()
    trainer.close()
    sizes = [h["buffer/size"] for h in trainer.history]
    assert trainer.collector.total_steps >= 12 * 800 - 100  # far more than the capacity
    assert max(sizes) <= 600
    assert trainer.buffer.nbytes == nbytes


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_beta_mixes_as_configured(beta: float) -> None:
    cfg = _config(beta=BetaSchedule(kind="constant", start=beta), total_steps=8000, rounds=1,
                  updates_per_step=0.0)
    trainer = GeneralistRun(cfg, teachers=_teachers(), progress_bar=False)
    trainer.learn()
    trainer.close()
    frac = trainer.history[-1]["collect/teacher_frac"]
    assert frac == pytest.approx(beta, abs=0.03)


def test_exponential_schedule_used_per_round() -> None:
    cfg = _config(beta=BetaSchedule(kind="exponential", start=1.0, decay=0.5), rounds=3)
    trainer = GeneralistRun(cfg, teachers=_teachers(), progress_bar=False)
    trainer.learn()
    trainer.close()
    assert [h["collect/beta"] for h in trainer.history] == [1.0, 0.5, 0.25]


def test_padded_action_dims_never_reach_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, set[tuple[int, ...]]] = {}
    original = ReplayVectorEnv.step

    def spy(self, actions):  # noqa: ANN001
        seen.setdefault(str(id(self)), set()).add(np.shape(actions))
        return original(self, actions)

    monkeypatch.setattr(ReplayVectorEnv, "step", spy)
    cfg = _config(beta=BetaSchedule(kind="constant", start=0.0), rounds=1)
    trainer = GeneralistRun(cfg, teachers=_teachers(), progress_bar=False)
    trainer.learn()
    trainer.close()
    shapes = set().union(*seen.values())
    assert shapes == {(4, 3), (4, 1)}  # hopper 3 dims, pendulum 1 dim; never the padded 3 for both


def test_kl_loss_rejects_deterministic_teacher() -> None:
    from polydistill.teachers import CallableTeacher

    env = gym.make(PEND)
    det = CallableTeacher(lambda o: np.zeros((o.shape[0], 1)), env.observation_space, env.action_space)
    cfg = _config(tasks=(TaskConfig("pend", PEND, "unused", "pendulum"),),
                  distiller=DistillerConfig(loss="forward_kl", batch_size=64))
    with pytest.raises(ConfigError, match="deterministic"):
        GeneralistRun(cfg, teachers={"pend": det}, progress_bar=False)


def test_teacher_with_wrong_spaces_is_refused() -> None:
    cfg = _config(tasks=(TaskConfig("hop", HOPPER, "unused", "hopper"),))
    with pytest.raises(SpaceMismatchError, match=r"\(11,\)"):
        GeneralistRun(cfg, teachers={"hop": _torch_teacher(PEND)}, progress_bar=False)


def test_unknown_env_id_is_a_config_error() -> None:
    cfg = _config(tasks=(TaskConfig("x", "polydistill/NoSuchEnv-v0", "unused"),))
    with pytest.raises(ConfigError, match="NoSuchEnv"):
        GeneralistRun(cfg, teachers={"x": _torch_teacher(PEND)}, progress_bar=False)


def test_distillation_reduces_disagreement_with_teacher() -> None:
    cfg = _config(total_steps=4000, rounds=4, updates_per_step=0.25)
    trainer = GeneralistRun(cfg, teachers=_teachers(), progress_bar=False)
    batch = None
    trainer.collector.collect(200, 1.0, trainer.buffer)
    batch = trainer.buffer.sample(256)
    loss_before, _ = trainer.distiller.compute_loss(batch)
    trainer.learn()
    trainer.close()
    loss_after, _ = trainer.distiller.compute_loss(batch)
    assert loss_after.item() < 0.2 * loss_before.item()


@pytest.mark.parametrize("total", [1601, 2000, 4003])
def test_collects_exactly_the_step_budget(total: int) -> None:
    trainer = GeneralistRun(_config(total_steps=total, rounds=3), teachers=_teachers(),
                             progress_bar=False)
    trainer.learn()
    trainer.close()
    assert trainer.collector.total_steps == total
    assert len(trainer.buffer) == min(total, 600)


def test_task_weights_set_each_tasks_share_of_steps_rows_and_batches() -> None:
    hop, pend = _config().tasks
    cfg = _config(tasks=(dataclasses.replace(hop, weight=3.0), pend), total_steps=1601)
    trainer = GeneralistRun(cfg, teachers=_teachers(), progress_bar=False)
    trainer.learn()
    trainer.close()
    assert trainer.collector.total_steps == 1601
    assert trainer.buffer.seen.tolist() == [1201, 400]  # rounds of 401, 400, 400, 400 split 3:1
    assert trainer.buffer.parts.tolist() == [450, 150]
    assert np.bincount(trainer.buffer.sample(64)["task"]).tolist() == [48, 16]
    with pytest.raises(ConfigError, match="no steps in a round"):
        GeneralistRun(_config(tasks=(dataclasses.replace(hop, weight=1000.0), pend)),
                      teachers=_teachers(), progress_bar=False)
    # rounds of 70 and 69 steps: 69 gives the light task 1 step, 70 gives it none
    tasks = (dataclasses.replace(hop, weight=0.01), dataclasses.replace(hop, name="hop2"), pend)
    with pytest.raises(ConfigError, match="no steps in a round of 70"):
        GeneralistRun(_config(tasks=tasks, total_steps=139, rounds=2),
                      teachers={**_teachers(), "hop2": _torch_teacher(HOPPER, 2)}, progress_bar=False)
    for bad in (-1.0, 0.0, float("nan")):
        with pytest.raises(ConfigError, match="finite and > 0"):
            dataclasses.replace(hop, weight=bad)
    from polydistill.envs import TaskSpec

    with pytest.raises(ConfigError, match="finite and > 0"):
        TaskSpec("x", HOPPER, "hopper", weight=0.0)


def test_budget_smaller_than_rounds_times_tasks_is_refused_before_envs_are_built() -> None:
    with pytest.raises(ConfigError, match="total_steps"):
        GeneralistRun(_config(total_steps=5, rounds=4), teachers=_teachers(), progress_bar=False)


def test_seed_controls_initial_student_even_after_loading_sb3_teachers(tmp_path) -> None:
    from stable_baselines3 import PPO

    env = gym.make(PEND)
    PPO("MlpPolicy", env, n_steps=32, batch_size=32, seed=0).save(tmp_path / "model.zip")
    digests = []
    for seed in (0, 1):
        cfg = _config(tasks=(TaskConfig("pend", PEND, str(tmp_path), "pendulum"),), seed=seed)
        trainer = GeneralistRun(cfg, progress_bar=False)
        digests.append(_digest(trainer.student))
        trainer.close()
    assert digests[0] != digests[1]


def test_nan_observation_from_env_stops_collection() -> None:
    from polydistill.errors import TrainingError

    class NaNObs(gym.ObservationWrapper):
        def observation(self, obs):  # noqa: ANN001, ANN201
            obs = obs.copy()
            obs[0] = np.nan
            return obs

    gym.register("polydistill-test/NaNPendulum-v0",
                 entry_point=lambda **kw: NaNObs(gym.make(PEND).unwrapped), max_episode_steps=50)
    cfg = _config(tasks=(TaskConfig("pend", "polydistill-test/NaNPendulum-v0", "unused", "pendulum"),))
    trainer = GeneralistRun(cfg, teachers={"pend": _torch_teacher(PEND)}, progress_bar=False)
    with pytest.raises(TrainingError, match="non-finite observation"):
        trainer.learn()
    trainer.close()


@pytest.mark.parametrize("student_action", ["mean", "sample"])
def test_tasks_collected_in_lockstep_give_the_rows_each_collects_alone(student_action: str) -> None:
    from polydistill.collect.rollout import collect_together

    def rows(together: bool) -> tuple[list, list]:  # noqa: ANN001
        run_ = GeneralistRun(_config(seed=3, student_action=student_action,
                                     distiller=DistillerConfig(batch_size=64, loss="forward_kl")),
                             teachers=_teachers(), progress_bar=False)
        try:
            rollouts = run_.collector.rollouts
            quotas, beta = dict(zip(rollouts, [480, 200], strict=True)), 0.5  # uneven; episodes end in both
            if together:
                results = list(collect_together(rollouts, run_.student, quotas, beta).values())
            else:
                results = [r.collect(run_.student, quotas[n], beta) for n, r in rollouts.items()]
            return results, [r.state_dict() for r in rollouts.values()]
        finally:
            run_.close()

    (alone, alone_state), (together, together_state) = rows(False), rows(True)
    for a, b in zip(alone, together, strict=True):
        assert set(a.rows) == set(b.rows)
        for k in a.rows:
            assert np.array_equal(a.rows[k], b.rows[k]), k
        assert np.array_equal(a.norm_obs, b.norm_obs)
        assert (a.labelled, a.teacher_steps, a.returns) == (b.labelled, b.teacher_steps, b.returns)
    assert alone[0].labelled == 480 and alone[1].labelled == 200 and alone[0].returns
    for a, b in zip(alone_state, together_state, strict=True):  # the envs and streams end alike
        assert a["rng"] == b["rng"] and np.array_equal(a["ep_ret"], b["ep_ret"])
        assert a["venv"]["seeds"] == b["venv"]["seeds"]
        logs = zip(a["venv"]["actions"], b["venv"]["actions"], strict=True)
        assert all(np.array_equal(x, y) for x, y in logs)
    with pytest.raises(ConfigError, match="one step count per rollout"):
        collect_together({}, None, {"x": 1}, 0.5)  # type: ignore[arg-type]
