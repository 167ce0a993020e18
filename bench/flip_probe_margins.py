"""How far from the bar is each flip decision? The probe's retention per dataset and seed.

    python bench/flip_probe_margins.py [--work DIR] [--seeds 0,1,2] [--json docs/bench/flip_probe_margins.json]

Uses the datasets of bench/right_by_default.py (written to --work if missing) and the built-ins.
Retention >= 0.6 (and no swapped class pair) keeps the flip; the table shows how much room each
decision has, and how long the probe took.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402
from right_by_default import make_digits_png, make_faces, make_motion, make_photos  # noqa: E402

# (name, data spec or maker, model, what mirroring does to labels)
CASES = (("digits-png", make_digits_png, "seed_cnn", "changes"), ("digits (8 px)", "digits", "seed_cnn", "changes"),
         ("fashion-mnist", "fashion-mnist", "seed_cnn", "keeps"), ("photos", make_photos, "seed_cnn", "keeps"),
         ("faces", make_faces, "seed_cnn", "keeps"), ("motion left/right", make_motion, "cnn_lstm", "changes"),
         ("moving-shapes up/down", "moving-shapes", "cnn_lstm", "keeps"))


def main() -> None:
    from ocula.config import build_config
    from ocula.data.sources import resolve_data
    from ocula.engine import setup
    from ocula.engine.flip_probe import decide_flips
    from ocula.engine.input_choice import choose_contract

    p = argparse.ArgumentParser()
    p.add_argument("--work", default="/tmp/ocula-rbd")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--json", default=str(Path(__file__).resolve().parents[1] / "docs/bench/flip_probe_margins.json"))
    args = p.parse_args()
    out = {"machine": print_machine(), "rows": []}
    work = Path(args.work)
    for name, spec, model, truth in CASES:
        if callable(spec):
            folder = work / spec.__name__.replace("make_", "")
            data = str(spec(folder) if not folder.exists() else folder)
        else:
            data = spec
        cfg = build_config(data, model=model)
        splits = resolve_data(data, video=setup.takes_clips(model) or None)
        contract = choose_contract(cfg, splits).contract
        train, _ = setup.to_memory(splits.train, contract, cfg, desc="decode", train=True)
        for seed in [int(s) for s in args.seeds.split(",")]:
            t0 = time.perf_counter()
            found = decide_flips("auto", "auto", "light", train, contract, len(splits.classes), seed=seed)
            for key, d in found.items():
                if d.decided_by == "not used":
                    continue
                row = {"dataset": name, "transform": key, "seed": seed, "use": d.use,
                       "retention": d.evidence.get("retention"), "accuracy": d.evidence.get("accuracy"),
                       "transformed": d.evidence.get(f"accuracy_{key}"), "swapped": d.evidence.get("swapped_classes"),
                       "probe_s": round(time.perf_counter() - t0, 1), "mirror_labels": truth if key == "hflip" else
                       ("changes" if "moving" in name or "motion" in name else "?")}
                out["rows"].append(row)
                print(json.dumps(row), flush=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
