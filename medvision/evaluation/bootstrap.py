"""Percentile bootstrap confidence intervals over test items (images), and paired comparisons.

A *statistic* is any function ``statistic(indices) -> float`` that computes a metric on the
items at ``indices`` (a 1-D int array, drawn with replacement). Per-image metrics (Dice, IoU,
HD95) and set-level ones (macro-F1, balanced accuracy, AUROC) fit the same shape; the
``*_statistic`` factories below build them from per-item arrays. One marked ``vectorized``
(:func:`mean_statistic`) also takes ``R x N`` indices and ``axis=-1`` and returns ``R`` values.

The resamples are ``scipy.stats.bootstrap``'s (``method="percentile"``): each of
``num_samples`` resamples draws ``num_items`` indices with replacement from a local
``np.random.default_rng(seed)`` (the global RNGs are left alone), so results are reproducible
for a seed. The interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the
resampled values (linear interpolation); the estimate is the statistic on all items. A paired
comparison bootstraps ``A(indices) - B(indices)``: both models on the same resamples.

Where this differs from a bare ``scipy.stats.bootstrap`` call, and why:

- Undefined resamples: a statistic returns NaN where it is undefined on a resample (e.g. macro
  AUROC when a class is missing from it); scipy's interval is then NaN. Here such resamples are
  skipped and counted in :attr:`BootstrapResult.num_skipped`; the interval comes from the rest
  (conditional on the statistic being defined), and more than :data:`SKIP_WARNING_SHARE` of
  resamples skipped draws a warning, as the interval is then less trustworthy. A statistic
  undefined on the full set, or on every resample, is an error.
- One item: scipy needs two; every resample of one item is that item, so the interval is the
  value itself.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from scipy.stats import DegenerateDataWarning, bootstrap
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_calibration_error,
    multiclass_f1_score,
    multilabel_auroc,
    multilabel_f1_score,
)

from medvision.evaluation.calibration import per_label_ece

log = logging.getLogger(__name__)

Statistic = Callable[[np.ndarray], float]

#: Share of skipped (undefined) resamples above which a warning is issued.
SKIP_WARNING_SHARE = 0.05
#: Resamples evaluated at once (bounds the memory of a vectorized statistic: BATCH x items).
BATCH = 100
#: Equal-width confidence bins of the expected calibration error.
ECE_BINS = 15


@dataclass(frozen=True)
class BootstrapResult:
    """A point estimate with its percentile bootstrap interval.

    Unpacks as ``estimate, low, high = result``.

    Attributes:
        estimate: The statistic on all items (for a paired comparison: A - B).
        low: Lower end of the interval.
        high: Upper end of the interval.
        level: Confidence level of the interval, e.g. 0.95.
        num_samples: Resamples drawn.
        num_skipped: Resamples skipped because the statistic was undefined (NaN) on them.
    """

    estimate: float
    low: float
    high: float
    level: float
    num_samples: int
    num_skipped: int

    def __iter__(self) -> Iterator[float]:
        return iter((self.estimate, self.low, self.high))


def _check_args(num_items: int, num_samples: int, level: float) -> None:
    if num_items < 1:
        raise ValueError(f"num_items must be at least 1 (the test items), got {num_items}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), e.g. 0.95, got {level}")


def _full_set_value(statistic: Statistic, num_items: int, name: str) -> float:
    value = float(statistic(np.arange(num_items)))
    if not math.isfinite(value):
        raise ValueError(
            f"the {name} is undefined on the full set of {num_items} items (got {value}); "
            "e.g. AUROC needs every class present among the test labels"
        )
    return value


def _resampled(statistic: Statistic, num_items: int, num_samples: int, seed: int) -> np.ndarray:
    """The statistic on each of scipy's resamples, NaN where undefined."""
    if num_items == 1:
        return np.full(num_samples, float(statistic(np.zeros(1, dtype=np.int64))))
    vectorized = getattr(statistic, "vectorized", False)
    with warnings.catch_warnings():  # scipy's interval is NaN when one resample is: not used
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap(
            (np.arange(num_items),),
            statistic if vectorized else lambda indices: float(statistic(indices)),
            n_resamples=num_samples,
            batch=BATCH,
            vectorized=vectorized,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return np.asarray(result.bootstrap_distribution, dtype=np.float64)


def _result(estimate: float, values: np.ndarray, level: float) -> BootstrapResult:
    """The interval: percentiles of the defined (finite) resampled ``values``."""
    defined = values[np.isfinite(values)]
    skipped = len(values) - len(defined)
    if not len(defined):
        raise ValueError(
            f"the statistic is undefined (NaN) on all {len(values)} resamples; the test set "
            "is too small or too unbalanced for a bootstrap interval"
        )
    if skipped:
        share = skipped / len(values)
        message = (
            f"bootstrap: {skipped} of {len(values)} resamples ({share:.0%}) skipped, the "
            "statistic being undefined on them (e.g. a class missing from the resample)"
        )
        if share > SKIP_WARNING_SHARE:
            warnings.warn(message + "; the interval is less trustworthy", stacklevel=3)
        else:
            log.info(message)
    low, high = np.percentile(defined, [50 * (1 - level), 50 * (1 + level)])
    return BootstrapResult(estimate, float(low), float(high), level, len(values), skipped)


def bootstrap_ci(
    statistic: Statistic,
    num_items: int,
    num_samples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Percentile bootstrap confidence interval of a statistic over test items.

    Args:
        statistic: ``statistic(indices) -> float``: the metric on the items at ``indices``
            (1-D int array with repeats); NaN where undefined on that resample.
        num_items: Number of test items (images) to resample.
        num_samples: Number of bootstrap resamples.
        level: Confidence level in (0, 1).
        seed: Seed of the local random generator.

    Returns:
        A :class:`BootstrapResult`; unpacks as ``(estimate, low, high)``.

    Raises:
        ValueError: bad arguments, or a statistic undefined on the full set or on every
            resample.
    """
    _check_args(num_items, num_samples, level)
    estimate = _full_set_value(statistic, num_items, "statistic")
    return _result(estimate, _resampled(statistic, num_items, num_samples, seed), level)


def paired_bootstrap(
    statistic_a: Statistic,
    statistic_b: Statistic,
    num_items: int,
    num_samples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Bootstrap interval of the difference A - B of two models on the same test items.

    Both statistics are evaluated on the same resampled indices, so the interval reflects the
    per-item pairing (much narrower than comparing two separate intervals). An interval that
    excludes 0 means the difference is significant at ``1 - level``.

    Args:
        statistic_a: Model A's statistic, ``statistic(indices) -> float``.
        statistic_b: Model B's statistic on the same items.
        num_items: Number of test items both models were evaluated on.
        num_samples: Number of bootstrap resamples.
        level: Confidence level in (0, 1).
        seed: Seed of the local random generator.

    Returns:
        A :class:`BootstrapResult` of A - B; resamples where either statistic is undefined
        are skipped.
    """
    _check_args(num_items, num_samples, level)
    estimate = _full_set_value(statistic_a, num_items, "statistic of model A") - _full_set_value(
        statistic_b, num_items, "statistic of model B"
    )
    values = _resampled(_difference(statistic_a, statistic_b), num_items, num_samples, seed)
    return _result(estimate, values, level)


def _vectorized(statistic: Callable) -> Statistic:
    """Mark ``statistic`` as taking ``R x N`` indices and ``axis=-1`` (scipy's ``vectorized``)."""
    statistic.vectorized = True
    return statistic


def _difference(statistic_a: Statistic, statistic_b: Statistic) -> Statistic:
    if getattr(statistic_a, "vectorized", False) and getattr(statistic_b, "vectorized", False):
        return _vectorized(lambda i, axis=-1: statistic_a(i, axis=axis) - statistic_b(i, axis=axis))
    return lambda indices: float(statistic_a(indices)) - float(statistic_b(indices))


def mean_statistic(values) -> Statistic:
    """The mean of per-item values (e.g. per-image Dice or IoU) as a vectorized statistic.

    Args:
        values: ``N`` finite per-item values (numpy or torch).

    Returns:
        ``statistic(indices) = mean(values[indices])`` (over the last axis of ``R x N``
        indices too).
    """
    values = np.asarray(torch.as_tensor(values).detach().cpu(), dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError(
            f"values must be a 1-D array of finite per-item scores, got shape {values.shape} "
            f"with {int((~np.isfinite(values)).sum())} non-finite values"
        )
    return _vectorized(lambda indices, axis=-1: values[indices].mean(axis=axis))


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
