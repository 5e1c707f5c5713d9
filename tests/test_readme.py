"""The README's "Deploy a student" examples run as written (on a small student of our own)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from polydistill.envs import DEFAULT_SUITE, get_suite
from polydistill.setups.generalist import GeneralistConfig, GeneralistRun, TaskConfig, default_teachers_dir

ROOT = Path(__file__).resolve().parents[1]


def _section_code(title: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_deploy_a_student_examples_run(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    blocks = _section_code("Deploy a student")
    assert len(blocks) == 2, "expected the load/predict and the export examples"
    assert len(blocks[0].strip().splitlines()) <= 12
    # the default suite's hopper, as the quickstart student drives it (13 observations)
    spec = next(t for t in get_suite(DEFAULT_SUITE) if t.name == "hopper")
    task = TaskConfig("hopper", spec.env_id, str(default_teachers_dir() / spec.teacher_name), "hopper",
                      dict(spec.kwargs))
    cfg = GeneralistConfig(tasks=(task,), total_steps=400, rounds=1, n_envs=2)
    trainer = GeneralistRun(cfg, progress_bar=False)
    trainer.learn()
    trainer.save(tmp_path / "runs" / "quickstart" / "student")
    trainer.close()
    script = tmp_path / "deploy.py"
    script.write_text("\n".join(blocks))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "MUJOCO_GL": "egl"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "hopper" in r.stdout  # print(policy.embodiments)
    assert (tmp_path / "hopper.onnx").is_file() and (tmp_path / "hopper.pt").is_file()


def test_layout_table_matches_the_tree() -> None:
    import re

    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    listed = set(re.findall(r"^\| `polydistill/([a-z_]+)/` \|", layout, re.M))
    tree = {p.parent.name for p in (ROOT / "polydistill").glob("*/__init__.py")}
    assert listed == tree
    for top in ("envs", "agents", "scripts", "tests", "docs"):
        assert f"| `{top}/` |" in layout and (ROOT / top).is_dir()
