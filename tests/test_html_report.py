"""The HTML report: one self-contained page per run folder or benchmark, checked in a real browser.

Unit tests read the page's HTML (tables, images as ``data:`` URIs that decode, no external
address, escaping, errors); the browser tests open it from disk in headless Chromium (Debian's
package, driven over the DevTools protocol with ``websocket-client``): no console error, table
rows present, every image loaded, a screenshot that is a non-empty, non-uniform PNG. They skip,
saying why, only where Chromium is not installed (``.ci/run`` installs it with apt).
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polydistill.errors import ConfigError
from polydistill.evaluation.html import ratio_ci_bootstrap, ratio_ci_delta, write_html_report

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
PENDULUM = ROOT / "agents" / "teachers" / "pendulum"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-allow-origins=*"]


# ------------------------------------------------------------------------------------ helpers


def _images(page: str) -> list[tuple[str, bytes]]:
    """Every ``<img>``'s MIME type and decoded bytes (fails on any src that is not a data: URI)."""
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)
    assert len(srcs) == len(re.findall(r"<img\b", page))
    out = []
    for src in srcs:
        m = re.fullmatch(r"data:(image/(?:png|gif));base64,([A-Za-z0-9+/=]+)", src)
        assert m, f"not an embedded image: {src[:80]}"
        out.append((m.group(1), base64.b64decode(m.group(2), validate=True)))
    return out


def _check_page(page: str) -> list[tuple[str, bytes]]:
    """Self-containment and image checks every page passes; returns its images."""
    from PIL import Image

    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"https?://", page), "the page names an external address"
    assert "<script" not in page.lower() and " src=\"//" not in page
    images = _images(page)
    for mime, data in images:
        assert data, "empty image"
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == mime.split("/")[1].upper()
            im.load()
            assert im.width > 0 and im.height > 0
    return images


def _rows(page: str) -> int:
    """Rows in the bodies of the page's tables."""
    return sum(body.count("<tr>") for body in re.findall(r"<tbody>(.*?)</tbody>", page, re.S))


def _report_parser() -> argparse.ArgumentParser:
    from polydistill.cli.report_cmd import add_report_parser

    parser = argparse.ArgumentParser(prog="polydistill")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def _main(argv: list[str]) -> int:
    """``polydistill ARGV`` in this process; ``sys.argv`` as the console script sees it (runs record it)."""
    from polydistill.cli import main

    saved = sys.argv
    sys.argv = ["polydistill", *argv]
    try:
        return main(argv)
    finally:
        sys.argv = saved


def _report(*argv: str) -> int:
    args = _report_parser().parse_args(["report", *argv])
    return int(args.func(args))


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real distillation run folder: the shipped double-pendulum teacher, 800 labelled steps."""
    out = tmp_path_factory.mktemp("run") / "pendulum"
    assert _main(["distill", "--env-id", "polydistill/DoublePendulum-v0", "--teacher", str(PENDULUM),
                  "--out", str(out), "--steps", "800", "--no-progress", "--set", "rounds=2",
                  "--set", "n_envs=2", "--set", "eval_every=1", "--set", "eval_episodes=2",
                  "--eval-episodes", "3"]) == 0
    return out


@pytest.fixture()
def bench_copy(tmp_path: Path) -> Path:
    """The committed benchmark results (JSON, markdown, plots) copied into a scratch folder."""
    dest = tmp_path / "benchmarks"
    dest.mkdir()
    for f in BENCH.iterdir():
        if f.is_file():
            shutil.copy(f, dest / f.name)
    return dest


# ------------------------------------------------------------------------------------ unit tests


def test_confidence_intervals_come_from_recorded_spreads_only() -> None:
    # student 90 +- 3 over 10 episodes (ddof 0: se = 3 / sqrt(9) = 1), teacher 100 +- 0
    lo, hi = ratio_ci_delta(90.0, 3.0, 100.0, 0.0, 10)  # type: ignore[misc]
    assert lo == pytest.approx(0.9 - 1.959964 * 0.01) and hi == pytest.approx(0.9 + 1.959964 * 0.01)
    wider = ratio_ci_delta(90.0, 3.0, 100.0, 5.0, 10)
    assert wider is not None and wider[1] - wider[0] > hi - lo
    assert ratio_ci_delta(90.0, 3.0, 100.0, 0.0, 1) is None  # one episode: no spread
    assert ratio_ci_delta(90.0, None, 100.0, 0.0, 10) is None
    assert ratio_ci_delta(90.0, 3.0, -5.0, 1.0, 10) is None  # ratio undefined
    assert ratio_ci_bootstrap([0.9]) is None and ratio_ci_bootstrap(None) is None
    b = ratio_ci_bootstrap([0.95, 0.99, 1.0])
    assert b is not None and 0.95 - 1e-12 <= b[0] <= b[1] <= 1.0 + 1e-12
    assert ratio_ci_bootstrap([0.95, 0.99, 1.0]) == b  # seeded


def test_distill_writes_a_self_contained_page_from_the_run_folder(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()  # written by write_report at the end of distill
    report = json.loads((run_dir / "report.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    row = report["tasks"][0]
    assert row["episodes"] == 3 and report["command"].startswith("polydistill distill --env-id")
    images = _check_page(page)
    alts = re.findall(r"<img\b[^>]*\balt=\"([^\"]*)\"", page)
    assert "learning curves" in alts and any("report.png" in a for a in alts)
    assert all(mime == "image/png" for mime, _ in images)
    # the per-task row: teacher and student return +- std, the ratio and its delta-method CI
    name = re.escape(row["name"])
    m = re.search(rf"<tr><td>{name}</td><td>train</td>.*?</tr>", page, re.S)
    assert m, "the task's row is missing"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", m.group(0))
    assert cells[3].startswith(f"{row['teacher_return']:,.1f}") and f"± {row['teacher_std']:,.1f}" in cells[3]
    assert cells[4].startswith(f"{row['student_return']:,.1f}")
    ci = ratio_ci_delta(row["student_return"], row["student_std"], row["teacher_return"], row["teacher_std"],
                        3)
    assert cells[5] == f"{row['ratio']:.3f}" and ci is not None and cells[6] == f"[{ci[0]:.3f}, {ci[1]:.3f}]"
    assert "delta method" in page and "3 evaluation episodes" in page
    assert len(history) == 2 and "eval/return/" + row["name"] in history[0]
    # config, versions and the exact command
    assert "Run config (run.json)" in page and "&quot;total_steps&quot;: 800" in page
    assert "<td>torch</td>" in page and "Recorded in the student checkpoint." in page
    assert "polydistill distill --env-id polydistill/DoublePendulum-v0" in page


def test_the_report_command_rewrites_the_page_and_strings_are_escaped(run_dir: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("tb", "report.html"))
    report = json.loads((folder / "report.json").read_text())
    report["title"] = "<script>alert('x')</script> & \"quotes\""
    report["tasks"][0]["name"] = "<img src=x onerror=alert(1)>"
    (folder / "report.json").write_text(json.dumps(report))
    assert _report(str(folder)) == 0
    assert f"report: {folder / 'report.html'}" in capsys.readouterr().out
    page = (folder / "report.html").read_text()
    _check_page(page)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "<td>&lt;img src=x onerror=alert(1)&gt;</td>" in page
    assert "<script" not in page and "<img src=x" not in page
    # --out elsewhere, and a file of the run folder stands for the folder
    assert _report(str(folder / "report.json"), "--out", str(tmp_path / "elsewhere.html")) == 0
    assert (tmp_path / "elsewhere.html").read_text().count("<tr>") == page.count("<tr>")


def test_caml_benchmark_page_shows_team_returns_and_accident_rates(bench_copy: Path) -> None:
    data = json.loads((bench_copy / "caml.json").read_text())
    page = write_html_report(bench_copy / "caml.json").read_text()
    assert (bench_copy / "caml.html").is_file()
    images = _check_page(page)
    assert len(images) == 1  # no caml.png: the team figure is drawn from the JSON
    assert "Team returns and accident rates" in page and data["command"] in page
    for env in data["envs"]:
        for method, m in env["methods"].items():
            row = re.search(rf"<tr><td>{env['name']}</td><td>{method}</td>(.*?)</tr>", page, re.S)
            assert row, (env["name"], method)
            cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
            assert cells[0].startswith(f"{m['return']:.2f}") and cells[3] == f"{m['accident_rate']:.3f}"
            ci = m.get("return_stats", {}).get("mean_ci95")
            assert cells[1] == (f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-")
    # the benchmark's own markdown table, as an HTML table
    assert "<th class=\"n\">accident rate</th>" in page and _rows(page) >= 2 * len(data["envs"]) * 5


def test_generalist_benchmark_page_uses_the_recorded_bootstrap_intervals(bench_copy: Path) -> None:
    data = json.loads((bench_copy / "generalist.json").read_text())
    page = write_html_report(bench_copy / "generalist.json").read_text()
    _check_page(page)
    for t in data["tasks"]:
        ci = t["ratio_stats"]["mean_ci95"]
        row = re.search(rf"<tr><td>{re.escape(t['name'])}</td><td>{t['split']}</td>(.*?)</tr>", page, re.S)
        assert row and f"[{ci[0]:.3f}, {ci[1]:.3f}]" in row.group(1)
    assert "rliable stratified bootstrap over seeds, as recorded" in page
    # finetune.json records per-seed ratios only: a bootstrap over them, and its own plot reused
    page = write_html_report(bench_copy / "finetune.json").read_text()
    assert len(_check_page(page)) == 1 and "finetune.png" in page
    assert "percentile bootstrap over the per-seed ratios" in page


def test_a_folder_of_benchmarks_is_one_page_with_a_section_each(bench_copy: Path) -> None:
    page_path = write_html_report(bench_copy)
    assert page_path == bench_copy / "report.html"
    page = page_path.read_text()
    _check_page(page)
    expected = sorted(p.stem for p in bench_copy.glob("*.json")
                      if {"command", "versions"} <= set(json.loads(p.read_text())))
    assert "perf_metaworld_tasks" not in expected and len(expected) >= 8
    assert re.findall(r"<section class=\"bench\"><h2 id=\"b-([^\"]+)\">", page) == expected
    assert all(f"href=\"#b-{s}\"" in page for s in expected)


@pytest.mark.parametrize("make", ["missing", "empty_dir", "other_json", "text_file"])
def test_bad_input_names_what_was_expected_and_what_came(tmp_path: Path, make: str) -> None:
    names = {"missing": "nope", "empty_dir": "empty", "other_json": "x.json", "text_file": "a.txt"}
    path = tmp_path / names[make]
    if make == "empty_dir":
        path.mkdir()
    elif make == "other_json":
        path.write_text(json.dumps({"moe_student": 1}))
    elif make == "text_file":
        path.write_text("hello")
    with pytest.raises(ConfigError, match=r"expected a run folder .* got .*" + re.escape(path.name)):
        _report(str(path))
    with pytest.raises(ConfigError, match="benchmark results JSON"):
        write_html_report(path)
    assert not list(tmp_path.glob("**/*.html"))


def test_video_needs_a_camera_student(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a student that acts on pixels"):
        _report(str(run_dir), "--video")
    with pytest.raises(ConfigError, match="expected a vision run folder with a student"):
        _report(str(tmp_path), "--video")
    assert not list(run_dir.rglob("*.gif"))


def test_main_reports_bad_input_as_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from polydistill.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    if "report" not in sub.choices:
        pytest.skip("the report subcommand is not registered in polydistill/cli/main.py yet "
                    "(add_report_parser(sub) in build_parser)")
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: expected a run folder") and "Traceback" not in err


def test_finish_report_writes_json_then_plot_then_page(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from polydistill.bench import morphology
    from polydistill.bench.stats import finish_report

    data = json.loads((BENCH / "morphology.json").read_text())
    results = {k: v for k, v in data.items() if k not in ("command", "versions")}
    markdown = (BENCH / "morphology.md").read_text().strip()
    out = tmp_path / "morph.json"
    report = finish_report(results, markdown, out, plot=functools.partial(morphology._plot, data["families"]))
    assert report["markdown"] == markdown and json.loads(out.read_text())["families"] == data["families"]
    page = out.with_suffix(".html").read_text()
    images = _check_page(page)
    assert images[0][1] == out.with_suffix(".png").read_bytes()  # the plot drawn before the page
    for line in markdown.splitlines()[2:]:  # every row of the benchmark's table, as an HTML row
        family, kind = line.strip("| ").split(" | ")[:2]
        assert f"<tr><td>{family}</td><td>{kind}</td>" in page
    # a failing page never costs the results
    import polydistill.evaluation.html as html_mod

    def broken(*_: Any, **__: Any) -> Path:
        raise RuntimeError("boom")

    monkeypatch.setattr(html_mod, "write_html_report", broken)
    out2 = tmp_path / "again.json"
    assert finish_report(dict(results), markdown, out2)["markdown"] == markdown
    assert out2.is_file() and out2.with_suffix(".md").is_file() and not out2.with_suffix(".html").exists()


def test_a_benchmark_run_ends_with_its_page(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import toy_setup  # noqa: F401  (registers the toy setup and its benchmark)

    from polydistill.cli import main

    out = tmp_path / "bench.json"
    assert main(["benchmark", "toy", "--seeds", "2", "--episodes", "1", "--out", str(out),
                 "--no-progress"]) == 0
    page = out.with_suffix(".html").read_text()
    _check_page(page)
    bench = json.loads(out.read_text())
    assert "toy benchmark (bench.json)" in page
    assert f"<p>toy: IQM {bench['stats']['iqm']:.1f} over 2 seeds</p>" in page
    assert "<td>torch</td>" in page and bench["command"] in page


def test_a_finetuning_run_folder_gets_its_own_section(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    assert _main(["finetune", "--student", str(run_dir), "--out", str(out), "--steps", "1024",
                  "--no-progress"]) == 0
    summary = json.loads((out / "finetune.json").read_text())
    assert _report(str(out)) == 0
    page = (out / "report.html").read_text()
    assert len(_check_page(page)) == 1 and "fine-tuning learning curves" in page
    (name, before), = summary["returns_before"].items()
    assert f"<tr><td>{name}</td><td class=\"n\">{before:,.1f}</td>" in page
    assert "Fine-tuning config (finetune.json)" in page and "polydistill finetune" in page
    assert "Learning curves" not in page  # no history.json: the fine-tuning curve stands for it


def test_a_team_run_page_shows_team_returns_and_accident_rates(tmp_path: Path) -> None:
    run = tmp_path / "caml"
    assert _main(["distill", "--recipe", str(ROOT / "agents" / "caml_intersection.yaml"), "--steps", "800",
                  "--set", "rounds=1", "--set", "n_envs=2", "--set", "eval_every=1",
                  "--set", "eval_episodes=1", "--out", str(run), "--no-progress",
                  "--eval-episodes", "2"]) == 0
    row = json.loads((run / "report.json").read_text())["tasks"][0]
    history = json.loads((run / "history.json").read_text())
    page = (run / "report.html").read_text()
    alts = re.findall(r"<img\b[^>]*\balt=\"([^\"]*)\"", page)
    assert len(_check_page(page)) == 3
    assert alts == ["team returns and accident rates", "learning curves",
                    "teacher vs student returns (report.png)"]
    team = re.search(r"<h2 id=\"team\">.*?<tbody>(.*?)</tbody>", page, re.S)
    assert team and f"<td>{row['name']}</td>" in team.group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", team.group(1))
    extra = row["extra"]
    assert cells[4:] == [f"{extra['teacher_accident_rate']:.3f}", f"{extra['accident_rate']:.3f}"]
    assert f"eval/accident_rate/{row['name']}" in history[0]  # drawn beside the return in the curves
    # team rows record the per-episode spread and count, so the page gives the ratio's CI
    assert row["episodes"] == 2 and "95% CI of the ratio: delta method" in page
    assert "No 95% CI" not in page


@pytest.mark.physics
def test_evaluate_out_page_embeds_the_episode_gifs(run_dir: Path, tmp_path: Path) -> None:
    from polydistill.cli import main

    out = tmp_path / "eval"
    assert main(["evaluate", "--student", str(run_dir), "--episodes", "2", "--out", str(out),
                 "--video", str(out / "videos")]) == 0
    page = (out / "report.html").read_text()
    images = _check_page(page)
    gifs = sorted((out / "videos").glob("*.gif"))
    assert gifs and [d for m, d in images if m == "image/gif"] == [g.read_bytes() for g in gifs]
    assert "No history.json in this folder" in page and "[" in page.split("ratio 95% CI")[1]


@pytest.mark.physics
def test_vision_run_page_embeds_scene_beside_camera(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    from polydistill.cli import main

    run = tmp_path / "vision"
    assert main(["distill", "--recipe", str(ROOT / "agents" / "vision_point_goal.yaml"), "--steps", "400",
                 "--set", "rounds=1", "--set", "env_kwargs={size: 32}", "--set", "n_envs=4",
                 "--out", str(run), "--no-progress", "--eval-episodes", "1"]) == 0
    page = (run / "report.html").read_text()
    assert "No GIF was recorded" in page and f"polydistill report {run} --video" in page
    assert _report(str(run), "--video") == 0
    assert "video: " in capsys.readouterr().out
    page = (run / "report.html").read_text()
    gifs = [d for mime, d in _check_page(page) if mime == "image/gif"]
    assert len(gifs) == 1 and "scene and camera" in page
    with Image.open(io.BytesIO(gifs[0])) as im:
        assert im.width == 2 * im.height and im.n_frames > 1  # scene | camera, side by side


# ------------------------------------------------------------------------------------ browser


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, exe: str, profile: Path, width: int = 1280, height: int = 900) -> None:
        import urllib.request

        import websocket

        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      "--remote-debugging-port=0", f"--window-size={width},{height}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit status {self.proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost, never a proxy
        targets = json.loads(opener.open(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True,
                                              http_no_proxy=["127.0.0.1", "localhost"])
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(event)
            self.events.append(json.loads(self.ws.recv()))

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        self.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def eval(self, expr: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expr}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors (failed loads, CSP) so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif e.get("method") == "Runtime.exceptionThrown":
                out.append(str(p.get("exceptionDetails", {}).get("text")))
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(str(p["entry"].get("text")))
        return out

    def screenshot(self, max_height: int | None = None, width: int = 1280) -> bytes:
        height = int(self.eval("document.documentElement.scrollHeight"))
        height = min(height, max_height) if max_height else height
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})["data"]
        self.call("Emulation.clearDeviceMetricsOverride")
        return base64.b64decode(data)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it and "
                    "these tests skip only where apt cannot)")
    pytest.importorskip("websocket", reason="the browser tests drive Chromium with websocket-client "
                                            "(pip install -e '.[test]')")
    with tempfile.TemporaryDirectory(prefix="polydistill-chromium-") as profile:
        b = Browser(exe, Path(profile))
        try:
            yield b
        finally:
            b.close()


def _page_in_browser(browser: Browser, page: Path, shot: Path) -> dict[str, Any]:
    from PIL import Image

    browser.open(page.resolve().as_uri())
    facts = browser.eval("""({
        rows: document.querySelectorAll('tbody tr').length,
        tables: document.querySelectorAll('table').length,
        images: Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
        title: document.title, text: document.body.innerText.length})""")
    png = browser.screenshot(max_height=2400)
    shot.write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        assert im.width == 1280 and im.height > 300
        assert len(im.getcolors(maxcolors=1 << 20) or range(2)) > 16, "the screenshot is (nearly) one colour"
    assert browser.errors() == [], browser.errors()
    assert facts["rows"] > 0 and facts["tables"] > 0 and facts["text"] > 200
    assert facts["images"] and all(c and w > 0 and h > 0 for c, w, h in facts["images"]), facts["images"]
    return facts


def test_run_page_renders_in_headless_chromium(browser: Browser, run_dir: Path, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    facts = _page_in_browser(browser, run_dir / "report.html", tmp_path / "run.png")
    report = json.loads((run_dir / "report.json").read_text())
    assert facts["rows"] >= len(report["tasks"]) and len(facts["images"]) == 2
    assert facts["title"] == report["title"]
    print(f"run page checked in Chromium in {time.perf_counter() - t0:.1f} s")


@pytest.mark.slow
def test_the_quickstart_page_renders_in_headless_chromium(browser: Browser, tmp_path: Path) -> None:
    """The README's main job, on a small budget: its report.html in a real browser."""
    from polydistill.quickstart import run_quickstart

    report = run_quickstart(out=tmp_path / "qs", steps=6000, seed=0, episodes=1, progress_bar=False)
    page = Path(report["files"]["html"])
    assert page == tmp_path / "qs" / "report.html"
    facts = _page_in_browser(browser, page, tmp_path / "quickstart.png")
    from polydistill.envs import DEFAULT_SUITE, get_suite

    suite = get_suite(DEFAULT_SUITE)  # every task of the suite, held-out ones too
    assert facts["rows"] >= len(report["tasks"]) == len(suite)
    assert len(facts["images"]) == 2  # the learning curves and the bar plot
    text = page.read_text()
    held_out = [t.name for t in suite if t.split == "heldout"]
    assert all(name in text for name in held_out) and "Learning curves" in text and "Library versions" in text


@pytest.mark.parametrize("name", ["caml.json", "generalist.json", "."])
def test_benchmark_pages_render_in_headless_chromium(browser: Browser, bench_copy: Path, tmp_path: Path,
                                                     name: str) -> None:
    page = write_html_report(bench_copy / name)
    facts = _page_in_browser(browser, page, tmp_path / "bench.png")
    assert facts["rows"] >= 10


def test_a_broken_image_would_be_caught(browser: Browser, tmp_path: Path) -> None:
    """The browser checks are not vacuous: a page with a broken image and a script error fails them."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><link rel=\"icon\" href=\"data:,\"></head><body>"
                   "<table><tbody><tr><td>x</td></tr></tbody></table><img src=\"data:image/png;base64,AAAA\">"
                   "<script>console.error('oops')</script></body></html>")
    browser.open(bad.as_uri())
    assert any("oops" in e for e in browser.errors())
    assert browser.eval("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)") is False
