"""Student checkpoints: exact round trips, safetensors-only format, atomic writes, and refusal
of every kind of bad file with a CheckpointError (never an unpickle)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import polydistill
from polydistill.deploy.checkpoint import FORMAT_VERSION, load_student, save_student
from polydistill.students import GeneralistStudent, StudentConfig
from polydistill.students.embodiment import Embodiment, EmbodimentTable

NAMES = ("a", "b")
OBS_DIMS = {"a": 11, "b": 4}
ACT_DIMS = {"a": 3, "b": 1}


def _student(seed: int = 0) -> GeneralistStudent:
    torch.manual_seed(seed)
    table = EmbodimentTable([
        Embodiment("a", 11, "continuous", 3, (-1.0,) * 3, (1.0,) * 3),
        Embodiment("b", 4, "continuous", 1, (-2.0,), (2.0,)),
    ])
    student = GeneralistStudent(table, StudentConfig(hidden=(32, 32)))
    rng = np.random.default_rng(seed)
    student.update_normalizer(rng.normal(size=(100, 11)) * 3 + 1, 0)
    student.update_normalizer(rng.normal(size=(50, 4)) * 0.5 - 2, 1)
    # Make the (tiny-initialised) head produce clearly non-zero, varied actions.
    with torch.no_grad():
        student.head.weight.normal_(0, 0.5)
    student.eval()
    return student


@pytest.fixture(scope="module")
def student() -> GeneralistStudent:
    return _student()


@pytest.fixture
def ckpt(tmp_path: Path, student: GeneralistStudent) -> Path:
    return save_student(tmp_path / "run", student)


def _header(raw: bytes) -> tuple[int, dict]:
    n = int.from_bytes(raw[:8], "little")
    return n, json.loads(raw[8:8 + n])


def _expect_error(path: Path | str, *fragments: str) -> polydistill.CheckpointError:
    with pytest.raises(polydistill.CheckpointError) as info:
        load_student(path)
    msg = str(info.value)
    assert msg, "CheckpointError without a message"
    for frag in fragments:
        assert frag.lower() in msg.lower(), f"{frag!r} not in {msg!r}"
    # One error family for callers; CheckpointError is also an OSError.
    assert isinstance(info.value, polydistill.PolydistillError)
    assert isinstance(info.value, OSError)
    return info.value


# ----------------------------------------------------------------------------- round trip
def _direct_predict(student: GeneralistStudent, obs: np.ndarray, name: str) -> np.ndarray:
    """The in-memory student's deterministic deployment policy (the fast path, which
    tests/test_student.py checks against the generic padded forward)."""
    with torch.no_grad():
        return student.policy(student.table.id(name))(torch.from_numpy(obs.astype(np.float32))).numpy()


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_predict_identical(ckpt: Path, student: GeneralistStudent, name: str) -> None:
    first = load_student(ckpt)
    second = load_student(ckpt)
    rng = np.random.default_rng(1)
    batch = rng.normal(size=(17, OBS_DIMS[name])) * 2
    a1 = first.predict(batch, embodiment=name)
    a2 = second.predict(batch, embodiment=name)
    assert a1.shape == (17, ACT_DIMS[name])
    np.testing.assert_array_equal(a1, a2)
    # The loaded student acts as the one that was saved: bit for bit through the same folded
    # deployment path, and within float rounding of the generic (padded, token) forward.
    np.testing.assert_array_equal(a1, _direct_predict(student, batch, name))
    assert np.unique(a1.round(6)).size > 1, "degenerate student: all actions equal"
    for i in (0, 5, 16):
        single = first.predict(batch[i], embodiment=name)
        assert single.shape == (ACT_DIMS[name],)
        np.testing.assert_array_equal(single, second.predict(batch[i], embodiment=name))
        np.testing.assert_array_equal(single, _direct_predict(student, batch[i:i + 1], name)[0])
        # a batch of one and a row of a bigger batch differ only by float rounding (BLAS)
        np.testing.assert_allclose(single, a1[i], rtol=0, atol=1e-5)


def test_round_trip_state_dict_identical(ckpt: Path, student: GeneralistStudent) -> None:
    loaded = load_student(ckpt).student
    want, got = student.state_dict(), loaded.state_dict()
    assert set(want) == set(got)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert torch.equal(got[k], want[k]), k
    # the normalizer statistics are non-trivial and travelled with the weights
    assert float(loaded.obs_count[0]) == 100.0 and float(loaded.obs_count[1]) == 50.0
    assert not torch.allclose(loaded.obs_mean, torch.zeros_like(loaded.obs_mean))
    assert loaded.config == student.config
    assert loaded.table.to_json() == student.table.to_json()


def test_loaded_metadata_and_embodiments(ckpt: Path) -> None:
    deployed = load_student(ckpt)
    assert deployed.embodiments == list(NAMES)
    assert deployed.metadata["format_version"] == FORMAT_VERSION
    assert not deployed.student.training


def test_save_extra_metadata_round_trips(tmp_path: Path, student: GeneralistStudent) -> None:
    f = save_student(tmp_path, student, extra={"tasks": [{"name": "t1"}], "loss": "kl"})
    meta = load_student(f).metadata
    assert meta["tasks"] == [{"name": "t1"}]
    assert meta["loss"] == "kl"


# ----------------------------------------------------------------------------- file layout
def test_save_to_folder_writes_student_safetensors(tmp_path: Path, student: GeneralistStudent) -> None:
    folder = tmp_path / "nested" / "run"
    out = save_student(folder, student)
    assert out == folder / "student.safetensors"
    assert out.is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["student.safetensors"]
    # loading works from the folder and from the file
    np.testing.assert_array_equal(load_student(folder).predict(np.ones(4), "b"),
                                  load_student(out).predict(np.ones(4), "b"))


def test_save_to_named_file(tmp_path: Path, student: GeneralistStudent) -> None:
    target = tmp_path / "x.safetensors"
    out = save_student(target, student)
    assert out == target and target.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]
    load_student(target).predict(np.zeros(11), "a")


def test_file_is_plain_safetensors(ckpt: Path, student: GeneralistStudent) -> None:
    raw = ckpt.read_bytes()
    n, header = _header(raw)
    assert 8 + n <= len(raw)
    assert raw[8:9] == b"{"
    assert raw[:2] != b"PK"  # not a zip / torch.save archive
    # safetensors' own reader accepts it and holds exactly the student's tensors
    tensors = safetensors.torch.load_file(str(ckpt))
    assert set(tensors) == set(student.state_dict())
    assert set(header) - {"__metadata__"} == set(student.state_dict())
    # no pickle opcodes anywhere that torch/pickle would need (no GLOBAL/REDUCE machinery)
    assert b"torch._utils" not in raw and b"_rebuild_tensor" not in raw


def test_metadata_contents(ckpt: Path, student: GeneralistStudent) -> None:
    _, header = _header(ckpt.read_bytes())
    meta = json.loads(header["__metadata__"]["polydistill"])
    assert meta["format_version"] == FORMAT_VERSION == 1
    assert meta["format"] == "polydistill.student"
    assert meta["embodiments"] == json.loads(json.dumps(student.table.to_json()))
    assert [e["name"] for e in meta["embodiments"]] == list(NAMES)
    versions = meta["versions"]
    assert versions["polydistill"] == polydistill.__version__
    assert versions["torch"] == torch.__version__
    assert versions["numpy"] == np.__version__
    sha = meta["sha256"]
    assert isinstance(sha, str) and len(sha) == 64
    int(sha, 16)
    # saving the same weights again gives the same hash; different weights a different one
    again = save_student(ckpt.parent / "again.safetensors", student)
    assert json.loads(_header(again.read_bytes())[1]["__metadata__"]["polydistill"])[
        "sha256"] == sha
    other = save_student(ckpt.parent / "other.safetensors", _student(seed=3))
    assert json.loads(_header(other.read_bytes())[1]["__metadata__"]["polydistill"])[
        "sha256"] != sha


# ----------------------------------------------------------------------------- atomic write
def test_atomic_save_leaves_no_temp_files(tmp_path: Path, student: GeneralistStudent) -> None:
    for _ in range(3):
        save_student(tmp_path, student)
    save_student(tmp_path / "y.safetensors", student)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.safetensors", "y.safetensors"]


def test_save_replaces_existing_checkpoint(tmp_path: Path) -> None:
    old, new = _student(seed=0), _student(seed=7)
    save_student(tmp_path, old)
    obs = np.random.default_rng(0).normal(size=(8, 11))
    before = load_student(tmp_path).predict(obs, "a")
    out = save_student(tmp_path, new)
    after = load_student(tmp_path).predict(obs, "a")
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, _direct_predict(new, obs, "a"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_save_over_stale_garbage_file(tmp_path: Path, student: GeneralistStudent) -> None:
    target = tmp_path / "student.safetensors"
    target.write_bytes(b"garbage" * 1000)
    save_student(tmp_path, student)
    load_student(tmp_path).predict(np.zeros(4), "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.safetensors"]


# ----------------------------------------------------------------------------- bad checkpoints
def test_missing_path(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nope", "not found", "nope")
    _expect_error(tmp_path / "nope.safetensors", "not found", "nope.safetensors")


def test_directory_without_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "other.txt").write_text("hi")
    _expect_error(tmp_path, "student.safetensors", str(tmp_path))


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "student.safetensors"
    f.write_bytes(b"")
    _expect_error(tmp_path, "empty")
    _expect_error(f, "empty")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    f = tmp_path / "student.safetensors"
    f.write_bytes(np.random.default_rng(seed).bytes(4096))
    _expect_error(f, str(f))


@pytest.mark.parametrize("fraction", [0.10, 0.50, 0.90, 0.99])
def test_truncated(ckpt: Path, fraction: float) -> None:
    raw = ckpt.read_bytes()
    ckpt.write_bytes(raw[: int(len(raw) * fraction)])
    _expect_error(ckpt, str(ckpt))


def test_truncated_inside_length_prefix(ckpt: Path) -> None:
    ckpt.write_bytes(ckpt.read_bytes()[:5])
    _expect_error(ckpt)


def test_flipped_byte_in_tensor_data_is_a_hash_mismatch(ckpt: Path) -> None:
    raw = bytearray(ckpt.read_bytes())
    n, header = _header(raw)
    start, end = header["head.weight"]["data_offsets"]
    raw[8 + n + (start + end) // 2] ^= 0x01  # one bit of one float of the output layer
    ckpt.write_bytes(bytes(raw))
    _expect_error(ckpt, "SHA-256")


@pytest.mark.parametrize("tensor", ["obs_mean", "trunk.0.weight", "action_mask"])
def test_flipped_byte_in_each_tensor(ckpt: Path, tensor: str) -> None:
    raw = bytearray(ckpt.read_bytes())
    n, header = _header(raw)
    start, _ = header[tensor]["data_offsets"]
    raw[8 + n + start] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    _expect_error(ckpt, "SHA-256")


def _header_positions(raw: bytes) -> dict[str, int]:
    n = int.from_bytes(raw[:8], "little")
    text = raw[8:8 + n]
    return {
        "length_prefix": 1,
        "opening_brace": 8,
        "metadata_key": 8 + text.index(b"__metadata__"),
        "format_version": 8 + text.index(b"format_version"),
        "tensor_dtype": 8 + text.index(b'"F32"') + 1,
        "data_offsets": 8 + text.index(b"data_offsets") + len(b'data_offsets":[') + 1,
        "closing_brace": 8 + text.rstrip(b" ").rindex(b"}"),
    }


@pytest.mark.parametrize("where", ["length_prefix", "opening_brace", "metadata_key", "format_version",
                                   "tensor_dtype", "data_offsets", "closing_brace"])
def test_flipped_byte_in_header(ckpt: Path, where: str) -> None:
    raw = bytearray(ckpt.read_bytes())
    raw[_header_positions(bytes(raw))[where]] ^= 0xFF
    ckpt.write_bytes(bytes(raw))
    _expect_error(ckpt, str(ckpt))


def test_flipped_bit_in_metadata_values_is_detected(ckpt: Path) -> None:
    obs = np.full((4, 11), 1000.0) * np.array([[1], [-1], [2], [-3]])  # far outside the clip
    before = load_student(ckpt).predict(obs, "a")
    raw = bytearray(ckpt.read_bytes())
    pos = raw.index(b'obs_clip\\": 10.0') + len(b'obs_clip\\": ')
    raw[pos] ^= 0x02  # '1' -> '3': obs_clip 30.0, still valid JSON
    ckpt.write_bytes(bytes(raw))
    try:
        after = load_student(ckpt).predict(obs, "a")
    except polydistill.CheckpointError:
        return
    assert np.array_equal(before, after), "tampered metadata silently changed the actions"
    pytest.fail("a flipped bit in the header metadata was not detected")


def _rewrite_metadata(path: Path, **changes: object) -> None:
    raw = path.read_bytes()
    _, header = _header(raw)
    meta = json.loads(header["__metadata__"]["polydistill"])
    meta.update(changes)
    tensors = safetensors.torch.load(raw)
    path.write_bytes(safetensors.torch.save(tensors, metadata={"polydistill": json.dumps(meta)}))


def test_rewritten_metadata_unchanged_still_loads(ckpt: Path) -> None:
    _rewrite_metadata(ckpt)  # sanity check of the helper used below
    load_student(ckpt).predict(np.zeros(11), "a")


@pytest.mark.parametrize("version", [2, 0, 99, "1", None])
def test_wrong_format_version(ckpt: Path, version: object) -> None:
    _rewrite_metadata(ckpt, format_version=version)
    err = _expect_error(ckpt, "format version", "not supported")
    assert repr(version) in str(err)


def test_wrong_format_name(ckpt: Path) -> None:
    _rewrite_metadata(ckpt, format="somebody.else")
    _expect_error(ckpt, "somebody.else")


def test_safetensors_without_polydistill_metadata(tmp_path: Path) -> None:
    f = tmp_path / "student.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(3)}, str(f))
    _expect_error(f, "metadata")


def test_metadata_not_matching_weights(ckpt: Path) -> None:
    # embodiment table says obs_dim 12, the tensors were built for 11: inconsistent checkpoint
    raw = ckpt.read_bytes()
    meta = json.loads(_header(raw)[1]["__metadata__"]["polydistill"])
    meta["embodiments"][0]["obs_dim"] = 12
    _rewrite_metadata(ckpt, embodiments=meta["embodiments"])
    _expect_error(ckpt, "SHA-256")  # the hash covers the metadata too


def test_hash_mismatch_after_clean_rewrite(ckpt: Path) -> None:
    tensors = safetensors.torch.load(ckpt.read_bytes())
    _, header = _header(ckpt.read_bytes())
    tensors["head.bias"] = tensors["head.bias"] + 1.0
    ckpt.write_bytes(safetensors.torch.save(tensors, metadata=header["__metadata__"]))
    _expect_error(ckpt, "SHA-256")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_payload_named_student_safetensors(tmp_path: Path, student: GeneralistStudent,
                                                  protocol: int) -> None:
    f = tmp_path / "student.safetensors"
    f.write_bytes(pickle.dumps({"state_dict": {k: v.numpy() for k, v in student.state_dict().items()}},
                               protocol=protocol))
    _expect_error(tmp_path, str(f))


def test_torch_save_archive_named_student_safetensors(tmp_path: Path, student: GeneralistStudent) -> None:
    f = tmp_path / "student.safetensors"
    torch.save(student.state_dict(), f)
    _expect_error(f, "pickle")


class _Canary:
    """Unpickling this object creates ``path`` (a stand-in for arbitrary code execution)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_canary_is_never_executed(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Canary(str(marker)), protocol=protocol)
    # the canary itself works: unpickling it does create the marker
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Canary(str(probe)), protocol=protocol))
    assert probe.exists()
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "student.safetensors").write_bytes(payload)
    (tmp_path / "evil.safetensors").write_bytes(payload)
    for path in (folder, folder / "student.safetensors", tmp_path / "evil.safetensors"):
        _expect_error(path)
    assert not marker.exists(), "load_student unpickled a checkpoint"


def test_valid_checkpoint_with_any_header_length_loads(tmp_path: Path, student: GeneralistStudent) -> None:
    # Safetensors headers are 8-byte aligned, so the low byte of the header length is 0x80 for
    # 1 in 32 metadata sizes. Such a file is a perfectly valid checkpoint and must load.
    for k in range(32):  # 32 header lengths, one per residue of 8 * k mod 256
        f = save_student(tmp_path / f"k{k}.safetensors", student, extra={"note": "x" * (8 * k)})
        if f.read_bytes()[:1] != b"\x80":
            load_student(f)
            f.unlink()


def test_valid_checkpoint_with_header_length_128_mod_256_loads(tmp_path: Path,
                                                               student: GeneralistStudent) -> None:
    for k in range(32):
        f = save_student(tmp_path / "s.safetensors", student, extra={"note": "x" * (8 * k)})
        if f.read_bytes()[:1] == b"\x80":
            break
    else:  # pragma: no cover - 32 aligned lengths cover every residue mod 256
        pytest.fail("could not produce a header length of 128 mod 256")
    assert safetensors.torch.load_file(str(f))  # safetensors itself reads it fine
    deployed = load_student(f)
    np.testing.assert_array_equal(deployed.predict(np.ones((1, 4)), "b"),
                                  _direct_predict(student, np.ones((1, 4)), "b"))


def test_checkpoint_path_is_a_directory_named_safetensors(tmp_path: Path) -> None:
    d = tmp_path / "weird.safetensors"
    d.mkdir()
    _expect_error(d, "not a regular file")


def test_file_unchanged_by_loading(ckpt: Path) -> None:
    before = ckpt.read_bytes()
    st = os.stat(ckpt)
    load_student(ckpt).predict(np.zeros(11), "a")
    assert ckpt.read_bytes() == before
    assert os.stat(ckpt).st_mtime_ns == st.st_mtime_ns


def test_metadata_read_from_the_header_alone_equals_the_loaded_metadata(ckpt: Path) -> None:
    from polydistill.deploy import read_student_metadata

    assert read_student_metadata(ckpt) == load_student(ckpt).metadata
    assert read_student_metadata(ckpt.parent) == load_student(ckpt).metadata


@pytest.mark.parametrize("content", [b"", b"\x80\x04not safetensors", (10**12).to_bytes(8, "little") + b"{}"])
def test_metadata_reader_refuses_what_is_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    from polydistill.deploy import read_student_metadata

    bad = tmp_path / "student.safetensors"
    bad.write_bytes(content)
    with pytest.raises(polydistill.CheckpointError, match="student checkpoint"):
        read_student_metadata(bad)
    with pytest.raises(polydistill.CheckpointError, match="cannot read"):
        read_student_metadata(tmp_path / "missing.safetensors")
