"""Coverage-guided fuzzing (atheris / libFuzzer) of ocula's parsers of untrusted bytes.

    .venv/bin/python bench/fuzz_atheris.py --runs 20000            # every target, 20,000 inputs each
    .venv/bin/python bench/fuzz_atheris.py --target image --seconds 60

Targets: `image` (ocula.data.images.open_image: only BadImageError may come out), `manifest`
(ocula.data.manifest.read_manifest: a FolderScan or OculaError), `weights` (ocula.engine.weights
.read_weights on a .safetensors file: tensors or OculaError). Each runs in its own process, seeded
with real files; crashes are written under the --out folder (default /tmp/ocula-atheris) and the
script exits 1 when any target found one. Prints a JSON summary (runs, seconds, crashes per target).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time

TARGETS = ("image", "manifest", "weights")


def seeds(target: str, folder: str) -> None:
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    if target == "image":
        rng = np.random.default_rng(0)
        for fmt, mode in (("PNG", "RGB"), ("PNG", "L"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"),
                          ("TIFF", "RGB"), ("WEBP", "RGB")):
            img = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).convert(mode)
            buf = io.BytesIO()
            img.save(buf, fmt)
            with open(os.path.join(folder, f"seed.{fmt.lower()}"), "wb") as f:
                f.write(buf.getvalue())
    elif target == "manifest":
        for i, text in enumerate(["path,label,split\na.png,cat,train\nb.png,dog,val\n",
                                  "\ufefffile;class\n\"../../etc/passwd\";x\n", "image,label\n~/x.png,\"a,b\"\n"]):
            with open(os.path.join(folder, f"seed{i}.csv"), "wb") as f:
                f.write(text.encode("utf-8"))
    else:
        import torch
        from safetensors.torch import save

        blob = save({"w": torch.zeros(3, 4), "b": torch.ones(4)}, metadata={"ocula": json.dumps({"arch": {}})})
        with open(os.path.join(folder, "seed.safetensors"), "wb") as f:
            f.write(blob)


def _file_target(path: str, reader, allowed):
    """A libFuzzer target that writes the input to `path` and reads it back; only `allowed` may escape."""
    def one(data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
        try:
            reader(path)
        except allowed:
            pass

    return one


def fuzz_one(target: str) -> None:
    """Runs inside the libFuzzer process (argv holds libFuzzer's flags)."""
    import atheris

    from ocula.errors import BadImageError, OculaError

    work = tempfile.mkdtemp(prefix="ocula-atheris-")
    with atheris.instrument_imports(include=["ocula", "PIL", "csv", "safetensors"]):  # coverage feedback
        if target == "image":
            from ocula.data.images import open_image  # noqa: F401
        elif target == "manifest":
            from ocula.data.manifest import read_manifest  # noqa: F401
        else:
            from ocula.engine.weights import read_weights  # noqa: F401
    if target == "image":
        from ocula.data.images import open_image

        def one(data: bytes) -> None:
            try:
                open_image(data, channels=3, max_pixels=4_000_000, draft_size=8)
            except BadImageError:
                pass
    elif target == "manifest":
        from ocula.data.manifest import read_manifest

        for name in ("a.png", "b.png"):
            with open(os.path.join(work, name), "wb") as f:
                f.write(b"x")
        one = _file_target(os.path.join(work, "m.csv"), read_manifest, OculaError)
    else:
        from ocula.engine.weights import read_weights

        one = _file_target(os.path.join(work, "w.safetensors"), read_weights, OculaError)

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=TARGETS, action="append")
    ap.add_argument("--runs", type=int, default=20000)
    ap.add_argument("--seconds", type=int, default=120, help="at most this long per target")
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "ocula-atheris"))
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args._child:
        sys.argv = [sys.argv[0], *rest]
        fuzz_one(args._child)
        return 0
    summary = {}
    for target in args.target or TARGETS:
        corpus = os.path.join(args.out, target, "corpus")
        crashes = os.path.join(args.out, target, "crashes") + os.sep
        os.makedirs(crashes, exist_ok=True)
        seeds(target, corpus)
        start = time.perf_counter()
        p = subprocess.run([sys.executable, __file__, "--_child", target, f"-runs={args.runs}",
                            f"-max_total_time={args.seconds}", f"-artifact_prefix={crashes}", "-rss_limit_mb=4096",
                            "-print_final_stats=1", corpus], capture_output=True, text=True)
        stats = {line.split(":")[2].strip(): line.split(":")[-1].strip() for line in p.stderr.splitlines()
                 if line.startswith("stat::")}
        cov = [line for line in p.stderr.splitlines() if line.startswith("#") and " cov: " in line]
        summary[target] = {"exit": p.returncode, "seconds": round(time.perf_counter() - start, 1),
                           "runs": int(stats.get("number_of_executed_units", 0) or 0),
                           "coverage": cov[-1].split(" cov: ")[1].split()[0] if cov else None,
                           "crashes": sorted(os.listdir(crashes))}
        if p.returncode != 0:
            summary[target]["tail"] = p.stderr[-2000:]
    print(json.dumps(summary, indent=2))
    return 1 if any(s["exit"] != 0 for s in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
