"""A classifier's test report: per-class (or per-label) tables, confusion matrix, calibration,
per-image results and bootstrap confidence intervals, W&B tables."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from medvision.evaluation.calibration import (
    expected_calibration_error,
    per_label_ece,
    reliability_diagram_image,
)
from medvision.evaluation.reports import (
    format_per_class_table,
    format_per_label_table,
    per_class_rows,
    per_label_rows,
    write_classification_report,
    write_per_label_report,
)
from medvision.evaluation.statistics import Statistic, classification_statistics
from medvision.evaluation.summary import PER_IMAGE_CSV, TestReport
from medvision.utils.files import save_png
from medvision.utils.runs import run_folder

log = logging.getLogger(__name__)

#: Digits kept of each probability in ``test_per_image.csv`` (as ``predictions.csv``).
DIGITS = 6


class ClassificationTestReport(TestReport):
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
    test images; see :class:`medvision.evaluation.summary.TestReport`), also printed; it logs
    ``test/ece`` (multi-label: the mean over labels, and ``test/ece_per_label/<label>``).
    Its per-image scorer keeps the ``probs`` and ``target`` that
    :class:`~medvision.models.ClassificationModule`'s ``test_step`` returns, with the batch's
    ``path``; the tables read the module's ``test_results`` (its test metrics' values). The
    CLI adds this callback to every classifier's trainer
    (:func:`medvision.cli.runs.task_callbacks`).

    Args:
        num_samples: Bootstrap resamples.
        level: Confidence level of the intervals.
        seed: Seed of the bootstrap's own random generator.
    """

    predictions: ClassifierTestResults | None = None

    def score_batch(self, pl_module, outputs, batch: dict, batch_idx: int):
        if not isinstance(outputs, dict) or "probs" not in outputs:
            return None
        start = sum(len(kept[2]) for kept in self._batches)
        paths = batch.get("path")
        names = list(paths) if paths is not None else [None] * len(outputs["probs"])
        names = [str(n) if n is not None else f"<item {start + i}>" for i, n in enumerate(names)]
        return outputs["probs"].detach(), outputs["target"].detach(), names

    def per_image(self, pl_module, batches: list) -> tuple[list[dict], dict[str, Statistic]]:
        probs, target, paths = zip(*batches, strict=True)
        self.predictions = ClassifierTestResults(
            torch.cat(probs).float(),
            torch.cat(target).long(),
            [name for names in paths for name in names],
            pl_module.multilabel,
        )
        p = self.predictions
        rows = classification_per_image_rows(
            p.paths, p.probs, p.target, pl_module.class_names, p.multilabel
        )
        return rows, classification_statistics(p.probs, p.target, p.multilabel)

    def logged(self, pl_module) -> dict[str, float]:
        return self.predictions.ece(pl_module.class_names)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        values = getattr(pl_module, "test_results", None)
        if values and trainer.is_global_zero:
            if pl_module.multilabel:
                self._report_multilabel(trainer, pl_module, values)
            else:
                self._report(trainer, pl_module, values)
        super().on_test_end(trainer, pl_module)

    def write(self, trainer: Trainer, pl_module: LightningModule) -> Path:
        """The shared files (see :class:`TestReport`) and the reliability diagram.

        Args:
            trainer: The trainer (its run folder and loggers).
            pl_module: The module under test.
        """
        folder = super().write(trainer, pl_module)
        diagram = folder / "test_reliability.png"
        save_png(diagram, reliability_image(self.predictions, pl_module.class_names))
        log.info("Reliability diagram: %s", diagram)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="test/reliability", images=[str(diagram)])
        return folder

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


@dataclass
class ClassifierTestResults:
    """A classifier's predictions on the whole test split, on the CPU, in the loader's order.

    Attributes:
        probs: float32 ``N x K`` probabilities (softmax, or sigmoid per label), calibrated.
        target: int64 ``N`` classes, or for multi-label ``N x K`` 0/1 with -1 where unknown.
        paths: ``N`` image files (``<item i>`` where batches name none).
        multilabel: Whether ``target`` is ``N x K``.
    """

    probs: torch.Tensor
    target: torch.Tensor
    paths: list[str]
    multilabel: bool

    @property
    def known(self) -> torch.Tensor:
        """Multi-label: ``N x K`` bool, where the label is known."""
        return self.target >= 0

    def ece(self, class_names: list[str]) -> dict[str, float]:
        """The expected calibration error (15 bins) to log.

        Args:
            class_names: The classes (labels), in output order.

        Returns:
            ``{"test/ece": top-label ECE}``; multi-label: the mean over labels with any known
            entry, and ``test/ece_per_label/<label>`` (NaN for a label never known).
        """
        if not self.multilabel:
            return {"test/ece": expected_calibration_error(self.probs, self.target)}
        per_label = per_label_ece(self.probs, self.target.clamp(min=0), self.known)
        values = {
            f"test/ece_per_label/{name}": float(value)
            for name, value in zip(class_names, per_label, strict=True)
        }
        known = [v for v in values.values() if not math.isnan(v)]
        values["test/ece"] = sum(known) / len(known) if known else float("nan")
        return values


def classification_per_image_rows(
    paths: Sequence[str],
    probs: torch.Tensor,
    target: torch.Tensor,
    class_names: Sequence[str],
    multilabel: bool,
) -> list[dict]:
    """The rows of a classifier's ``test_per_image.csv``.

    Args:
        paths: ``N`` image files.
        probs: ``N x K`` probabilities.
        target: ``N`` classes, or ``N x K`` multi-label targets with -1 where unknown.
        class_names: The ``K`` classes (labels).
        multilabel: Which of the two layouts (see :mod:`medvision.evaluation.summary`).

    Returns:
        One dict per image, columns in order.
    """
    probs = probs.float().cpu()
    rows = []
    for i, path in enumerate(paths):
        if multilabel:
            row = {"image": path}
            labels = zip(class_names, target[i].tolist(), strict=True)
            row.update({f"label/{n}": "" if t < 0 else t for n, t in labels})
            prefix = "prob/"
        else:
            row = {
                "image": path,
                "label": class_names[int(target[i])],
                "pred": class_names[int(probs[i].argmax())],
            }
            prefix = "prob_"
        values = zip(class_names, probs[i].tolist(), strict=True)
        row.update({f"{prefix}{n}": round(p, DIGITS) for n, p in values})
        rows.append(row)
    return rows


def classification_arrays(rows: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """A classifier's ``test_per_image.csv`` rows (as read, strings) back as arrays.

    Args:
        rows: The rows, e.g. from :func:`medvision.utils.files.read_csv`.

    Returns:
        ``(probs N x K, target, multilabel)``: ``target`` as in
        :func:`classification_per_image_rows`.

    Raises:
        ValueError: for rows in neither layout, or a label that is not a class.
    """
    columns = list(rows[0]) if rows else []
    if any(c.startswith("prob/") for c in columns):
        names = [c[len("prob/") :] for c in columns if c.startswith("prob/")]
        probs = [[float(r[f"prob/{n}"]) for n in names] for r in rows]
        target = [
            [-1 if r[f"label/{n}"] == "" else int(r[f"label/{n}"]) for n in names] for r in rows
        ]
        return torch.tensor(probs), torch.tensor(target), True
    names = [c[len("prob_") :] for c in columns if c.startswith("prob_")]
    if not names or "label" not in columns:
        raise ValueError(
            f"not a classifier's {PER_IMAGE_CSV}: columns {columns} (expected image, label, "
            "pred, prob_<class>..., or label/<name> and prob/<name>)"
        )
    unknown = sorted({r["label"] for r in rows} - set(names))
    if unknown:
        raise ValueError(f"{PER_IMAGE_CSV}: labels {unknown} are not among the classes {names}")
    probs = [[float(r[f"prob_{n}"]) for n in names] for r in rows]
    return torch.tensor(probs), torch.tensor([names.index(r["label"]) for r in rows]), False
