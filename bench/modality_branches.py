"""Count the modules that branch on the kind of data (image or video) outside the modality package.

    python bench/modality_branches.py            # → the count and, per module, the lines

A branch is any test of a clip-ness signal: `spec.video`, `contract.frames`, `modality == ...`, `name == "video"`,
`meta["task"] == "video"`, `ndim == 5` / `dim() == 5`, or a helper named is_video* / takes_clips.
Issue 15's target is none outside src/ocula/modality/.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

SIGNALS = re.compile(r"""(\bspec\.video\b|\bcontract\.frames\b|\.modality\s*[!=]=|\.name\s*[!=]=\s*["'](?:video|image)|[!=]=\s*["']video["']|"""
                     r"""ndim\s*==\s*5|dim\(\)\s*==\s*[45]|\bis_video\w*\(|_is_video\(|\btakes_clips\(|"""
                     r"""\[["']task["']\]\s*==|get\(["']task["']\)\s*==)""")
ROOT = Path(__file__).resolve().parents[1] / "src" / "ocula"
OWNER = "modality"  # the package allowed to ask


def branching_modules(root: Path = ROOT) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == OWNER:
            continue
        hits = [f"{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
                if SIGNALS.search(line.split("#", 1)[0]) and not line.strip().startswith(("\"", "'"))]
        if hits:
            found[str(rel)] = hits
    return found


if __name__ == "__main__":
    modules = branching_modules()
    for name, hits in modules.items():
        print(f"{name} ({len(hits)})")
        for hit in hits:
            print("   ", hit)
    print(f"{len(modules)} modules outside ocula/{OWNER}/ branch on modality "
          f"({sum(map(len, modules.values()))} lines)")
    sys.exit(0)
