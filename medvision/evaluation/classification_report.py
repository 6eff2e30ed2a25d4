"""A classifier's test report: per-class (or per-label) tables, confusion matrix, calibration,
per-image results and bootstrap confidence intervals, W&B tables."""

from __future__ import annotations

import logging

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from medvision.evaluation.calibration import reliability_diagram_image
from medvision.evaluation.reports import (
    format_per_class_table,
    format_per_label_table,
    per_class_rows,
    per_label_rows,
    write_classification_report,
    write_per_label_report,
)
from medvision.evaluation.summary import (
    PER_IMAGE_CSV,
    SUMMARY_COLUMNS,
    SUMMARY_CSV,
    classification_per_image_rows,
    classification_summary,
    format_summary,
)
from medvision.utils.files import save_png, write_csv
from medvision.utils.runs import run_folder

log = logging.getLogger(__name__)


class ClassificationTestReport(Callback):
    """At the end of ``test``, a classifier's results per class, written to the run folder.

    Single-label: the per-class precision / recall / F1 table is logged, and
    ``test_per_class.csv``, ``test_confusion_matrix.csv`` and ``test_confusion_matrix.png`` are
    written to the run folder (and sent to W&B when a ``WandbLogger`` is attached); the module's
    ``highlight_classes`` (e.g. melanoma) get a summary line of their own. Multi-label:
    ``test_per_label.csv`` (AUROC, F1 at 0.5 and at the tuned threshold).

    Both: ``test_reliability.png``, the reliability diagram (15 bins; multi-label: one panel
    per label with a known entry, side by side) of the calibrated probabilities;
    ``test_per_image.csv`` (each image's label and probabilities) and ``test_summary.csv``
    (``f1``, ``balanced_accuracy``, ``auroc`` and ``ece`` with 95% bootstrap intervals over the
    test images; see :mod:`medvision.evaluation.summary`), also printed. Reads what
    :class:`~medvision.models.ClassificationModule` keeps in ``test_results`` (the epoch's
    metric values) and ``test_predictions`` (every image's probabilities). The CLI adds
    this callback to every classifier's trainer (:func:`medvision.cli.runs.task_callbacks`).
    """

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values = getattr(pl_module, "test_results", None)
        if not values or not trainer.is_global_zero:
            return
        if pl_module.multilabel:
            self._report_multilabel(trainer, pl_module, values)
        else:
            self._report(trainer, pl_module, values)
        predictions = getattr(pl_module, "test_predictions", None)
        if predictions is not None:
            self._report_uncertainty(trainer, pl_module, predictions)

    def _report_uncertainty(self, trainer: Trainer, pl_module, predictions) -> None:
        """Per-image CSV, summary with bootstrap intervals, reliability diagram."""
        folder = run_folder(trainer)
        names = pl_module.class_names
        multilabel = predictions.multilabel
        rows = classification_per_image_rows(
            predictions.paths, predictions.probs, predictions.target, names, multilabel
        )
        write_csv(folder / PER_IMAGE_CSV, rows, list(rows[0]))
        summary = classification_summary(predictions.probs, predictions.target, multilabel)
        write_csv(folder / SUMMARY_CSV, summary, list(SUMMARY_COLUMNS))
        diagram = folder / "test_reliability.png"
        save_png(diagram, reliability_image(predictions, names))
        log.info(
            "Test metrics of %d images with 95%% bootstrap intervals (%s):\n%s",
            len(rows),
            folder / SUMMARY_CSV,
            format_summary(summary),
        )
        log.info("Reliability diagram: %s; per-image results: %s", diagram, folder / PER_IMAGE_CSV)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                columns = list(SUMMARY_COLUMNS)
                data = [[r[c] for c in columns] for r in summary]
                logger.log_table(key="test/summary", columns=columns, data=data)
                logger.log_image(key="test/reliability", images=[str(diagram)])

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


def reliability_image(predictions, class_names: list[str]) -> np.ndarray:
    """The reliability diagram of a test's predictions, as uint8 RGB.

    Args:
        predictions: :class:`~medvision.models.classifier_outputs.ClassifierTestResults`.
        class_names: The classes (labels).

    Returns:
        Single-label: the top-label diagram. Multi-label: one diagram per label that has a
        known entry, side by side in rows of four (titled with the label).
    """
    if not predictions.multilabel:
        return reliability_diagram_image(predictions.probs, predictions.target)
    known = predictions.known
    panels = [
        reliability_diagram_image(
            predictions.probs[known[:, k], k], predictions.target[known[:, k], k], title=name
        )
        for k, name in enumerate(class_names)
        if known[:, k].any()
    ]
    if not panels:
        raise ValueError("no test label is known: no reliability diagram can be drawn")
    per_row = min(4, len(panels))
    blank = np.full_like(panels[0], 255)
    panels += [blank] * (-len(panels) % per_row)
    rows = [np.concatenate(panels[i : i + per_row], axis=1) for i in range(0, len(panels), per_row)]
    return np.concatenate(rows, axis=0)
