"""The pooled test set of a study: its runs' per-image results bootstrapped together.

Every run of a ``medvision-cv`` study (folds, seeds or both) is tested on the same test images
and writes ``test_per_image.csv`` into its run folder. Pooled, a headline metric on a set of
images is **the mean over the runs of each run's metric on those images**: the metrics of
``test_summary.csv`` (classifiers: ``f1``, ``balanced_accuracy``, ``auroc``, ``ece`` from each
run's probabilities; segmenters: the mean of each per-image score that is finite for every
image of every run, ``dice``, ``iou``, ...). For a per-image score this is the mean over the
images of each image's score averaged over the runs. Its 95% interval is a percentile bootstrap
over the test images (:func:`medvision.evaluation.bootstrap.bootstrap_ci`, seed 0): each
resample draws the images once, and every run is scored on that same resample. It is the
test-set uncertainty of the study's mean; the run-to-run spread is the standard deviation of the
runs' values beside it.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence

import numpy as np

from medvision.cli.compare.paired import matched_rows, mean_of, run_statistics
from medvision.evaluation.bootstrap import bootstrap_ci, paired_bootstrap
from medvision.evaluation.summary import BOOTSTRAP_SAMPLES, LEVEL, SEED

log = logging.getLogger(__name__)

#: The columns of a pooled summary (``pooled_summary.csv``).
POOLED_COLUMNS = ("metric", "value", "std", "ci_low", "ci_high", "n", "runs")


def aligned_rows(per_run: Sequence[Sequence[dict]], names: Sequence[str]) -> list[list[dict]]:
    """Every run's per-image rows in the first run's image order (matched by image path).

    Args:
        per_run: Each run's ``test_per_image.csv`` rows.
        names: Each run's name, for messages.

    Raises:
        ValueError: when a run was tested on other images than the first (see
            :func:`~medvision.cli.compare.paired.matched_rows`).
    """
    aligned = [list(per_run[0])]
    for rows, name in zip(per_run[1:], names[1:], strict=True):
        first, other = matched_rows(per_run[0], rows, names[0], name)
        aligned[0] = first
        aligned.append(other)
    return aligned


def pooled_summary(
    aligned: Sequence[Sequence[dict]],
    num_samples: int = BOOTSTRAP_SAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict[str, dict]:
    """``test/<metric>`` -> the pooled row: ``value`` (the mean of the runs' values), ``std``
    (their sample std, n - 1), ``ci_low``/``ci_high`` (the bootstrap interval of the mean),
    ``n`` (test images) and ``runs``.

    A metric undefined on the test images (AUROC without every class) is left out, warned.

    Args:
        aligned: The runs' rows from :func:`aligned_rows` (at least two runs).
        num_samples: Bootstrap resamples of the test images.
        level: Confidence level of the interval.
        seed: Seed of the resampling.
    """
    num_images = len(aligned[0])
    every_image = np.arange(num_images)
    rows = {}
    for name, per_run in run_statistics(aligned).items():
        values = [float(statistic(every_image)) for statistic in per_run]
        try:
            value, low, high = bootstrap_ci(mean_of(per_run), num_images, num_samples, level, seed)
        except ValueError as error:
            log.warning("pooled test %s: no interval (%s)", name, error)
            continue
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        cells = (name, value, std, low, high, num_images, len(per_run))
        rows[f"test/{name}"] = dict(zip(POOLED_COLUMNS, cells, strict=True))
    return rows


def pooled_differences(
    base: Sequence[Sequence[dict]],
    other: Sequence[Sequence[dict]],
    names: tuple[Sequence[str], Sequence[str]],
    num_samples: int = BOOTSTRAP_SAMPLES,
) -> dict[str, tuple[float, float, float]]:
    """``metric -> (other - base, ci_low, ci_high)``: a paired bootstrap over the shared test
    images of two groups of runs, each scored as the mean over its runs (a single run is a group
    of one, which gives :func:`~medvision.cli.compare.paired.paired_differences`).

    Args:
        base: The first group's runs' per-image rows.
        other: The other group's.
        names: The runs' names in each group, for messages.
        num_samples: Bootstrap resamples.

    Raises:
        ValueError: when some run was tested on other images, or the runs disagree on a label.
    """
    aligned = aligned_rows([*base, *other], [*names[0], *names[1]])
    split = len(base)
    differences = {}
    for name, per_run in run_statistics(aligned).items():
        statistic_other, statistic_base = mean_of(per_run[split:]), mean_of(per_run[:split])
        try:
            result = paired_bootstrap(
                statistic_other, statistic_base, len(aligned[0]), num_samples, LEVEL, SEED
            )
        except ValueError:  # undefined on these images (AUROC without every class)
            continue
        differences[f"test/{name}"] = tuple(result)
    return differences
