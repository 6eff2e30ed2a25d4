"""A test's per-image results and its headline metrics with bootstrap confidence intervals.

Two files in the run folder, shared by classifiers and segmenters, let a reader (and
``medvision-report``) judge how sure a result is:

- ``test_per_image.csv``: one row per test image. Classifiers: ``image``, ``label``, ``pred``
  (class names) and ``prob_<class>`` per class; multi-label: ``image``, ``label/<name>`` (1, 0,
  or empty where unknown) and ``prob/<name>``. Segmenters: ``image``, ``mask``, ``dice``,
  ``iou``, ``hd95``, ``surface_dice`` (``<metric>/<class>`` for several classes).
- ``test_summary.csv``: ``metric``, ``value``, ``ci_low``, ``ci_high``, ``n``: each headline
  metric on all ``n`` test images with its percentile bootstrap interval
  (:mod:`medvision.evaluation.bootstrap`, :data:`BOOTSTRAP_SAMPLES` resamples of the images,
  seed 0).
  Classifiers: ``f1`` (macro), ``balanced_accuracy`` (single-label), ``auroc`` and ``ece``.

:func:`classification_arrays` reads a classifier's per-image rows back, so the report can
bootstrap paired differences between two models on the same images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from medvision.evaluation.bootstrap import (
    CLASSIFICATION_STATISTICS,
    MULTILABEL_STATISTICS,
    Statistic,
    bootstrap_ci,
    ece_statistic,
)

log = logging.getLogger(__name__)

PER_IMAGE_CSV = "test_per_image.csv"
SUMMARY_CSV = "test_summary.csv"
SUMMARY_COLUMNS = ("metric", "value", "ci_low", "ci_high", "n")
#: Bootstrap resamples, confidence level and seed of the intervals.
BOOTSTRAP_SAMPLES = 1000
LEVEL = 0.95
SEED = 0
#: Digits kept of each probability in ``test_per_image.csv`` (as ``predictions.csv``).
DIGITS = 6


def classification_statistics(multilabel: bool) -> dict[str, Callable[..., Statistic]]:
    """The headline metrics of a classifier, by name: factories ``make(probs, target)``.

    Args:
        multilabel: Multi-label (``f1``, ``auroc``, ``ece``) or single-label (``f1``,
            ``balanced_accuracy``, ``auroc``, ``ece``).
    """
    if multilabel:
        return dict(MULTILABEL_STATISTICS)
    return {**CLASSIFICATION_STATISTICS, "ece": ece_statistic}


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
        multilabel: Which of the two layouts (see the module docstring).

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


def summary_rows(
    statistics: dict[str, Statistic],
    num_items: int,
    num_samples: int = BOOTSTRAP_SAMPLES,
    seed: int = SEED,
) -> list[dict]:
    """Rows of ``test_summary.csv``: each statistic on all items and its bootstrap interval.

    A statistic undefined on the test set (AUROC without every class) gets NaN and no
    interval, with a warning naming it, instead of stopping the test.

    Args:
        statistics: Name -> ``statistic(indices) -> float`` over the ``num_items`` images.
        num_items: Test images.
        num_samples: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        Dicts with :data:`SUMMARY_COLUMNS`.
    """
    rows = []
    for name, statistic in statistics.items():
        try:
            value, low, high = bootstrap_ci(statistic, num_items, num_samples, LEVEL, seed)
        except ValueError as error:
            log.warning("test %s: no confidence interval (%s)", name, error)
            value = low = high = math.nan
        rows.append({"metric": name, "value": value, "ci_low": low, "ci_high": high})
        rows[-1]["n"] = num_items
    return rows


def classification_summary(
    probs: torch.Tensor,
    target: torch.Tensor,
    multilabel: bool,
    num_samples: int = BOOTSTRAP_SAMPLES,
) -> list[dict]:
    """``test_summary.csv`` rows of a classifier (see :func:`summary_rows`).

    Args:
        probs: ``N x K`` probabilities.
        target: ``N`` classes, or ``N x K`` targets with -1 where unknown.
        multilabel: Which metrics (:func:`classification_statistics`).
        num_samples: Bootstrap resamples.
    """
    statistics = {
        name: make(probs, target) for name, make in classification_statistics(multilabel).items()
    }
    return summary_rows(statistics, len(probs), num_samples)


def format_summary(rows: Sequence[dict]) -> str:
    """Summary rows as text lines: ``f1  0.8123 [0.7012, 0.9010]``.

    Args:
        rows: Rows of :func:`summary_rows`.
    """
    width = max(len(r["metric"]) for r in rows)
    return "\n".join(f"{r['metric']:<{width}}  {format_interval(r)}" for r in rows)


def format_interval(row: dict, digits: int = 4) -> str:
    """``value [ci_low, ci_high]`` of a summary row (just the value without an interval).

    Args:
        row: A dict with ``value``, ``ci_low``, ``ci_high`` (numbers or strings).
        digits: Decimals.
    """
    value, low, high = (float(row[k]) if row[k] != "" else math.nan for k in SUMMARY_COLUMNS[1:4])
    if math.isnan(low) or math.isnan(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def as_array(values) -> np.ndarray:
    """Per-image values (strings from a CSV, or numbers) as float64; empty cells become NaN.

    Args:
        values: The column's cells.
    """
    return np.array([math.nan if v in ("", None) else float(v) for v in values], dtype=np.float64)
