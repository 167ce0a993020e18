"""Issue 26: `--compile` against eager, side by side in one process: training steps/s and prediction img/s of
one model, each with the first compile's time (a fresh inductor cache, so the compile is cold).

    python bench/compile_speed.py                                    # seed_cnn at 28×28×1, batch 64
    python bench/compile_speed.py --model resnet18 --size 64 --channels 3

Order: eager, compiled, eager again (the compiled figure is compared with the mean of the two eager runs,
which brackets it in time on a shared machine). Both go through ocula's own wrapper
(ocula.models.compiled.compile_model: what `ocula train --compile` and `ocula predict --compile` use); the
training step is forward, cross-entropy, backward and an SGD step on a fixed random batch, prediction is
`Classifier.logits` on a fixed batch in inference mode.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="ocula_inductor_"))  # a cold compile

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine, write_result  # noqa: E402


def build(args):
    from ocula.models import create_model

    torch.manual_seed(0)
    return create_model(args.model, 10, args.channels, args.size)


def train_speed(args, compiled: bool) -> dict:
    from ocula.models.compiled import compile_model

    model = build(args).train()
    step_model = compile_model(model, torch.device("cpu")) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))

    def step():
        loss = torch.nn.functional.cross_entropy(step_model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()  # compiled: forward and backward graphs are built here
    first = time.perf_counter() - t0
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - t0
    return {"first_step_s": first, "steps_per_s": args.steps / seconds,
            "fell_back": getattr(step_model, "fell_back", None)}


def predict_speed(args, compiled: bool) -> dict:
    from ocula import bundle
    from ocula.inference.predictor import Classifier
    from ocula.models import default_contract

    model = build(args).eval()
    contract = default_contract(args.model, channels=args.channels, input_size=args.size)
    clf = Classifier(model, bundle.make_meta(model.ocula_arch, contract, [f"c{i}" for i in range(10)]))
    if compiled:
        clf.compile()
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    t0 = time.perf_counter()
    clf.logits(x)
    first = time.perf_counter() - t0
    for _ in range(3):
        clf.logits(x)
    t0 = time.perf_counter()
    for _ in range(args.calls):
        clf.logits(x)
    seconds = time.perf_counter() - t0
    return {"first_call_s": first, "img_per_s": args.calls * args.batch / seconds,
            "fell_back": getattr(clf.model, "fell_back", None)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="seed_cnn")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=60, help="timed training steps per row")
    p.add_argument("--calls", type=int, default=60, help="timed prediction calls per row")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared 2-core machine, 2 spinning "
                   "OpenMP threads slow down several-fold)")
    p.add_argument("--json", default="docs/bench/compile_speed.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    info = print_machine()
    print(f"inductor cache: {os.environ['TORCHINDUCTOR_CACHE_DIR']}", flush=True)
    rows = []
    for what, fn in (("train", train_speed), ("predict", predict_speed)):
        for mode in ("eager", "compiled", "eager"):
            row = {"what": what, "mode": mode, **fn(args, mode == "compiled")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for what, key in (("train", "steps_per_s"), ("predict", "img_per_s")):
        eager = [r[key] for r in rows if r["what"] == what and r["mode"] == "eager"]
        comp = next(r for r in rows if r["what"] == what and r["mode"] == "compiled")
        first = comp.get("first_step_s", comp.get("first_call_s"))
        summary[what] = {"eager": sum(eager) / 2, "compiled": comp[key], "speedup": comp[key] / (sum(eager) / 2),
                         "first_compile_s": first}
        print(f"{what}: eager {sum(eager) / 2:.1f} {key}, compiled {comp[key]:.1f} "
              f"({comp[key] / (sum(eager) / 2):.2f}×), first compiled call {first:.1f} s")
    result = {"machine": info, "args": vars(args), "rows": rows, "summary": summary,
              "note": "2 shared cores; other agents load the CPU, so only side-by-side ratios are meaningful"}
    write_result(args.json, result)


if __name__ == "__main__":
    main()
