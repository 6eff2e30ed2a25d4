"""The test report of both tasks: per-image rows -> summary with intervals -> CSV, log, W&B.

:class:`TestReport` is the one path; a task's report (``ClassificationTestReport``,
``SegmentationTestReport``) gives only its per-image scorer: what a test batch adds, the rows
those make and the headline statistics over them. Two files in the run folder let a reader
(and ``medvision-report``) judge how sure a result is:

- ``test_per_image.csv``: one row per test image. Classifiers: ``image``, ``label``, ``pred``
  (class names) and ``prob_<class>`` per class; multi-label: ``image``, ``label/<name>`` (1, 0,
  or empty where unknown) and ``prob/<name>``. Segmenters: ``image``, ``mask``, ``dice``,
  ``iou``, ``hd95``, ``surface_dice`` (``<metric>/<class>`` for several classes).
- ``test_summary.csv``: ``metric``, ``value``, ``ci_low``, ``ci_high``, ``n``: each headline
  metric on all ``n`` test images with its percentile bootstrap interval
  (:mod:`medvision.evaluation.bootstrap`, :data:`BOOTSTRAP_SAMPLES` resamples of the images,
  seed 0). Classifiers: ``f1`` (macro), ``balanced_accuracy`` (single-label), ``auroc`` and
  ``ece``; segmenters: the mean of every per-image score.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from medvision.evaluation.bootstrap import bootstrap_ci
from medvision.evaluation.statistics import Statistic
from medvision.utils.files import write_csv
from medvision.utils.runs import run_folder

log = logging.getLogger(__name__)

PER_IMAGE_CSV = "test_per_image.csv"
SUMMARY_CSV = "test_summary.csv"
SUMMARY_COLUMNS = ("metric", "value", "ci_low", "ci_high", "n")
#: Bootstrap resamples, confidence level and seed of the intervals.
BOOTSTRAP_SAMPLES = 1000
LEVEL = 0.95
SEED = 0


class TestReport(Callback):
    """A test's per-image rows and its headline metrics with bootstrap intervals, written out.

    During ``test`` it keeps what :meth:`score_batch` makes of each batch (the module's
    ``test_step`` output and the batch). At the end of the epoch it gathers that from every
    process (DDP; in rank order, on the CPU), turns it into per-image rows and statistics
    (:meth:`per_image`), summarizes them (:func:`summary_rows`) and logs :meth:`logged` (the
    same values on every process). At the end of ``test`` the first process writes
    ``test_per_image.csv`` and ``test_summary.csv`` to the run folder
    (:func:`medvision.utils.runs.run_folder`), logs the summary as a table and sends it to W&B
    when a ``WandbLogger`` is attached (``test/summary``).

    Args:
        num_samples: Bootstrap resamples.
        level: Confidence level of the intervals.
        seed: Seed of the bootstrap's own random generator.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self, num_samples: int = BOOTSTRAP_SAMPLES, level: float = LEVEL, seed: int = SEED
    ) -> None:
        self.num_samples, self.level, self.seed = num_samples, level, seed
        self.rows: list[dict] = []
        self.summary: list[dict] = []
        self._batches: list = []

    def score_batch(self, pl_module: LightningModule, outputs, batch: dict, batch_idx: int):
        """What one test batch adds, kept until the epoch ends; None: nothing.

        Args:
            pl_module: The module under test.
            outputs: Its ``test_step`` output.
            batch: The batch.
            batch_idx: The batch's index.
        """
        raise NotImplementedError

    def per_image(
        self, pl_module: LightningModule, batches: list
    ) -> tuple[list[dict], dict[str, Statistic]]:
        """``(rows, statistics)``: the per-image rows and the summary's statistics over them.

        Args:
            pl_module: The module under test.
            batches: What :meth:`score_batch` kept, from every process, on the CPU.
        """
        raise NotImplementedError

    def logged(self, pl_module: LightningModule) -> dict[str, float]:
        """The ``test/*`` values to log once :attr:`summary` is known (none by default).

        Args:
            pl_module: The module under test.
        """
        return {}

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._batches, self.rows, self.summary = [], [], []

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        kept = self.score_batch(pl_module, outputs, batch, batch_idx)
        if kept is not None:
            self._batches.append(kept)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        batches = gathered(move_data_to_device(self._batches, "cpu"))
        self._batches = []
        if not batches:
            return
        self.rows, statistics = self.per_image(pl_module, batches)
        self.summary = summary_rows(
            statistics, len(self.rows), self.num_samples, self.level, self.seed
        )
        for key, value in self.logged(pl_module).items():
            pl_module.log(key, value, sync_dist=True)  # the same on every process

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.rows and trainer.is_global_zero:
            self.write(trainer, pl_module)

    def write(self, trainer: Trainer, pl_module: LightningModule) -> Path:
        """Write both files, log the summary and send it to W&B; returns the run folder.

        Args:
            trainer: The trainer (its run folder and loggers).
            pl_module: The module under test.
        """
        folder = run_folder(trainer)
        write_csv(folder / PER_IMAGE_CSV, self.rows)
        write_csv(folder / SUMMARY_CSV, self.summary, list(SUMMARY_COLUMNS))
        log.info(
            "Test metrics of %d images with %.0f%% bootstrap intervals (%s; per image: %s):\n%s",
            len(self.rows),
            100 * self.level,
            folder / SUMMARY_CSV,
            folder / PER_IMAGE_CSV,
            format_summary(self.summary),
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                data = [[row[c] for c in SUMMARY_COLUMNS] for row in self.summary]
                logger.log_table(key="test/summary", columns=list(SUMMARY_COLUMNS), data=data)
        return folder


def gathered(items: list) -> list:
    """Every process's ``items`` concatenated in rank order under DDP; ``items`` otherwise.

    Args:
        items: This process's list (picklable, on the CPU).
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_world_size() == 1:
        return items
    parts: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def summary_rows(
    statistics: dict[str, Statistic],
    num_items: int,
    num_samples: int = BOOTSTRAP_SAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> list[dict]:
    """Rows of ``test_summary.csv``: each statistic on all items and its bootstrap interval.

    A statistic undefined on the test set (AUROC without every class) gets NaN and no
    interval, with a warning naming it, instead of stopping the test.

    Args:
        statistics: Name -> ``statistic(indices) -> float`` over the ``num_items`` images.
        num_items: Test images.
        num_samples: Bootstrap resamples.
        level: Confidence level of the intervals.
        seed: Seed of the resampling (the same resamples for every statistic).

    Returns:
        Dicts with :data:`SUMMARY_COLUMNS`.
    """
    rows = []
    for name, statistic in statistics.items():
        try:
            value, low, high = bootstrap_ci(statistic, num_items, num_samples, level, seed)
        except ValueError as error:
            log.warning("test %s: no confidence interval (%s)", name, error)
            value = low = high = math.nan
        rows.append({"metric": name, "value": value, "ci_low": low, "ci_high": high})
        rows[-1]["n"] = num_items
    return rows


def format_summary(rows: Sequence[dict]) -> str:
    """Summary rows as a text table, one line per metric: ``f1  0.8123 [0.7012, 0.9010]``.

    Args:
        rows: Rows of :func:`summary_rows`.
    """
    width = max(len("metric"), *(len(r["metric"]) for r in rows))
    lines = [f"{'metric':<{width}}  value [interval]"]
    return "\n".join(lines + [f"{r['metric']:<{width}}  {format_interval(r)}" for r in rows])


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
