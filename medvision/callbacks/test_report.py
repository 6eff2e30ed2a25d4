"""A classifier's test report: per-class (or per-label) tables, confusion matrix, W&B tables."""

from __future__ import annotations

import logging

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from medvision.reports import (
    format_per_class_table,
    format_per_label_table,
    per_class_rows,
    per_label_rows,
    write_classification_report,
    write_per_label_report,
)
from medvision.runs import run_folder

log = logging.getLogger(__name__)


class ClassificationTestReport(Callback):
    """At the end of ``test``, a classifier's results per class, written to the run folder.

    Single-label: the per-class precision / recall / F1 table is logged, and
    ``test_per_class.csv``, ``test_confusion_matrix.csv`` and ``test_confusion_matrix.png`` are
    written to the run folder (and sent to W&B when a ``WandbLogger`` is attached); the module's
    ``highlight_classes`` (e.g. melanoma) get a summary line of their own. Multi-label:
    ``test_per_label.csv`` (AUROC, F1 at 0.5 and at the tuned threshold). Reads the epoch's
    metric values that :class:`~medvision.models.ClassificationModule` keeps in
    ``test_results``; the module adds this callback itself (``configure_callbacks``).
    """

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values = getattr(pl_module, "test_results", None)
        if not values or not trainer.is_global_zero:
            return
        if pl_module.multilabel:
            self._report_multilabel(trainer, pl_module, values)
        else:
            self._report(trainer, pl_module, values)

    def _report_multilabel(self, trainer: Trainer, pl_module, values: dict) -> None:
        rows = per_label_rows(
            pl_module.class_names,
            values["test/auroc_per_label"],
            values["test/f1_per_label"],
            values["test/pr_curve"],
            pl_module.thresholds.cpu(),
        )
        path = write_per_label_report(run_folder(trainer), "test", rows)
        log.info("Test results per label (%s):\n%s", path, format_per_label_table(rows))

    def _report(self, trainer: Trainer, pl_module, values: dict) -> None:
        confusion = values["test/confusion_matrix"].cpu()
        rows = per_class_rows(
            pl_module.class_names,
            values["test/precision"],
            values["test/recall"],
            values["test/f1_per_class"],
            confusion,
        )
        folder = run_folder(trainer)
        paths = write_classification_report(
            folder, "test", pl_module.class_names, confusion.numpy(), rows
        )
        log.info("Test results per class:\n%s", format_per_class_table(rows))
        for row in rows:
            if row["class"] in pl_module.highlight_classes:
                log.info(
                    "%s: recall %.3f, precision %.3f, F1 %.3f (%d test images)",
                    row["class"],
                    row["recall"],
                    row["precision"],
                    row["f1"],
                    row["support"],
                )
        log.info(
            "Confusion matrix: %s (counts in %s)", paths["confusion_png"], paths["confusion_csv"]
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    key="test/per_class",
                    columns=list(rows[0]),
                    data=[list(r.values()) for r in rows],
                )
                logger.log_image(key="test/confusion_matrix", images=[str(paths["confusion_png"])])
