"""`ocula benchmark`: latency, throughput, parameters, FLOPs and peak memory per backend.

Backends: eager (PyTorch), compiled (torch.compile), onnx (ONNX Runtime fp32), onnx-int8 (the
run's model.int8.onnx). Every (backend, batch) cell gets warm-up calls that are not timed, then
timed calls until `repeats` or `max_seconds`; each call is timed alone, so percentiles and spread
are real. Latency p50/p95/p99 are per call; throughput = batch / per-call time (median, p5–p95).

Peak memory is the growth of the process's peak resident set (Linux VmHWM, reset through
/proc/self/clear_refs before each backend) over its RSS before the backend was loaded: weights,
session arenas, compiled code and activations. Memory the allocator reuses from an earlier backend
is not counted, so it is an approximation; without /proc it is None.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ocula.environment import cpu_flags, cpu_name
from ocula.errors import OculaError, did_you_mean
from ocula.export.onnx import export_onnx
from ocula.export.pipeline import default_onnx_path, int8_path
from ocula.export.runtime import OnnxClassifier, resolve_providers
from ocula.inference.predictor import Classifier
from ocula.log import progress

BACKENDS = ("eager", "compiled", "onnx", "onnx-int8")


def machine_info() -> dict:
    flags = cpu_flags()
    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "isa": [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16") if f in flags],
            "torch": torch.__version__, "onnxruntime": ort_version, "python": platform.python_version()}


# ---------------------------------------------------------------------- memory
def _status_kb(field: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------- timing
def time_calls(fn: Callable, x, *, warmup: int, repeats: int, max_seconds: float) -> np.ndarray:
    """Seconds per call, warm-up excluded; at least 3 timed calls even past max_seconds."""
    for _ in range(warmup):
        fn(x)
    times, start = [], time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def summarise(times: np.ndarray, batch: int) -> dict:
    ms = times * 1000
    tput = batch / times
    return {"batch": batch, "repeats": int(len(times)),
            "latency_ms": {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                           "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()),
                           "std": float(ms.std()), "min": float(ms.min()), "max": float(ms.max())},
            "throughput_img_s": {"median": float(np.median(tput)), "p5": float(np.percentile(tput, 5)),
                                 "p95": float(np.percentile(tput, 95))}}


# ---------------------------------------------------------------------- backends
def _eager(model: torch.nn.Module):
    def run(x):
        with torch.inference_mode():
            return model(x)
    return run


def _compiled(model: torch.nn.Module, example: torch.Tensor):
    compiled = torch.compile(model, dynamic=False)
    run = _eager(compiled)
    run(example)  # compiling happens here: a failure skips the backend instead of a crash
    return run


def _onnx(path, threads: Optional[int], providers):
    clf = OnnxClassifier.load(path, threads=threads, providers=providers)
    return clf.logits


def _backend(name: str, model, onnx_files: dict, threads, example, providers=None):
    """→ (callable, size in bytes) or raises _Skip with the reason."""
    if name == "eager":
        return _eager(model), sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if name == "compiled":
        try:
            return _compiled(model, example), None
        except Exception as e:  # noqa: BLE001 - torch.compile failures are many and varied
            raise _Skip(f"torch.compile failed here: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    key = "int8" if name == "onnx-int8" else "fp32"
    path = onnx_files.get(key)
    if path is None:
        raise _Skip("no model.int8.onnx in the run: create it with `ocula export RUN --format onnx --int8 "
                    "--calibrate DATA`" if key == "int8" else "no ONNX file")
    return _onnx(path, threads, providers), Path(path).stat().st_size


class _Skip(Exception):
    pass


def _onnx_files(run, model, meta, workdir) -> tuple[dict, list]:
    """The run's exported files; an fp32 one is exported to a temp folder when the run has none."""
    fp32, notes = default_onnx_path(run), []
    files = {"fp32": fp32} if fp32.is_file() else {}
    if int8_path(fp32).is_file():
        files["int8"] = int8_path(fp32)
    if "fp32" not in files:
        files["fp32"] = export_onnx(model, meta, Path(workdir) / "model.onnx")
        notes.append(f"onnx: the run had no {fp32.name}; exported one to a temporary file")
    return files, notes


def count_flops(model: torch.nn.Module, example: torch.Tensor) -> Optional[int]:
    """FLOPs of one forward pass (multiply-add = 2) by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(example)
        return int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - an op the counter cannot trace: report None, not a crash
        return None


# ---------------------------------------------------------------------- the benchmark
def benchmark(run, backends=("eager", "onnx"), batches=(1, 32), *, threads: Optional[int] = None,
              repeats: int = 30, warmup: int = 3, max_seconds: float = 15.0, seed: int = 0,
              providers=None) -> dict:
    """Measure each backend at each batch size on random inputs of the model's contract → a report dict.

    `threads`: torch and ONNX Runtime intra-op threads (default: the libraries' own choice);
    `repeats`: timed calls per cell (fewer if `max_seconds` runs out; warm-up calls never count);
    `providers`: ONNX Runtime's, as `resolve_providers` takes them (default: CUDA when available, then CPU;
    inputs and outputs cross host memory on every call, as they do when serving).
    """
    import tempfile

    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        bad = unknown[0] if unknown else ""
        raise OculaError(f"unknown backend '{bad}'{did_you_mean(bad, BACKENDS)}: choose from {', '.join(BACKENDS)}")
    if not batches or min(batches) < 1:
        raise OculaError("batch sizes must be positive integers")
    onnx = any(b.startswith("onnx") for b in backends)
    providers = resolve_providers(providers) if onnx else None  # a bad name fails before the slow steps
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        clf = Classifier.load(run, device="cpu")
        c, s = clf.contract.channels, clf.contract.input_size
        gen = torch.Generator().manual_seed(seed)
        inputs = {b: torch.randn(b, c, s, s, generator=gen) for b in batches}
        report = {"model": clf.name, "run": str(run), "input": [c, s, s], "threads": threads or torch.get_num_threads(),
                  "params": int(sum(p.numel() for p in clf.model.parameters())),
                  "flops_per_image": count_flops(clf.model, inputs[min(batches)][:1]),
                  "machine": machine_info(), "memory_method": "peak RSS growth (VmHWM after clear_refs)",
                  "providers": providers, "results": [], "skipped": {}, "notes": []}
        with tempfile.TemporaryDirectory(prefix="ocula-bench-") as tmp:
            files, notes = _onnx_files(run, clf.model, clf.meta, tmp) if onnx else ({}, [])
            report["notes"] += notes
            for name in backends:
                _measure_backend(report, name, clf.model, files, threads, inputs, repeats, warmup, max_seconds,
                                 providers)
        return report
    finally:
        torch.set_num_threads(old_threads)


def _measure_backend(report, name, model, files, threads, inputs, repeats, warmup, max_seconds,
                     providers=None) -> None:
    rss_before, can_peak = _status_kb("VmRSS"), _reset_peak()
    try:
        fn, size = _backend(name, model, files, threads, inputs[min(inputs)], providers)
    except _Skip as e:
        report["skipped"][name] = str(e)
        return
    rows = []
    for batch in progress(list(inputs), desc=f"benchmark {name}", unit="batch size", leave=False):
        times = time_calls(fn, inputs[batch], warmup=warmup, repeats=repeats, max_seconds=max_seconds)
        rows.append({"backend": name, **summarise(times, batch), "size_bytes": size})
    peak = _status_kb("VmHWM") if can_peak else None
    for row in rows:
        row["peak_memory_mb"] = None if peak is None or rss_before is None else round((peak - rss_before) / 1024, 1)
    report["results"] += rows
    del fn


def format_benchmark(report: dict) -> str:
    """A table: one line per (backend, batch)."""
    flops = report.get("flops_per_image")
    head = (f"{report['model']}  input {'x'.join(map(str, report['input']))}  params {report['params'] / 1e6:.2f} M"
            f"  {'' if flops is None else f'{flops / 1e9:.3g} GFLOPs/image'}  threads {report['threads']}"
            f"  ({report['machine']['cpu']})")
    lines = [head, f"{'backend':<10} {'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'img/s':>9} "
             f"{'(p5-p95)':>15} {'n':>4} {'peak MB':>8} {'size MB':>8}"]
    for r in report["results"]:
        lat, tp = r["latency_ms"], r["throughput_img_s"]
        size = "-" if r["size_bytes"] is None else f"{r['size_bytes'] / 1e6:.1f}"
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        lines.append(f"{r['backend']:<10} {r['batch']:>5} {lat['p50']:>9.2f} {lat['p95']:>9.2f} {lat['p99']:>9.2f} "
                     f"{tp['median']:>9.1f} {tp['p5']:>7.1f}-{tp['p95']:<7.1f} {r['repeats']:>4} {peak:>8} {size:>8}")
    for name, why in report["skipped"].items():
        lines.append(f"skipped {name}: {why}")
    if report.get("providers"):
        lines.append(f"onnx providers: {', '.join(report['providers'])}")
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)
