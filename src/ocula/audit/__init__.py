"""Data audit: what is wrong with a dataset before (and after) training on it.

    from ocula.audit import audit
    result = audit("data/", folds=5, out="audit/")     # report.md, report.html, issues.json
    result.write_clean("clean.csv")                      # a manifest without the flagged files

Checks: integrity (integrity.py), exact/near duplicates and leakage (duplicates.py), statistics
(stats.py), label errors from out-of-fold predictions (labels.py), embedding outliers (outliers.py).
Imports are lazy so `ocula --help` does not pay for them.
"""
from __future__ import annotations

from ocula.audit import findings

__all__ = ["audit", "AuditResult", "Finding", "SampleRef", "CATEGORIES"]


def __getattr__(name):
    if name in ("audit", "AuditResult"):
        from ocula.audit import api  # lazy: `ocula --help` imports this package (audit/cli.py); api pulls the engine

        return getattr(api, name)
    if name in ("Finding", "SampleRef", "CATEGORIES"):
        return getattr(findings, name)
    raise AttributeError(f"module 'ocula.audit' has no attribute {name!r}")
