"""`benchmark perf` runs every section and writes the documented result format (tiny budgets).

Figures are not asserted: speed targets live in the benchmark's report, not in timed tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("onnxruntime")

from polydistill.bench.perf import PerfBudget, run_perf_benchmark  # noqa: E402

SCHEMA = {
    "collection": ("labeled_sps", "vector_sps", "raw_mj_sps"),
    "training": ("distiller_sps", "bare_torch_sps"),
    "inference": ("predict_us", "sb3_predict_us", "onnx_us"),
    "scale_out": ("teachers_sequential_s", "teachers_ray_s", "collect_sps_1_worker",
                  "collect_sps_2_workers"),
}
PAIRED = {  # every ratio: the median of interleaved paired repeats, with its min and max
    "collection": ("labeled_vs_vector", "labeled_bc_vs_vector", "labeled_vs_raw"),
    "training": ("distiller_vs_bare",),
    "inference": ("sb3_vs_predict",),
    "scale_out": ("teachers_sequential_vs_ray", "collect_2_vs_1_workers"),
}


def test_perf_benchmark_writes_every_documented_field(tmp_path: Path) -> None:
    import ray

    out = tmp_path / "perf.json"
    try:
        run_perf_benchmark(out, PerfBudget.quick())
    finally:
        ray.shutdown()
    data = json.loads(out.read_text())
    for section, keys in SCHEMA.items():
        for k in keys:
            v = data[section][k]
            assert isinstance(v, float) and math.isfinite(v) and v > 0, (section, k, v)
    for section, keys in PAIRED.items():
        for k in keys:
            r = data[section][k]
            assert r["min"] <= r["median"] <= r["max"] and r["pairs"] >= 1, (section, k, r)
    assert data["collection"]["labeled_vs_vector"]["pairs"] == PerfBudget.quick().repeats
    growth = data["growth"]
    assert [g["embodiments"] for g in growth if g["kind"] == "embodiments"] == [1, 2, 4, 8]
    mem = [g["buffer_mb"] for g in growth if g["kind"] == "buffer_size"]
    assert mem == sorted(mem) and mem[0] < mem[-1]  # memory follows the configured capacity
    table = (tmp_path / "perf.md").read_text()
    assert "bare torch loop" in table and "SB3" in table and "median of pairs (min-max)" in table
