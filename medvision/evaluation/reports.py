"""End-of-test reports for classifiers: per-class (or per-label) tables, a confusion matrix."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch

from medvision.utils.files import save_png, write_atomically, write_csv

log = logging.getLogger(__name__)

PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1", "support")


def per_class_rows(
    class_names: list[str],
    precision: torch.Tensor,
    recall: torch.Tensor,
    f1: torch.Tensor,
    confusion: torch.Tensor,
) -> list[dict]:
    """One dict per class with precision, recall, F1 and support (true count, a confusion row).

    Args:
        class_names: The ``C`` class names, in class-index order.
        precision: Per-class precision, shape ``C``.
        recall: Per-class recall, shape ``C``.
        f1: Per-class F1, shape ``C``.
        confusion: Counts, ``C x C``: rows true, columns predicted.

    Returns:
        ``{"class", "precision", "recall", "f1", "support"}`` per class, in class order.
    """
    support = confusion.sum(dim=1)
    return [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]


def format_per_class_table(rows: list[dict]) -> str:
    """The per-class rows as a fixed-width text table, as printed by ``medvision test``.

    Args:
        rows: The rows of :func:`per_class_rows`.
    """
    specs = ("9.3f", "6.3f", "5.3f", "7d")
    columns = [(c, c, spec) for c, spec in zip(PER_CLASS_COLUMNS[1:], specs, strict=True)]
    return text_table(rows, "class", columns)


def text_table(rows: list[dict], first: str, columns: list[tuple[str, str, str]]) -> str:
    """Rows as a fixed-width text table: the ``first`` column left-aligned, then one column per
    ``(key, header, format spec)``, right-aligned at the spec's width (``9.3f``: 9).

    Args:
        rows: One dict per line.
        first: The key (and header) of the left column: class or label names.
        columns: The other columns, in order.
    """
    width = max(len(first), *(len(r[first]) for r in rows))
    widths = [int(spec.split(".")[0].rstrip("d")) for _, _, spec in columns]
    header = (f"{title:>{w}}" for (_, title, _), w in zip(columns, widths, strict=True))
    lines = ["  ".join([f"{first:<{width}}", *header])]
    for row in rows:
        cells = (f"{row[key]:{spec}}" for key, _, spec in columns)
        lines.append("  ".join([f"{row[first]:<{width}}", *cells]))
    return "\n".join(lines)


def confusion_matrix_image(confusion: np.ndarray, class_names: list[str]) -> np.ndarray:
    """Render counts (rows: true, columns: predicted) with row-normalized shading; uint8 RGB.

    Each cell shows its count and its share of the true class.

    Args:
        confusion: Counts, ``C x C``: rows true, columns predicted.
        class_names: The ``C`` class names, in class-index order, for the axes.

    Returns:
        The rendered matrix, uint8 ``H x W x 3``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # not pyplot: leave the process's backend alone

    confusion = np.asarray(confusion)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.8 * len(class_names)
    figure = Figure(figsize=(size + 1.0, size), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(confusion):
        color = "white" if shares[row, col] > 0.5 else "black"
        axes.text(
            col, row, f"{count}\n{shares[row, col]:.0%}", ha="center", va="center", color=color
        )
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write_classification_report(
    folder: Path, stage: str, class_names: list[str], confusion: np.ndarray, rows: list[dict]
) -> dict[str, Path]:
    """Write ``<stage>_per_class.csv``, ``<stage>_confusion_matrix.csv`` and ``.png`` atomically.

    Args:
        folder: Where to write them (the run folder).
        stage: The stage the files are named after (``test``).
        class_names: The ``C`` class names, in class-index order.
        confusion: Counts, ``C x C``: rows true, columns predicted.
        rows: The rows of :func:`per_class_rows`.

    Returns:
        The written files under ``per_class``, ``confusion_csv`` and ``confusion_png``.
    """
    paths = {
        "per_class": folder / f"{stage}_per_class.csv",
        "confusion_csv": folder / f"{stage}_confusion_matrix.csv",
        "confusion_png": folder / f"{stage}_confusion_matrix.png",
    }

    def confusion_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true \\ predicted", *class_names])
            writer.writerows(
                [name, *map(int, row)] for name, row in zip(class_names, confusion, strict=True)
            )

    write_csv(paths["per_class"], rows, list(PER_CLASS_COLUMNS))
    write_atomically(paths["confusion_csv"], confusion_csv)
    save_png(paths["confusion_png"], confusion_matrix_image(confusion, class_names))
    return paths


PER_LABEL_COLUMNS = ("label", "auroc", "f1_at_0.5", "threshold", "f1_at_threshold")


def per_label_rows(
    label_names: list[str],
    auroc: torch.Tensor,
    f1_at_half: torch.Tensor,
    pr_curve: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    thresholds: torch.Tensor,
) -> list[dict]:
    """One dict per label: AUROC, F1 at 0.5, and F1 at the label's tuned threshold.

    The F1 at a threshold is read off the binned PR curve at the nearest bin.

    Args:
        label_names: The ``L`` label names, in label-index order.
        auroc: Per-label AUROC, shape ``L``.
        f1_at_half: Per-label F1 at threshold 0.5, shape ``L``.
        pr_curve: ``(precision, recall, thresholds)`` as ``MultilabelPrecisionRecallCurve``
            computes them (``L x (T + 1)``, ``L x (T + 1)``, ``T``).
        thresholds: Each label's tuned threshold in [0, 1], shape ``L``.

    Returns:
        ``{"label", "auroc", "f1_at_0.5", "threshold", "f1_at_threshold"}`` per label.
    """
    precision, recall, bins = (t.float().cpu() for t in pr_curve)
    rows = []
    for i, name in enumerate(label_names):
        at = int((bins - float(thresholds[i])).abs().argmin())
        p, r = float(precision[i, at].nan_to_num(0.0)), float(recall[i, at])
        rows.append(
            {
                "label": name,
                "auroc": float(auroc[i]),
                "f1_at_0.5": float(f1_at_half[i]),
                "threshold": float(thresholds[i]),
                "f1_at_threshold": 2 * p * r / (p + r) if p + r > 0 else 0.0,
            }
        )
    return rows


def format_per_label_table(rows: list[dict]) -> str:
    """The per-label rows as a fixed-width text table.

    Args:
        rows: The rows of :func:`per_label_rows`.
    """
    headers = ("auroc", "f1@0.5", "threshold", "f1@threshold")
    specs = ("5.3f", "6.3f", "9.2f", "12.3f")
    return text_table(rows, "label", list(zip(PER_LABEL_COLUMNS[1:], headers, specs, strict=True)))


def write_per_label_report(folder: Path, stage: str, rows: list[dict]) -> Path:
    """Write ``<stage>_per_label.csv`` atomically; returns its path.

    Args:
        folder: Where to write it (the run folder).
        stage: The stage the file is named after (``test``).
        rows: The rows of :func:`per_label_rows`.
    """
    path = folder / f"{stage}_per_label.csv"
    write_csv(path, rows, list(PER_LABEL_COLUMNS))
    return path
