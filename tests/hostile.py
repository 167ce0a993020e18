"""A generated hostile corpus (files, names, checkpoints) and a fast way to run many CLI commands on it.

`make_data_corpus(root)`  a class-per-folder tree of real digit PNGs plus one hostile file per case
                          (non-UTF-8 name, 250-byte name, newline and spaces in the name, empty,
                          truncated, not an image, decompression bomb, symlink escaping the folder).
`make_model_corpus(root, bundle, marker)`  mutated copies of a real bundle (safetensors header
                          and layout mutations) and pickles whose `__reduce__` would create `marker`.
`run_cli(argvs)`          runs `ocula ARGV` for each argv: a few as real `python -m ocula`
                          subprocesses, the rest forked from one warm process that has already
                          imported ocula, torch and every command module (forking skips ~4 s of
                          imports per command on a 2-core machine). The child runs exactly what
                          `python -m ocula` runs (`sys.exit(ocula.cli.main())`, uncaught exceptions
                          printed by the interpreter's own excepthook), with stdout/stderr in files.

Run as a script (`python tests/hostile.py jobs.json`) it is that warm forking driver.
"""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

# ---------------------------------------------------------------------------- data files
DATA_CASES = {
    # case: (file name as bytes, what the file holds); each name holds an ASCII token (TOKENS) to find
    # the case in a command's output whatever the name's encoding
    "non-UTF-8 name": (b"caf\xe9-nonutf8.png", "png"),
    "250-byte name": (b"longname-" + b"a" * 237 + b".png", "png"),
    "newline+spaces name": (b"new\nline and  spaces-newline.png", "png"),
    "empty file": (b"emptyfile.png", "empty"),
    "truncated PNG": (b"truncpng.png", "truncated"),
    "not an image": (b"notimage.png", "text"),
    "decompression bomb": (b"bombpng-100000x100000.png", "bomb"),
    "escaping symlink": (b"escapelink.png", "symlink"),
}
TOKENS = {"non-UTF-8 name": "nonutf8", "250-byte name": "longname", "newline+spaces name": "newline",
          "empty file": "emptyfile", "truncated PNG": "truncpng", "not an image": "notimage",
          "decompression bomb": "bombpng", "escaping symlink": "escapelink"}
VALID_CONTENT = ("non-UTF-8 name", "250-byte name", "newline+spaces name")  # odd names, good images
REASONS = {  # words of a skip message → the reason, as the table shows it
    "empty": "empty file", "zero-byte": "empty file", "truncated": "truncated or corrupt",
    "corrupt": "truncated or corrupt", "not an image": "not an image", "too many pixels": "too many pixels",
    "more pixels than": "too many pixels", "decompression": "too many pixels",
    "symlink": "symlink outside the folder", "outside": "symlink outside the folder",
    "unreadable": "unreadable", "cannot read": "cannot read", "could not be read": "unreadable",
}


def png_bytes(arr=None) -> bytes:
    import numpy as np
    from PIL import Image

    arr = np.full((8, 8), 128, dtype=np.uint8) if arr is None else arr
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width×height (and a tiny IDAT): a decompression bomb by its header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def make_data_corpus(root: Path, outside: Path, per_class: int = 12) -> Path:
    """root/<digit>/... real digit PNGs (from scikit-learn's digits) + root/0/<hostile case files>."""
    from ocula.data.builtin import export_builtin

    export_builtin("digits", root, split="train", limit=per_class * 10)
    good = next(iter(sorted((root / "0").glob("*.png")))).read_bytes()
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.png"
    secret.write_bytes(good)
    folder = os.fsencode(root / "0")
    for case, (name, kind) in DATA_CASES.items():
        path = os.path.join(folder, name)
        if kind == "symlink":
            os.symlink(os.fsencode(secret), path)
            continue
        data = {"png": good, "empty": b"", "truncated": good[: len(good) // 2],
                "text": b"this is not an image\n", "bomb": png_claiming(100_000, 100_000)}[kind]
        with open(path, "wb") as f:
            f.write(data)
    return root


def case_paths(root: Path) -> dict[str, str]:
    return {case: os.fsdecode(os.path.join(os.fsencode(root / "0"), name))
            for case, (name, _) in DATA_CASES.items()}


# ---------------------------------------------------------------------------- model files
def _split_safetensors(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _join_safetensors(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def mutate_bundle(data: bytes) -> dict[str, bytes]:
    """Mutations of a real safetensors bundle, each one way a weights file can be broken."""
    header, body = _split_safetensors(data)
    (n,) = struct.unpack("<Q", data[:8])
    tensors = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    big = max(tensors, key=lambda k: header[k]["data_offsets"][1] - header[k]["data_offsets"][0])
    out = {
        "zero-byte bundle": b"",
        "truncated file": data[: len(data) * 3 // 5],
        "truncated header": data[: 8 + n // 2],
        "header length too large": struct.pack("<Q", 2 ** 40) + data[8:],
        "invalid JSON header": data[:8] + (b"{\"not\": json" + b"!" * n)[:n] + data[8 + n:],
    }
    h = json.loads(json.dumps(header))
    a, b = tensors[0], tensors[1]
    h[b]["data_offsets"] = [h[a]["data_offsets"][0], h[b]["data_offsets"][1]]  # b overlaps a
    out["overlapping offsets"] = _join_safetensors(h, body)
    h = json.loads(json.dumps(header))
    h[big]["shape"] = [d * 2 for d in h[big]["shape"]]  # more elements than its bytes hold
    out["shape vs byte length"] = _join_safetensors(h, body)
    h = json.loads(json.dumps(header))
    h[big]["shape"] = list(reversed(h[big]["shape"])) + [1]  # consistent bytes, wrong for the architecture
    out["shape vs architecture"] = _join_safetensors(h, body)
    h = json.loads(json.dumps(header))
    h["__metadata__"]["ocula"] = "{\"arch\": " + "[" * 5000  # metadata JSON nested 5000 deep, unterminated
    out["bad ocula metadata"] = _join_safetensors(h, body)
    return out


class Payload:
    """Unpickling this creates the marker file: proof that a pickle was executed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def make_model_corpus(root: Path, bundle_path: str, marker: str) -> dict[str, str]:
    import torch

    root.mkdir(parents=True, exist_ok=True)
    data = Path(bundle_path).read_bytes()
    paths = {}
    for case, blob in mutate_bundle(data).items():
        p = root / (case.replace(" ", "_") + ".safetensors")
        p.write_bytes(blob)
        paths[case] = str(p)
    p = root / "zero.pt"
    p.write_bytes(b"")
    paths["zero-byte .pt"] = str(p)
    p = root / "payload.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "evil": Payload(marker)}, p)
    paths["pickle payload .pt"] = str(p)
    p = root / "payload_in.safetensors"  # a pickle with a .safetensors name
    p.write_bytes((root / "payload.pt").read_bytes())
    paths["pickle named .safetensors"] = str(p)
    return paths


# ---------------------------------------------------------------------------- running commands
def env() -> dict:
    e = dict(os.environ, OCULA_OFFLINE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
             MKL_NUM_THREADS="1", TQDM_DISABLE="1")
    e.pop("PYTHONFAULTHANDLER", None)
    return e


def run_subprocess(argv: list[str], cwd: str, timeout: float = 120) -> dict:
    """`python -m ocula ARGV` for real."""
    try:
        p = subprocess.run([sys.executable, "-m", "ocula", *argv], cwd=cwd, env=env(), capture_output=True,
                           timeout=timeout)
        return {"rc": p.returncode, "stdout": p.stdout.decode(errors="replace"),
                "stderr": p.stderr.decode(errors="replace")}
    except subprocess.TimeoutExpired as e:
        return {"rc": "timeout", "stdout": (e.stdout or b"").decode(errors="replace"),
                "stderr": (e.stderr or b"").decode(errors="replace")}


def run_forked(argvs: list[list[str]], cwd: str, workdir: Path, timeout: float = 60,
               parallel: int = 2) -> list[dict]:
    """Each argv run as `ocula ARGV` in a child forked from one warm driver process (see module doc)."""
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = workdir / "jobs.json"
    jobs.write_text(json.dumps({"argvs": argvs, "out": str(workdir), "timeout": timeout,
                                 "parallel": parallel}))
    subprocess.run([sys.executable, __file__, str(jobs)], cwd=cwd, env=env(), check=True,
                   timeout=timeout * len(argvs) + 120)
    results = []
    for i in range(len(argvs)):
        rc = (workdir / f"{i}.rc").read_text().strip()
        results.append({"rc": int(rc) if rc.lstrip("-").isdigit() else rc,
                        "stdout": (workdir / f"{i}.out").read_bytes().decode(errors="replace"),
                        "stderr": (workdir / f"{i}.err").read_bytes().decode(errors="replace"),
                        "seconds": float((workdir / f"{i}.s").read_text())})
    return results


def one_line_error(result: dict) -> bool:
    """Non-zero exit and an error that is one line: `ocula: error: ...` (a usage line may precede it).

    cli.main's last-resort guard ("ocula: error: internal error: ...") does not count: that is a bug
    turned into one line, not a reason the user can act on."""
    errors = [line for line in result["stderr"].splitlines() if line.startswith("ocula: error:")]
    return result["rc"] not in (0, "timeout") and len(errors) == 1 and not internal_error(result)


def internal_error(result: dict):
    """The exception name when cli.main's last-resort guard caught a crash, else None."""
    for line in result["stderr"].splitlines():
        if line.startswith("ocula: error: internal error"):
            rest = line.split("internal error", 1)[1].lstrip(": (")
            return rest.split(":")[0].split(")")[0].split()[0] if rest else "?"
    return None


WARM_MODULES = ("torch", "torchvision", "timm", "PIL.Image", "safetensors.torch", "numpy", "matplotlib.pyplot",
                "ocula.api", "ocula.bundle", "ocula.inference.predictor", "ocula.engine.trainer",
                "ocula.engine.setup", "ocula.evaluation.report", "ocula.transfer.embed", "ocula.transfer.retrieval",
                "ocula.engine.weights", "ocula.explain.api", "ocula.audit.api", "ocula.export.onnx",
                "ocula.export.gate", "ocula.serve.runner", "ocula.serve.app", "uvicorn", "onnx", "onnxruntime")


def _driver(jobs_file: str) -> None:
    import signal
    import time

    spec = json.loads(Path(jobs_file).read_text())
    import ocula.cli

    # Build the parser once: it imports every command module (~0.3 s); every child gets its own copy
    # of it through fork.
    parser = ocula.cli.build_parser()
    ocula.cli.build_parser = lambda: parser
    import importlib

    for name in WARM_MODULES:  # what the commands import lazily: once here, not in every child
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional extra that is not installed
            pass
    out = Path(spec["out"])
    running: dict[int, tuple[int, float]] = {}  # pid -> (job, deadline)
    started: dict[int, float] = {}
    todo = list(enumerate(spec["argvs"]))
    while todo or running:
        while todo and len(running) < spec.get("parallel", 2):
            i, argv = todo.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(argv, out / f"{i}.out", out / f"{i}.err")
            running[pid] = (i, time.monotonic() + spec["timeout"])
            started[i] = time.monotonic()
        time.sleep(0.01)
        for pid, (i, deadline) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                (out / f"{i}.rc").write_text(str(os.waitstatus_to_exitcode(status)))
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                (out / f"{i}.rc").write_text("timeout")
            else:
                continue
            (out / f"{i}.s").write_text(f"{time.monotonic() - started[i]:.3f}")
            del running[pid]


def _child(argv, out_path, err_path):
    """In the forked child: what `python -m ocula ARGV` does, with stdout/stderr in files."""
    import traceback

    import ocula.cli

    code = 1
    try:
        os.dup2(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.dup2(os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        sys.argv = ["ocula", *argv]
        try:
            code = ocula.cli.main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - the interpreter would print this traceback
            sys.excepthook(*sys.exc_info())
            code = 1
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    _driver(sys.argv[1])
