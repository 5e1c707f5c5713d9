"""Morphology-aware students (issue 13): every kind through checkpoint, predict, export and DAgger."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_trainer import _digest, _torch_teacher

import polydistill.envs  # noqa: F401  (registers the ids)
from polydistill.buffer import BufferConfig
from polydistill.deploy.checkpoint import DeployedStudent, load_student, save_student
from polydistill.distill.distiller import DistillerConfig
from polydistill.envs.families import body_layout, family_layout, get_family
from polydistill.errors import ConfigError, ObservationError, TrainingError
from polydistill.setups.morphology import MorphologyConfig, MorphologyRun, _family_spec, family_bodies
from polydistill.students import GeneralistStudent, StudentConfig, morph_student
from polydistill.students.embodiment import Embodiment, EmbodimentTable
from polydistill.teachers import TorchTeacher

KINDS = ["token", "descriptor", "history", "joints"]
SWIMMERS = ["swimmer-train-00", "swimmer-train-01", "swimmer-train-02", "swimmer-train-05"]
RNG = np.random.default_rng(0)


def _bodies(names: list[str]):  # noqa: ANN202
    named = family_bodies("swimmer")
    return [named[n] for n in names]


def _student(kind: str, names: list[str] | None = None):  # noqa: ANN202
    """A swimmer student over bodies with 2, 3 and 4 joints, statistics filled, loud head."""
    torch.manual_seed(0)
    spec = _family_spec("swimmer", _bodies(names or SWIMMERS))
    cfg = StudentConfig(hidden=(32, 32), kind=kind, history=3, joint_width=16, joint_heads=2)
    s = morph_student(spec, cfg)
    lay = spec.layout
    for b in spec.bodies:
        row = s.table.id(spec.layout_name(b.layout), b.name) if kind == "token" else s.table.id(
            spec.layout_name(b.layout))
        raw = RNG.normal(size=(64, lay.layouts[b.layout].obs_dim)) * 2
        s.update_normalizer(lay.pad(raw, lay.layouts[b.layout]), row)
    with torch.no_grad():
        head = s.joint_head if kind == "joints" else s.head
        head.weight.normal_(0, 0.5)
    return s.eval()


def _obs(name: str, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    body = family_bodies("swimmer")[name].params
    dim = body_layout("swimmer", body).obs_dim
    return (RNG.normal(size=(n, dim)) * 2).astype(np.float32), get_family("swimmer").descriptor(body)


def _episode(policy: DeployedStudent, kind: str, obs: np.ndarray, **how) -> np.ndarray:  # noqa: ANN003
    """Actions of ``policy`` over the rows of ``obs`` as consecutive steps of one episode."""
    policy.reset()
    return np.stack([policy.predict(o, **how) for o in obs])


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_saves_loads_and_predicts_the_same(tmp_path, kind: str) -> None:
    s = _student(kind)
    live = DeployedStudent(s, {"setup": "morphology"})
    loaded = load_student(save_student(tmp_path / "s", s))
    assert type(loaded.student) is type(s) and loaded.student.spec == s.spec
    for name in ("swimmer-train-00", "swimmer-train-05"):
        obs, desc = _obs(name)
        for how in ({"embodiment": name}, {"body": desc}):
            want, got = _episode(live, kind, obs, **how), _episode(loaded, kind, obs, **how)
            np.testing.assert_array_equal(got, want)
            joints = body_layout("swimmer", family_bodies("swimmer")[name].params).joints
            assert got.shape == (len(obs), joints)
            assert np.isfinite(got).all() and (np.abs(got) <= 1).all() and np.abs(got).max() > 0.05
    if kind == "history":  # the history changes what it does: same observation, other past
        obs, _ = _obs("swimmer-train-00", 4)
        a = _episode(loaded, kind, obs)
        b = _episode(loaded, kind, np.stack([obs[0], obs[2], obs[1], obs[3]]))
        assert not np.allclose(a[3], b[3])


@pytest.mark.parametrize("kind", ["descriptor", "joints"])
def test_the_descriptor_changes_the_action(kind: str) -> None:
    policy = DeployedStudent(_student(kind), {})
    obs, desc = _obs("swimmer-train-00", 3)
    assert not np.allclose(policy.predict(obs, body=desc), policy.predict(obs, body=desc + 0.5))


def test_token_student_borrows_the_nearest_training_body() -> None:
    policy = DeployedStudent(_student("token"), {})
    obs, desc = _obs("swimmer-train-01", 3)
    np.testing.assert_array_equal(policy.predict(obs, body=desc + 1e-3),
                                  policy.predict(obs, embodiment="swimmer-train-01"))


ort = pytest.importorskip("onnxruntime")


def _onnx(path, inputs: list[np.ndarray]) -> list[np.ndarray]:  # noqa: ANN001
    sess = ort.InferenceSession(str(path))
    return sess.run(None, dict(zip([i.name for i in sess.get_inputs()], inputs, strict=True)))


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_export_matches_predict(tmp_path, kind: str) -> None:
    policy = load_student(save_student(tmp_path / "s", _student(kind)))
    for name in ("swimmer-train-00", "swimmer-train-05"):
        obs, desc = _obs(name, 6)
        if kind == "token":
            path = policy.export(tmp_path / f"{name}.onnx", embodiment=name)
            got = _onnx(path, [obs])[0]
            want = policy.predict(obs, embodiment=name)
        elif kind == "history":  # one episode, the exported graph fed its own next history
            spec = policy.student.spec
            layout = spec.layout_name(spec.body(name).layout)
            path = policy.export(tmp_path / f"{name}.onnx", embodiment=layout)
            hist = policy.student.initial_state(1).numpy()
            got = []
            for o in obs:
                a, hist = _onnx(path, [o[None], hist])
                got.append(a[0])
            got, want = np.stack(got), _episode(policy, kind, obs)
        else:
            layout = policy.student.spec.layout_name(policy.student.spec.body(name).layout)
            path = policy.export(tmp_path / f"{name}.onnx", embodiment=layout)
            got = _onnx(path, [obs, np.tile(desc, (len(obs), 1)).astype(np.float32)])[0]
            want = policy.predict(obs, body=desc)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_joint_student_batches_bodies_with_different_joint_counts() -> None:
    s = _student("joints")
    spec, lay = s.spec, s.spec.layout
    rows, xs, ds = [], [], []
    for name in ("swimmer-train-00", "swimmer-train-05", "swimmer-train-02"):
        b = spec.body(name)
        obs, desc = _obs(name, 4)
        xs.append(lay.pad(obs, lay.layouts[b.layout], np.float32))
        ds.append(np.tile(desc, (4, 1)).astype(np.float32))
        rows.append(np.full(4, s.table.id(spec.layout_name(b.layout))))
    joint_counts = {lay.layouts[spec.body(n).layout].joints for n in ("swimmer-train-00", "swimmer-train-05")}
    assert len(joint_counts) == 2
    x = {"obs": torch.from_numpy(np.concatenate(xs)), "body": torch.from_numpy(np.concatenate(ds))}
    emb = torch.from_numpy(np.concatenate(rows))
    with torch.no_grad():
        together = s(x, emb).mean
        for i in range(3):  # each body alone gives the same rows
            sl = slice(4 * i, 4 * i + 4)
            alone = s({"obs": x["obs"][sl], "body": x["body"][sl]}, emb[sl]).mean
            torch.testing.assert_close(together[sl], alone, atol=1e-6, rtol=0)
    mask = s.action_mask[emb]
    assert (together[~mask] == 0).all()  # a smaller body's missing joints give no action


def test_only_the_joint_student_drives_a_joint_count_it_never_trained_on() -> None:
    seven = next(n for n, b in family_bodies("swimmer").items() if b.params["segments"] == 6)
    obs, desc = _obs(seven, 2)
    joints = DeployedStudent(_student("joints"), {})
    assert joints.predict(obs, body=desc).shape == (2, 5)
    for kind in ("descriptor", "history", "token"):
        with pytest.raises(ObservationError, match="never trained on a swimmer body with 5 joints"):
            DeployedStudent(_student(kind), {}).predict(obs, body=desc)


def test_bad_bodies_are_observation_errors() -> None:
    policy = DeployedStudent(_student("descriptor"), {})
    obs, desc = _obs("swimmer-train-00", 2)
    with pytest.raises(ObservationError, match=r"expected shape \(4,\)"):
        policy.predict(obs, body=desc[:3])
    with pytest.raises(ObservationError, match="non-finite"):
        policy.predict(obs, body=np.array([np.nan, 0, 0, 0]))
    with pytest.raises(ObservationError, match="length 9"):
        policy.predict(np.zeros(9), body=desc)
    with pytest.raises(ObservationError, match="needs the body"):
        policy.predict(obs)
    with pytest.raises(ObservationError, match="not both"):
        policy.predict(obs, body=desc, embodiment="swimmer-train-00")
    with pytest.raises(ObservationError, match="unknown body"):
        policy.predict(obs, embodiment="swimmer-interp-00")
    table = EmbodimentTable([Embodiment("a", 4, "continuous", 1, (-1.0,), (1.0,))])
    with pytest.raises(ObservationError, match="reads no body descriptor"):
        DeployedStudent(GeneralistStudent(table), {}).predict(np.zeros(4), body=desc)
    with pytest.raises(ConfigError, match="architecture must be dense"):
        morph_student(policy.student.spec, StudentConfig(kind="joints", architecture="moe"))


def test_family_layout_covers_every_split() -> None:
    lay = family_layout("swimmer")
    assert [x.joints for x in lay.layouts] == [2, 3, 4, 5] and lay.act_dim == 5


# ------------------------------------------------------------------ DAgger on a family
def _teacher(family: str) -> TorchTeacher:
    """A random Gaussian teacher of the family's privileged observation."""
    return _torch_teacher(get_family(family).family_env_id, 1)


def _config(kind: str, **kw) -> MorphologyConfig:  # noqa: ANN003
    base = dict(family="swimmer", bodies=("swimmer-train-00", "swimmer-train-05"), total_steps=1200, rounds=3,
                n_envs=2, updates_per_step=0.05, student=StudentConfig(hidden=(32, 32), kind=kind, history=3),
                distiller=DistillerConfig(batch_size=32), buffer=BufferConfig(capacity=1200))
    base.update(kw)
    return MorphologyConfig(**base)


@pytest.mark.parametrize("kind", KINDS)
def test_a_resumed_run_ends_with_the_same_student(tmp_path, kind: str) -> None:
    teacher = _teacher("swimmer")
    whole = MorphologyRun(_config(kind), teacher=teacher, progress_bar=False)
    whole.learn()
    part = MorphologyRun(_config(kind), teacher=teacher, run_dir=tmp_path, progress_bar=False)
    part.learn(max_rounds=1)
    part.close()
    again = MorphologyRun(_config(kind), teacher=teacher, run_dir=tmp_path, progress_bar=False)
    assert again.resume()
    again.learn()
    assert _digest(again.student) == _digest(whole.student)
    whole.close()
    again.close()


def test_history_rows_hold_the_executed_past() -> None:
    run = MorphologyRun(_config("history", total_steps=400, rounds=1), teacher=_teacher("swimmer"),
                        progress_bar=False)
    run.learn()
    data = {k: np.asarray(v[: len(run.buffer)]) for k, v in run.buffer.data.items()}
    hist, obs = data["hist"], data["obs"]
    first = hist[:, -1, -1] == 0  # the first step of an episode sees an empty history
    assert first.any() and (~first).any()
    assert (hist[first] == 0).all()
    # a later row's newest history entry is an earlier row's observation of the same copy
    later = np.flatnonzero(~first)[0]
    newest = hist[later, -1, : obs.shape[1]]
    assert any(np.array_equal(newest, o) for o in obs[:later])
    run.close()


def test_history_aux_head_learns_the_descriptor_and_round_trips(tmp_path) -> None:
    """history_aux > 0: the latent regresses the body descriptor beside the distillation loss."""
    from polydistill.distill.distiller import Distiller

    cfg = _config("history", total_steps=1200, rounds=2,
                  student=StudentConfig(hidden=(32, 32), kind="history", history=3, history_aux=1.0))
    run = MorphologyRun(cfg, teacher=_teacher("swimmer"), progress_bar=False)
    run.learn()
    s = run.student
    assert s.body_head is not None and s.body_head.out_features == s.spec.n_desc
    batch = run.buffer.sample(256)
    aux0 = s.auxiliary_loss(_forward(s, batch))
    aux0.backward()  # the auxiliary term reaches the history encoder, not only its own head
    assert s.encoder[0].weight.grad.abs().sum() > 0
    s.zero_grad()
    aux0 = float(aux0)
    fresh = Distiller(s, DistillerConfig(batch_size=256, lr=3e-3))
    for _ in range(150):
        info = fresh.update(batch)
    assert info["distill/aux_loss"] < 0.5 * aux0, (aux0, info)
    assert info["distill/aux_loss"] == pytest.approx(float(s.auxiliary_loss(_forward(s, batch))), rel=0.2)
    # distill/loss is the distillation term alone
    loss, plain = fresh.compute_loss(batch)
    assert float(loss) == pytest.approx(plain["distill/loss"] + plain["distill/aux_loss"], rel=1e-5)
    with pytest.raises(TrainingError, match="forward pass"):
        s.auxiliary_loss(batch)  # consumed: no second loss from one forward pass
    # acting never needs the descriptor, and the head travels with the checkpoint
    live = DeployedStudent(s.eval(), {"setup": "morphology"})
    loaded = load_student(save_student(tmp_path / "s", s))
    assert loaded.student.body_head is not None
    obs, _ = _obs("swimmer-train-00", 4)
    np.testing.assert_array_equal(_episode(loaded, "history", obs), _episode(live, "history", obs))
    run.close()


def test_history_aux_off_adds_nothing() -> None:
    s = _student("history")
    assert s.body_head is None and s.auxiliary_loss({}) is None
    with pytest.raises(ConfigError, match="history_aux must be finite and >= 0"):
        StudentConfig(kind="history", history_aux=-1.0)
    with pytest.raises(ConfigError, match="applies to kind 'history', got kind 'descriptor'"):
        StudentConfig(kind="descriptor", history_aux=1.0)
    # a cell kept before the field existed is found again at its default
    assert "history_aux" not in json.dumps(_canon_of(_config("history")))


def _forward(s, batch):  # noqa: ANN001, ANN202
    """``batch`` after one forward pass of ``s`` with gradients (what auxiliary_loss reads)."""
    s.train()
    s(s.batch_obs(batch), torch.from_numpy(batch["emb"]))
    return batch


def test_morphology_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        MorphologyRun(_config("token", bodies=("swimmer-train-99",)), teacher=_teacher("swimmer"))
    with pytest.raises(ConfigError, match="unknown body family"):
        MorphologyRun(_config("token", family="ant"), teacher=_teacher("swimmer"))
    with pytest.raises(ConfigError, match="no family teacher"):
        MorphologyRun(_config("token", teacher="/nonexistent/teacher"))


# ------------------------------------------------------------------ learning, with the shipped teacher
LEARN_FAMILY, LEARN_BODIES = "swimmer", ("swimmer-train-00", "swimmer-train-05")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_learns_a_two_body_family(kind: str) -> None:
    """DAgger from the shipped family teacher: >= 90% of its return on both bodies."""
    from polydistill.setups.morphology import default_family_teacher, evaluate_bodies

    teacher = default_family_teacher(LEARN_FAMILY)
    cfg = MorphologyConfig(
        family=LEARN_FAMILY, bodies=LEARN_BODIES, total_steps=24_000, rounds=4, n_envs=4,
        updates_per_step=0.1,
        student=StudentConfig(hidden=(128, 128), kind=kind, history=8),
        distiller=DistillerConfig(batch_size=256, lr=1e-3), buffer=BufferConfig(capacity=24_000))
    run = MorphologyRun(cfg, progress_bar=False)
    run.learn()
    named = family_bodies(LEARN_FAMILY)
    rows = evaluate_bodies(run.deployed(), LEARN_FAMILY, [named[n] for n in LEARN_BODIES], episodes=2,
                           teacher=str(teacher))
    run.close()
    for r in rows:
        assert r.extra["family_teacher"] is not None and r.ratio is not None
        assert r.ratio >= 0.9, (r.name, r.student_return, r.teacher_return)


def test_a_family_teacher_labels_any_member_in_a_generalist_run() -> None:
    """A generalist task on a family body takes the family's teacher as it is."""
    from polydistill.evaluation.report import EvalTask, evaluate_student
    from polydistill.setups.generalist import GeneralistConfig, GeneralistRun, TaskConfig
    from polydistill.setups.morphology import FamilyTeacherView, default_family_teacher

    named = family_bodies("swimmer")
    teacher = str(default_family_teacher("swimmer"))
    tasks = tuple(TaskConfig(n, "polydistill/SwimmerBody-v0", teacher, f"swimmer-{n}",
                             {"body": named[n].params}) for n in ("swimmer-train-00", "swimmer-train-05"))
    cfg = GeneralistConfig(tasks=tasks, total_steps=800, rounds=2, n_envs=2, updates_per_step=0.05,
                           student=StudentConfig(hidden=(32, 32)), distiller=DistillerConfig(batch_size=32),
                           buffer=BufferConfig(capacity=800))
    run = GeneralistRun(cfg, progress_bar=False)
    assert all(isinstance(t, FamilyTeacherView) for t in run.teachers.values())
    run.learn()
    env_task = EvalTask("swimmer-train-05", "polydistill/SwimmerBody-v0", "swimmer-swimmer-train-05", "train",
                        teacher, (("body", named["swimmer-train-05"].params),))
    row = evaluate_student(run.deployed(), [env_task], episodes=1)[0]
    assert row.teacher_return is not None and row.teacher_return > 100  # the family teacher swims
    run.close()


def test_a_body_the_kind_cannot_drive_is_a_row_without_a_return() -> None:
    from polydistill.setups.morphology import evaluate_bodies

    six = next(b for b in family_bodies("swimmer").values() if b.params["segments"] == 6)
    row = evaluate_bodies(DeployedStudent(_student("descriptor"), {}), "swimmer", [six], episodes=1)[0]
    assert np.isnan(row.student_return) and row.ratio is None
    row = evaluate_bodies(DeployedStudent(_student("joints"), {}), "swimmer", [six], episodes=1)[0]
    assert np.isfinite(row.student_return)


def test_extra_bodies_train_on_pool_bodies_and_leave_old_fingerprints_alone() -> None:
    from polydistill.bench.stats import cell_fingerprint
    from polydistill.config import override

    run = MorphologyRun(_config("descriptor", extra_bodies=2), teacher=_teacher("swimmer"),
                        progress_bar=False)
    names = [b.name for b in run.bodies]
    assert names == ["swimmer-train-00", "swimmer-train-05", "swimmer-pool-000", "swimmer-pool-001"]
    assert [b.params for b in run.bodies[2:]] == get_family("swimmer").pool(2)
    run.close()
    with pytest.raises(ConfigError, match="extra_bodies must be >= 0"):
        _config("token", extra_bodies=-1)
    # a benchmark cell kept before the field existed is found again at its default
    cfg = _config("token")
    moved = override(cfg, {"extra_bodies": 1})
    assert cell_fingerprint(("c", 0, "m", cfg)) != cell_fingerprint(("c", 0, "m", moved))
    assert "extra_bodies" not in json.dumps(_canon_of(cfg))


def _canon_of(x):  # noqa: ANN001, ANN202
    from polydistill.bench.stats import _canon

    return _canon(x)
