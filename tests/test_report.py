"""`ocula report RUN` (one self-contained page) and `ocula runs` (the table of runs)."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from ocula.cli import main

SECTIONS = ("summary", "curves", "evaluation", "calibration", "errors", "audit", "export")


class Page(HTMLParser):
    """Sections (id → data-status), images (data-image → src) and every src/href of a report."""

    def __init__(self, html: str):
        super().__init__()
        self.sections: dict[str, str] = {}
        self.images: dict[str, str] = {}
        self.links: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections[a["id"]] = a["data-status"]
        if tag == "img":
            self.images[a.get("data-image", "?")] = a["src"]
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    img.load()
    return img


def test_report_holds_every_section_with_inlined_images(reported_run, capsys):
    assert main(["report", reported_run]) == 0
    out = capsys.readouterr().out
    path = Path(reported_run) / "report.html"
    assert out.startswith(f"report: {path} (")
    html = path.read_text()
    page = Page(html)
    assert list(page.sections) == list(SECTIONS)
    assert all(status == "ran" for status in page.sections.values()), page.sections
    assert set(page.images) == {"curves", "confusion", "reliability", "errors"}
    for name, uri in page.images.items():
        assert min(decode(uri).size) > 50, name
    # self-contained: nothing is fetched, every link is an anchor in the page
    assert all(link.startswith(("data:", "#")) for link in page.links), page.links
    assert not re.search(r"https?://", html)
    # the model card and the sections' facts, as the run's files hold them
    model = json.loads((Path(reported_run) / "model.json").read_text())
    env = json.loads((Path(reported_run) / "environment.json").read_text())
    for text in ("seed_cnn", model["versions"]["torch"], env["timm"], env["cpu"], "input contract",
                 "before calibration", "after calibration", "PASS", "p50 ms", "near-duplicate"):
        assert text.lower() in html.lower(), text
    report = json.loads((Path(reported_run) / "eval-digits" / "report.json").read_text())
    assert f"{100 * report['accuracy']:.2f} %" in html
    assert html.count("<tr><td>") > len(model["classes"])  # per-class rows are there


def _strip_calibration(run: Path) -> dict:
    """The run as if nothing had calibrated it: no calibration in report.json, summary or model.json."""
    for path in [run / "eval-digits" / "report.json", run / "summary.json", run / "model.json"]:
        data = json.loads(path.read_text())
        data.pop("calibration", None)
        path.write_text(json.dumps(data))
    for path in run.rglob("calibration.json"):
        path.unlink()
    return json.loads((run / "eval-digits" / "report.json").read_text())


def _after_row(run: Path) -> str:
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    return html[html.index('id="after-calibration"'):][:600]


def test_after_calibration_is_not_run_until_a_calibration_file_exists(reported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reported_run, run)
    report = _strip_calibration(run)
    assert "not run" in _after_row(run)

    bins = report["reliability"]
    (run / "eval-digits" / "calibration.json").write_text(json.dumps({
        "method": "temperature", "temperature": 1.5, "before": {"ece": report["ece"], "nll": report["nll"]},
        "after": {"ece": 0.0123, "nll": 0.4567, "reliability": bins}}))
    after = _after_row(run)
    assert "0.0123" in after and "0.4567" in after and "not run" not in after
    assert "temperature 1.5000" in (run / "report.html").read_text()

    # a calibration that was tried and not fitted says why, and shows no "after" numbers
    (run / "eval-digits" / "calibration.json").write_text(json.dumps({
        "method": "none", "temperature": 1.0, "before": {"ece": report["ece"]}, "after": {"ece": report["ece"]}}))
    summary = json.loads((run / "summary.json").read_text())
    summary["calibration"] = {"method": "none", "reason": "12 held-out samples are too few"}
    (run / "summary.json").write_text(json.dumps(summary))
    after = _after_row(run)
    assert "not run" in after and "not fitted: 12 held-out samples are too few" in after


def test_missing_inputs_are_listed_as_not_run(digits_run, tmp_path):
    run = tmp_path / "bare"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("eval-*", "*.gate.json", "*.onnx", "audit",
                                                                   "benchmark*.json", "report.html"))
    out = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    page = Page(out.read_text())
    assert page.sections == {"summary": "ran", "curves": "ran", "evaluation": "not run", "calibration": "not run",
                             "errors": "not run", "audit": "not run", "export": "not run"}
    text = out.read_text()
    assert f"ocula evaluate {run} DATA" in text and f"ocula export {run} --int8" in text
    assert set(page.images) == {"curves"}


def test_a_run_without_metrics_or_plots_still_renders(digits_run, tmp_path):
    run = tmp_path / "early"
    run.mkdir()
    shutil.copy(Path(digits_run) / "config.json", run / "config.json")  # a run that died before epoch 1
    (run / "model.json").write_text("{not json")
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    page = Page(html)
    assert page.sections["summary"] == "ran" and page.sections["curves"] == "not run"
    assert "model.json: unreadable" in html and "training has not finished" in html


@pytest.mark.parametrize("make, expected", [
    (lambda p: p / "missing", "no such run directory"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "a file, not a run directory"),
    (lambda p: p, "not an ocula run"),
])
def test_bad_run_paths_are_one_line(tmp_path, capsys, make, expected):
    assert main(["report", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_runs_table_sorts_and_writes_json(reported_run, digits_run, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(reported_run, root / "full")
    shutil.copytree(digits_run, root / "group" / "bare", ignore=shutil.ignore_patterns("eval-*", "*.gate.json"))
    (root / "notes").mkdir()
    assert main(["runs", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["run", "data", "model", "epochs"]
    assert [line.split()[0] for line in lines[1:]] == ["full", "group/bare"]
    assert "fp32 pass" in lines[1] and "int8" in lines[1]

    assert main(["runs", str(root), "--json", "--sort", "ece", "--reverse"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in rows] == ["full", "group/bare"]  # a missing value sorts last either way
    assert rows[0]["ece"] > 0 and rows[1]["ece"] is None and rows[0]["epochs"] == 4
    assert rows[0]["size_mb"] > 0 and rows[0]["time_s"] > 0 and rows[0]["finished"] is True

    assert main(["runs", str(root), "--sort", "run", "--reverse"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("group/bare")
    assert main(["runs", str(root), "--json", str(tmp_path / "runs.json")]) == 0
    assert len(json.loads((tmp_path / "runs.json").read_text())) == 2

    assert main(["runs", str(root), "--sort", "bestt"]) == 2
    assert "did you mean: best" in capsys.readouterr().err
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["runs", str(root / "notes")]) == 0
    assert "no runs under" in capsys.readouterr().out
