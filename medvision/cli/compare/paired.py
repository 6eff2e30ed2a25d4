"""How sure a comparison is: each run's bootstrap intervals, and paired differences between runs.

A run that the report tests writes ``test_per_image.csv`` and ``test_summary.csv`` (see
:mod:`medvision.evaluation.summary`) into its evaluation folder. The summary gives each headline
metric with its 95% interval; the per-image rows of two runs on the same test images give
the paired bootstrap of their difference (:func:`medvision.evaluation.bootstrap.paired_bootstrap`):
both models are scored on the same resampled images, so the interval reflects the pairing.
A ``medvision-cv`` study has the per-image rows of each of its runs: a study's statistic is the
mean of its runs' (:func:`mean_of`; see :mod:`medvision.cli.compare.pooled`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medvision.evaluation.bootstrap import paired_bootstrap
from medvision.evaluation.classification_report import classification_arrays
from medvision.evaluation.statistics import (
    Statistic,
    classification_statistics,
    mean_statistic,
    vectorized,
)
from medvision.evaluation.summary import (
    BOOTSTRAP_SAMPLES,
    LEVEL,
    PER_IMAGE_CSV,
    SEED,
    SUMMARY_CSV,
    as_array,
)
from medvision.utils.files import read_csv

#: Per-image columns that are not metrics.
NOT_METRICS = ("image", "mask")


def read_test_files(folder: Path) -> tuple[dict[str, dict], list[dict] | None]:
    """A tested run's summary (``test/<metric>`` -> row) and per-image rows (None if absent).

    Args:
        folder: Where its test wrote (the report's ``evaluation/run_<i>``).
    """
    summary = {}
    if (folder / SUMMARY_CSV).is_file():
        for row in read_csv(folder / SUMMARY_CSV):
            metric = row["metric"]
            summary[metric if metric.startswith("test/") else f"test/{metric}"] = row
    per_image = read_csv(folder / PER_IMAGE_CSV) if (folder / PER_IMAGE_CSV).is_file() else None
    return summary, per_image


def _by_image(rows: Sequence[dict], name: str) -> dict[str, dict]:
    keyed = {str(Path(row["image"]).resolve()): row for row in rows}
    if len(keyed) != len(rows):
        raise ValueError(f"{name}: {PER_IMAGE_CSV} lists some images twice")
    return keyed


def matched_rows(
    base: Sequence[dict], other: Sequence[dict], base_name: str, other_name: str
) -> tuple[list[dict], list[dict]]:
    """Two runs' per-image rows in the same image order.

    Args:
        base: The first run's rows.
        other: The other run's rows.
        base_name: The first run's name, for messages.
        other_name: The other run's name.

    Raises:
        ValueError: when the two runs were not tested on the same images, naming how many
            differ and one of them.
    """
    a, b = _by_image(base, base_name), _by_image(other, other_name)
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        example = (only_a or only_b)[0]
        raise ValueError(
            f"{other_name} and {base_name} were tested on different images ({len(only_a)} only "
            f"in {base_name}'s test split, {len(only_b)} only in {other_name}'s; e.g. "
            f"{example}): a paired comparison needs the same test images. Give both runs the "
            "same test data (--data.init_args.data_dir DIR applies to every run)."
        )
    keys = list(a)
    return [a[k] for k in keys], [b[k] for k in keys]


def _is_classifier(rows: Sequence[dict]) -> bool:
    return "label" in rows[0] or any(column.startswith("prob/") for column in rows[0])


def run_statistics(runs: Sequence[Sequence[dict]]) -> dict[str, list[Statistic]]:
    """``metric -> one statistic per run`` on matched per-image rows (the same images, in one
    order).

    Classifiers: their headline metrics
    (:func:`medvision.evaluation.statistics.classification_statistics`) from each run's
    probabilities, on the shared labels. Segmenters: the mean of every per-image metric column
    (``dice``, ``iou``, ``hd95``, ...) that is finite for every image of every run.

    Args:
        runs: Each run's rows, matched (:func:`matched_rows`).

    Raises:
        ValueError: when the runs disagree on an image's label, or are of different kinds.
    """
    kinds = {_is_classifier(rows) for rows in runs}
    if len(kinds) > 1:
        raise ValueError("a classifier and a segmenter cannot be compared image by image")
    if kinds == {True}:
        arrays = [classification_arrays(rows) for rows in runs]
        probs, target, multilabel = arrays[0]
        for other_probs, other_target, other_multilabel in arrays[1:]:
            if other_multilabel != multilabel or other_probs.shape != probs.shape:
                raise ValueError("the runs have different classes or label types")
            if not bool((other_target == target).all()):
                raise ValueError("the runs give some test images different labels")
        per_run = [classification_statistics(p, target, multilabel) for p, _, _ in arrays]
        return {name: [found[name] for found in per_run] for name in per_run[0]}
    found = {}
    for column in runs[0][0]:
        if column in NOT_METRICS or any(column not in rows[0] for rows in runs):
            continue
        values = [as_array(row[column] for row in rows) for rows in runs]
        if all(np.isfinite(v).all() for v in values):
            found[column] = [mean_statistic(v) for v in values]
    return found


def mean_of(statistics: Sequence[Statistic]) -> Statistic:
    """The mean of several runs' statistics on the same indices (NaN where any is NaN).

    Args:
        statistics: One statistic per run; vectorized ones stay vectorized together.
    """
    if all(getattr(s, "vectorized", False) for s in statistics):
        return vectorized(
            lambda indices, axis=-1: np.mean([s(indices, axis=axis) for s in statistics], axis=0)
        )
    return lambda indices: float(np.mean([float(s(indices)) for s in statistics]))


def paired_statistics(
    base: Sequence[dict], other: Sequence[dict]
) -> dict[str, tuple[Statistic, Statistic]]:
    """``metric -> (statistic of other, statistic of base)`` on matched per-image rows (see
    :func:`run_statistics`).

    Args:
        base: The first run's rows, matched (:func:`matched_rows`).
        other: The other run's rows, in the same order.

    Raises:
        ValueError: when the runs disagree on an image's label, or are of different kinds.
    """
    return {name: (b, a) for name, (a, b) in run_statistics([base, other]).items()}


def paired_differences(
    base: Sequence[dict], other: Sequence[dict], num_samples: int = BOOTSTRAP_SAMPLES
) -> dict[str, tuple[float, float, float]]:
    """``metric -> (other - base, ci_low, ci_high)`` by paired bootstrap over the images.

    Args:
        base: The first run's rows, matched.
        other: The other run's rows, in the same order.
        num_samples: Bootstrap resamples.
    """
    differences = {}
    for name, (statistic_b, statistic_a) in paired_statistics(base, other).items():
        try:
            result = paired_bootstrap(statistic_b, statistic_a, len(base), num_samples, LEVEL, SEED)
        except ValueError:  # undefined on these images (AUROC without every class)
            continue
        differences[f"test/{name}"] = tuple(result)
    return differences


def format_difference(value: tuple[float, float, float] | None, digits: int = 4) -> str:
    """``+0.0123 [-0.0040, +0.0290]``, with `` *`` when the interval excludes 0; ``–`` if none.

    Args:
        value: ``(difference, low, high)`` or None.
        digits: Decimals.
    """
    if value is None:
        return "–"
    difference, low, high = value
    mark = " *" if low > 0 or high < 0 else ""
    return f"{difference:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]{mark}"
