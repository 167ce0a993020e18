"""The audit's three outputs: issues.json (every finding), report.md (counts and tables) and
report.html (the same with a thumbnail of every image a finding names, embedded as base64 JPEG)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Optional

from ocula.audit.findings import CATEGORIES, Finding
from ocula.audit.integrity import FATAL
from ocula.data.images import open_image
from ocula.errors import BadImageError
from ocula.io import atomic_path, write_json, write_text

HTML_PER_CATEGORY = 100  # findings shown with thumbnails per category (issues.json has all)
MD_PER_CATEGORY = 25
THUMB = 96  # pixels, longest side


def write_report(result, out) -> dict:
    """Write issues.json, report.md and report.html into `out`; → their paths."""
    out = Path(out)
    paths = {"json": out / "issues.json", "md": out / "report.md", "html": out / "report.html"}
    write_json(paths["json"], result.to_dict())
    write_text(paths["md"], markdown(result))
    write_text(paths["html"], html_report(result))
    if result.out_of_fold is not None:  # what cleanlab and friends want, without a retrain
        paths["oof"] = out / "out_of_fold.npz"
        _write_out_of_fold(result, paths["oof"])
    return {k: str(v) for k, v in paths.items()}


def _write_out_of_fold(result, path) -> None:
    import numpy as np

    oof = result.out_of_fold
    ids = np.array([result.inventory.refs[i].id for i in oof.indices])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, ids=ids, labels=result.inventory.labels[oof.indices], probs=oof.probs,
                                embeddings=oof.embeddings, fold=oof.fold, classes=np.array(result.classes))


def _ordered(result) -> dict[str, list[Finding]]:
    groups: dict[str, list[Finding]] = {}
    for name in CATEGORIES:
        found = result.by_category(name)
        if found:
            groups[name] = sorted(found, key=lambda f: -(f.score or 0))
    return groups


def _summary_rows(result) -> list[tuple[str, str, str, int, str]]:
    return [(name, CATEGORIES[name][0], CATEGORIES[name][1], len(found), CATEGORIES[name][2])
            for name, found in _ordered(result).items()]


def markdown(result) -> str:
    st = result.stats
    lines = [f"# Audit of {result.source}", "",
             f"{st['samples']} samples, {len(result.classes)} classes; {len(result.findings)} findings; "
             f"{len(result.flagged())} samples a cleaned manifest would leave out.", ""]
    lines += [f"- note: {n}" for n in result.notes] + ([""] if result.notes else [])
    lines += ["## Findings", "", "| category | check | severity | count | meaning |", "|---|---|---|---:|---|"]
    lines += [f"| {c} | {k} | {s} | {n} | {m} |" for c, k, s, n, m in _summary_rows(result)]
    lines += ["", "## Class counts", "", _class_table(st["class_counts"]), "", "## Images", ""]
    lines += _image_lines(st["images"])
    lines += ["", "## Checks", ""] + [f"- {k}: {v}" for k, v in result.counts.items() if k not in CATEGORIES]
    lines += [f"- time {k}: {v}" for k, v in result.timings.items()]
    for name, found in _ordered(result).items():
        lines += ["", f"## {name} ({len(found)})", "", "| score | samples | split | label | detail |",
                  "|---:|---|---|---|---|"]
        for f in found[:MD_PER_CATEGORY]:
            ids = ", ".join(r.id for r in f.items[:4]) + (" …" if len(f.items) > 4 else "")
            splits = "/".join(dict.fromkeys(r.split for r in f.items if r.split))
            labels = "/".join(dict.fromkeys(r.label for r in f.items if r.label))
            score = "" if f.score is None else f"{f.score:.3g}"
            lines.append(f"| {score} | {_md(ids)} | {splits} | {_md(labels)} | {_md(f.message)} |")
        if len(found) > MD_PER_CATEGORY:
            lines.append(f"\n… and {len(found) - MD_PER_CATEGORY} more in issues.json")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _class_table(counts: dict) -> str:
    splits = list(counts)
    classes = list(next(iter(counts.values())))
    rows = ["| class | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    rows += [f"| {_md(c)} | " + " | ".join(str(counts[s][c]) for s in splits) + " |" for c in classes]
    return "\n".join(rows)


def _image_lines(images: dict) -> list[str]:
    lines = []
    for key in ("width", "height", "megapixels", "file_kb"):
        s = images.get(key)
        if s:
            lines.append(f"- {key}: min {s['min']:.4g}, median {s['median']:.4g}, max {s['max']:.4g}")
    for key in ("modes", "formats"):
        if images.get(key):
            lines.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in images[key].items()))
    if images.get("common_sizes"):
        lines.append("- common sizes: " + ", ".join(f"{c['size']} ({c['count']})" for c in images["common_sizes"]))
    return lines


# --------------------------------------------------------------------------------- HTML
CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.f{border:1px solid #ddd;margin:6px 0;padding:6px}
.f figure{display:inline-block;margin:4px;text-align:center;font-size:11px;max-width:140px;word-break:break-all}
.f img{max-width:96px;max-height:96px;image-rendering:pixelated;border:1px solid #999}
.error{color:#b00}.warning{color:#a60}.info{color:#06a}.none{display:inline-block;width:96px;height:60px;
background:#eee;line-height:60px;font-size:11px}"""


def html_report(result) -> str:
    thumbs = _Thumbnails(result.inventory)
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Audit of {e(result.source)}</title>"
             f"<style>{CSS}</style></head><body><h1>Audit of {e(result.source)}</h1>",
             f"<p>{result.stats['samples']} samples, {len(result.classes)} classes, {len(result.findings)} findings, "
             f"{len(result.flagged())} flagged samples.</p>"]
    parts += [f"<p>note: {e(n)}</p>" for n in result.notes]
    parts.append("<table><tr><th>category</th><th>check</th><th>severity</th><th>count</th><th>meaning</th></tr>")
    parts += [f"<tr><td><a href='#{c}'>{c}</a></td><td>{k}</td><td class='{s}'>{s}</td><td>{n}</td><td>{e(m)}</td>"
              f"</tr>" for c, k, s, n, m in _summary_rows(result)]
    parts.append("</table>")
    for name, found in _ordered(result).items():
        parts.append(f"<h2 id='{name}'>{name} ({len(found)})</h2>")
        for f in found[:HTML_PER_CATEGORY]:
            usable = thumbs if f.category not in FATAL else None  # never decode a bomb for a preview
            figs = "".join(_figure(r, usable) for r in f.items[:6])
            more = f" (+{len(f.items) - 6} more)" if len(f.items) > 6 else ""
            parts.append(f"<div class='f'><div class='{f.severity}'>{e(f.message)}{more}</div>{figs}</div>")
        if len(found) > HTML_PER_CATEGORY:
            parts.append(f"<p>… and {len(found) - HTML_PER_CATEGORY} more in issues.json</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _figure(ref, thumbs: Optional["_Thumbnails"]) -> str:
    e = html.escape
    data = thumbs.get(ref) if thumbs is not None else None
    img = f"<img src='data:image/jpeg;base64,{data}' alt='{e(ref.id)}'>" if data else "<span class='none'>no preview</span>"
    caption = " · ".join(x for x in (ref.id, ref.split, ref.label or "") if x)
    return f"<figure>{img}<figcaption>{e(caption)}</figcaption></figure>"


class _Thumbnails:
    """Small JPEGs, made once per sample: decoded files (when they decode) or in-memory pixels."""

    def __init__(self, inventory):
        self.inventory, self.cache = inventory, {}

    def get(self, ref) -> Optional[str]:
        key = ref.index if ref.index is not None else ref.path
        if key not in self.cache:
            self.cache[key] = self._make(ref)
        return self.cache[key]

    def _make(self, ref) -> Optional[str]:
        from PIL import Image

        try:
            if ref.index is not None and self.inventory.kind == "tensors":
                pixels = self.inventory.pixels(ref.index).permute(1, 2, 0).numpy()
                img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            elif ref.path:
                img = open_image(ref.path, channels=3, draft_size=THUMB)
            else:
                return None
        except BadImageError:
            return None
        scale = THUMB / max(img.size)
        size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
        img = img.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=85)
        return base64.b64encode(buf.getvalue()).decode("ascii")
