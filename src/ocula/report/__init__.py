"""One self-contained HTML page per run (`ocula report RUN`) and the table of runs (`ocula runs`).

    from ocula.report import write_report
    path = write_report("runs/pets")          # runs/pets/report.html, images inlined, no network

A feature package over the core: it reads the files a run directory holds (config.json, model.json,
metrics.csv, eval-*/report.json, gate reports, audit/issues.json, ...) and never trains or predicts.
Nothing in the core imports it. A section whose inputs are missing is shown as "not run", with the
command that would fill it.
"""
from __future__ import annotations

from ocula.lazy import lazy_getattr

# Loaded on first use: `ocula --help` imports this package (for its CLI) and must not import torch.
_EXPORTS = {
    "collect_run": "ocula.report.collect",
    "Section": "ocula.report.files",
    "find_run": "ocula.report.files",
    "render_report": "ocula.report.render",
    "write_report": "ocula.report.render",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
