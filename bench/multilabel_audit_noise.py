#!/usr/bin/env python
"""Issue 16: `ocula audit` on multi-label data. Inject label-set noise into the digits mosaics (5 % of the
training rows: add one absent class or drop one present), audit with defaults, count what the label check finds.

    python bench/multilabel_data.py digits-mosaics /tmp/dm && PYTHONPATH=src python bench/multilabel_audit_noise.py
"""
import csv, json, shutil, sys, subprocess
from pathlib import Path
import numpy as np
src, dst = Path("/tmp/dm"), Path("/tmp/dm_noisy")
shutil.rmtree(dst, ignore_errors=True); shutil.copytree(src, dst)
rows = list(csv.DictReader(open(dst / "labels.csv")))
classes = sorted({c for r in rows for c in r["labels"].split("|") if c})
rng = np.random.default_rng(0)
train = [i for i, r in enumerate(rows) if r["split"] == "train"]
flip = set(rng.choice(train, int(0.05 * len(train)), replace=False).tolist())
for i in flip:
    have = [c for c in rows[i]["labels"].split("|") if c]
    if have and rng.random() < 0.5:
        have.remove(rng.choice(have))
    else:
        have.append(rng.choice([c for c in classes if c not in have]))
    rows[i]["labels"] = "|".join(sorted(have))
with open(dst / "labels.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
subprocess.run([sys.executable, "-m", "ocula", "audit", str(dst / "labels.csv"), "--out", "/tmp/dm_noisy_audit"], check=True,
               capture_output=True)
found = json.load(open("/tmp/dm_noisy_audit/issues.json"))
paths = {str((dst / rows[i]["path"]).resolve()) for i in flip}
flagged_paths = {str(Path(f["items"][0]["path"]).resolve()) for f in found["findings"] if f["category"] == "label-issue"}
hit = len(paths & flagged_paths)
print(json.dumps({"corrupted": len(paths), "flagged": len(flagged_paths), "found": hit,
                  "recall": hit / len(paths), "precision": hit / max(1, len(flagged_paths)),
                  "oof_label_accuracy": found["counts"].get("out_of_fold_accuracy")}))
