"""Percentile bootstrap confidence intervals over test items (images), and paired comparisons.

A *statistic* is any function ``statistic(indices) -> float`` that computes a metric on the
items at ``indices`` (a 1-D int array, drawn with replacement);
:mod:`medvision.evaluation.statistics` builds them (means of per-image scores, a classifier's
headline metrics).

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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.stats import DegenerateDataWarning, bootstrap

from medvision.evaluation.statistics import Statistic, vectorized

log = logging.getLogger(__name__)

#: Share of skipped (undefined) resamples above which a warning is issued.
SKIP_WARNING_SHARE = 0.05
#: Resamples evaluated at once (bounds the memory of a vectorized statistic: BATCH x items).
BATCH = 100


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


def _difference(statistic_a: Statistic, statistic_b: Statistic) -> Statistic:
    if getattr(statistic_a, "vectorized", False) and getattr(statistic_b, "vectorized", False):
        return vectorized(lambda i, axis=-1: statistic_a(i, axis=axis) - statistic_b(i, axis=axis))
    return lambda indices: float(statistic_a(indices)) - float(statistic_b(indices))
