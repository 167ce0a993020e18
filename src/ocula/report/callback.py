"""`ocula train --report`: write RUN/report.html when training ends (rank 0 only)."""
from __future__ import annotations

import time

from ocula.engine import distributed as dist
from ocula.engine.callbacks import Callback
from ocula.log import logger
from ocula.report.render import write_report


class ReportCallback(Callback):
    def on_fit_end(self, trainer, logs):
        if not dist.is_main():
            return
        start = time.perf_counter()
        path = write_report(trainer.run_dir, summary=logs)  # summary.json is written after the callbacks
        logger.info(f"report: {path} ({time.perf_counter() - start:.2f} s)")
