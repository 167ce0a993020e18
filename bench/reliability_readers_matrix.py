"""Run every malformed model file through every command that reads one; print a Markdown table.

    .venv/bin/python bench/reliability_readers_matrix.py RUN_DIR WORK_DIR

RUN_DIR: a trained ocula run (its weights/best.safetensors and state/last.safetensors are the good
files the hostile ones are made from). The hostile files come from tests/test_reliability_readers.py.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("t", HERE / "tests" / "test_reliability_readers.py")
t = importlib.util.module_from_spec(spec)
spec.loader.exec_module(t)


def run(*args, timeout=120):
    env = {**os.environ, "OCULA_OFFLINE": "1"}
    env.pop("OCULA_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "ocula", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=timeout)
    lines = [x for x in r.stderr.splitlines() if x.strip() and "%|" not in x and not x.startswith("warning")]
    tb = "Traceback" in r.stderr
    return r.returncode, (lines[-1] if lines else ""), len(lines), tb


def main(run_dir: str, work: str) -> None:
    from PIL import Image

    work = Path(work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "bad").mkdir(parents=True)
    img = work / "x.png"
    Image.new("L", (8, 8)).save(img)
    good = (Path(run_dir) / "weights" / "best.safetensors").read_bytes()
    files = {**t.malformed_safetensors(good), **t.malformed_bundles(good)}
    state_good = (Path(run_dir) / "state" / "last.safetensors").read_bytes()
    states = t.malformed_safetensors(state_good)
    empty_pt = work / "bad" / "empty.pt"
    empty_pt.write_bytes(b"")
    print("| file | command | exit | stderr lines | Traceback | message (path shortened to FILE) |")
    print("|---|---|---:|---:|---|---|")
    for name, data in files.items():
        p = work / "bad" / f"{name}.safetensors"
        p.write_bytes(data)
        cmds = {"predict": ("predict", p, img),
                "evaluate": ("evaluate", p, "digits", "--out", work / "ev"),
                "export": ("export", p, "--out", work / "m.onnx"),
                "serve (load)": ("serve", p, "--port", "0"),
                "--pretrained": ("train", "digits", "--model", "seed_cnn", "--epochs", "1", "--pretrained", p,
                                 "--out", work / "pre")}
        if name not in t.FORMAT_CASES:  # metadata cases: the model-building commands; --pretrained too
            cmds = {k: v for k, v in cmds.items() if k in ("predict", "export", "--pretrained")}
        for label, args in cmds.items():
            code, msg, n, tb = run(*args)
            print(f"| {name} | {label} | {code} | {n} | {'yes' if tb else 'no'} | "
                  f"`{msg.replace(str(p), 'FILE').replace('|', '/')}` |")
    for name, data in states.items():
        r = work / f"resume-{name}"
        shutil.copytree(run_dir, r)
        (r / "state" / "last.safetensors").write_bytes(data)
        code, msg, n, tb = run("train", "--resume", r)
        msg = msg.replace(str(r / "state" / "last.safetensors"), "RUN/state/last.safetensors")
        print(f"| {name} (state) | --resume | {code} | {n} | {'yes' if tb else 'no'} | `{msg}` |")
    code, msg, n, tb = run("train", "digits", "--model", "seed_cnn", "--epochs", "1", "--pretrained", empty_pt,
                           "--out", work / "pre")
    print(f"| empty.pt (0 bytes) | --pretrained | {code} | {n} | {'yes' if tb else 'no'} | "
          f"`{msg.replace(str(empty_pt), 'FILE')}` |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
