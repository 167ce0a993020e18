"""Checkpoints written by timm and torchvision load into ocula and give the same logits; a pickle that
would run code is refused before it runs.

For resnet18 and vit_small_patch16_224 (random init, seed 0, 224 px): timm's `state_dict()` saved as
.safetensors, as a plain .pth, and the way timm's train.py saves (nested `state_dict` +
`state_dict_ema`, `module.` prefix, an argparse.Namespace); plus torchvision's resnet18 `state_dict()`.
Each is loaded into `ocula.create_model(name)` with `ocula.transfer.load_weights`, and the logits on
the same batch are compared with the saving library's own model.

    python bench/timm_checkpoint_parity.py
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

TOLERANCE = 1e-5


def save_variants(model: torch.nn.Module, folder: Path, name: str) -> list[Path]:
    from safetensors.torch import save_file

    sd = model.state_dict()
    ddp = {f"module.{k}": v for k, v in sd.items()}
    files = [folder / f"{name}.safetensors", folder / f"{name}.pth", folder / f"{name}-train-script.pth"]
    save_file(sd, files[0])
    torch.save(sd, files[1])
    torch.save({"epoch": 9, "arch": name, "state_dict": ddp, "state_dict_ema": ddp, "metric": 0.5,
                "args": argparse.Namespace(lr=0.1, model=name)}, files[2])
    return files


def compare(name: str, reference: torch.nn.Module, files: list[Path], x: torch.Tensor, **kw) -> list[dict]:
    from ocula.models.registry import create_model
    from ocula.engine.weights import load_weights

    with torch.no_grad():
        want = reference.eval()(x)
    rows = []
    for f in files:
        model = create_model(name, want.shape[1], 3, **kw)
        report = load_weights(model, f)
        with torch.no_grad():
            diff = (model.eval()(x) - want).abs().max().item()
        rows.append({"model": name, "file": f.name, "loaded": f"{report.loaded}/{report.total}",
                     "nested_key": report.nested_key, "max_abs_logit_diff": diff, "ok": diff <= TOLERANCE})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def malicious_pickle(folder: Path) -> dict:
    from ocula.errors import OculaError
    from ocula.engine.weights import read_weights

    marker = folder / "MARKER"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"weight": torch.zeros(1), "payload": RunsCode()}, folder / "evil.pth")
    try:
        read_weights(folder / "evil.pth")
        message = "LOADED (bad)"
    except OculaError as e:
        message = str(e)
    return {"refused": "refused" in message, "marker_created": marker.exists(), "message": message}


def main() -> None:
    import timm
    import torchvision

    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="docs/bench/timm_checkpoint_parity.json")
    args = ap.parse_args()
    info = print_machine()
    torch.manual_seed(0)
    x = torch.randn(4, 3, 224, 224)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in ("resnet18", "vit_small_patch16_224"):
            torch.manual_seed(0)
            reference = timm.create_model(name)
            rows += compare(name, reference, save_variants(reference, folder, name), x,
                            input_size=224 if "vit" in name else None)
        torch.manual_seed(0)
        tv = torchvision.models.resnet18()
        torch.save(tv.state_dict(), folder / "torchvision_resnet18.pth")
        rows += compare("resnet18", tv, [folder / "torchvision_resnet18.pth"], x)
        refusal = malicious_pickle(folder)
    print(json.dumps(refusal))
    worst = max(r["max_abs_logit_diff"] for r in rows)
    print(f"worst max |logit difference| over {len(rows)} checkpoints: {worst:.3g} (tolerance {TOLERANCE:g})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": info, "rows": rows, "worst": worst,
                                           "malicious_pickle": refusal}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
