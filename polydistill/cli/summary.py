"""The short table every long command ends with: what ran, its figures, where the files went.

The markdown tables the commands print stay (they paste into issues and READMEs); this is the
part a person reads at the terminal. It is drawn with ``rich`` and degrades to plain box
characters when stdout is not a terminal (CI logs, pipes).

Example:
    >>> from polydistill.cli.summary import Summary, print_summary
    >>> s = Summary("distill", facts=[("student", "generalist, 3 tasks")], files=[("student", "runs/d")])
    >>> print_summary(s, width=60)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Summary", "print_summary", "ratio_facts"]


@dataclass
class Summary:
    """One command's closing summary."""

    title: str
    """What ran, e.g. ``"distill (generalist)"``."""
    facts: list[tuple[str, str]] = field(default_factory=list)
    """What was trained and the figures, in reading order."""
    files: list[tuple[str, str | Path]] = field(default_factory=list)
    """Where the outputs went (label, path)."""
    next_steps: list[str] = field(default_factory=list)
    """Commands worth running next (load, evaluate, report)."""


def ratio_facts(rows: Sequence[Any]) -> list[tuple[str, str]]:
    """Min and mean student/teacher ratio of the training and held-out rows of an evaluation.

    ``rows`` are :class:`~polydistill.evaluation.report.TaskRow` (anything with ``split``,
    ``ratio`` and ``extra``). Splits without a ratio are left out.
    """
    from polydistill.evaluation.report import format_figure as fmt

    out = []
    for split in dict.fromkeys(r.split for r in rows):
        vals = [r.ratio for r in rows if r.split == split and r.ratio is not None]
        if vals:
            worst = min((r for r in rows if r.split == split and r.ratio is not None), key=lambda r: r.ratio)
            out.append((f"{split} ratio (student/teacher)",
                        f"mean {fmt(sum(vals) / len(vals), 3)}, min {fmt(worst.ratio, 3)} ({worst.name}), "
                        f"{len(vals)} task{'s' if len(vals) != 1 else ''}"))
        succ = [r.extra["success"] for r in rows if r.split == split and r.extra.get("success") is not None]
        if succ:
            out.append((f"{split} success", f"mean {fmt(sum(succ) / len(succ), 3)}"))
    return out


def print_summary(summary: Summary, width: int | None = None, file: Any = None) -> None:
    """Print ``summary`` as one rich table.

    Args:
        summary: What to print.
        width: Console width (default: the terminal's, 140 when not a terminal: logs).
        file: Stream to print to (default: stdout).
    """
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, width=width or (None if _is_tty(file) else 140), highlight=False,
                      soft_wrap=False)
    table = Table(title=summary.title, title_style="bold", show_header=False, expand=False,
                  pad_edge=True)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for k, v in summary.facts:
        table.add_row(k, v)
    if summary.files:
        table.add_section()
        for k, v in summary.files:
            table.add_row(k, str(v))
    if summary.next_steps:
        table.add_section()
        for i, cmd in enumerate(summary.next_steps):
            table.add_row("next" if i == 0 else "", cmd)
    console.print(table)


def _is_tty(file: Any) -> bool:
    import sys

    stream = file if file is not None else sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())
