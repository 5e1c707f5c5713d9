"""Committed benchmark cells stay found: a change that alters a cell's fingerprint without
changing what the cell computes would silently make every committed figure rerun (hours).

For each cell the current code would run, if the folder holds a cell of the same name, method
and seed, one of those must carry the current fingerprint. A field added to a config that
cells take marks itself ``metadata={"fingerprint": "if_set"}`` to keep old cells found.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from polydistill.bench import BenchOptions
from polydistill.bench.stats import _cell_path

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "benchmarks" / "cells"


class _Stop(Exception):
    pass


def _first_grid(name: str, monkeypatch: pytest.MonkeyPatch, **options: Any) -> list[Path]:
    """Paths of the cells of the benchmark's first grid (nothing is run)."""
    module = importlib.import_module(f"polydistill.bench.{name}")
    seen: list[Path] = []

    def capture(jobs: list[tuple[Any, ...]], *_: Any, **__: Any) -> Any:
        seen.extend(_cell_path(CELLS / name, j) for j in jobs)
        raise _Stop

    monkeypatch.setattr(module, "run_cells", capture)
    with pytest.raises(_Stop):
        module.run(BenchOptions(out="unused.json", cells_dir=str(CELLS / name), **options))
    return seen


@pytest.mark.parametrize(("name", "options"), [
    ("morphology", {"seeds": 2}),
    ("mamujoco", {"seeds": 1, "envs": ("HalfCheetah-2x3",)}),
    ("caml", {"seeds": 3}),
])
def test_committed_cells_keep_their_fingerprints(name: str, options: dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _first_grid(name, monkeypatch, **options)
    checked = 0
    for p in paths:
        committed = sorted(p.parent.glob(p.name.rsplit("-", 1)[0] + "-*.json"))
        if committed:
            assert p in committed, f"{p.name}: the committed cells of this name are {[c.name for c in committed]}"  # noqa: E501
            checked += 1
    assert checked > 0, f"no committed {name} cell matched the grid: {[p.name for p in paths]}"
