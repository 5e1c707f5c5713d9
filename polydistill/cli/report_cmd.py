"""``polydistill report RUN_OR_BENCHMARK_DIR``: one self-contained HTML page to read a result.

The page (:mod:`polydistill.evaluation.html`) opens from disk with no server and no network:
the per-task table with the ratio's 95% CI, learning curves, the bar plot, team returns and
accident rates (multi-agent runs), the GIFs in the folder (vision: scene beside camera), the
config, the library versions and the exact command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polydistill.errors import ConfigError

__all__ = ["add_report_parser"]

VIDEO_FRAMES = 60
"""Frames of the episode ``--video`` records (a short, cheap GIF)."""


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand to the ``polydistill`` parser's subcommands."""
    p = sub.add_parser(
        "report", help="one self-contained HTML page for a run folder or benchmark results (opens from disk)",
        description="Write report.html: per-task table with 95% CIs, learning curves, plots, config, "
                    "library versions and command. No server, no network: images are embedded.")
    p.add_argument("path", metavar="RUN_OR_BENCHMARK_DIR",
                   help="a run folder (distill, quickstart, evaluate --out, finetune), a benchmark results "
                        "JSON, or a folder of benchmark JSONs (one page, a section each)")
    p.add_argument("--out", default=None,
                   help="the page to write (default: RUN/report.html, the JSON's path with .html, or "
                        "FOLDER/report.html)")
    p.add_argument("--video", action="store_true",
                   help="vision runs: first record one short episode of the student (scene beside its "
                        f"camera, {VIDEO_FRAMES} frames) into RUN/videos/ when the folder has no GIF")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from polydistill.evaluation.html import record_camera_gif, write_html_report

    path = Path(args.path)
    if args.video:
        if not path.is_dir():
            raise ConfigError(f"--video: expected a vision run folder, got {str(path)!r}")
        gif = record_camera_gif(path, frames=VIDEO_FRAMES)
        print(f"video: {gif}" if gif is not None else f"video: {path} already holds a GIF; none recorded")
    page = write_html_report(path, args.out)
    print(f"report: {page}\nopen it in a browser: file://{page.resolve()}")
    return 0
