"""The distillation buffer: bounded, per-task balanced storage of labelled student states.

Capacity is split into one partition per task, evenly or in proportion to per-task
``weights``, preallocated once (in RAM or as memory-mapped ``.npy`` files on disk), so memory
never grows however many DAgger rounds run. A full partition either overwrites its oldest rows
(``fifo``) or keeps a uniform sample of everything it has seen (``reservoir``). Sampling draws
the same number of rows from every non-empty task, or with weights, rows in proportion to them.

Example:
    >>> import numpy as np
    >>> from polydistill.buffer import BufferConfig, DistillationBuffer, FieldSpec
    >>> buf = DistillationBuffer({"obs": FieldSpec((3,), "float32")}, n_tasks=2,
    ...                          config=BufferConfig(capacity=10))
    >>> buf.add(0, {"obs": np.ones((4, 3), np.float32)})
    >>> len(buf), buf.sample(6)["obs"].shape
    (4, (6, 3))

"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from polydistill.errors import CheckpointError, ConfigError, ObservationError
from polydistill.weights import check_weights, equal_weights, partition_sizes

__all__ = ["BufferConfig", "FieldSpec", "DistillationBuffer", "LOGIT_PAD"]

LOGIT_PAD = -1e9
"""Logit stored for the padded actions of a discrete row narrower than the buffer's widest action set."""

_FORMAT = "polydistill.buffer"
_FORMAT_VERSION = 2
"""v2 adds per-task ``weights`` and ``parts``; v1 buffers (even split) still load."""


@dataclass(frozen=True)
class BufferConfig:
    """Size and policy of the distillation buffer."""

    capacity: int = 200_000
    """Total rows over all tasks (split evenly per task, or by the tasks' weights). Memory is
    preallocated for all."""
    strategy: Literal["fifo", "reservoir"] = "fifo"
    """When a task's partition is full: overwrite the oldest rows, or reservoir-sample."""
    storage: Literal["ram", "disk"] = "ram"
    """Keep arrays in RAM, or memory-map them from ``path`` (for image-sized data)."""
    path: str | None = None
    """Folder of the memory-mapped arrays when ``storage == "disk"`` (a temp dir if unset)."""

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ConfigError(f"BufferConfig.capacity must be >= 1, got {self.capacity}")
        if self.strategy not in ("fifo", "reservoir"):
            raise ConfigError(f"BufferConfig.strategy must be fifo or reservoir, got {self.strategy!r}")
        if self.storage not in ("ram", "disk"):
            raise ConfigError(f"BufferConfig.storage must be ram or disk, got {self.storage!r}")


@dataclass(frozen=True)
class FieldSpec:
    """Shape (per row) and dtype of one stored field."""

    shape: tuple[int, ...]
    dtype: str


class DistillationBuffer:
    """Bounded per-task partitions of labelled rows (see module docstring).

    Args:
        fields: Layout of a row.
        n_tasks: Number of partitions.
        config: Size and policy.
        seed: Seed of the sampling (and reservoir) RNG.
        weights: Relative share of each task: its partition holds ``capacity * w / sum(w)``
            rows (rounded down) and a batch draws rows from the non-empty tasks in proportion to
            their weights. ``None`` or all equal: an even split.

    Raises:
        ConfigError: for ``n_tasks < 1``, a capacity below the number of tasks, weights of the
            wrong length or not finite and positive, or a weighted partition of zero rows.
    """

    def __init__(self, fields: dict[str, FieldSpec], n_tasks: int,
                 config: BufferConfig | None = None, seed: int = 0,
                 weights: Sequence[float] | None = None) -> None:
        self.config = config or BufferConfig()
        if n_tasks < 1:
            raise ConfigError(f"a buffer needs n_tasks >= 1, got {n_tasks}")
        if self.config.capacity < n_tasks:
            raise ConfigError(
                f"BufferConfig.capacity ({self.config.capacity}) must be >= the number of tasks "
                f"({n_tasks})"
            )
        self.fields = dict(fields)
        self.n_tasks = n_tasks
        self.weights = check_weights(weights, n_tasks)
        self.uniform = equal_weights(self.weights)
        """Every task has the same share (the sampler then splits a batch evenly)."""
        self.parts = partition_sizes(self.config.capacity, self.weights)
        if not self.uniform:
            if self.parts.min() < 1:
                raise ConfigError(
                    f"BufferConfig.capacity ({self.config.capacity}) leaves task "
                    f"{int(self.parts.argmin())} (weight {self.weights.min():g} of "
                    f"{self.weights.sum():g}) no rows; raise the capacity")
        self.offsets = np.concatenate([[0], np.cumsum(self.parts)[:-1]]).astype(np.int64)
        """First row of each task's partition."""
        self.sizes = np.zeros(n_tasks, dtype=np.int64)
        self.cursors = np.zeros(n_tasks, dtype=np.int64)
        self.seen = np.zeros(n_tasks, dtype=np.int64)
        self.rng = np.random.default_rng(seed)
        self._dir: Path | None = None
        total = int(self.parts.sum())
        if self.config.storage == "disk":
            self._dir = Path(self.config.path or tempfile.mkdtemp(prefix="polydistill-buffer-"))
            self._dir.mkdir(parents=True, exist_ok=True)
            self.data = {
                k: np.lib.format.open_memmap(self._dir / f"{k}.npy", mode="w+",
                                             dtype=np.dtype(s.dtype), shape=(total, *s.shape))
                for k, s in self.fields.items()
            }
        else:
            self.data = {k: np.zeros((total, *s.shape), dtype=np.dtype(s.dtype))
                         for k, s in self.fields.items()}

    @property
    def part(self) -> int:
        """Rows per task of an evenly split buffer.

        Raises:
            ConfigError: for a weighted buffer, whose partitions differ (see :attr:`parts`).
        """
        if not self.uniform:
            raise ConfigError("a weighted buffer has one partition size per task: read .parts")
        return int(self.parts[0])

    # ------------------------------------------------------------------ info
    def __len__(self) -> int:
        return int(self.sizes.sum())

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays (constant for the buffer's life)."""
        return int(sum(a.nbytes for a in self.data.values()))

    # ------------------------------------------------------------------ write
    def add(self, task: int, rows: dict[str, np.ndarray]) -> None:
        """Append a batch of rows of one task.

        Raises:
            ObservationError: if a field is missing, extra, or of the wrong shape.
        """
        if not 0 <= task < self.n_tasks:
            raise ObservationError(f"task index must be in [0, {self.n_tasks}), got {task}")
        if set(rows) != set(self.fields):
            raise ObservationError(
                f"buffer rows need exactly the fields {sorted(self.fields)}, got {sorted(rows)}"
            )
        rows = {k: np.asarray(v) for k, v in rows.items()}
        n = None
        for k, v in rows.items():
            spec = self.fields[k]
            if not np.can_cast(v.dtype, np.dtype(spec.dtype), casting="same_kind"):
                raise ObservationError(
                    f"buffer field {k!r}: expected dtype {spec.dtype}, got {v.dtype}"
                )
            if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
                raise ObservationError(f"buffer field {k!r}: rows contain NaN or inf")
            if v.ndim != 1 + len(spec.shape) or v.shape[1:] != spec.shape:
                raise ObservationError(
                    f"buffer field {k!r}: expected a batch of shape (N, {', '.join(map(str, spec.shape))})"
                    f" got {v.shape}"
                )
            if n is None:
                n = v.shape[0]
            elif v.shape[0] != n:
                raise ObservationError("all buffer fields of one add() need the same row count")
        if not n:
            return
        slots = self._slots(task, n)
        keep = slots >= 0
        if not keep.all():
            slots = slots[keep]
        base = self.offsets[task]
        for k, v in rows.items():
            self.data[k][base + slots] = v if keep.all() else v[keep]

    def _slots(self, task: int, n: int) -> np.ndarray:
        """Slot of each new row within the task's partition (-1: row dropped by reservoir)."""
        cap = int(self.parts[task])
        if self.config.strategy == "fifo":
            slots = (self.cursors[task] + np.arange(n)) % cap
            self.cursors[task] = (self.cursors[task] + n) % cap
            self.sizes[task] = min(cap, self.sizes[task] + n)
            self.seen[task] += n
            return slots
        seen = self.seen[task] + np.arange(1, n + 1)  # 1-based count of each new row
        slots = np.where(seen <= cap, seen - 1, -1)
        full = seen > cap
        if full.any():
            r = np.floor(self.rng.random(int(full.sum())) * seen[full]).astype(np.int64)
            slots[full] = np.where(r < cap, r, -1)
        self.seen[task] += n
        self.sizes[task] = min(cap, self.seen[task])
        return slots

    # ------------------------------------------------------------------ read
    def sample(self, batch_size: int, reuse: bool = False) -> dict[str, np.ndarray]:
        """Draw ``batch_size`` rows, split over the non-empty tasks.

        Evenly, or with weights in proportion to the non-empty tasks' weights (the rows left by
        rounding down go to tasks drawn at random, weighted by their remainders).

        The result also holds ``task`` (int64 task index per row).

        Args:
            batch_size: Rows to draw.
            reuse: Gather into arrays kept by the buffer (no allocation per batch); they are
                overwritten by the next ``reuse`` call, so use the batch before drawing again.

        Raises:
            ConfigError: if the buffer is empty or ``batch_size < 1``.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        live = np.flatnonzero(self.sizes > 0)
        if live.size == 0:
            raise ConfigError("cannot sample from an empty distillation buffer")
        if self.uniform:
            counts = np.full(live.size, batch_size // live.size)
            extra = batch_size - counts.sum()
            if extra:
                counts[self.rng.choice(live.size, size=extra, replace=False)] += 1
        else:
            share = batch_size * self.weights[live] / self.weights[live].sum()
            counts = np.floor(share).astype(np.int64)
            extra = int(batch_size - counts.sum())
            if extra:
                frac = share - counts
                p = frac / frac.sum() if np.count_nonzero(frac) >= extra else None
                counts[self.rng.choice(live.size, size=extra, replace=False, p=p)] += 1
        task = np.repeat(live, counts)  # (B,) one vectorised draw for all tasks
        idx = self.offsets[task] + self.rng.integers(0, self.sizes[task])
        idx.sort()  # contiguous-ish reads (memory-mapped files, caches); same order in RAM or disk
        task = np.searchsorted(self.offsets, idx, side="right") - 1
        if not reuse:
            out = {k: a[idx] for k, a in self.data.items()}
        else:
            cache = self.__dict__.setdefault("_batch", {})
            out = {}
            for k, a in self.data.items():
                dst = cache.get(k)
                if dst is None or dst.shape[0] != batch_size:
                    dst = cache[k] = np.empty((batch_size, *a.shape[1:]), dtype=a.dtype)
                out[k] = np.take(a, idx, axis=0, out=dst)
        out["task"] = task
        return out

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """Cursors, sizes and RNG state (JSON-safe)."""
        return {
            "format": _FORMAT, "format_version": _FORMAT_VERSION,
            "fields": {k: {"shape": list(s.shape), "dtype": s.dtype} for k, s in self.fields.items()},
            "n_tasks": self.n_tasks, "weights": self.weights.tolist(), "parts": self.parts.tolist(),
            "capacity": self.config.capacity, "strategy": self.config.strategy,
            "sizes": self.sizes.tolist(), "cursors": self.cursors.tolist(),
            "seen": self.seen.tolist(), "rng": self.rng.bit_generator.state,
        }

    def load_state(self, state: dict[str, Any], data: dict[str, np.ndarray]) -> None:
        """Restore rows, cursors and RNG from :meth:`state` and :attr:`data` of a twin buffer.

        Raises:
            CheckpointError: if the saved layout (fields, tasks, partitions, weights, strategy)
                differs.
        """
        mine = self.state()
        state = _upgrade(state)
        for key in ("fields", "n_tasks", "parts", "strategy"):
            if json.loads(json.dumps(state.get(key))) != json.loads(json.dumps(mine[key])):
                raise CheckpointError(f"saved buffer {key} {state.get(key)!r} != this buffer's {mine[key]!r}")
        try:
            saved_w = check_weights(state.get("weights"), self.n_tasks)
        except (ConfigError, TypeError, ValueError):
            saved_w = None
        if saved_w is None or not np.allclose(saved_w / saved_w.sum(), self.weights / self.weights.sum()):
            raise CheckpointError(f"saved buffer weights {state.get('weights')} != this buffer's "
                                  f"{self.weights.tolist()}")
        if set(data) != set(self.data):
            raise CheckpointError(f"saved buffer fields {sorted(data)} != {sorted(self.data)}")
        for k, arr in data.items():
            if arr.shape != self.data[k].shape:
                raise CheckpointError(f"buffer field {k!r}: shape {arr.shape} != {self.data[k].shape}")
            self.data[k][...] = arr
        self.sizes = np.asarray(state["sizes"], dtype=np.int64).copy()
        self.cursors = np.asarray(state["cursors"], dtype=np.int64).copy()
        self.seen = np.asarray(state["seen"], dtype=np.int64).copy()
        self.rng.bit_generator.state = state["rng"]

    def save(self, path: str | Path) -> None:
        """Write the buffer to folder ``path`` (``.npy`` per field + ``buffer.json``); no pickle."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for k, a in self.data.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{k}.", suffix=".npy", dir=path)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, np.asarray(a), allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path / f"{k}.npy")
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        from polydistill.utils import atomic_write_json

        atomic_write_json(path / "buffer.json", self.state())

    @classmethod
    def load(cls, path: str | Path, config: BufferConfig | None = None) -> DistillationBuffer:
        """Load a buffer written by :meth:`save`.

        Raises:
            CheckpointError: if the folder is missing, incomplete or of another format.
        """
        path = Path(path)
        meta_path = path / "buffer.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"no readable buffer at {str(path)!r}: {exc}") from None
        if meta.get("format") != _FORMAT or meta.get("format_version") not in (1, _FORMAT_VERSION):
            raise CheckpointError(
                f"{str(meta_path)!r}: expected {_FORMAT} v{_FORMAT_VERSION}, got "
                f"{meta.get('format')} v{meta.get('format_version')}"
            )
        try:
            fields = {k: FieldSpec(tuple(v["shape"]), v["dtype"]) for k, v in meta["fields"].items()}
            meta = _upgrade(meta)
            saved = BufferConfig(capacity=meta["capacity"], strategy=meta["strategy"])
            n_tasks, parts, weights = int(meta["n_tasks"]), list(meta["parts"]), meta["weights"]
            state = {k: meta[k] for k in ("sizes", "cursors", "seen", "rng")}
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{str(meta_path)!r} is incomplete: {exc!r}") from None
        config = config or saved
        if config.strategy != saved.strategy:
            raise CheckpointError(
                f"buffer was saved with strategy {saved.strategy!r}, asked to load as {config.strategy!r}"
            )
        try:
            buf = cls(fields, n_tasks, config, weights=weights)
        except ConfigError as exc:
            raise CheckpointError(f"{str(meta_path)!r}: {exc}") from None
        if buf.parts.tolist() != parts:
            raise CheckpointError(
                f"buffer capacity {config.capacity} does not match saved {meta['capacity']}"
            )
        for k in fields:
            try:
                arr = np.load(path / f"{k}.npy", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"buffer field {k!r} unreadable in {str(path)!r}: {exc}") from None
            if arr.shape != buf.data[k].shape:
                raise CheckpointError(f"buffer field {k!r}: shape {arr.shape} != {buf.data[k].shape}")
            buf.data[k][...] = arr
        buf.sizes = np.asarray(state["sizes"], dtype=np.int64)
        buf.cursors = np.asarray(state["cursors"], dtype=np.int64)
        buf.seen = np.asarray(state["seen"], dtype=np.int64)
        buf.rng.bit_generator.state = state["rng"]
        return buf


def _upgrade(meta: dict[str, Any]) -> dict[str, Any]:
    """A v1 buffer state (even split, one ``part``) in the v2 layout (``parts``, ``weights``)."""
    if "parts" in meta or "part" not in meta or "n_tasks" not in meta:
        return meta
    n = int(meta["n_tasks"])
    return {**meta, "parts": [int(meta["part"])] * n, "weights": [1.0] * n}
