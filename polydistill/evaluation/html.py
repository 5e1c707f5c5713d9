"""One self-contained HTML page for a run folder or a benchmark's results.

``write_html_report`` reads what the commands leave behind and writes a page that opens from
disk: every image is a ``data:`` URI, the style sheet is inline, there is no script and no
external address (a Content-Security-Policy meta tag forbids loading anything from elsewhere).

What it reads:

- a **run folder** (``distill``, ``quickstart``, ``evaluate --out``, ``finetune``): ``report.json``
  (the per-task table), ``history.json`` (learning curves), ``report.png`` (the bar plot),
  ``run.json`` (the config), the student checkpoint's metadata (setup, config, versions),
  ``finetune.json`` (a fine-tuning run) and any GIF in the folder (vision runs: scene beside
  camera). The page is ``<folder>/report.html``.
- a **benchmark results JSON** (what ``polydistill benchmark`` writes: it carries ``command``
  and ``versions``), with its ``.md`` table and ``.png`` plot beside it. The page is the JSON's
  path with ``.html``.
- a **folder of benchmark JSONs** (such as ``benchmarks/``): one page, ``<folder>/report.html``,
  with one section per benchmark and a table of contents, so the whole set reads in one place.

Confidence intervals of the student / teacher ratio are never invented:

- run folders: from the standard deviations over evaluation episodes by the delta method,
  ``se(r)^2 = se(s)^2 / t^2 + s^2 se(t)^2 / t^4`` with ``se = std / sqrt(n - 1)`` (the stored
  std is over ``n`` episodes, ``ddof = 0``), ``r +- 1.96 se(r)`` (a normal approximation; the
  teacher and student episodes share seeds, and ignoring that positive correlation makes the
  interval wider, not narrower). Rows without both stds or with fewer than 2 episodes show ``-``.
- benchmarks: the stratified-bootstrap 95% CI of the mean ratio over seeds that the benchmark
  recorded (rliable, ``ratio_stats.mean_ci95``); where only per-seed ratios are recorded, a
  percentile bootstrap of their mean (2,000 resamples, seed 0); fewer than 2 seeds: ``-``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polydistill.deploy.checkpoint import read_student_metadata
from polydistill.errors import CheckpointError, ConfigError
from polydistill.utils import atomic_write_bytes, library_versions

__all__ = ["write_html_report", "write_html_report_safe", "ratio_ci_delta", "ratio_ci_bootstrap",
           "markdown_to_html", "RUN_FILES", "is_benchmark_json", "record_camera_gif", "sees_pixels"]

log = logging.getLogger(__name__)

RUN_FILES = ("report.json", "history.json", "run.json", "finetune.json", "student.safetensors")
"""Any of these makes a folder a run folder."""
MAX_GIF_BYTES = 8 << 20
"""GIFs larger than this are listed, not embedded."""
MAX_GIFS_BYTES = 24 << 20
"""At most this many bytes of GIFs are embedded in one page."""
MAX_RAW_JSON_CHARS = 400_000
"""The raw results JSON shown in a benchmark's collapsed block is cut after this many characters."""
Z95 = 1.959963984540054

_STUDENT_RETURN_KEYS = ("student_return", "finetuned_return")
"""Keys of a benchmark task entry that hold the student's return (in order of preference)."""

# ---------------------------------------------------------------------------------------- numbers


def ratio_ci_delta(student: float | None, student_std: float | None, teacher: float | None,
                   teacher_std: float | None, episodes: int | None) -> tuple[float, float] | None:
    """95% CI of ``student / teacher`` from per-episode stds (delta method), or None without data.

    Args:
        student: Mean student return over ``episodes``.
        student_std: Its standard deviation over the episodes (``ddof = 0``, as recorded).
        teacher: Mean teacher return over the same number of episodes.
        teacher_std: Its standard deviation (``ddof = 0``).
        episodes: Episodes behind each mean.

    Returns:
        ``(low, high)``, or None where a figure is missing, ``episodes < 2`` or the teacher's
        mean is not positive (the ratio itself is then undefined).
    """
    vals = (student, student_std, teacher, teacher_std)
    if episodes is None or episodes < 2 or any(v is None or not math.isfinite(v) for v in vals):
        return None
    assert student is not None and student_std is not None and teacher is not None and teacher_std is not None
    if teacher <= 0:
        return None
    se_s, se_t = student_std / math.sqrt(episodes - 1), teacher_std / math.sqrt(episodes - 1)
    r = student / teacher
    se_r = math.sqrt(se_s ** 2 / teacher ** 2 + student ** 2 * se_t ** 2 / teacher ** 4)
    return r - Z95 * se_r, r + Z95 * se_r


def ratio_ci_bootstrap(values: Sequence[float] | None, reps: int = 2000, seed: int = 0
                       ) -> tuple[float, float] | None:
    """Percentile-bootstrap 95% CI of the mean of per-seed ``values`` (None with fewer than 2)."""
    x = np.asarray([v for v in (values or []) if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(x) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (reps, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _num(x: Any) -> float | None:
    """``x`` as a finite float, else None."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _f(x: Any, digits: int = 1, sep: bool = True) -> str:
    v = _num(x)
    if v is None:
        return "-"
    return f"{v:,.{digits}f}" if sep else f"{v:.{digits}f}"


def _ci_text(ci: Sequence[float] | None, digits: int = 3) -> str:
    if ci is None or len(ci) != 2 or any(_num(v) is None for v in ci):
        return "-"
    return f"[{_f(ci[0], digits)}, {_f(ci[1], digits)}]"


def _ratio_class(r: float | None) -> str:
    if r is None:
        return ""
    return "r-good" if r >= 0.95 else "r-mid" if r >= 0.8 else "r-bad"


def _seconds(s: Any) -> str:
    v = _num(s)
    if v is None:
        return "-"
    return f"{v:.0f} s" if v < 120 else f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.1f} h"


# ---------------------------------------------------------------------------------------- html bits

_e = html.escape

CSS = """
:root{--fg:#1d2330;--muted:#5d6675;--line:#dfe3ea;--zebra:#f6f8fb;--accent:#2858a8;
--good:#dcf1de;--good-fg:#1c5e2a;--mid:#fbefcf;--mid-fg:#7a5300;--bad:#f9dcdc;--bad-fg:#8c1d1d}
*{box-sizing:border-box}
body{margin:0;background:#fff;color:var(--fg);font:15px/1.5 -apple-system,"Segoe UI",Roboto,
"Helvetica Neue","Noto Sans","DejaVu Sans",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 32px 56px}
h1{font-size:26px;line-height:1.25;margin:0 0 6px;font-weight:650;letter-spacing:-.01em}
h2{font-size:19px;margin:36px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line);font-weight:620}
h3{font-size:16px;margin:22px 0 8px;font-weight:620}
p{margin:6px 0 10px}
.summary{font-size:16px;margin:8px 0 4px}
.meta,.note,figcaption{color:var(--muted);font-size:13px}
.pill{display:inline-block;border:1px solid var(--line);border-radius:999px;padding:1px 10px;
margin:2px 6px 2px 0;font-size:13px;background:var(--zebra)}
nav ul{columns:2;margin:6px 0;padding-left:20px}
a{color:var(--accent);text-decoration:none}
table{border-collapse:collapse;margin:8px 0 6px;font-size:13.5px;font-variant-numeric:tabular-nums}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top;
white-space:nowrap}
th{font-weight:600;background:#eef1f6;border-bottom:2px solid #c9d0dc}
tbody tr:nth-child(even) td{background:var(--zebra)}
td.n,th.n{text-align:right}
td.r-good{background:var(--good)!important;color:var(--good-fg);font-weight:600}
td.r-mid{background:var(--mid)!important;color:var(--mid-fg);font-weight:600}
td.r-bad{background:var(--bad)!important;color:var(--bad-fg);font-weight:600}
.pm{color:var(--muted);font-size:12px}
.scroll{overflow-x:auto;max-width:100%}
.legend span{display:inline-block;padding:0 8px;margin-right:6px;border-radius:3px;font-size:12px}
figure{margin:10px 0 18px}
figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
.gifs{display:flex;flex-wrap:wrap;gap:18px}
.gifs figure{margin:0}
pre{background:#f3f5f8;border:1px solid var(--line);border-radius:4px;padding:10px 12px;overflow-x:auto;
font:12.5px/1.45 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;white-space:pre-wrap;
word-break:break-all}
code{font:12.5px ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;background:#f3f5f8;
padding:0 3px;border-radius:3px}
details{margin:8px 0;border:1px solid var(--line);border-radius:4px;padding:6px 12px}
details pre{border:none;padding:6px 0;background:none;max-height:600px;overflow:auto}
summary{cursor:pointer;font-weight:600}
section.bench{border-top:3px solid var(--line);margin-top:40px}
"""


def _page(title: str, body: str) -> str:
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n"
            "</main>\n</body>\n</html>\n")


def _img(data: bytes, alt: str, mime: str = "image/png", caption: str | None = None) -> str:
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure><img src=\"{uri}\" alt=\"{_e(alt)}\">{cap}</figure>"


def _table(head: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str | tuple[str, str]]]) -> str:
    """An HTML table; ``head`` is ``(label, numeric)``; a cell is escaped-ready HTML or ``(html, class)``."""
    out = ["<div class=\"scroll\"><table><thead><tr>"]
    out += [("<th class=\"n\">" if num else "<th>") + f"{_e(label)}</th>" for label, num in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for (_, num), cell in zip(head, row, strict=True):
            text, cls = cell if isinstance(cell, tuple) else (cell, "")
            classes = " ".join(c for c in (("n" if num else ""), cls) if c)
            out.append((f"<td class=\"{classes}\">" if classes else "<td>") + f"{text}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _pm(mean: Any, std: Any, digits: int = 1) -> str:
    if _num(mean) is None:
        return "-"
    spread = f" <span class=\"pm\">± {_f(std, digits)}</span>" if _num(std) is not None else ""
    return _f(mean, digits) + spread


def _legend() -> str:
    return ("<p class=\"legend note\">ratio = student / teacher return: "
            "<span style=\"background:var(--good)\">&ge; 0.95</span>"
            "<span style=\"background:var(--mid)\">0.80 - 0.95</span>"
            "<span style=\"background:var(--bad)\">&lt; 0.80</span></p>")


def _details(summary: str, obj: Any, limit: int | None = None) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, indent=2, sort_keys=False, default=str)
    cut = ""
    if limit is not None and len(text) > limit:
        cut = f"\n... ({len(text) - limit:,} more characters: see the file itself)"
        text = text[:limit]
    return f"<details><summary>{_e(summary)}</summary><pre>{_e(text + cut)}</pre></details>"


def _versions_table(versions: dict[str, Any] | None, note: str) -> str:
    if not versions:
        return ""
    rows = [(_e(str(k)), f"<code>{_e(str(v))}</code>") for k, v in versions.items()]
    return f"<h3>Library versions</h3><p class=\"note\">{_e(note)}</p>" + _table(
        [("library", False), ("version", False)], rows)


def _inline_md(text: str) -> str:
    """Escape ``text``, then render ``**bold**`` and ```code``` (the benchmarks' markdown uses these)."""
    import re

    out = _e(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def markdown_to_html(md: str) -> str:
    """The subset of markdown the benchmark tables use: pipe tables, paragraphs, lists, fences, headings.

    Every piece of text is HTML-escaped; numeric columns (``---:``) are right-aligned.
    """
    blocks: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s:
            i += 1
        elif s.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            blocks.append(f"<pre>{_e(chr(10).join(lines[i + 1:j]))}</pre>")
            i = j + 1
        elif s.startswith("|"):
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            blocks.append(_md_table([ln.strip() for ln in lines[i:j]]))
            i = j
        elif s.startswith("#"):
            level = min(4, 2 + len(s) - len(s.lstrip("#")))
            blocks.append(f"<h{level}>{_inline_md(s.lstrip('#').strip())}</h{level}>")
            i += 1
        elif s.startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].strip().startswith(("- ", "* ")):
                items.append(f"<li>{_inline_md(lines[i].strip()[2:])}</li>")
                i += 1
            blocks.append(f"<ul>{''.join(items)}</ul>")
        else:
            j = i
            while j < len(lines) and lines[j].strip() and not lines[j].strip().startswith(("|", "```", "#")):
                j += 1
            blocks.append(f"<p>{_inline_md(' '.join(ln.strip() for ln in lines[i:j]))}</p>")
            i = j
    return "\n".join(blocks)


def _md_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _md_table(lines: list[str]) -> str:
    head = _md_cells(lines[0])
    body = lines[1:]
    numeric = [False] * len(head)
    if body and set(body[0].replace("|", "").replace(" ", "")) <= set("-:"):
        align = _md_cells(body[0])
        numeric = [a.endswith(":") and not a.startswith(":") for a in align] + [False] * len(head)
        body = body[1:]
    rows = []
    for ln in body:
        cells = (_md_cells(ln) + [""] * len(head))[:len(head)]
        rows.append([_inline_md(c) for c in cells])
    return _table([(h.replace("**", "").replace("`", ""), numeric[k]) for k, h in enumerate(head)], rows)


# ---------------------------------------------------------------------------------------- figures


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def _figure(nrows: int, ncols: int, w: float, h: float) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.25, lw=0.6)
        ax.tick_params(labelsize=8)
    return fig, axes


def _steps_axis(ax: Any) -> None:
    from matplotlib.ticker import EngFormatter

    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("env steps", fontsize=8)


_SECONDARY = {"success": ("#2a9d49", "success rate"), "accident_rate": ("#c0392b", "accident rate")}


def _curves_png(history: list[dict[str, Any]], teacher: dict[str, float]) -> bytes | None:
    """Small multiples: per task its evaluation figures vs env steps, then teacher agreement and loss."""
    tasks: list[str] = []
    metrics: dict[str, list[str]] = {}
    for h in history:
        for k in h:
            parts = k.split("/", 2)
            if k.startswith("rollout/ep_return/") and k[18:] not in tasks:
                tasks.append(k[18:])
                metrics.setdefault(k[18:], [])
            if len(parts) == 3 and parts[0] == "eval":
                if parts[2] not in tasks:
                    tasks.append(parts[2])
                metrics.setdefault(parts[2], [])
                if parts[1] not in metrics[parts[2]]:
                    metrics[parts[2]].append(parts[1])
    has_agree = any(_num(h.get("distill/teacher_agreement")) is not None for h in history)
    has_loss = any(_num(h.get("distill/loss")) is not None for h in history)
    panels = len(tasks) + int(has_agree or has_loss)
    if not panels:
        return None
    ncols = min(4, panels)
    nrows = math.ceil(panels / ncols)
    fig, axes = _figure(nrows, ncols, 3.1 * ncols + 0.4, 2.45 * nrows + 0.2)

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(h.get("env_steps"), h.get(key)) for h in history]
        pts = [(float(x), float(y)) for x, y in pts if _num(x) is not None and _num(y) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    legend: dict[str, Any] = {}
    for i, task in enumerate(tasks):
        ax = axes.flat[i]
        x, y = series(f"rollout/ep_return/{task}")
        if x:
            ax.plot(x, y, ".-", color="#9bb3d9", lw=1.0, ms=3, label="collection episodes")
        x, y = series(f"eval/return/{task}")
        if x:
            ax.plot(x, y, "o-", color="#2858a8", lw=1.8, ms=4, label="student (evaluation)")
        if _num(teacher.get(task)) is not None:
            ax.axhline(teacher[task], color="#777777", ls="--", lw=1.0, label="teacher")
        ax.set_title(task, fontsize=9.5, fontweight="bold")
        ax.set_ylabel("return", fontsize=8)
        _steps_axis(ax)
        other = [m for m in metrics[task] if m != "return"]
        if other:
            ax2 = ax.twinx()
            ax2.spines[["top"]].set_visible(False)
            for m in other:
                color, label = _SECONDARY.get(m, ("#8e44ad", m.replace("_", " ")))
                x2, y2 = series(f"eval/{m}/{task}")
                ax2.plot(x2, y2, "s:", color=color, lw=1.2, ms=3, label=label)
            ax2.set_ylim(-0.03, 1.05)
            ax2.tick_params(labelsize=8)
            ax2.set_ylabel(" / ".join(_SECONDARY.get(m, ("", m))[1] for m in other), fontsize=8)
        for a in (ax, *([ax2] if other else [])):
            for handle, label in zip(*a.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
    if has_agree or has_loss:
        ax = axes.flat[len(tasks)]
        ax.set_title("distillation", fontsize=9.5, fontweight="bold")
        _steps_axis(ax)
        handles = []
        if has_agree:
            x, y = series("distill/teacher_agreement")
            handles += ax.plot(x, y, "o-", color="#2a9d49", lw=1.6, ms=3.5, label="teacher agreement")
            ax.set_ylim(-0.03, 1.05)
            ax.set_ylabel("teacher agreement", fontsize=8)
        if has_loss:
            x, y = series("distill/loss")
            ax2 = ax.twinx() if has_agree else ax
            handles += ax2.plot(x, y, "^-", color="#d35400", lw=1.2, ms=3, label="loss")
            if y and min(y) > 0 and max(y) > 5 * min(y):  # log only where the loss spans a range
                ax2.set_yscale("log")
            ax2.set_ylabel("loss", fontsize=8)
            ax2.tick_params(labelsize=8)
        for handle in handles:
            legend.setdefault(handle.get_label(), handle)
    for ax in list(axes.flat)[panels:]:
        ax.set_visible(False)
    fig.legend(list(legend.values()), list(legend), loc="outside upper center",
               ncols=min(len(legend), 2 * ncols, 6), fontsize=8, frameon=False)
    return _png(fig)


def _bars_png(names: list[str], teacher: list[float | None], student: list[float | None],
              err: list[tuple[float, float] | None], ylabel: str, title: str) -> bytes:
    """Teacher vs student bars, the student's with its interval where known."""
    fig, axes = _figure(1, 1, max(6.0, 0.75 * len(names) + 1.5), 3.6)
    ax = axes[0, 0]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [t if t is not None else 0.0 for t in teacher], 0.4, color="#9aa3ae", label="teacher")
    s = np.array([v if v is not None else 0.0 for v in student])
    lo = [s[i] - e[0] if e else 0.0 for i, e in enumerate(err)]
    hi = [e[1] - s[i] if e else 0.0 for i, e in enumerate(err)]
    ax.bar(x + 0.2, s, 0.4, color="#2858a8", label="student")
    has = [i for i, e in enumerate(err) if e]
    if has:
        ax.errorbar(x[has] + 0.2, s[has], yerr=[[max(lo[i], 0) for i in has], [max(hi[i], 0) for i in has]],
                    fmt="none", ecolor="#1d2330", elinewidth=1, capsize=3)
    ax.set_xticks(x, names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center",
                  fontsize=8)
    vals = [abs(v) for v in [*teacher, *student] if v is not None]
    if vals and max(vals) > 50 * max(min(vals), 1e-9):
        ax.set_yscale("symlog", linthresh=10.0)
        ylabel += " (symlog)"
    ax.set_ylabel(ylabel, fontsize=8.5)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False, ncols=2)
    return _png(fig)


def _team_png(envs: list[dict[str, Any]]) -> bytes | None:
    """Per env: team return (with the recorded 95% CI over seeds) and accident rate of each method."""
    envs = [e for e in envs if isinstance(e.get("methods"), dict) and e["methods"]]
    if not envs:
        return None
    acc = any(_num(m.get("accident_rate")) is not None for e in envs for m in e["methods"].values())
    fig, axes = _figure(len(envs), 1 + int(acc), max(4.6, 0.9 * max(len(e["methods"]) for e in envs))
                        * (1 + int(acc)), 3.0 * len(envs))
    colors = ["#9aa3ae", "#2858a8", "#5b8bd6", "#d98c2b", "#b04a4a", "#6c5a9b", "#2a9d49"]
    for j, env in enumerate(envs):
        names = list(env["methods"])
        ms = [env["methods"][n] for n in names]
        panels = (("return", "return_stats", "team return"),
                  ("accident_rate", "accident_rate_stats", "accident rate"))
        for col, (key, stats, label) in enumerate(panels):
            if col == 1 and not acc:
                break
            ax = axes[j, col]
            vals = [_num(m.get(key)) or 0.0 for m in ms]
            lo, hi = [], []
            for m, v in zip(ms, vals, strict=True):
                ci = (m.get(stats) or {}).get("mean_ci95")
                ok = isinstance(ci, list) and len(ci) == 2 and all(_num(c) is not None for c in ci)
                lo.append(max(v - ci[0], 0.0) if ok else 0.0)
                hi.append(max(ci[1] - v, 0.0) if ok else 0.0)
            ax.bar(range(len(names)), vals, color=[colors[k % len(colors)] for k in range(len(names))])
            has = [k for k in range(len(names)) if lo[k] or hi[k]]
            if has:
                ax.errorbar(has, [vals[k] for k in has], yerr=[[lo[k] for k in has], [hi[k] for k in has]],
                            fmt="none", ecolor="#1d2330", elinewidth=1, capsize=3)
            ax.set_xticks(range(len(names)), [n.replace("_", "\n", 1) for n in names], fontsize=7.5)
            ax.set_ylabel(label, fontsize=8.5)
            ax.set_title(f"{env.get('name', '')}: {label}", fontsize=10, fontweight="bold")
            if col == 1:
                ax.set_ylim(0, max(0.05, max(v + h for v, h in zip(vals, hi, strict=True)) * 1.15))
    return _png(fig)


# ---------------------------------------------------------------------------------------- inputs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{str(path)!r}: expected a readable JSON file, got {exc}") from None


def is_benchmark_json(data: Any) -> bool:
    """Whether ``data`` is a benchmark's results (``finish_report`` stamps ``command`` and ``versions``)."""
    return (isinstance(data, dict) and "command" in data and "versions" in data
            and not ("title" in data and "summary" in data)  # a run's report.json
            and data.get("stage") != "finetune")  # a fine-tuning run's finetune.json


def _student_metadata(file: Path) -> dict[str, Any] | None:
    """A student checkpoint's metadata, read from the safetensors header alone (no weights)."""
    try:
        return read_student_metadata(file)
    except CheckpointError:
        return None


def _classify(src: Path) -> tuple[str, Path]:
    """``("run", folder)``, ``("benchmark", json)`` or ``("benchmarks", folder)``; ConfigError otherwise."""
    expected = ("expected a run folder (one of " + ", ".join(RUN_FILES) + " inside), a benchmark results "
                "JSON (with 'command' and 'versions') or a folder of them")
    if not src.exists():
        raise ConfigError(f"{expected}; got {str(src)!r}, which does not exist")
    if src.is_dir():
        if _is_run_folder(src):
            return "run", src
        if any(is_benchmark_json(_maybe_json(p)) for p in sorted(src.glob("*.json"))):
            return "benchmarks", src
        listing = sorted(p.name for p in src.iterdir())[:12]
        raise ConfigError(f"{expected}; got the folder {str(src)!r} holding {listing or 'nothing'}")
    if src.name in RUN_FILES and src.name != "finetune.json":
        return "run", src.parent
    if src.suffix == ".json":
        data = _read_json(src)
        if is_benchmark_json(data):
            return "benchmark", src
        if src.name == "finetune.json" and isinstance(data, dict) and data.get("stage") == "finetune":
            return "run", src.parent
        keys = sorted(data)[:12] if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{expected}; got {str(src)!r}, a JSON file without them (keys: {keys})")
    raise ConfigError(f"{expected}; got the file {str(src)!r}")


def _is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a run's files (a ``finetune.json`` only if a run's, not a benchmark's)."""
    if any((folder / n).exists() for n in RUN_FILES if n != "finetune.json"):
        return True
    ft = _maybe_json(folder / "finetune.json") if (folder / "finetune.json").is_file() else None
    return isinstance(ft, dict) and ft.get("stage") == "finetune"


def _maybe_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------- run pages


def _run_rows_table(rows: list[dict[str, Any]]) -> str:
    extra = list(dict.fromkeys(k for r in rows for k in (r.get("extra") or {})))
    head = [("task", False), ("split", False), ("token", False), ("teacher return", True),
            ("student return", True), ("ratio", True), ("ratio 95% CI", True)]
    head += [(k.replace("_", " "), True) for k in extra]
    body = []
    for r in rows:
        ratio = _num(r.get("ratio"))
        ci = ratio_ci_delta(r.get("student_return"), r.get("student_std"), r.get("teacher_return"),
                            r.get("teacher_std"), r.get("episodes")) if ratio is not None else None
        body.append([_e(str(r.get("name", ""))), _e(str(r.get("split", ""))),
                     _e(str(r.get("embodiment", ""))),
                     _pm(r.get("teacher_return"), r.get("teacher_std")),
                     _pm(r.get("student_return"), r.get("student_std")),
                     (_f(ratio, 3), _ratio_class(ratio)), _ci_text(ci),
                     *[_f((r.get("extra") or {}).get(k), 3) for k in extra]])
    return _table(head, body)


def _team_rows_section(rows: list[dict[str, Any]]) -> str:
    """Rows that carry accident rates (team setups): returns and accident rates side by side."""
    team = [r for r in rows if (r.get("extra") or {}).get("accident_rate") is not None]
    if not team:
        return ""
    body = [[_e(str(r.get("name", ""))), _f(r.get("teacher_return"), 2), _f(r.get("student_return"), 2),
             (_f(r.get("ratio"), 3), _ratio_class(_num(r.get("ratio")))),
             _f(r["extra"].get("teacher_accident_rate"), 3), _f(r["extra"].get("accident_rate"), 3)]
            for r in team]
    envs = [{"name": r.get("name"), "methods": {
        "teacher": {"return": r.get("teacher_return"),
                    "accident_rate": r["extra"].get("teacher_accident_rate")},
        "student": {"return": r.get("student_return"), "accident_rate": r["extra"].get("accident_rate")}}}
        for r in team]
    png = _team_png(envs)
    return ("<h2 id=\"team\">Team returns and accident rates</h2>"
            "<p class=\"note\">Mean team return per episode and the fraction of episodes with an accident, "
            "the student team and the teacher on the same seeds.</p>"
            + _table([("env", False), ("teacher return", True), ("student return", True), ("ratio", True),
                      ("teacher accident rate", True), ("student accident rate", True)], body)
            + (_img(png, "team returns and accident rates") if png else ""))


def sees_pixels(meta: dict[str, Any] | None) -> bool:
    """Whether a student's metadata says it acts on a camera (its groups include ``pixels``)."""
    groups = (meta or {}).get("student_groups")
    return isinstance(groups, list) and "pixels" in groups


def record_camera_gif(folder: str | Path, frames: int = 60, seed: int = 100_000) -> Path | None:
    """Record one episode of the camera student in ``folder`` (scene beside camera) into ``folder/videos``.

    Args:
        folder: A run folder whose student acts on pixels (a vision run).
        frames: Frames of the episode (at most; it stops when the episode ends).
        seed: Seed of the episode.

    Returns:
        The GIF written, or None when the folder already holds a GIF (nothing is recorded).

    Raises:
        ConfigError: if the folder has no student, or its student sees no camera.
    """
    from polydistill.deploy import load_student
    from polydistill.deploy.checkpoint import resolve_student_path

    folder = Path(folder)
    if any(folder.rglob("*.gif")):
        return None
    file = resolve_student_path(folder)
    if not file.is_file():
        raise ConfigError(f"expected a vision run folder with a student at {str(file)!r}; found none")
    student = load_student(file)
    if not sees_pixels(student.metadata):
        raise ConfigError(f"a scene-and-camera GIF needs a student that acts on pixels; {str(file)!r} sees "
                          f"{student.metadata.get('student_groups') or 'no camera'} (record its episodes "
                          "with polydistill evaluate --video)")
    from polydistill.evaluation.video import record_vision_gif

    name = str(student.metadata["env_id"]).split("/")[-1]
    return record_vision_gif(student, folder / "videos" / f"{name}.gif", seed=seed, max_frames=frames)


def _gifs_section(folder: Path, vision: bool) -> str:
    gifs = sorted(p for p in folder.rglob("*.gif") if len(p.relative_to(folder).parts) <= 3)
    title = "Episodes: scene and camera" if vision else "Episodes"
    if not gifs:
        if not vision:
            return ""
        q, videos = shlex.quote(str(folder)), shlex.quote(str(folder / "videos"))
        return (f"<h2 id=\"episodes\">{title}</h2><p class=\"note\">No GIF was recorded in this folder. "
                f"Record one episode of the student (scene left, its camera right) with "
                f"<code>polydistill report {_e(q)} --video</code> or "
                f"<code>polydistill evaluate --student {_e(q)} --video {_e(videos)}"
                "</code>.</p>")
    figs, skipped, total = [], [], 0
    cap = "left: the scene; right: the student's camera view (newest frame)" if vision else ""
    for g in gifs:
        size = g.stat().st_size
        data = g.read_bytes() if size <= MAX_GIF_BYTES and total + size <= MAX_GIFS_BYTES else None
        if data is None or data[:6] not in (b"GIF87a", b"GIF89a"):
            skipped.append(str(g.relative_to(folder)))
            continue
        total += size
        rel = str(g.relative_to(folder))
        figs.append(_img(data, f"episode {rel}", "image/gif", _e(rel) + (f" ({_e(cap)})" if cap else "")))
    note = (f"<p class=\"note\">Not embedded (too large or not a GIF): {_e(', '.join(skipped))}</p>"
            if skipped else "")
    return f"<h2 id=\"episodes\">{title}</h2><div class=\"gifs\">{''.join(figs)}</div>{note}"


def _finetune_section(ft: dict[str, Any]) -> str:
    before, after = ft.get("returns_before") or {}, ft.get("returns_after") or {}
    sb, sa = ft.get("success_before") or {}, ft.get("success_after") or {}
    head = [("task", False), ("return before", True), ("return after", True), ("after / before", True)]
    if sb:
        head += [("success before", True), ("success after", True)]
    body = []
    for name, b in before.items():
        a = after.get(name)
        rel = a / b if _num(a) is not None and _num(b) is not None and b > 0 else None
        body.append([_e(str(name)), _f(b), _f(a), _f(rel, 3)]
                    + ([_f(sb.get(name), 2), _f(sa.get(name), 2)] if sb else []))
    out = ["<h2 id=\"finetune\">Fine-tuning</h2>",
           f"<p class=\"summary\">{_e(str(ft.get('steps', '-')))} PPO steps in "
           f"{_seconds(ft.get('seconds'))}; "
           f"kept the student of step {_e(str(ft.get('kept_step', '-')))}.</p>", _table(head, body)]
    curve = [c for c in ft.get("curve") or [] if isinstance(c, dict)]
    names = list(before)
    if curve and names:
        ncols = min(4, len(names))
        nrows = math.ceil(len(names) / ncols)
        fig, axes = _figure(nrows, ncols, 3.1 * ncols + 0.4, 2.4 * nrows + 0.2)
        for i, name in enumerate(names):
            ax = axes.flat[i]
            pts = [(c.get("step"), (c.get("returns") or {}).get(name)) for c in curve]
            pts = [(x, y) for x, y in pts if _num(x) is not None and _num(y) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="#2858a8", lw=1.5, ms=3)
            if _num(ft.get("kept_step")) is not None:
                ax.axvline(ft["kept_step"], color="#2a9d49", ls=":", lw=1.2)
            ax.set_title(str(name), fontsize=9.5, fontweight="bold")
            ax.set_ylabel("return", fontsize=8)
            from matplotlib.ticker import EngFormatter

            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.set_xlabel("PPO steps", fontsize=8)
        for ax in list(axes.flat)[len(names):]:
            ax.set_visible(False)
        out.append(_img(_png(fig), "fine-tuning learning curves",
                        caption="Deterministic evaluation return during fine-tuning; dotted: the kept step."))
    return "".join(out)


def _render_run(folder: Path) -> tuple[str, str]:
    report = _maybe_json(folder / "report.json") if (folder / "report.json").is_file() else None
    history = _maybe_json(folder / "history.json") if (folder / "history.json").is_file() else None
    run = _maybe_json(folder / "run.json") if (folder / "run.json").is_file() else None
    ft = _maybe_json(folder / "finetune.json") if (folder / "finetune.json").is_file() else None
    report = report if isinstance(report, dict) else None
    run = run if isinstance(run, dict) else None
    ft = ft if isinstance(ft, dict) and ft.get("stage") == "finetune" else None
    history = history if isinstance(history, list) else None
    from polydistill.deploy.checkpoint import resolve_student_path

    # where each command leaves its student: run.json names it (distill), quickstart writes
    # folder/student, evaluate --out names it in report.json (relative to where it ran)
    named = [Path(str(d["student"])) for d in (run, report) if d and isinstance(d.get("student"), str)]
    cands = [folder / n for n in named] + [folder, folder / "student"] + [n for n in named if n.is_absolute()]
    student_file = next((f for f in map(resolve_student_path, cands) if f.is_file()), None)
    meta = _student_metadata(student_file) if student_file else None
    setup = (run or {}).get("setup") or (meta or {}).get("setup") or ("finetune" if ft else None)
    rows = [r for r in (report or {}).get("tasks", []) if isinstance(r, dict)]
    vision = sees_pixels(meta)

    title = (report or {}).get("title") or (f"fine-tuning run {folder.name}" if ft else f"run {folder.name}")
    body = [f"<h1>{_e(str(title))}</h1>"]
    summary = (report or {}).get("summary") or {}
    parts = []
    if _num(summary.get("min_train_ratio")) is not None:
        parts.append(f"training tasks: min ratio <strong>{_f(summary['min_train_ratio'], 3)}</strong>, "
                     f"mean ratio <strong>{_f(summary.get('mean_train_ratio'), 3)}</strong>")
    if _num(summary.get("mean_train_success")) is not None:
        parts.append(f"mean success <strong>{_f(summary['mean_train_success'], 3)}</strong>")
    if rows:
        held = sum(r.get("split") != "train" for r in rows)
        plural = "s" if len(rows) != 1 else ""
        parts.append(f"{len(rows)} task{plural}" + (f" ({held} held-out)" if held else ""))
    if ft and isinstance(ft.get("returns_before"), dict):
        parts.append(f"fine-tuned with PPO on {len(ft['returns_before'])} task(s) for "
                     f"{_f(ft.get('steps'), 0)} steps")
    body.append(f"<p class=\"summary\">{'; '.join(parts) or 'no per-task evaluation in this folder'}.</p>")
    pills = [("setup", setup),
             ("env steps", _f((report or {}).get("env_steps") or (meta or {}).get("env_steps"), 0)),
             ("updates", _f((report or {}).get("updates") or (meta or {}).get("updates"), 0)),
             ("seed", (report or {}).get("seed", ((run or {}).get("config") or {}).get("seed"))),
             ("distillation", _seconds((report or {}).get("distill_s"))),
             ("evaluation", _seconds((report or {}).get("evaluate_s")))]
    body.append("<p>" + "".join(f"<span class=\"pill\">{_e(k)}: {_e(str(v))}</span>" for k, v in pills
                                if v not in (None, "-")) + "</p>")
    body.append(f"<p class=\"meta\">Run folder: <code>{_e(str(folder))}</code></p>")

    if rows:
        n_eps = sorted({r.get("episodes") for r in rows if isinstance(r.get("episodes"), int)})
        ci_note = ("95% CI of the ratio: delta method from the standard deviations over "
                   f"{'/'.join(map(str, n_eps))} evaluation episodes (normal approximation); '-' where "
                   "the episodes' spread or count was not recorded." if n_eps else
                   "No 95% CI ('-'): the evaluation recorded no per-episode spread and count for these "
                   "rows, and none is made up.")
        body += ["<h2 id=\"tasks\">Per-task results</h2>",
                 "<p class=\"note\">Mean episode return ± standard deviation over the evaluation "
                 "episodes; teacher and student play the same seeds. Held-out tasks are measured "
                 "against a specialist trained on that variant alone.</p>",
                 _run_rows_table(rows), _legend(), f"<p class=\"note\">{_e(ci_note)}</p>"]
        body.append(_team_rows_section(rows))
    if history or not ft:  # a fine-tuning run's curves are in its own section
        body.append("<h2 id=\"curves\">Learning curves</h2>")
    if history:
        teacher = {str(r.get("name")): r.get("teacher_return") for r in rows
                   if _num(r.get("teacher_return")) is not None}
        png = _curves_png(history, teacher)
        body.append(_img(png, "learning curves", caption=(
            "Per task: the student's evaluation return during distillation (solid; success or accident "
            "rate dotted, right axis) and the teacher's return from the final evaluation (dashed). "
            "Last panel: agreement with the teacher's labels and the distillation loss on the "
            "training batches.")) if png else
            "<p class=\"note\">history.json holds no evaluation or distillation figures.</p>")
    elif not ft:
        body.append("<p class=\"note\">No history.json in this folder (an <code>evaluate --out</code> "
                    "folder has none).</p>")
    if rows:
        body.append("<h2 id=\"bars\">Teacher vs student</h2>")
        bar = folder / "report.png"
        if bar.is_file() and bar.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n":
            body.append(_img(bar.read_bytes(), "teacher vs student returns (report.png)"))
        else:
            from polydistill.evaluation.report import TaskRow, plot_png

            fields = set(TaskRow.__dataclass_fields__)
            trs = [TaskRow(**{k: v for k, v in r.items() if k in fields}) for r in rows]
            body.append(_img(plot_png(trs, str(title)), "teacher vs student returns"))
    if ft:
        body.append(_finetune_section(ft))
    body.append(_gifs_section(folder, vision))

    body.append("<h2 id=\"provenance\">Command, versions and config</h2>")
    command = (report or {}).get("command") or (ft or {}).get("command")
    body.append("<h3>Command</h3>" + (f"<pre>{_e(str(command))}</pre>" if command else
                                      "<p class=\"note\">The run did not record its command.</p>"))
    body.append(f"<p class=\"note\">This page: <code>polydistill report {_e(shlex.quote(str(folder)))}"
                "</code></p>")
    versions, vnote = None, ""
    for src, v in (("the student checkpoint", (meta or {}).get("versions")),
                   ("report.json", (report or {}).get("versions")),
                   ("finetune.json", (ft or {}).get("versions"))):
        if isinstance(v, dict) and v:
            versions, vnote = v, f"Recorded in {src}."
            break
    if versions is None:
        versions = library_versions()
        vnote = "The run recorded none: these are the versions writing this page."
    body.append(_versions_table(versions, vnote))
    config = (run or {}).get("config")
    if config is not None:
        body.append(_details("Run config (run.json)", config))
    elif meta and meta.get("config") is not None:
        body.append(_details("Distillation config (student checkpoint metadata)", meta["config"]))
    if ft and ft.get("config") is not None:
        body.append(_details("Fine-tuning config (finetune.json)", ft["config"]))
    if meta:
        body.append(_details(f"Student checkpoint metadata ({student_file})",
                             {k: v for k, v in meta.items() if k not in ("config", "versions")}, 200_000))
    extra = {k: v for k, v in (report or {}).items() if k not in ("title", "summary", "tasks", "versions")}
    if extra:
        body.append(_details("Other figures recorded in report.json", extra))
    return str(title), "\n".join(b for b in body if b)


# ---------------------------------------------------------------------------------------- benchmarks


def _bench_tasks(data: dict[str, Any]) -> tuple[str, bytes | None] | None:
    """The per-task table of a benchmark whose ``tasks`` entries hold teacher and student returns."""
    tasks = [t for t in data.get("tasks") or [] if isinstance(t, dict) and "name" in t
             and _num(t.get("teacher_return")) is not None
             and any(_num(t.get(k)) is not None for k in _STUDENT_RETURN_KEYS)]
    if not tasks:
        return None
    skey = next(k for k in _STUDENT_RETURN_KEYS if any(_num(t.get(k)) is not None for t in tasks))
    prefix = skey.removesuffix("_return")  # "student" / "finetuned"
    rkey = "ratio" if prefix == "student" else f"{prefix}_ratio"
    body, names, teach, stud, errs = [], [], [], [], []
    sources = set()
    for t in tasks:
        ratio = _num(t.get(rkey))
        per_seed = t.get("ratios" if prefix == "student" else f"{prefix}_ratios")
        stats = t.get("ratio_stats") if prefix == "student" else None
        ci: Any = (stats or {}).get("mean_ci95")
        if isinstance(ci, list) and len(ci) == 2:
            sources.add("rliable stratified bootstrap over seeds, as recorded")
        else:
            ci = ratio_ci_bootstrap(per_seed if isinstance(per_seed, list) else None)
            if ci is not None:
                sources.add("percentile bootstrap over the per-seed ratios")
        seeds = len(per_seed) if isinstance(per_seed, list) else (stats or {}).get("runs")
        body.append([_e(str(t["name"])), _e(str(t.get("split", "train"))), _f(t.get("teacher_return")),
                     _pm(t.get(skey), t.get(f"{skey}_std")),
                     (_pm(ratio, t.get(f"{rkey}_std"), 3), _ratio_class(ratio)),
                     _ci_text(ci), _e(str(seeds if seeds is not None else "-"))])
        names.append(str(t["name"]))
        teach.append(_num(t.get("teacher_return")))
        stud.append(_num(t.get(skey)))
        tr = _num(t.get("teacher_return"))
        errs.append((ci[0] * tr, ci[1] * tr) if ci is not None and tr is not None and tr > 0 else None)
    label = "student" if prefix == "student" else f"{prefix} student"
    html_ = ("<h3>Per-task results</h3>"
             f"<p class=\"note\">Teacher and {_e(label)} mean return (± std over seeds) and their ratio "
             "(mean ± std over seeds). 95% CI of the mean ratio: "
             f"{_e('; '.join(sorted(sources)) or 'none recorded (fewer than 2 seeds)')}.</p>"
             + _table([("task", False), ("split", False), ("teacher return", True), (f"{label} return", True),
                       ("ratio", True), ("ratio 95% CI", True), ("seeds", True)], body) + _legend())
    png = _bars_png(names, teach, stud, errs, "mean episode return",
                    f"teacher vs {label} (error bars: 95% CI of the ratio, in return units)")
    return html_, png


def _bench_methods(data: dict[str, Any]) -> tuple[str, bytes | None] | None:
    """Per env (or scenario) and method: team return with its CI over seeds, and accident rates."""
    groups = [g for key in ("envs", "scenarios") for g in data.get(key) or []
              if isinstance(g, dict) and isinstance(g.get("methods"), dict)]
    if not groups:
        return None
    acc = any(_num(m.get("accident_rate")) is not None for g in groups for m in g["methods"].values()
              if isinstance(m, dict))
    head = [("env", False), ("method", False), ("team return", True), ("95% CI", True), ("ratio", True)]
    if acc:
        head += [("accident rate", True), ("95% CI", True)]
    body = []
    for g in groups:
        teacher = _num((g["methods"].get("teacher") or {}).get("return")) or _num(g.get("teacher_return"))
        for name, m in g["methods"].items():
            if not isinstance(m, dict):
                continue
            ratio = _num(m.get("ratio"))
            if ratio is None and teacher and teacher > 0 and _num(m.get("return")) is not None:
                ratio = m["return"] / teacher
            row = [_e(str(g.get("name", ""))), _e(str(name)), _pm(m.get("return"), m.get("return_std"), 2),
                   _ci_text((m.get("return_stats") or {}).get("mean_ci95"), 2),
                   (_f(ratio, 3), _ratio_class(ratio))]
            if acc:
                row += [_f(m.get("accident_rate"), 3),
                        _ci_text((m.get("accident_rate_stats") or {}).get("mean_ci95"))]
            body.append(row)
    title = "Team returns and accident rates" if acc else "Returns per method"
    html_ = (f"<h3>{title}</h3><p class=\"note\">Mean over seeds ± std; 95% CI: the stratified bootstrap "
             "over seeds the benchmark recorded (rliable), '-' where it recorded none; ratio: method / "
             "teacher return.</p>" + _table(head, body))
    return html_, _team_png(groups)


def _bench_section(path: Path, data: dict[str, Any], markdown: str | None, anchor: str | None = None,
                   heading: int = 1) -> tuple[str, str]:
    name = str(data.get("setup") or path.stem)
    title = f"{name} benchmark ({path.name})"
    h = f"h{heading}"
    ident = f" id=\"{_e(anchor)}\"" if anchor else ""
    out = [f"<{h}{ident}>{_e(title)}</{h}>"]
    pills = [("seeds", data.get("seeds")), ("episodes", data.get("episodes") or data.get("eval_episodes")),
             ("suite", data.get("suite")), ("workers", data.get("workers")),
             ("wall time", _seconds(data.get("wall_s") or data.get("wall_seconds") or data.get("seconds"))),
             ("polydistill", (data.get("versions") or {}).get("polydistill"))]
    out.append("<p>" + "".join(f"<span class=\"pill\">{_e(k)}: {_e(str(v))}</span>" for k, v in pills
                               if v not in (None, "-")) + "</p>")
    out.append(f"<p class=\"meta\">Results: <code>{_e(str(path))}</code></p>")
    figure: bytes | None = None
    for part in (_bench_tasks(data), _bench_methods(data)):
        if part is not None:
            out.append(part[0])
            figure = figure or part[1]
    if markdown:
        out.append("<h3>The benchmark's table</h3>" + markdown_to_html(markdown))
    png = path.with_suffix(".png")
    if png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n":
        out.append("<h3>Plot</h3>" + _img(png.read_bytes(), f"{name} benchmark plot ({png.name})"))
    elif figure is not None:
        out.append("<h3>Plot</h3>" + _img(figure, f"{name} benchmark plot"))
    command = data.get("command")
    out.append("<h3>Command</h3>" + (f"<pre>{_e(str(command))}</pre>" if command else
                                     "<p class=\"note\">Not recorded.</p>"))
    out.append(_versions_table(data.get("versions"), "Recorded by the benchmark."))
    settings = {k: v for k, v in data.items() if k not in ("command", "versions", "markdown")
                and (not isinstance(v, list | dict) or len(json.dumps(v, default=str)) < 600)}
    if settings:
        out.append(_details("Settings and scalar results", settings))
    out.append(_details(f"Full results ({path.name})", data, MAX_RAW_JSON_CHARS))
    return title, "\n".join(out)


def _bench_markdown(path: Path, data: dict[str, Any]) -> str | None:
    md = path.with_suffix(".md")
    if md.is_file():
        try:
            return md.read_text()
        except OSError:
            pass
    return data.get("markdown") if isinstance(data.get("markdown"), str) else None


# ---------------------------------------------------------------------------------------- entry point


def write_html_report(path_in: str | Path, out: str | Path | None = None) -> Path:
    """Write one self-contained HTML page for a run folder or benchmark results; returns its path.

    Args:
        path_in: A run folder (what ``distill``, ``quickstart``, ``evaluate --out`` and
            ``finetune`` write; a file of it such as ``report.json`` stands for its folder), a
            benchmark results JSON, or a folder of benchmark JSONs (one page, a section each).
        out: Where to write the page (default: ``<run folder>/report.html``, the JSON's path
            with ``.html``, or ``<benchmark folder>/report.html``).

    Raises:
        ConfigError: if ``path_in`` is none of these (the message names what was expected).
    """
    src = Path(path_in)
    kind, target = _classify(src)
    if kind == "run":
        title, body = _render_run(target)
        dest = Path(out) if out is not None else target / "report.html"
    elif kind == "benchmark":
        data = _read_json(target)
        title, body = _bench_section(target, data, _bench_markdown(target, data))
        dest = Path(out) if out is not None else target.with_suffix(".html")
    else:
        found = [(p, d) for p in sorted(target.glob("*.json")) if is_benchmark_json(d := _maybe_json(p))]
        title = f"polydistill benchmarks ({target})"
        toc = "".join(f"<li><a href=\"#b-{_e(p.stem)}\">{_e(str(d.get('setup') or p.stem))} "
                      f"<span class=\"pill\">{_e(p.name)}</span></a></li>" for p, d in found)
        sections = ["<section class=\"bench\">"
                    + _bench_section(p, d, _bench_markdown(p, d), f"b-{p.stem}", 2)[1] + "</section>"
                    for p, d in found]
        body = (f"<h1>{_e(title)}</h1><p class=\"summary\">{len(found)} benchmark results, one section each "
                "(the JSONs in this folder that carry a command and versions).</p>"
                f"<nav><ul>{toc}</ul></nav>" + "".join(sections))
        dest = Path(out) if out is not None else target / "report.html"
    atomic_write_bytes(dest, _page(title, body).encode("utf-8"))
    return dest


def write_html_report_safe(path_in: str | Path, out: str | Path | None = None) -> Path | None:
    """:func:`write_html_report` for the commands that write a page after their results.

    The page is a view of results already on disk, never their cost: a failure is logged as a
    warning (with the traceback at debug level) and ``None`` returned.
    """
    try:
        return write_html_report(path_in, out)
    except Exception as exc:  # noqa: BLE001  (see the docstring)
        log.warning("%s: HTML page not written: %s: %s", path_in, type(exc).__name__, exc)
        log.debug("HTML page of %s", path_in, exc_info=True)
        return None
