"""The closing summary table of the long commands (polydistill.cli.summary)."""

from __future__ import annotations

import io
from pathlib import Path

from polydistill.cli.summary import Summary, print_summary, ratio_facts
from polydistill.evaluation.report import TaskRow


def _rows() -> list[TaskRow]:
    return [TaskRow("hopper", "train", "hopper", 3000.0, 2970.0, 0.99),
            TaskRow("swimmer", "train", "swimmer", 350.0, 315.0, 0.90, extra={"success": 0.5}),
            TaskRow("hopper-long", "heldout", "hopper", 3400.0, 1000.0, 1000.0 / 3400.0),
            TaskRow("nothing", "heldout", "hopper", None, 10.0, None)]


def test_ratio_facts_give_mean_and_worst_task_per_split() -> None:
    facts = dict(ratio_facts(_rows()))
    assert facts["train ratio (student/teacher)"] == "mean 0.945, min 0.900 (swimmer), 2 tasks"
    assert facts["heldout ratio (student/teacher)"] == "mean 0.294, min 0.294 (hopper-long), 1 task"
    assert facts["train success"] == "mean 0.500"
    assert "heldout success" not in facts  # no row of the split reports success


def test_the_summary_prints_facts_files_and_next_steps() -> None:
    buf = io.StringIO()
    summary = Summary("distill (generalist)", [("student", "3 tasks")],
                      [("report", Path("runs/x/report.html"))], ["polydistill evaluate --student runs/x"])
    print_summary(summary, width=100, file=buf)
    text = buf.getvalue()
    assert "distill (generalist)" in text
    for expected in ("3 tasks", "runs/x/report.html", "next", "polydistill evaluate --student runs/x"):
        assert expected in text
    # facts, files and next steps are three sections of one table, in that order
    assert text.index("3 tasks") < text.index("report.html") < text.index("polydistill evaluate")
