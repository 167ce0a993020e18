"""What an audit finds: one `Finding` per problem, naming the samples it concerns.

Every check returns findings of the categories below; the report, issues.json and the cleaned
manifest are all built from the same list, so what a user reads is what gets dropped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

# category -> (check, severity, one-line meaning). Severity "error": the file cannot be used;
# "warning": usable but probably wrong; "info": worth knowing.
CATEGORIES = {
    "unreadable": ("integrity", "error", "not an image Pillow can identify, or unreadable"),
    "truncated": ("integrity", "error", "the header opens but the pixels do not decode"),
    "zero-byte": ("integrity", "error", "an empty file"),
    "decompression-bomb": ("integrity", "error", "more pixels than allowed; never decoded"),
    "wrong-extension": ("integrity", "warning", "the file name says one format, the bytes another"),
    "animated": ("integrity", "warning", "several frames; only the first is used"),
    "odd-mode": ("integrity", "info", "CMYK, 16-bit or transparent pixels; converted on load"),
    "tiny": ("integrity", "warning", "far smaller than the rest of the dataset"),
    "huge": ("integrity", "info", "very many pixels; slow to decode"),
    "extreme-aspect": ("integrity", "warning", "very long and thin; centre crops lose most of it"),
    "exact-duplicate": ("duplicates", "warning", "byte-identical copies with the same label"),
    "near-duplicate": ("duplicates", "warning", "visually the same image, same label"),
    "conflicting-labels": ("duplicates", "error", "the same image under different labels"),
    "leakage": ("duplicates", "error", "the same image in more than one split"),
    "label-issue": ("labels", "warning", "the given label disagrees with out-of-fold predictions"),
    "outlier": ("outliers", "info", "far from the rest of its class in embedding space"),
    "class-imbalance": ("stats", "info", "the largest class is many times the smallest"),
    "annotation": ("boxes", "warning", "an annotation the reader skipped: malformed, unknown class, duplicate id …"),
    "outside-box": ("boxes", "warning", "a box partly outside its image (clipped) or wholly outside (skipped)"),
    "tiny-box": ("boxes", "warning", "a box under 0.1% of its image or under 4 px a side"),
    "huge-box": ("boxes", "info", "a box covering over 95% of its image"),
    "overlapping-boxes": ("boxes", "warning", "two boxes of different classes on one object (IoU > 0.7)"),
}


@dataclass
class SampleRef:
    """One sample as a report shows it: `id` is a path relative to the data or a built-in name."""

    id: str
    split: str = ""
    label: Optional[str] = None  # class name; None when unknown (a file the scan skipped)
    path: Optional[str] = None  # absolute path for files; None for in-memory samples
    index: Optional[int] = None  # position in the audit's inventory, for thumbnails


@dataclass
class Finding:
    category: str
    items: list[SampleRef]
    message: str
    score: Optional[float] = None  # larger = more certain / more severe, per category
    details: dict = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)  # ids that a cleaned manifest leaves out

    @property
    def check(self) -> str:
        return CATEGORIES[self.category][0]

    @property
    def severity(self) -> str:
        return CATEGORIES[self.category][1]

    def to_dict(self) -> dict:
        out = {"category": self.category, "check": self.check, "severity": self.severity}
        out.update(asdict(self))
        for item in out["items"]:
            item.pop("index", None)
        return out


def dropped_ids(findings: list[Finding]) -> set[str]:
    return {sample_id for f in findings for sample_id in f.drop}


def count_by_category(findings: list[Finding]) -> dict[str, int]:
    counts = {name: 0 for name in CATEGORIES}
    for f in findings:
        counts[f.category] += 1
    return {k: v for k, v in counts.items() if v}
