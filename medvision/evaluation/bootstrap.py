"""Percentile bootstrap confidence intervals over test items (images), and paired comparisons.

A *statistic* is any function ``statistic(indices) -> float`` that computes a metric on the
items at ``indices`` (a 1-D int array, drawn with replacement). Per-image metrics (Dice, IoU,
HD95) and set-level ones (macro-F1, balanced accuracy, AUROC) fit the same shape; the
``*_statistic`` factories below build them from per-item arrays.

Each of ``num_samples`` resamples draws ``num_items`` indices with replacement from a local
``np.random.default_rng(seed)`` (the global RNGs are left alone), so results are reproducible
for a seed. The interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the
resampled values (linear interpolation); the estimate is the statistic on all items.

Undefined resamples: a statistic returns NaN where it is undefined on a resample (e.g. macro
AUROC when a class is missing from it). Such resamples are skipped and counted in
:attr:`BootstrapResult.num_skipped`; the interval comes from the rest (conditional on the
statistic being defined), and more than :data:`SKIP_WARNING_SHARE` of resamples skipped draws
a warning, as the interval is then less trustworthy. A statistic undefined on the full set, or
on every resample, is an error.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_calibration_error,
    multiclass_f1_score,
    multilabel_auroc,
    multilabel_f1_score,
)

log = logging.getLogger(__name__)

Statistic = Callable[[np.ndarray], float]

#: Share of skipped (undefined) resamples above which a warning is issued.
SKIP_WARNING_SHARE = 0.05


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


def _resample(
    statistics: list[Statistic], num_items: int, num_samples: int, seed: int
) -> tuple[np.ndarray, int]:
    """Values of each statistic on the same resamples: ``defined x len(statistics)``."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_samples):
        indices = rng.integers(0, num_items, size=num_items)
        row = [float(statistic(indices)) for statistic in statistics]
        if all(math.isfinite(v) for v in row):
            values.append(row)
    skipped = num_samples - len(values)
    if not values:
        raise ValueError(
            f"the statistic is undefined (NaN) on all {num_samples} resamples of {num_items} "
            "items; the test set is too small or too unbalanced for a bootstrap interval"
        )
    if skipped:
        share = skipped / num_samples
        message = (
            f"bootstrap: {skipped} of {num_samples} resamples ({share:.0%}) skipped, the "
            "statistic being undefined on them (e.g. a class missing from the resample)"
        )
        if share > SKIP_WARNING_SHARE:
            warnings.warn(message + "; the interval is less trustworthy", stacklevel=3)
        else:
            log.info(message)
    return np.asarray(values, dtype=np.float64), skipped


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


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
    values, skipped = _resample([statistic], num_items, num_samples, seed)
    return BootstrapResult(estimate, *_interval(values[:, 0], level), level, num_samples, skipped)


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
    values, skipped = _resample([statistic_a, statistic_b], num_items, num_samples, seed)
    differences = values[:, 0] - values[:, 1]
    return BootstrapResult(estimate, *_interval(differences, level), level, num_samples, skipped)


def mean_statistic(values) -> Statistic:
    """The mean of per-item values (e.g. per-image Dice or IoU) as a statistic.

    Args:
        values: ``N`` finite per-item values (numpy or torch).

    Returns:
        ``statistic(indices) = mean(values[indices])``.
    """
    values = np.asarray(torch.as_tensor(values).detach().cpu(), dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError(
            f"values must be a 1-D array of finite per-item scores, got shape {values.shape} "
            f"with {int((~np.isfinite(values)).sum())} non-finite values"
        )
    return lambda indices: float(values[indices].mean())


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


def _needs_all_classes(metric: Callable, probs, labels) -> Statistic:
    """Statistic of ``metric(probs, labels, K)``, NaN on a resample missing one of the classes
    present among all ``labels`` (the macro average would be over other classes)."""
    probs, labels, num_classes = _classification_inputs(probs, labels)
    present = int((torch.bincount(labels, minlength=num_classes) > 0).sum())

    def statistic(indices: np.ndarray) -> float:
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        sample = labels[index]
        if int((torch.bincount(sample, minlength=num_classes) > 0).sum()) < present:
            return float("nan")
        return float(metric(probs[index], sample, num_classes))

    return statistic


def macro_f1_statistic(probs, labels) -> Statistic:
    """Macro-F1 of single-label predictions as a statistic (``f1`` in medvision.evaluation.metrics).

    Args:
        probs: ``N x K`` class probabilities (the predicted class is the argmax).
        labels: ``N`` true classes.

    Returns:
        The statistic; NaN on a resample missing a class that the full set has. Like
        torchmetrics, classes neither present nor predicted are left out of the average.
    """
    return _needs_all_classes(
        lambda p, y, k: multiclass_f1_score(p, y, k, average="macro", validate_args=False),
        probs,
        labels,
    )


def balanced_accuracy_statistic(probs, labels) -> Statistic:
    """Balanced accuracy (mean per-class recall) as a statistic (``balanced_accuracy``).

    Args:
        probs: ``N x K`` class probabilities (the predicted class is the argmax).
        labels: ``N`` true classes.

    Returns:
        The statistic; NaN on a resample missing a class that the full set has.
    """
    return _needs_all_classes(
        lambda p, y, k: multiclass_accuracy(p, y, k, average="macro", validate_args=False),
        probs,
        labels,
    )


def macro_auroc_statistic(probs, labels) -> Statistic:
    """One-vs-rest macro AUROC as a statistic (``auroc`` in medvision.evaluation.metrics).

    Args:
        probs: ``N x K`` class probabilities.
        labels: ``N`` true classes; every class must occur (AUROC is undefined for a class
            without positives), on the full set and on a resample.

    Returns:
        The statistic; NaN on a resample (or full set) missing any of the ``K`` classes.
    """
    probs, labels, num_classes = _classification_inputs(probs, labels)
    every = _needs_all_classes(
        lambda p, y, k: multiclass_auroc(p, y, k, average="macro", validate_args=False),
        probs,
        labels,
    )
    if int((torch.bincount(labels, minlength=num_classes) > 0).sum()) < num_classes:
        return lambda indices: float("nan")
    return every


#: The classification statistics by their key in
#: ``medvision.evaluation.metrics.classification_metrics``.
CLASSIFICATION_STATISTICS: dict[str, Callable[..., Statistic]] = {
    "f1": macro_f1_statistic,
    "balanced_accuracy": balanced_accuracy_statistic,
    "auroc": macro_auroc_statistic,
}


def ece_statistic(probs, labels, num_bins: int = 15) -> Statistic:
    """Top-label expected calibration error as a statistic (``ece``, see
    medvision.evaluation.calibration).

    Args:
        probs: ``N x K`` softmax probabilities.
        labels: ``N`` true classes.
        num_bins: Equal-width confidence bins.

    Returns:
        The statistic (defined on every resample).
    """
    probs, labels, num_classes = _classification_inputs(probs, labels)

    def statistic(indices: np.ndarray) -> float:
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return float(
            multiclass_calibration_error(
                probs[index], labels[index], num_classes, n_bins=num_bins, validate_args=False
            )
        )

    return statistic


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


def multilabel_auroc_statistic(probs, target) -> Statistic:
    """Mean per-label AUROC of a multi-label model as a statistic (``auroc``).

    Args:
        probs: ``N x K`` sigmoid probabilities.
        target: ``N x K`` targets: 1, 0, or -1 where unknown (left out).

    Returns:
        The mean over the labels that have known positives and negatives in the full set;
        NaN on a resample where one of them lacks either.
    """
    probs, target = _multilabel_inputs(probs, target)
    labels = _both_classes(target)

    def statistic(indices: np.ndarray) -> float:
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        sample = target[index]
        if not labels.any() or not _both_classes(sample)[labels].all():
            return float("nan")
        values = multilabel_auroc(
            probs[index],
            sample,
            probs.shape[1],
            average=None,
            ignore_index=-1,
            validate_args=False,
        )
        return float(values[labels].mean())

    return statistic


def multilabel_f1_statistic(probs, target, threshold: float = 0.5) -> Statistic:
    """Macro F1 of a multi-label model at ``threshold`` as a statistic (``f1``).

    Args:
        probs: ``N x K`` sigmoid probabilities.
        target: ``N x K`` targets: 1, 0, or -1 where unknown (left out).
        threshold: Positive above it (0.5, as the logged ``f1``).

    Returns:
        The statistic (torchmetrics' ``multilabel_f1_score``, macro).
    """
    probs, target = _multilabel_inputs(probs, target)

    def statistic(indices: np.ndarray) -> float:
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return float(
            multilabel_f1_score(
                probs[index],
                target[index],
                probs.shape[1],
                threshold,
                average="macro",
                ignore_index=-1,
                validate_args=False,
            )
        )

    return statistic


def multilabel_ece_statistic(probs, target, num_bins: int = 15) -> Statistic:
    """Mean per-label expected calibration error as a statistic (``ece`` of a multi-label model).

    Args:
        probs: ``N x K`` sigmoid probabilities.
        target: ``N x K`` targets: 1, 0, or -1 where unknown (left out).
        num_bins: Equal-width probability bins.

    Returns:
        The mean over labels with a known entry in the resample.
    """
    probs, target = _multilabel_inputs(probs, target)

    def statistic(indices: np.ndarray) -> float:
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        p, t = probs[index], target[index]
        values = [
            float(binary_calibration_error(p[t[:, k] >= 0, k], t[t[:, k] >= 0, k], num_bins))
            for k in range(p.shape[1])
            if (t[:, k] >= 0).any()
        ]
        return sum(values) / len(values) if values else float("nan")

    return statistic


#: The multi-label statistics by their logged key (``test/<key>``).
MULTILABEL_STATISTICS: dict[str, Callable[..., Statistic]] = {
    "f1": multilabel_f1_statistic,
    "auroc": multilabel_auroc_statistic,
    "ece": multilabel_ece_statistic,
}
