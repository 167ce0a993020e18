"""What a run says when it starts: the input it chose, the flips and augmentation, the task it inferred, and a
warning for heavy class imbalance. Only the main process speaks; nothing here decides anything
(engine.resolve did)."""
from __future__ import annotations

import torch

from ocula.engine import distributed as dist
from ocula.engine import setup
from ocula.engine.input_choice import default_backbone, default_frame_diff
from ocula.engine.resolve import DATA, USER, Resolved
from ocula.log import logger

IMBALANCE_RATIO = 10  # the largest class this many times the smallest: warn, and name the remedies


def report_inputs(resolved: Resolved, modality, num_classes: int) -> None:
    if not dist.is_main():
        return
    cfg, contract = resolved.cfg, resolved.contract
    if resolved.augment.decided_by != USER and cfg.augment.preset == "none":
        logger.info(resolved.augment.reason)  # a preset that is on describes itself below
    logger.info(resolved.input.reason)
    backbone, why = default_backbone(cfg, contract)
    if backbone and "backbone" not in cfg.model.kwargs:
        logger.info(why)
    frame_diff, why = default_frame_diff(cfg)
    if frame_diff:
        logger.info(why)
    if resolved.drop_path.decided_by != USER and resolved.drop_path.value:
        logger.info(resolved.drop_path.reason)
    if cfg.augment.preset != "none":
        for key, decision in resolved.flips.items():
            if decision["decided_by"] != "user" and key in modality.flips:
                logger.info(decision["reason"])
        logger.info(setup.make_augment(cfg, contract, num_classes, modality).describe())


def report_task(resolved: Resolved, task, counts: torch.Tensor, classes: list) -> None:
    """Say when the task was inferred from the labels, and warn of heavy class imbalance."""
    if not dist.is_main():
        return
    if resolved.task.decided_by == DATA and task.describe_inferred():
        logger.info(task.describe_inferred())
    present = counts[counts > 0]
    if len(present) > 1 and float(present.max()) > IMBALANCE_RATIO * float(present.min()):
        big, small = int(counts.argmax()), int(torch.where(counts > 0, counts, counts.max() + 1).argmin())
        hint = task.imbalance_remedies
        logger.warning(f"class imbalance: '{classes[big]}' has {int(counts[big])} training samples, "
                       f"'{classes[small]}' {int(counts[small])} ({float(present.max() / present.min()):.0f}×)"
                       + (f"; consider --balance {hint}" if resolved.cfg.data.balance == "none" else ""))
