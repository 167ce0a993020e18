#!/usr/bin/env python3
"""Print pip constraints that pin every declared dependency to its lower bound (`pkg>=1.2` -> `pkg==1.2`).

`make test-min` installs `.[all,test]` under these constraints, so the suite runs at the oldest versions
pyproject.toml admits: a floor that does not install or pass there has to be raised. Dependencies without a
`>=` floor are left to pip; environment markers are kept so a pin only applies where the dependency does.
Usage: python .ci/min_constraints.py [pyproject.toml] > constraints.txt
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REQ = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*?)\s*(?:;(?P<marker>.*))?$")


def floors(pyproject: dict) -> dict[str, str]:
    """{normalised name: constraint line} for every requirement with a `>=` floor, self-references skipped."""
    project = pyproject["project"]
    self_name = _norm(project["name"])
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    out: dict[str, str] = {}
    for req in reqs:
        m = REQ.match(req)
        if not m or _norm(m["name"]) == self_name:
            continue
        low = re.search(r">=\s*([0-9][^,\s]*)", m["spec"])
        if not low:
            continue
        name, marker = _norm(m["name"]), (m["marker"] or "").strip()
        line = f"{name}=={low[1]}" + (f"; {marker}" if marker else "")
        if name in out and out[name] != line:  # declared twice (two extras): the higher floor binds
            line = max(out[name], line, key=lambda s: _version(s.split("==")[1].split(";")[0]))
        out[name] = line
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+-]", text))


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "pyproject.toml")
    pins = floors(tomllib.loads(path.read_text()))
    print(f"# generated from {path} by .ci/min_constraints.py: every `>=` floor pinned")
    print("\n".join(pins[name] for name in sorted(pins)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
