"""The distillation buffer: bounded memory, fifo/reservoir policies, balanced sampling, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from polydistill.buffer import BufferConfig, DistillationBuffer, FieldSpec
from polydistill.errors import CheckpointError, ConfigError, ObservationError, PolydistillError

FIELDS = {
    "obs": FieldSpec((4,), "float32"),
    "emb": FieldSpec((), "int64"),
    "mask": FieldSpec((3,), "bool"),
}


def _rows(start: int, n: int) -> dict[str, np.ndarray]:
    """``n`` rows whose contents encode their global index ``start..start+n-1``."""
    idx = np.arange(start, start + n)
    return {
        "obs": np.repeat(idx[:, None], 4, axis=1).astype(np.float32),
        "emb": idx.astype(np.int64),
        "mask": (idx[:, None] + np.arange(3)) % 2 == 0,
    }


def _make(tmp_path, strategy="fifo", storage="ram", capacity=60, n_tasks=3, seed=0):
    path = str(tmp_path / f"mm-{strategy}-{storage}") if storage == "disk" else None
    cfg = BufferConfig(capacity=capacity, strategy=strategy, storage=storage, path=path)
    return DistillationBuffer(FIELDS, n_tasks=n_tasks, config=cfg, seed=seed)


def _stored(buf: DistillationBuffer, task: int) -> np.ndarray:
    start = task * buf.part
    return np.asarray(buf.data["emb"][start:start + buf.sizes[task]])


# --------------------------------------------------------------------------- memory bound
@pytest.mark.parametrize("strategy", ["fifo", "reservoir"])
@pytest.mark.parametrize("storage", ["ram", "disk"])
def test_memory_is_bounded(tmp_path, strategy, storage):
    buf = _make(tmp_path, strategy, storage, capacity=61, n_tasks=3)
    nbytes = buf.nbytes
    assert nbytes > 0
    rng = np.random.default_rng(0)
    total = 0
    for i in range(300):
        n = int(rng.integers(1, 40))
        buf.add(i % 3, _rows(total, n))
        total += n
        assert len(buf) <= 61
        assert buf.nbytes == nbytes
    assert total > 50 * 61
    assert len(buf) == 3 * (61 // 3)
    for k, a in buf.data.items():
        assert a.shape[0] == 3 * (61 // 3), k
    if storage == "disk":
        files = sorted(p.name for p in (tmp_path / f"mm-{strategy}-{storage}").iterdir())
        assert files == ["emb.npy", "mask.npy", "obs.npy"]
        assert all(isinstance(a, np.memmap) for a in buf.data.values())
    # Every stored row is a whole row that was added (fields never mix between rows).
    for t in range(3):
        base = t * buf.part
        ids = _stored(buf, t)
        obs = np.asarray(buf.data["obs"][base:base + buf.sizes[t]])
        mask = np.asarray(buf.data["mask"][base:base + buf.sizes[t]])
        np.testing.assert_array_equal(obs, np.repeat(ids[:, None], 4, axis=1))
        np.testing.assert_array_equal(mask, (ids[:, None] + np.arange(3)) % 2 == 0)


def test_sizes_count_partially_filled_tasks(tmp_path):
    buf = _make(tmp_path, capacity=30, n_tasks=3)
    buf.add(0, _rows(0, 4))
    buf.add(2, _rows(4, 25))
    assert buf.sizes.tolist() == [4, 0, 10]
    assert len(buf) == 14
    assert buf.seen.tolist() == [4, 0, 25]


# --------------------------------------------------------------------------- fifo
@pytest.mark.parametrize("storage", ["ram", "disk"])
def test_fifo_keeps_newest_rows(tmp_path, storage):
    buf = _make(tmp_path, "fifo", storage, capacity=20, n_tasks=2)
    rng = np.random.default_rng(1)
    added = {0: [], 1: []}
    total = 0
    for i in range(80):
        task = i % 2
        n = int(rng.integers(1, 9))
        buf.add(task, _rows(total, n))
        added[task].extend(range(total, total + n))
        total += n
        for t in (0, 1):
            expected = sorted(added[t][-buf.part:])
            assert sorted(_stored(buf, t).tolist()) == expected


def test_fifo_batch_larger_than_partition_keeps_its_tail(tmp_path):
    buf = _make(tmp_path, "fifo", capacity=10, n_tasks=1)
    buf.add(0, _rows(0, 3))
    buf.add(0, _rows(3, 25))
    assert len(buf) == 10
    assert sorted(_stored(buf, 0).tolist()) == list(range(18, 28))


# --------------------------------------------------------------------------- reservoir
@pytest.mark.parametrize("storage", ["ram", "disk"])
def test_reservoir_keeps_uniform_sample(tmp_path, storage):
    cap, total = 1000, 20_000
    buf = _make(tmp_path, "reservoir", storage, capacity=cap, n_tasks=1, seed=123)
    rng = np.random.default_rng(5)
    start = 0
    while start < total:
        n = min(int(rng.integers(1, 300)), total - start)
        buf.add(0, _rows(start, n))
        start += n
    kept = _stored(buf, 0)
    assert len(kept) == cap
    assert len(np.unique(kept)) == cap  # no row stored twice
    assert kept.min() >= 0 and kept.max() < total
    # Ten equal bins of arrival order should each hold ~100 kept rows (binomial sd ~ 9.5).
    counts = np.bincount(kept * 10 // total, minlength=10)
    assert np.all(np.abs(counts - cap / 10) < 45), counts
    # Mean arrival index ~ total/2 (sd ~ 180); fifo would give ~19_500.
    assert abs(kept.mean() - total / 2) < 900
    # Early rows survive, unlike fifo.
    assert (kept < total // 4).sum() > 150


def test_reservoir_fills_before_dropping(tmp_path):
    buf = _make(tmp_path, "reservoir", capacity=10, n_tasks=1)
    buf.add(0, _rows(0, 7))
    buf.add(0, _rows(7, 3))
    assert sorted(_stored(buf, 0).tolist()) == list(range(10))
    buf.add(0, _rows(10, 1000))
    assert len(buf) == 10
    assert buf.seen[0] == 1010


def test_reservoir_is_seeded(tmp_path):
    a = _make(tmp_path, "reservoir", capacity=50, n_tasks=1, seed=9)
    b = _make(tmp_path, "reservoir", capacity=50, n_tasks=1, seed=9)
    for buf in (a, b):
        for s in range(0, 2000, 100):
            buf.add(0, _rows(s, 100))
    np.testing.assert_array_equal(a.data["emb"], b.data["emb"])


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("storage", ["ram", "disk"])
def test_balanced_sampling(tmp_path, storage):
    buf = _make(tmp_path, "fifo", storage, capacity=4000, n_tasks=4)
    buf.add(0, _rows(0, 3))
    buf.add(1, _rows(100, 900))
    # task 2 stays empty
    buf.add(3, _rows(5000, 40))
    for batch_size in (3, 90, 100, 256, 1001):
        out = buf.sample(batch_size)
        assert set(out) == {"obs", "emb", "mask", "task"}
        assert all(v.shape[0] == batch_size for v in out.values())
        counts = np.bincount(out["task"], minlength=4)
        assert counts[2] == 0
        for t in (0, 1, 3):
            assert abs(counts[t] - batch_size / 3) <= 1, (batch_size, counts)
        # Rows come from the right task and are real stored rows.
        for t, lo, hi in ((0, 0, 3), (1, 100, 1000), (3, 5000, 5040)):
            ids = out["emb"][out["task"] == t]
            assert np.all((ids >= lo) & (ids < hi))
        np.testing.assert_array_equal(out["obs"][:, 0], out["emb"].astype(np.float32))


def test_sample_rows_are_whole_rows(tmp_path):
    buf = _make(tmp_path, capacity=30, n_tasks=2)
    buf.add(0, _rows(0, 15))
    buf.add(1, _rows(15, 15))
    out = buf.sample(64)
    ids = out["emb"]
    np.testing.assert_array_equal(out["obs"], np.repeat(ids[:, None], 4, axis=1).astype(np.float32))
    np.testing.assert_array_equal(out["mask"], (ids[:, None] + np.arange(3)) % 2 == 0)
    np.testing.assert_array_equal(out["task"], (ids >= 15).astype(np.int64))


# --------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("strategy", ["fifo", "reservoir"])
@pytest.mark.parametrize("storage", ["ram", "disk"])
def test_save_load_round_trip(tmp_path, strategy, storage):
    buf = _make(tmp_path, strategy, storage, capacity=90, n_tasks=3, seed=4)
    total = 0
    for i in range(40):
        n = 7 + i % 5
        buf.add(i % 2, _rows(total, n))  # task 2 stays empty
        total += n
    buf.sample(17)  # advance the rng before saving
    buf.save(tmp_path / "saved")
    loaded = DistillationBuffer.load(tmp_path / "saved")
    assert loaded.n_tasks == buf.n_tasks
    assert loaded.part == buf.part
    assert loaded.fields == buf.fields
    assert loaded.config.strategy == strategy
    assert len(loaded) == len(buf)
    np.testing.assert_array_equal(loaded.sizes, buf.sizes)
    np.testing.assert_array_equal(loaded.cursors, buf.cursors)
    np.testing.assert_array_equal(loaded.seen, buf.seen)
    for k in FIELDS:
        assert loaded.data[k].dtype == buf.data[k].dtype
        np.testing.assert_array_equal(np.asarray(loaded.data[k]), np.asarray(buf.data[k]))
    # The rng is restored: both continue identically, for sampling and reservoir adds.
    for _ in range(3):
        a, b = buf.sample(33), loaded.sample(33)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    buf.add(0, _rows(10_000, 50))
    loaded.add(0, _rows(10_000, 50))
    for k in FIELDS:
        np.testing.assert_array_equal(np.asarray(loaded.data[k]), np.asarray(buf.data[k]))
    np.testing.assert_array_equal(loaded.sizes, buf.sizes)


def test_save_leaves_no_temp_files(tmp_path):
    buf = _make(tmp_path, capacity=12, n_tasks=2)
    buf.add(0, _rows(0, 5))
    buf.save(tmp_path / "s")
    buf.save(tmp_path / "s")  # overwriting is fine too
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "buffer.json", "emb.npy", "mask.npy", "obs.npy"]


def test_load_missing_or_foreign_folder(tmp_path):
    with pytest.raises(CheckpointError):
        DistillationBuffer.load(tmp_path / "nothing-here")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "buffer.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError):
        DistillationBuffer.load(tmp_path / "foreign")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "buffer.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        DistillationBuffer.load(tmp_path / "broken")


def test_load_with_missing_field_file(tmp_path):
    buf = _make(tmp_path, capacity=12, n_tasks=2)
    buf.add(0, _rows(0, 5))
    buf.save(tmp_path / "s")
    (tmp_path / "s" / "mask.npy").unlink()
    with pytest.raises(CheckpointError, match="mask"):
        DistillationBuffer.load(tmp_path / "s")


def test_load_with_other_capacity_is_refused(tmp_path):
    buf = _make(tmp_path, capacity=12, n_tasks=2)
    buf.add(0, _rows(0, 5))
    buf.save(tmp_path / "s")
    with pytest.raises(CheckpointError):
        DistillationBuffer.load(tmp_path / "s", config=BufferConfig(capacity=20))


# --------------------------------------------------------------------------- bad input
def test_missing_field(tmp_path):
    buf = _make(tmp_path)
    rows = _rows(0, 3)
    del rows["mask"]
    with pytest.raises(ObservationError, match="mask"):
        buf.add(0, rows)


def test_extra_field(tmp_path):
    buf = _make(tmp_path)
    rows = _rows(0, 3)
    rows["reward"] = np.zeros(3, np.float32)
    with pytest.raises(ObservationError, match="reward"):
        buf.add(0, rows)


@pytest.mark.parametrize("bad_obs", [np.zeros((3, 5), np.float32), np.zeros((3,), np.float32),
                                     np.zeros((3, 4, 1), np.float32)])
def test_wrong_row_shape(tmp_path, bad_obs):
    buf = _make(tmp_path)
    rows = _rows(0, 3)
    rows["obs"] = bad_obs
    with pytest.raises(ObservationError, match="obs"):
        buf.add(0, rows)
    assert len(buf) == 0


def test_fields_with_different_row_counts(tmp_path):
    buf = _make(tmp_path)
    rows = _rows(0, 3)
    rows["emb"] = rows["emb"][:2]
    with pytest.raises(ObservationError):
        buf.add(0, rows)
    assert len(buf) == 0


def test_zero_dim_value_for_scalar_field(tmp_path):
    buf = _make(tmp_path)
    rows = _rows(0, 1)
    rows = {"emb": np.int64(3), "obs": rows["obs"], "mask": rows["mask"]}
    with pytest.raises(ObservationError):
        buf.add(0, rows)


def test_list_rows_are_converted_or_rejected(tmp_path):
    buf = _make(tmp_path)
    rows = {k: v.tolist() for k, v in _rows(0, 2).items()}
    try:
        buf.add(0, rows)
    except PolydistillError:
        return
    assert sorted(_stored(buf, 0).tolist()) == [0, 1]


@pytest.mark.parametrize("task", [-1, 3, 100])
def test_task_out_of_range(tmp_path, task):
    buf = _make(tmp_path, n_tasks=3)
    with pytest.raises(ObservationError, match="task"):
        buf.add(task, _rows(0, 2))


def test_empty_buffer_sample(tmp_path):
    buf = _make(tmp_path)
    with pytest.raises(ConfigError, match="empty"):
        buf.sample(8)
    buf.add(1, {k: v[:0] for k, v in _rows(0, 1).items()})  # adding zero rows keeps it empty
    with pytest.raises(ConfigError):
        buf.sample(8)


@pytest.mark.parametrize("batch_size", [0, -3])
def test_bad_batch_size(tmp_path, batch_size):
    buf = _make(tmp_path)
    buf.add(0, _rows(0, 4))
    with pytest.raises(ConfigError):
        buf.sample(batch_size)


def test_capacity_below_n_tasks(tmp_path):
    with pytest.raises(ConfigError, match="capacity"):
        DistillationBuffer(FIELDS, n_tasks=5, config=BufferConfig(capacity=4))


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"capacity": -5}, {"strategy": "lifo"},
                                    {"storage": "gpu"}])
def test_bad_buffer_config(kwargs):
    with pytest.raises(ConfigError):
        BufferConfig(**kwargs)


def test_bad_n_tasks():
    with pytest.raises(ConfigError):
        DistillationBuffer(FIELDS, n_tasks=0, config=BufferConfig(capacity=10))


def test_errors_share_one_base():
    for exc in (ConfigError, ObservationError, CheckpointError):
        assert issubclass(exc, PolydistillError)


# --------------------------------------------------------------------------- task weights
def _weighted(tmp_path, weights, strategy="fifo", storage="ram", capacity=60, seed=0):
    path = str(tmp_path / f"w-{strategy}-{storage}") if storage == "disk" else None
    cfg = BufferConfig(capacity=capacity, strategy=strategy, storage=storage, path=path)
    return DistillationBuffer(FIELDS, n_tasks=len(weights), config=cfg, seed=seed, weights=weights)


@pytest.mark.parametrize("strategy", ["fifo", "reservoir"])
def test_weighted_partitions_hold_their_share_and_keep_their_own_rows(tmp_path, strategy):
    buf = _weighted(tmp_path, [1, 3, 1], strategy, capacity=100)
    assert buf.parts.tolist() == [20, 60, 20]
    assert buf.offsets.tolist() == [0, 20, 80]
    assert not buf.uniform
    added: dict[int, list[int]] = {0: [], 1: [], 2: []}
    total = 0
    for i in range(60):
        t = i % 3
        buf.add(t, _rows(total, 9))
        added[t] += list(range(total, total + 9))
        total += 9
    assert buf.sizes.tolist() == [20, 60, 20]
    for t in range(3):
        lo, n = buf.offsets[t], buf.sizes[t]
        got = set(np.asarray(buf.data["emb"][lo:lo + n]).tolist())
        assert got <= set(added[t])  # no task writes into another's partition
        if strategy == "fifo":
            assert got == set(added[t][-int(buf.parts[t]):])
    with pytest.raises(ConfigError, match="read .parts"):
        _ = buf.part


def test_weighted_batches_draw_rows_in_proportion_to_the_weights(tmp_path):
    buf = _weighted(tmp_path, [1, 3, 2], capacity=120, seed=3)
    owner = {}
    total = 0
    for t in range(3):
        buf.add(t, _rows(total, 50))
        owner.update({i: t for i in range(total, total + 50)})
        total += 50
    for batch in (60, 61, 7):
        out = buf.sample(batch)
        counts = np.bincount(out["task"], minlength=3)
        share = batch * np.array([1, 3, 2]) / 6
        assert counts.sum() == batch
        assert np.all(np.abs(counts - share) < 1)  # rounded, never off by a whole row
        assert [owner[int(i)] for i in out["emb"]] == out["task"].tolist()  # task ids match rows
    # an empty task's share goes to the others, still in proportion
    empty = _weighted(tmp_path, [1, 3, 2], capacity=120)
    empty.add(0, _rows(0, 10))
    empty.add(1, _rows(10, 10))
    assert np.bincount(empty.sample(40)["task"], minlength=3).tolist() == [10, 30, 0]


def test_equal_weights_are_the_even_split_bit_for_bit(tmp_path):
    even = _make(tmp_path, capacity=61, n_tasks=3, seed=5)
    same = _weighted(tmp_path, [2.0, 2.0, 2.0], capacity=61, seed=5)
    assert same.uniform and same.part == even.part == 20
    for t in range(3):
        even.add(t, _rows(100 * t, 13 + t))
        same.add(t, _rows(100 * t, 13 + t))
    for batch in (10, 11, 32):
        a, b = even.sample(batch), same.sample(batch)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("storage", ["ram", "disk"])
def test_weighted_buffer_round_trips_and_refuses_other_weights(tmp_path, storage):
    buf = _weighted(tmp_path, [1, 4], "reservoir", storage, capacity=50, seed=2)
    for i in range(20):
        buf.add(i % 2, _rows(10 * i, 10))
    buf.save(tmp_path / "saved")
    loaded = DistillationBuffer.load(tmp_path / "saved")
    assert loaded.weights.tolist() == [1.0, 4.0] and loaded.parts.tolist() == [10, 40]
    for k in FIELDS:
        np.testing.assert_array_equal(np.asarray(loaded.data[k]), np.asarray(buf.data[k]))
    a, b = buf.sample(23), loaded.sample(23)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    other = _weighted(tmp_path, [1, 3], "reservoir", capacity=50)
    with pytest.raises(CheckpointError, match="parts"):
        other.load_state(buf.state(), dict(buf.data))
    # other weights whose partitions round to the same sizes are refused too
    a, b = _weighted(tmp_path, [1, 2], capacity=31), _weighted(tmp_path, [1, 2.02], capacity=31)
    assert a.parts.tolist() == b.parts.tolist() == [10, 20]
    with pytest.raises(CheckpointError, match="weights"):
        b.load_state(a.state(), dict(a.data))
    # a capacity that leaves a weighted partition empty is a checkpoint error on load
    with pytest.raises(CheckpointError, match="no rows"):
        DistillationBuffer.load(tmp_path / "saved", BufferConfig(capacity=3, strategy="reservoir"))


def test_a_version_1_buffer_still_loads_as_an_even_split(tmp_path):
    import json

    buf = _make(tmp_path, capacity=30, n_tasks=3, seed=1)
    buf.add(1, _rows(0, 8))
    buf.save(tmp_path / "v1")
    meta = json.loads((tmp_path / "v1" / "buffer.json").read_text())
    meta.update(format_version=1, part=10)
    del meta["parts"], meta["weights"]
    (tmp_path / "v1" / "buffer.json").write_text(json.dumps(meta))
    loaded = DistillationBuffer.load(tmp_path / "v1")
    assert loaded.uniform and loaded.part == 10 and loaded.sizes.tolist() == [0, 8, 0]
    fresh = _make(tmp_path, capacity=30, n_tasks=3)
    fresh.load_state(meta, dict(buf.data))  # a v1 run state resumes too
    assert fresh.sizes.tolist() == [0, 8, 0]


@pytest.mark.parametrize("weights, match", [
    ([1, 2], "one weight per task"), ([1, 0, 1], "finite and > 0"), ([1, float("nan"), 1], "finite"),
    ([1, 1000, 1], "no rows"),
])
def test_bad_weights_are_refused(tmp_path, weights, match):
    with pytest.raises(ConfigError, match=match):
        DistillationBuffer(FIELDS, n_tasks=3, config=BufferConfig(capacity=60), weights=weights)


def test_split_weighted():
    from polydistill.utils import split_evenly, split_weighted

    assert split_weighted(10, [1, 1, 1]) == split_evenly(10, 3) == [4, 3, 3]
    assert split_weighted(10, [1, 3, 1]) == [2, 6, 2]
    assert split_weighted(11, [1, 3, 1]) == [2, 7, 2]  # the largest remainder rounds up
    assert split_weighted(12, [1, 3, 1]) == [3, 7, 2]  # ties: the earlier task
    assert sum(split_weighted(1001, [0.5, 3, 1.25, 2])) == 1001
