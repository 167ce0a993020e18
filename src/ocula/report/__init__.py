"""One self-contained HTML page per run (`ocula report RUN`) and the table of runs (`ocula runs`).

    from ocula.report import write_report
    path = write_report("runs/pets")          # runs/pets/report.html, images inlined, no network

A feature package over the core: it reads the files a run directory holds (config.json, model.json,
metrics.csv, eval-*/report.json, gate reports, audit/issues.json, ...) and never trains or predicts.
Nothing in the core imports it. A section whose inputs are missing is shown as "not run", with the
command that would fill it.
"""
from ocula.report.collect import collect_run
from ocula.report.files import Section, find_run
from ocula.report.render import render_report, write_report

__all__ = ["Section", "collect_run", "find_run", "render_report", "write_report"]
