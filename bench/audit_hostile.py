"""Benchmark: a folder salted with hostile files is audited without a crash, each file reported
under the right category.

    .venv/bin/python bench/audit_hostile.py [--out /tmp/ocula-bench-audit-hostile]

The folder (ocula.audit.hostile.write_hostile_folder): two classes of ordinary 48×48 PNGs plus a
zero-byte file, random bytes and text named as images, a truncated JPEG and PNG, a PNG named .jpg,
a 144-megapixel decompression bomb (a few hundred KB), an animated GIF, CMYK, 16-bit and
palette-with-transparency images, a 6×6 image and a 400×40 strip; this script adds a 30-megapixel
("huge") image. The audit runs with default limits and the label check on (2 folds).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from audit_duplicates import machine  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/ocula-bench-audit-hostile")
    parser.add_argument("--json", default="docs/bench/audit_hostile.json")
    args = parser.parse_args(argv)
    from PIL import Image

    from ocula.audit import audit
    from ocula.audit.hostile import write_hostile_folder

    shutil.rmtree(args.out, ignore_errors=True)
    root = Path(args.out) / "data"
    expected = write_hostile_folder(root, ordinary_per_class=12)
    Image.new("RGB", (6000, 5000), (90, 120, 150)).save(root / "b" / "huge.png")
    expected["b/huge.png"] = "huge"
    t0 = time.perf_counter()
    crashed = None
    try:
        result = audit(str(root), folds=2, epochs=2, out=str(Path(args.out) / "report"))
    except Exception as e:  # noqa: BLE001 - the point of the benchmark is that this never happens
        crashed = f"{type(e).__name__}: {e}"
        result = None
    elapsed = time.perf_counter() - t0
    rows = []
    if result is not None:
        found: dict = {}
        for f in result.findings:
            for item in f.items:
                found.setdefault(item.id, set()).add(f.category)
        report = (Path(args.out) / "report" / "report.md").read_text()
        for name, category in sorted(expected.items()):
            rows.append({"file": name, "expected": category, "found": sorted(found.get(name, ())),
                         "right": category in found.get(name, ()), "in_report_md": name in report})
    record = {"command": " ".join([sys.executable, *sys.argv]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "crashed": crashed, "audit_s": round(elapsed, 2), "hostile_files": len(expected),
              "right_category": sum(r["right"] for r in rows), "in_report": sum(r["in_report_md"] for r in rows),
              "files": rows}
    print(json.dumps(record, indent=2))
    if args.json:
        from ocula.io import write_json

        write_json(args.json, record)
    ok = crashed is None and record["right_category"] == record["in_report"] == len(expected)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
