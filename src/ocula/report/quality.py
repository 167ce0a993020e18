"""Sections about trusting and shipping the model: calibration, worst errors, data audit, export gates.

calibration.json (written by a calibration step, in EVAL/ or RUN/) fills "after calibration":

    {"method": "temperature", "temperature": 1.42,
     "before": {"ece": 0.061, "nll": 0.31, "reliability": {...}},   # reliability: as in report.json
     "after":  {"ece": 0.012, "nll": 0.27, "reliability": {...}}}
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ocula.evaluation.report import is_detection_report
from ocula.names import display_name
from ocula.report.files import Reader, Section
from ocula.run_dir import ERRORS_JSON, ERRORS_PNG, EvalDir

EVALUATE = "`ocula evaluate {run} DATA`"


# ---------------------------------------------------------------------- calibration
MEASURES = (("ece", "ECE (15 bins)"), ("adaptive_ece", "adaptive ECE"), ("classwise_ece", "classwise ECE"),
            ("nll", "NLL"), ("brier", "Brier"))


def calibration_section(reader: Reader, eval_dir: Optional[Path], report: Optional[dict]) -> Section:
    title = "Calibration: before and after"
    run = display_name(reader.run)
    if report is None:
        return Section("calibration", title, ran=False, reason=f"no evaluation: {EVALUATE.format(run=run)}")
    if is_detection_report(report) and not report.get("reliability") and not report.get("calibration"):
        return Section("calibration", title, ran=False, reason="no calibration measures for boxes: a detector's "
                       "scores are not calibrated, and the evaluation has no confidence bins")
    calibration = report.get("calibration")
    where = EvalDir(eval_dir or reader.run).report.name if calibration else None
    for path in (EvalDir(eval_dir).calibration if eval_dir else None, reader.run_dir.calibration):
        if calibration or path is None:
            continue
        calibration = reader.json(path)
        where = reader.rel(path) if calibration else None
    calibration = calibration or {}
    before = {k: report.get(k) for k in ("ece", "nll", "reliability")} | (calibration.get("before") or {})
    fitted = calibration.get("after") and calibration.get("method") not in (None, "none")
    after = calibration["after"] if fitted else None
    bias = (report.get("calibration") or {}).get("bias") or {}
    warning = (f"On these images the model is {bias['verdict']}: mean confidence {bias['mean_confidence']:.3f} "
               f"against accuracy {bias['accuracy']:.3f}." if bias.get("verdict") else "")
    data = {"before": before, "after": after, "file": where, "method": calibration.get("method"),
            "temperature": calibration.get("temperature"), "bias_warning": warning,
            "after_reason": ("" if after else not_fitted(reader)) + (f" {warning}" if warning and not after else ""),
            "measures": [(k, label) for k, label in MEASURES if before.get(k) is not None],
            "bins": bin_rows(before.get("reliability"), (after or {}).get("reliability"))}
    images = {}
    if before.get("reliability"):
        images["reliability"] = ("reliability", before["reliability"], (after or {}).get("reliability"))
    else:
        data["diagram_reason"] = ("this evaluation predates reliability bins: re-run "
                                  + EVALUATE.format(run=run) + " to draw the diagram")
    return Section("calibration", title, data=data, images=images)


def not_fitted(reader: Reader) -> str:
    """Why there is no "after": the run's own reason when training tried, else that nothing was tried."""
    for path in (reader.run_dir.summary, reader.run_dir.model):
        reason = ((reader.json(path) or {}).get("calibration") or {}).get("reason")
        if reason:
            return f"after calibration: not fitted: {reason}"
    return "after calibration: no calibration.json in the evaluation folder or the run (temperature scaling writes it)"


def bin_rows(before: Optional[dict], after: Optional[dict]) -> list[dict]:
    """One row per non-empty confidence bin: range, count, confidence, accuracy (before, after)."""
    if not before:
        return []
    edges, rows = before.get("edges") or [], []
    for i, count in enumerate(before.get("count") or []):
        row = {"lo": edges[i] if i < len(edges) else None, "hi": edges[i + 1] if i + 1 < len(edges) else None,
               "count": count, "confidence": before["confidence"][i], "accuracy": before["accuracy"][i]}
        if after and i < len(after.get("count") or []):
            row.update(after_count=after["count"][i], after_confidence=after["confidence"][i],
                       after_accuracy=after["accuracy"][i])
        if count or row.get("after_count"):
            rows.append(row)
    return rows


# ---------------------------------------------------------------------- worst errors
def errors_section(reader: Reader, eval_dir: Optional[Path], report: Optional[dict] = None) -> Section:
    title = "Worst errors and their explanation maps"
    how = f"`ocula evaluate {display_name(reader.run)} DATA --explain-errors 16`"
    gallery = reader.json(EvalDir(eval_dir).errors / ERRORS_JSON) if eval_dir else None
    if gallery is None and report is not None and is_detection_report(report):
        return Section("errors", title, ran=False, reason="the error gallery explains class predictions; for "
                       "boxes, see the examples in the evaluation section (predicted solid, ground truth dashed)")
    if gallery is None:
        return Section("errors", title, ran=False, reason=f"no error gallery: {how}")
    png = EvalDir(eval_dir).errors / ERRORS_PNG
    data = {k: gallery.get(k) for k in ("data", "split", "method", "evaluated", "errors", "shown")}
    data["items"] = gallery.get("items") or []
    if not png.is_file():
        data["image_reason"] = "errors.png is missing (matplotlib was not installed when it ran)"
    return Section("errors", title, data=data, images={"errors": png} if png.is_file() else {})


# ---------------------------------------------------------------------- data audit
def find_audit(reader: Reader, audit_dir, source: Optional[str]) -> tuple[Optional[dict], Optional[Path]]:
    """--audit DIR, else RUN/audit/, else ./audit/ when it audited the same data as the run."""
    candidates = [Path(audit_dir)] if audit_dir else [reader.run_dir.audit, Path("audit")]
    for d in candidates:
        issues = reader.json(d / "issues.json")
        if issues is None:
            continue
        if audit_dir or d == reader.run_dir.audit or (source and issues.get("source") == source):
            return issues, d
    return None, None


def audit_section(reader: Reader, audit_dir, source: Optional[str]) -> Section:
    title = "Data audit"
    issues, where = find_audit(reader, audit_dir, source)
    if issues is None:
        data = source or "DATA"
        return Section("audit", title, ran=False, reason=f"no audit of the data: `ocula audit {data} --out "
                       f"{display_name(reader.run)}/audit`")
    findings = issues.get("findings") or []
    rows: dict = {}
    for f in findings:
        row = rows.setdefault(f.get("category"), {"category": f.get("category"), "check": f.get("check"),
                                                  "severity": f.get("severity"), "count": 0})
        row["count"] += 1
    stats = issues.get("stats") or {}
    data = {"dir": reader.rel(where), "source": issues.get("source"), "samples": stats.get("samples"),
            "classes": len(issues.get("classes") or []), "findings": len(findings),
            "rows": sorted(rows.values(), key=lambda r: -r["count"]), "notes": issues.get("notes") or [],
            "report_html": reader.rel(where / "report.html") if (where / "report.html").is_file() else None,
            "class_counts": stats.get("class_counts") or {}}
    return Section("audit", title, data=data)


# ---------------------------------------------------------------------- export gates and benchmark
def export_section(reader: Reader) -> Section:
    title = "Export, int8 gates and latency"
    run = display_name(reader.run)
    gates = []
    for path in reader.run_dir.gate_reports():
        gate = reader.json(path)
        if gate:
            gates.append({"file": reader.rel(path), **{k: gate.get(k) for k in (
                "precision", "model", "size_bytes", "images", "accuracy_pytorch", "accuracy_exported",
                "delta_accuracy_points", "max_drop_points", "top1_agreement", "max_abs_logit_diff",
                "passed", "reason", "data", "split")}})
    gates.sort(key=lambda g: (g.get("precision") != "fp32", g["file"]))
    bench = [(path, reader.json(path)) for path in reader.run_dir.benchmark_reports()]
    bench = [(p, b) for p, b in bench if b and b.get("results")]
    data = {"gates": gates, "gates_reason": "" if gates else f"not run: `ocula export {run} --int8`",
            "benchmarks": [bench_summary(reader, p, b) for p, b in bench],
            "bench_reason": "" if bench else f"not run: `ocula benchmark {run} --json {run}/benchmark.json`"}
    if not gates and not bench:
        return Section("export", title, ran=False, reason=f"no export or benchmark: `ocula export {run} --int8`, "
                       f"then `ocula benchmark {run} --json {run}/benchmark.json`")
    return Section("export", title, data=data)


def bench_summary(reader: Reader, path: Path, bench: dict) -> dict:
    rows = [{"backend": r.get("backend"), "batch": r.get("batch"), **{
        f"{k}_ms": (r.get("latency_ms") or {}).get(k) for k in ("p50", "p95", "p99")},
        "img_s": (r.get("throughput_img_s") or {}).get("median"), "size_bytes": r.get("size_bytes"),
        "peak_mb": r.get("peak_memory_mb"), "error": r.get("error")} for r in bench.get("results") or []]
    machine = bench.get("machine") or {}
    return {"file": reader.rel(path), "rows": rows, "threads": bench.get("threads"),
            "machine": ", ".join(str(v) for v in (machine.get("cpu"), machine.get("cores") and
                                                  f"{machine['cores']} cores") if v),
            "params": bench.get("params"), "flops_per_image": bench.get("flops_per_image")}
