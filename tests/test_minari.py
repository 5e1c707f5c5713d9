"""Distillation datasets in Minari's format: recording, export, import, distilling from a dataset."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

minari = pytest.importorskip("minari", reason="needs the minari extra: pip install -e '.[minari]'")
pytest.importorskip("h5py", reason="needs Minari's HDF5 storage: pip install -e '.[minari]'")

import polydistill  # noqa: E402
import polydistill.envs  # noqa: E402, F401  (registers the polydistill/ ids)
from polydistill.buffer import BufferConfig  # noqa: E402
from polydistill.cli import main  # noqa: E402
from polydistill.config import to_dict  # noqa: E402
from polydistill.datasets.minari_io import export_run, load_dataset  # noqa: E402
from polydistill.datasets.recorder import read_recording  # noqa: E402
from polydistill.datasets.rows import recorded_rows  # noqa: E402
from polydistill.distill.distiller import DistillerConfig  # noqa: E402
from polydistill.distill.run import BetaSchedule  # noqa: E402
from polydistill.errors import CheckpointError, ConfigError  # noqa: E402
from polydistill.setups.generalist import GeneralistConfig, GeneralistRun, TaskConfig  # noqa: E402
from polydistill.students import StudentConfig  # noqa: E402
from polydistill.teachers import CallableTeacher  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_trainer import HOPPER, PEND, _torch_teacher  # noqa: E402
from toy_setup import ToyConfig, ToyRun  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _config(**kw: object) -> GeneralistConfig:
    """Two bodies of different widths (a padded whole-run dataset); the hopper's episodes end by
    termination or by a 12-step time limit, the pendulum's by termination; DAgger mixes actors."""
    base: dict[str, object] = dict(
        tasks=(TaskConfig("hop", HOPPER, "unused", "hopper", {"max_episode_steps": 12}),
               TaskConfig("pend", PEND, "unused", "pendulum")),
        total_steps=1600, rounds=4, n_envs=4, updates_per_step=0.05,
        beta=BetaSchedule(kind="exponential", start=1.0, decay=0.5),
        student=StudentConfig(hidden=(32, 32)), distiller=DistillerConfig(batch_size=64, loss="forward_kl"),
        buffer=BufferConfig(capacity=2000), record_dataset=True)
    base.update(kw)
    return GeneralistConfig(**base)  # type: ignore[arg-type]


def _teachers() -> dict[str, object]:
    return {"hop": _torch_teacher(HOPPER, 0), "pend": _torch_teacher(PEND, 1)}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GeneralistRun]:
    """A recorded two-task DAgger run (1,600 labelled steps, 200 per task and round)."""
    run_dir = tmp_path_factory.mktemp("recorded") / "run"
    run = GeneralistRun(_config(), teachers=_teachers(), progress_bar=False, run_dir=run_dir)
    run.learn()
    run.close()
    return run_dir, run


def _assert_same_rows(a: object, b: object) -> None:
    assert a.table.to_json() == b.table.to_json() and a.table.tasks_json() == b.table.tasks_json()
    assert [t.name for t in a.tasks] == [t.name for t in b.tasks]
    assert [t.emb_id for t in a.tasks] == [t.emb_id for t in b.tasks]
    for ra, rb, oa, ob in zip(a.rows, b.rows, a.raw_obs, b.raw_obs, strict=True):
        assert sorted(ra) == sorted(rb)
        for k in ra:
            assert ra[k].dtype == rb[k].dtype and np.array_equal(ra[k], rb[k]), k
        assert oa.dtype == ob.dtype and np.array_equal(oa, ob)


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("per_task", [False, True], ids=["one-dataset", "per-task"])
def test_export_then_import_gives_the_recorded_rows(recorded, tmp_path: Path, per_task: bool) -> None:
    run_dir, _ = recorded
    written = export_run(run_dir, tmp_path / "ds", per_task=per_task, progress_bar=False)
    ids = ["polydistill/run-hop-v0", "polydistill/run-pend-v0"] if per_task else ["polydistill/run-v0"]
    assert [d.dataset_id for d in written] == ids
    assert sum(d.steps for d in written) == 2 * 4 * 50 * 4  # tasks x rounds x vector steps x copies
    back = load_dataset(tmp_path / "ds", progress_bar=False)
    rec = recorded_rows(run_dir)
    _assert_same_rows(rec, back)
    assert rec.n_rows == 1600 and back.teacher_labels and back.distribution == "gaussian"
    assert [t.env_id for t in back.tasks] == [HOPPER, PEND]
    assert back.tasks[0].env_kwargs == {"max_episode_steps": 12}
    assert back.run["config"]["record_dataset"] is True and back.run["setup"] == "generalist"
    assert "polydistill" in back.run["versions"]


def test_a_weighted_run_s_dataset_keeps_its_weights_and_every_row(tmp_path: Path) -> None:
    from polydistill.datasets.offline import DatasetConfig, OfflineRun

    hop, pend = _config().tasks
    cfg = _config(tasks=(dataclasses.replace(hop, weight=3.0), pend), total_steps=800, rounds=2)
    run = GeneralistRun(cfg, teachers=_teachers(), progress_bar=False, run_dir=tmp_path / "run")
    run.learn()
    run.close()
    export_run(tmp_path / "run", tmp_path / "ds", progress_bar=False)
    data = load_dataset(tmp_path / "ds", progress_bar=False)
    assert [t.weight for t in data.tasks] == [3.0, 1.0]
    assert [len(r["emb"]) for r in data.rows] == [600, 200]  # 800 steps split 3:1
    cfg = DatasetConfig(dataset=str(tmp_path / "ds"), bc_updates=10, buffer=BufferConfig(capacity=8),
                        student=StudentConfig(hidden=(16,)))
    bc = OfflineRun(cfg, data=data, progress_bar=False)
    # the capacity grew to the smallest whose weighted partitions hold every task's rows
    assert bc.buffer.config.capacity == 800 and bc.buffer.parts.tolist() == [600, 200]
    assert bc.buffer.weights.tolist() == [3.0, 1.0]
    assert bc.buffer.seen.tolist() == [600, 200] and len(bc.buffer) == 800  # no row dropped
    assert np.bincount(bc.buffer.sample(64)["task"]).tolist() == [48, 16]
    assert [t.weight for t in bc.tasks] == [3.0, 1.0]


def test_recorded_rows_are_the_buffer_rows(recorded) -> None:
    run_dir, run = recorded
    rec = recorded_rows(run_dir)
    steps, copies = 200, 4  # every row the run collected is still in the buffer (capacity 1000 a task)
    for t, rows in enumerate(rec.rows):
        n = int(run.buffer.sizes[t])
        assert n == steps * 4
        base = t * run.buffer.part
        for k, got in rows.items():
            buf = run.buffer.data[k][base: base + n]  # collection order: (step, copy)
            by_copy = buf.reshape(steps, copies, *buf.shape[1:]).swapaxes(0, 1).reshape(buf.shape)
            assert np.array_equal(by_copy, got), k


def test_episodes_are_whole_and_replay_in_their_env(recorded, tmp_path: Path) -> None:
    run_dir, _ = recorded
    export_run(run_dir, tmp_path, per_task=True, progress_bar=False)
    ends = {"terminated": 0, "truncated": 0, "cut": 0}
    acted = {True: 0, False: 0}  # whose action began an episode: teacher and student both acted
    for name, env_id, kwargs in (("hop", HOPPER, {"max_episode_steps": 12}), ("pend", PEND, {})):
        ds = minari.MinariDataset(tmp_path / "polydistill" / f"run-{name}-v0" / "data")
        meta = ds.storage.metadata["polydistill"]
        assert meta["version"] == polydistill.__version__ and meta["table"]["embodiments"]
        assert ds.recover_environment().spec.max_episode_steps == (12 if name == "hop" else 1000)
        env = gym.make(env_id, **kwargs)
        for ep in ds.iterate_episodes():
            n = len(ep.actions)
            assert ep.observations.shape[0] == n + 1 and len(ep.rewards) == n
            for key in ("teacher_action", "teacher_mean", "teacher_log_std", "labelled", "task_id"):
                assert len(ep.infos[key]) == n + 1, key
            assert ep.infos["labelled"][:-1].all() and not ep.infos["labelled"][-1]
            assert np.isnan(ep.infos["teacher_action"][-1]).all()
            assert not (ep.terminations[:-1].any() or ep.truncations[:-1].any())
            cut = ep.id in meta["cut_episodes"]
            assert ep.terminations[-1] or ep.truncations[-1]
            seed = int(next(iter(ds.storage.get_episode_metadata([ep.id])))["seed"])
            acted[bool(ep.infos["teacher_acted"][0])] += 1
            obs, _ = env.reset(seed=seed)
            assert np.array_equal(obs, ep.observations[0])
            for i in range(n):  # the env replays the episode bit for bit, final observation included
                obs, r, term, trunc, _ = env.step(ep.actions[i])
                assert np.array_equal(obs, ep.observations[i + 1]) and r == ep.rewards[i]
                if i < n - 1 or cut:
                    assert not (term or trunc)
            if not cut:
                assert (term, trunc) == (bool(ep.terminations[-1]), bool(ep.truncations[-1]))
            ends["cut" if cut else "terminated" if term else "truncated"] += 1
        env.close()
    assert ends["terminated"] > 0 and ends["truncated"] > 0 and ends["cut"] > 0, ends
    assert acted[True] > 0 and acted[False] > 0, acted


def test_a_discrete_teacher_round_trips_with_its_logits(tmp_path: Path) -> None:
    env = gym.make("CartPole-v1")
    teacher = CallableTeacher(lambda o: np.stack([-8 * o[:, 2] - o[:, 3], 8 * o[:, 2] + o[:, 3]], -1),
                              env.observation_space, env.action_space)
    cfg = GeneralistConfig(tasks=(TaskConfig("cart", "CartPole-v1", "unused"),), total_steps=600, rounds=2,
                           n_envs=2, updates_per_step=0.05, student=StudentConfig(hidden=(16,)),
                           distiller=DistillerConfig(batch_size=32), record_dataset=True)
    run = GeneralistRun(cfg, teachers={"cart": teacher}, progress_bar=False, run_dir=tmp_path / "run")
    run.learn()
    run.close()
    export_run(tmp_path / "run", tmp_path / "ds", progress_bar=False)
    back = load_dataset(tmp_path / "ds", progress_bar=False)
    _assert_same_rows(recorded_rows(tmp_path / "run"), back)
    assert back.distribution == "categorical" and back.rows[0]["action"].dtype == np.int64


# ------------------------------------------------------------------ resume
def _shards(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for p in sorted(folder.glob("round-*.npz")):
        with np.load(p) as z:
            out[p.name] = {k: z[k] for k in z.files}
    return out


def test_a_recording_run_resumes_to_the_uninterrupted_recording(tmp_path: Path) -> None:
    cfg = _config(total_steps=1200, rounds=3)
    ref = GeneralistRun(cfg, teachers=_teachers(), progress_bar=False, run_dir=tmp_path / "ref")
    ref.learn()
    ref.close()
    for r in range(3):  # a new process-like run every round
        if r == 2:  # as if the previous process died after writing round 2's shard, before its commit
            shutil.copy(tmp_path / "res" / "dataset" / "round-000000.npz",
                        tmp_path / "res" / "dataset" / "round-000002.npz")
        t = GeneralistRun(cfg, teachers=_teachers(), progress_bar=False, run_dir=tmp_path / "res")
        assert t.resume() == (r > 0)
        t.learn(max_rounds=1)
        t.close()
    a, b = _shards(tmp_path / "ref" / "dataset"), _shards(tmp_path / "res" / "dataset")
    assert list(a) == list(b) == [f"round-{i:06d}.npz" for i in range(3)]
    for name in a:
        assert sorted(a[name]) == sorted(b[name])
        for k in a[name]:
            assert np.array_equal(a[name][k], b[name][k]), (name, k)
    _assert_same_rows(recorded_rows(tmp_path / "ref"), recorded_rows(tmp_path / "res"))
    (tmp_path / "res" / "dataset" / "round-000001.npz").unlink()
    with pytest.raises(CheckpointError, match="gap"):
        read_recording(tmp_path / "res")


def test_ray_workers_record_what_the_local_path_records(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="needs the ray extra")
    import ray

    from polydistill.collect.ray import init_ray

    init_ray(num_cpus=2)
    try:
        for workers in (0, 2):
            run = GeneralistRun(_config(total_steps=800, rounds=2, workers=workers), teachers=_teachers(),
                                progress_bar=False, run_dir=tmp_path / f"w{workers}")
            run.learn()
            run.close()
    finally:
        ray.shutdown()
    a, b = _shards(tmp_path / "w0" / "dataset"), _shards(tmp_path / "w2" / "dataset")
    assert list(a) == list(b) and all(np.array_equal(a[n][k], b[n][k]) for n in a for k in a[n])


def test_record_dataset_is_refused_where_it_cannot_record(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'toy' setup does not record"):
        ToyRun(ToyConfig(record_dataset=True), run_dir=tmp_path, progress_bar=False)
    with pytest.raises(ConfigError, match="run folder"):
        GeneralistRun(_config(), teachers=_teachers(), progress_bar=False)



def test_a_recording_never_deletes_a_folder_it_did_not_write(tmp_path: Path) -> None:
    theirs = tmp_path / "run" / "dataset" / "someone" / "data.hdf5"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"not ours")
    run = GeneralistRun(_config(total_steps=400, rounds=1), teachers=_teachers(), progress_bar=False,
                        run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="is not a polydistill recording"):
        run.learn()
    run.close()
    assert theirs.read_bytes() == b"not ours"



def test_a_damaged_recording_is_a_checkpoint_error(recorded, tmp_path: Path) -> None:
    import shutil

    from polydistill.errors import CheckpointError

    run_dir = tmp_path / "run"
    shutil.copytree(recorded[0], run_dir)
    shard = sorted((run_dir / "dataset").glob("round-*.npz"))[-1]
    shard.write_bytes(shard.read_bytes()[:100])  # cut short, as a full disk would leave it
    with pytest.raises(CheckpointError, match="unreadable"):
        read_recording(run_dir)


# ------------------------------------------------------------------ datasets made elsewhere
def _foreign_dataset(root: Path, episodes: int = 10) -> Path:
    """A Pendulum-v1 dataset of a scripted damping controller, made with Minari alone."""
    from minari.data_collector import EpisodeBuffer

    env = gym.make("Pendulum-v1")
    buffers = []
    for k in range(episodes):
        obs, _ = env.reset(seed=k)
        o, a, r, te, tr = [obs], [], [], [], []
        done = False
        while not done:
            act = np.clip(-1.5 * obs[2:3], -2, 2).astype(np.float32)
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs)
            a.append(act)
            r.append(rew)
            te.append(term)
            tr.append(trunc)
            done = term or trunc
        buffers.append(EpisodeBuffer(id=k, seed=k, observations=np.stack(o), actions=np.stack(a),
                                     rewards=np.asarray(r), terminations=np.asarray(te),
                                     truncations=np.asarray(tr)))
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        minari.create_dataset_from_buffers("someone/pendulum-damping-v0", buffers, env=env,
                                           eval_env="Pendulum-v1", author="x", author_email="x@y",
                                           code_permalink="-", algorithm_name="damping", description="x")
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
    return root / "someone" / "pendulum-damping-v0"


def test_behaviour_cloning_from_a_dataset_made_elsewhere(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    ds = _foreign_dataset(tmp_path / "minari")
    out = tmp_path / "student"
    assert main(["distill", "--dataset", str(ds), "--out", str(out), "--no-progress", "--eval-episodes", "1",
                 "--set", "student.hidden=[64, 64]", "--set", "bc_updates=600"]) == 0
    assert "| pendulum-damping | train | Pendulum-v1 |" in capsys.readouterr().out
    policy = polydistill.load_student(out)
    meta = policy.metadata["dataset"]
    assert meta["teacher_labels"] is False and meta["rows"] == 2000 and meta["bc_updates"] == 600
    assert meta["sources"][0]["dataset_id"] == "someone/pendulum-damping-v0"
    assert json.loads((out / "run.json").read_text())["dataset"] is True
    data = minari.MinariDataset(ds / "data")
    obs = np.concatenate([ep.observations[:-1] for ep in data.iterate_episodes()])
    act = np.concatenate([ep.actions for ep in data.iterate_episodes()])
    assert np.abs(policy.predict(obs) - act).mean() < 0.05  # it learnt the controller (actions in [-2, 2])


def damping_teacher(obs: np.ndarray) -> np.ndarray:
    """The controller of :func:`_foreign_dataset` as an importable teacher."""
    return np.clip(-1.5 * obs[:, 2:3], -2, 2).astype(np.float32)


def test_dagger_on_top_of_a_dataset_made_elsewhere_then_resume(tmp_path: Path) -> None:
    from polydistill.datasets.offline import DatasetConfig, make_dataset_run

    ds = _foreign_dataset(tmp_path / "minari", episodes=4)
    out = tmp_path / "dagger"
    teacher = "test_minari:damping_teacher"
    assert main(["distill", "--dataset", str(ds), "--teacher", teacher, "--steps", "400", "--set", "rounds=2",
                 "--set", "n_envs=2", "--set", "bc_updates=200", "--set", "student.hidden=[32]",
                 "--out", str(out), "--no-progress", "--eval-episodes", "0"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [h["round"] for h in history] == [0.0, 1.0, 2.0] and history[0]["bc/updates"] == 200.0
    assert history[-1]["env_steps"] == 400.0 and history[1]["collect/beta"] == 0.0  # the student acts
    meta = polydistill.load_student(out).metadata
    assert meta["dataset"]["dagger"] is True and meta["env_steps"] == 400 and meta["updates"] == 40
    assert meta["tasks"][0]["teacher"] == teacher
    # killed after its first DAgger round, the run resumes past behaviour cloning to the same student
    cfg = DatasetConfig(dataset=str(ds), teacher=teacher, dagger=True, total_steps=400, rounds=2, n_envs=2,
                        bc_updates=200, student=StudentConfig(hidden=(32,)))
    ref = make_dataset_run(cfg, progress_bar=False)
    ref.learn()
    first = make_dataset_run(cfg, run_dir=tmp_path / "killed", progress_bar=False)
    first.learn(max_rounds=1)
    first.close()
    again = make_dataset_run(cfg, run_dir=tmp_path / "killed", progress_bar=False)
    assert again.resume() and again.round == 1
    again.learn()
    for k, v in ref.student.state_dict().items():
        assert np.array_equal(v.numpy(), again.student.state_dict()[k].numpy()), k


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "polydistill", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_bad_datasets_and_runs_exit_2_with_one_error_line(recorded, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    run_dir, _ = recorded
    foreign = _foreign_dataset(tmp_path / "minari", episodes=2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "run.json").write_text("{}")
    export_run(run_dir, tmp_path / "taken", progress_bar=False)
    stale = tmp_path / "stale"  # the folder of a recording run, then reused by a run without the recorder
    shutil.copytree(run_dir, stale)
    (stale / "run.json").write_text(json.dumps({"setup": "generalist", "student": ".",
                                                "config": to_dict(_config(record_dataset=False))}))
    cases = [
        (["dataset", "export", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], "not a distill run"),
        (["dataset", "export", str(tmp_path / "plain"), "--out", str(tmp_path / "o")],
         "without the recorder"),
        (["dataset", "export", str(run_dir), "--out", str(tmp_path / "taken")], "already exist"),
        (["dataset", "export", str(stale), "--out", str(tmp_path / "o")], "earlier run in this folder"),
        (["dataset", "export", str(run_dir), "--out", str(tmp_path / "o"), "--version", "-1"], "version"),
        (["dataset", "info", str(tmp_path / "empty")], "holds no Minari dataset"),
        (["distill", "--dataset", str(tmp_path / "nowhere")], "does not exist"),
        (["distill", "--dataset", str(run_dir)], "export it first"),
        (["distill", "--dataset", str(foreign), "--env-id", "CartPole-v1"], "the dataset holds"),
        (["distill", "--dataset", str(foreign), "--loss", "forward_kl"], "action distribution"),
        (["distill", "--dataset", str(foreign), "--steps", "100"], "needs its env and teacher"),
        (["distill", "--dataset", str(foreign), "--bc"], "do not apply to --dataset"),
        (["distill", "--dataset", str(foreign), "--recipe", str(ROOT / "agents" / "vision_point_goal.yaml")],
         "is for the 'vision' setup"),
        (["distill", "--dataset", str(tmp_path / "minari"), "--suite", "locomotion"], "do not apply"),
    ]
    for args, needle in cases:
        rc = main([*args, *(["--out", str(tmp_path / "s"), "--no-progress"] if args[0] == "distill" else [])])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert rc == 2 and len(lines) == 1 and needle in lines[0], (args, err[-1500:])
    r = _cli("distill", "--dataset", str(foreign), "--env-id", "CartPole-v1", "--out", str(tmp_path / "s"),
             cwd=tmp_path)  # the real process: exit status 2, one error line, no traceback
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1, r.stderr[-1500:]


# ------------------------------------------------------------------ the shipped teacher, end to end
@pytest.mark.slow
def test_bc_from_a_minari_dataset_reaches_90_percent_of_the_teacher(tmp_path: Path) -> None:
    from polydistill.evaluation.report import EvalOptions
    from polydistill.setups import get_setup
    from polydistill.setups.generalist import default_teachers_dir

    teacher = str(default_teachers_dir() / "pendulum")
    rec, ds, out = tmp_path / "rec", tmp_path / "datasets", tmp_path / "student"
    assert main(["distill", "--env-id", "polydistill/DoublePendulum-v0", "--teacher", teacher, "--bc",
                 "--steps", "10000", "--set", "rounds=1", "--set", "n_envs=4", "--set", "updates_per_step=0",
                 "--set", "buffer.capacity=10000", "--set", "record_dataset=true", "--out", str(rec),
                 "--eval-episodes", "0", "--no-progress"]) == 0
    assert main(["dataset", "export", str(rec), "--out", str(ds), "--no-progress"]) == 0
    assert main(["distill", "--dataset", str(ds), "--out", str(out), "--eval-episodes", "0",
                 "--no-progress"]) == 0
    student = polydistill.load_student(out)
    assert student.metadata["dataset"]["rows"] == 10_000
    assert student.metadata["tasks"][0]["teacher"] == teacher
    rows = get_setup("generalist").evaluate(student, EvalOptions(episodes=5))
    assert rows[0].teacher_return > 5000, "the shipped pendulum teacher should balance the poles"
    assert rows[0].ratio >= 0.9, (rows[0].student_return, rows[0].teacher_return)


def test_discrete_bodies_of_different_observation_widths_share_one_dataset(tmp_path: Path) -> None:
    def logits(o: np.ndarray) -> np.ndarray:  # a fixed linear teacher over the first two entries
        return np.stack([o[:, 0], -o[:, 0], o[:, 1]], -1)

    tasks = {"acro": "Acrobot-v1", "car": "MountainCar-v0"}  # obs 6 and 2, both Discrete(3)
    teachers = {}
    for name, env_id in tasks.items():
        env = gym.make(env_id)
        teachers[name] = CallableTeacher(logits, env.observation_space, env.action_space)
        env.close()
    cfg = GeneralistConfig(tasks=tuple(TaskConfig(n, e, "unused") for n, e in tasks.items()), total_steps=800,
                           rounds=2, n_envs=2, updates_per_step=0.05, student=StudentConfig(hidden=(16,)),
                           distiller=DistillerConfig(batch_size=32), record_dataset=True)
    run = GeneralistRun(cfg, teachers=teachers, progress_bar=False, run_dir=tmp_path / "run")
    run.learn()
    run.close()
    (made,) = export_run(tmp_path / "run", tmp_path / "ds", progress_bar=False)
    assert made.tasks == ("acro", "car")
    back = load_dataset(tmp_path / "ds", progress_bar=False)
    _assert_same_rows(recorded_rows(tmp_path / "run"), back)
    assert back.distribution == "categorical"
