"""Issue 28: the tables of bench/clips_plain_loops.py's JSON, ocula's rows beside the plain loop on the same
test clips, with paired differences.

    python bench/clips_table.py docs/bench/clips_objects.json [--baseline plain_lstm]

Each ocula row is paired with the plain row of the same set, layout and training seed (the plain loop
ignores val/, so DATA and DATA_val hold the same train and test clips): Δ = mean over test clips of
(ocula right − plain right), ± its standard error over clips; "b/c" = clips only ocula / only the plain
loop got right.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np


def labels(data: str) -> np.ndarray:
    test = Path(data) / "test"
    classes = sorted(d.name for d in test.iterdir() if d.is_dir())
    return np.concatenate([np.full(len(list((test / c).iterdir())), i) for i, c in enumerate(classes)])


def key(data: str) -> str:
    return re.sub(r"_val$", "", Path(data).name)  # DATA and DATA_val: the same train and test clips


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("json")
    p.add_argument("--baseline", action="append", default=[],
                   help="ROW=PLAIN: pair ocula row ROW with plain row PLAIN (default: every row with plain_lstm)")
    args = p.parse_args()
    pairs = dict(b.split("=") for b in args.baseline)
    rows = [r for run in json.loads(Path(args.json).read_text())["runs"] for r in run["rows"]]
    plain = {(r["row"], key(r["data"]), r["seed"]): r for r in rows if r["row"].startswith("plain_")}
    print("| set_layout | validation | ocula row | seed | plain | ocula | Δ (paired, ± s.e.) | b/c |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["row"].startswith("plain_") or "test_pred" not in r:
            continue
        base = plain.get((pairs.get(r["row"], "plain_lstm"), key(r["data"]), r["seed"]))
        y = labels(r["data"])
        mine = np.asarray(r["test_pred"]) == y
        if base is None:
            print(f"| {key(r['data'])} | {'val/' if r.get('val_split') else 'none'} | {r['row']} | {r['seed']} | — | "
                  f"{r['test_accuracy']:.4f} | | |")
            continue
        theirs = np.asarray(base["test_pred"]) == y
        d = mine.astype(float) - theirs
        cf = (r.get("resolved") or {}).get("cross_fit")
        mode = "val/" if r.get("val_split") else ("cross-fit" if cf else "carved")
        print(f"| {key(r['data'])} | {mode} | {r['row']} | {r['seed']} | {theirs.mean():.4f} | {mine.mean():.4f} | "
              f"{100 * d.mean():+.2f} ± {100 * d.std(ddof=1) / np.sqrt(len(d)):.2f} | "
              f"{int((mine & ~theirs).sum())}/{int((theirs & ~mine).sum())} |")


if __name__ == "__main__":
    main()
