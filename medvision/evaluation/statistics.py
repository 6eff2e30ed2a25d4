"""What the bootstrap resamples: statistics of test items, built from per-item arrays.

A *statistic* is a function ``statistic(indices) -> float``: a metric on the items (images) at
``indices`` (a 1-D int array, drawn with replacement), NaN where it is undefined on them (a
class missing from a resample). Per-image scores (Dice, IoU, HD95) and set-level metrics
(macro-F1, balanced accuracy, AUROC, ECE) fit the same shape, so one bootstrap
(:mod:`medvision.evaluation.bootstrap`) serves both tasks. The metrics are torchmetrics'
functions, as the modules log them; what is ours is when a metric is undefined on a resample
(said in each docstring) and multi-label targets with unknown entries (-1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_calibration_error,
    multiclass_f1_score,
    multilabel_auroc,
    multilabel_f1_score,
)

from medvision.evaluation.calibration import per_label_ece

Statistic = Callable[[np.ndarray], float]

#: Equal-width confidence bins of the expected calibration error.
ECE_BINS = 15


def vectorized(statistic: Callable) -> Statistic:
    """Mark a statistic as taking ``R x N`` indices and ``axis=-1`` too (returning ``R``
    values), so that ``scipy.stats.bootstrap`` evaluates many resamples in one call.

    Args:
        statistic: ``statistic(indices, axis=-1)``.
    """
    statistic.vectorized = True
    return statistic


def mean_statistic(values) -> Statistic:
    """The mean of per-item values (e.g. per-image Dice or IoU) as a vectorized statistic.

    Args:
        values: ``N`` finite per-item values (numpy or torch).

    Returns:
        ``statistic(indices) = mean(values[indices])`` (over the last axis of ``R x N``
        indices too).
    """
    values = values.detach().cpu() if torch.is_tensor(values) else values
    values = np.asarray(values, dtype=np.float64)  # a list stays float64, not torch's float32
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError(
            f"values must be a 1-D array of finite per-item scores, got shape {values.shape} "
            f"with {int((~np.isfinite(values)).sum())} non-finite values"
        )
    return vectorized(lambda indices, axis=-1: values[indices].mean(axis=axis))


def _metric_statistic(metric: Callable, probs, target, defined=None) -> Statistic:
    """``metric(probs[i], target[i])`` as a statistic; NaN where ``defined(target[i])`` is not."""

    def statistic(indices: np.ndarray) -> float:
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        sample = target[index]
        if defined is not None and not defined(sample):
            return math.nan
        return float(metric(probs[index], sample))

    return statistic


def _classification_inputs(probs, labels) -> tuple[torch.Tensor, torch.Tensor, int]:
    probs = torch.as_tensor(probs).detach().cpu().float()
    labels = torch.as_tensor(labels).detach().cpu().long()
    if probs.ndim != 2 or labels.shape != probs.shape[:1] or probs.shape[1] < 2:
        raise ValueError(
            f"expected probs N x K (K >= 2) and labels N, got {tuple(probs.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1] - 1}]")
    return probs, labels, probs.shape[1]


def _single_label(metric: Callable, probs, labels, classes: str = "any") -> Statistic:
    """``metric(probs, labels, num_classes=K)`` as a statistic, NaN on a resample that lacks
    ``classes``: ``present`` (a class of the full set: a macro average would be over other
    classes), ``all`` (any of the K: AUROC is undefined for a class without positives) or
    ``any`` (always defined)."""
    probs, labels, num_classes = _classification_inputs(probs, labels)

    def count(sample: torch.Tensor) -> int:
        return int((torch.bincount(sample, minlength=num_classes) > 0).sum())

    needed = {"any": 0, "present": count(labels), "all": num_classes}[classes]
    metric = partial(metric, num_classes=num_classes, validate_args=False)
    return _metric_statistic(metric, probs, labels, lambda sample: count(sample) >= needed)


def macro_f1_statistic(probs, labels) -> Statistic:
    """Macro-F1 of single-label predictions as a statistic (``f1`` in medvision.evaluation.metrics).

    Args:
        probs: ``N x K`` class probabilities (the predicted class is the argmax).
        labels: ``N`` true classes.

    Returns:
        The statistic; NaN on a resample missing a class that the full set has. Like
        torchmetrics, classes neither present nor predicted are left out of the average.
    """
    return _single_label(partial(multiclass_f1_score, average="macro"), probs, labels, "present")


def balanced_accuracy_statistic(probs, labels) -> Statistic:
    """Balanced accuracy (mean per-class recall) as a statistic (``balanced_accuracy``).

    Args:
        probs: ``N x K`` class probabilities (the predicted class is the argmax).
        labels: ``N`` true classes.

    Returns:
        The statistic; NaN on a resample missing a class that the full set has.
    """
    return _single_label(partial(multiclass_accuracy, average="macro"), probs, labels, "present")


def macro_auroc_statistic(probs, labels) -> Statistic:
    """One-vs-rest macro AUROC as a statistic (``auroc`` in medvision.evaluation.metrics).

    Args:
        probs: ``N x K`` class probabilities.
        labels: ``N`` true classes; every class must occur (AUROC is undefined for a class
            without positives), on the full set and on a resample.

    Returns:
        The statistic; NaN on a resample (or full set) missing any of the ``K`` classes.
    """
    return _single_label(partial(multiclass_auroc, average="macro"), probs, labels, "all")


#: The classification statistics by their key in
#: ``medvision.evaluation.metrics.classification_metrics``.
CLASSIFICATION_STATISTICS: dict[str, Callable[..., Statistic]] = {
    "f1": macro_f1_statistic,
    "balanced_accuracy": balanced_accuracy_statistic,
    "auroc": macro_auroc_statistic,
}


def classification_statistics(probs, target, multilabel: bool) -> dict[str, Statistic]:
    """A classifier's headline metrics on its test images, as statistics by name.

    Single-label: ``f1``, ``balanced_accuracy``, ``auroc`` (:data:`CLASSIFICATION_STATISTICS`)
    and ``ece``, the top-label expected calibration error (15 bins; torchmetrics'
    ``multiclass_calibration_error``). Multi-label, leaving unknown entries (-1) out: ``f1``
    (macro, at 0.5), ``auroc`` (the mean over the labels with a known positive and a known
    negative in the full set; NaN on a resample where one of them lacks either) and ``ece``
    (the mean over labels with a known entry of
    :func:`medvision.evaluation.calibration.per_label_ece`).

    Args:
        probs: ``N x K`` probabilities (softmax, or sigmoid per label).
        target: ``N`` classes, or ``N x K`` multi-label targets: 1, 0, or -1 where unknown.
        multilabel: Which of the two.
    """
    if not multilabel:
        statistics = {name: make(probs, target) for name, make in CLASSIFICATION_STATISTICS.items()}
        ece = partial(multiclass_calibration_error, n_bins=ECE_BINS)
        return {**statistics, "ece": _single_label(ece, probs, target)}
    probs, target = _multilabel_inputs(probs, target)
    num_labels, scored = probs.shape[1], _both_classes(target)

    def auroc(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # a label never known: left out
        p, t, k = p[:, scored], t[:, scored], int(scored.sum())
        return multilabel_auroc(p, t, k, average=None, ignore_index=-1, validate_args=False).mean()

    def ece(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.nanmean(per_label_ece(p, t.clamp(min=0), t >= 0, ECE_BINS).double())

    f1 = partial(multilabel_f1_score, num_labels=num_labels, average="macro", ignore_index=-1)
    return {
        "f1": _metric_statistic(partial(f1, validate_args=False), probs, target),
        "auroc": _metric_statistic(
            auroc, probs, target, lambda t: bool(_both_classes(t)[scored].all() & scored.any())
        ),
        "ece": _metric_statistic(ece, probs, target),
    }


def _multilabel_inputs(probs, target) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.as_tensor(probs).detach().cpu().float()
    target = torch.as_tensor(target).detach().cpu().long()
    if probs.ndim != 2 or target.shape != probs.shape:
        raise ValueError(
            f"expected probs and targets both N x K, got {tuple(probs.shape)} and "
            f"{tuple(target.shape)}"
        )
    if ((target != 0) & (target != 1) & (target != -1)).any():
        raise ValueError("multi-label targets must be 0, 1 or -1 (unknown)")
    return probs, target


def _both_classes(target: torch.Tensor) -> torch.Tensor:
    """``K`` bool: labels with a known positive and a known negative."""
    return ((target == 1).any(0)) & ((target == 0).any(0))
