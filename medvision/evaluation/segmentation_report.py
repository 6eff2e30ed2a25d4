"""A segmenter's test report: per-image Dice, IoU, HD95 and surface Dice, with bootstrap CIs."""

from __future__ import annotations

import logging
import warnings

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from medvision.evaluation.bootstrap import bootstrap_ci, mean_statistic
from medvision.evaluation.label_maps import (
    SURFACE_MISSING,
    image_scores,
    score_columns,
    surface_metrics_available,
)
from medvision.utils.files import write_csv
from medvision.utils.runs import run_folder

log = logging.getLogger(__name__)

#: Columns of ``test_summary.csv`` (read by ``medvision-report``).
SUMMARY_COLUMNS = ["metric", "value", "ci_low", "ci_high", "n"]


class SegmentationTestReport(Callback):
    """At the end of ``test``, a segmenter's per-image scores and their means with 95% CIs.

    During ``test`` it scores every image's prediction (the ``preds`` that
    :class:`~medvision.models.SegmentationModule`'s ``test_step`` returns) against its mask,
    at the network's input size: Dice, IoU, HD95 and normalized surface Dice at the module's
    ``surface_tolerance`` (see :func:`medvision.evaluation.label_maps.image_scores`; empty masks as
    :mod:`medvision.evaluation.surface_metrics` defines them), per class and as the mean over the
    scored
    classes for label maps. Distances are in mm when the batches carry ``spacing`` (the
    pixel size in mm, as the NIfTI volume datamodule gives it) and in pixels otherwise (said
    in the log). At the end it writes to the run folder (:func:`medvision.utils.runs.run_folder`):

    - ``test_per_image.csv``: ``image``, ``mask``, ``dice``, ``iou``, ``hd95``,
      ``surface_dice`` and, for label maps, ``<metric>/<class>``. A volume slice's ``image``
      is ``<volume>#<slice index>``.
    - ``test_summary.csv``: ``metric``, ``value`` (the mean over images), ``ci_low``,
      ``ci_high`` (the percentile bootstrap interval over images of
      :func:`medvision.evaluation.bootstrap.bootstrap_ci`, with a fixed ``seed``) and ``n``
      (images),
      one row per column above.

    It logs ``test/hd95`` and ``test/surface_dice`` (and per class), and the summary as a
    table (to W&B too when a ``WandbLogger`` is attached). Without MONAI, HD95 and surface
    Dice are left out with one warning naming the extra to install. Under DDP the rows of all
    processes are gathered first. The CLI adds this callback to every segmenter's trainer
    (:func:`medvision.cli.runs.task_callbacks`).

    Args:
        num_samples: Bootstrap resamples.
        level: Confidence level of the intervals.
        seed: Seed of the bootstrap's own random generator.
    """

    def __init__(self, num_samples: int = 1000, level: float = 0.95, seed: int = 0) -> None:
        self.num_samples, self.level, self.seed = num_samples, level, seed
        self.rows: list[dict] = []
        self.summary: list[dict] = []
        self._surface = True
        self._spacing: bool | None = None

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.rows, self.summary, self._spacing = [], [], None
        self._surface = surface_metrics_available()
        if not self._surface:
            warnings.warn(SURFACE_MISSING, stacklevel=1)

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not isinstance(outputs, dict) or "preds" not in outputs or "mask" not in batch:
            return
        preds, truths = outputs["preds"].cpu(), batch["mask"].cpu()
        if truths.ndim == 4:  # binary masks N x 1 x H x W
            truths = truths[:, 0] > 0.5
        spacing = batch.get("spacing")
        self._spacing = spacing is not None
        for i in range(len(preds)):
            scores = image_scores(
                preds[i],
                truths[i],
                pl_module.class_names,
                pl_module.include_background,
                pl_module.surface_tolerance,
                None if spacing is None else [float(v) for v in spacing[i]],
                self._surface,
            )
            names = {"image": _image_name(batch, batch_idx, i), "mask": _mask_name(batch, i)}
            self.rows.append({**names, **scores})

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows = _gathered(trainer, self.rows)
        if not rows:
            return
        columns = score_columns(pl_module.class_names, pl_module.include_background, self._surface)
        self.summary = summarize(rows, columns, self.num_samples, self.level, self.seed)
        for row in self.summary:  # the same values on every process: sync_dist averages them
            if row["metric"].startswith(("hd95", "surface_dice")):
                pl_module.log(f"test/{row['metric']}", row["value"], sync_dist=True)
        if not trainer.is_global_zero:
            return
        folder = run_folder(trainer)
        write_csv(folder / "test_per_image.csv", rows, ["image", "mask", *columns])
        write_csv(folder / "test_summary.csv", self.summary, SUMMARY_COLUMNS)
        if self._surface:
            unit = "mm (pixel spacing from the data)" if self._spacing else "pixels (no spacing)"
            log.info(
                "HD95 and surface Dice (tolerance %g) in %s, at the network's input size",
                pl_module.surface_tolerance,
                unit,
            )
        log.info(
            "Test results per image in %s; means with %.0f%% bootstrap intervals:\n%s",
            folder / "test_per_image.csv",
            100 * self.level,
            format_summary(self.summary),
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    key="test/summary",
                    columns=SUMMARY_COLUMNS,
                    data=[[row[c] for c in SUMMARY_COLUMNS] for row in self.summary],
                )


def summarize(
    rows: list[dict],
    columns: list[str],
    num_samples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """The mean of each score column over images, with its percentile bootstrap interval.

    Args:
        rows: Per-image rows (:func:`medvision.evaluation.label_maps.image_scores` plus names).
        columns: The score columns to summarize, in order.
        num_samples: Bootstrap resamples.
        level: Confidence level.
        seed: Seed of the bootstrap's generator (the same resamples for every column).

    Returns:
        One dict per column: ``metric``, ``value``, ``ci_low``, ``ci_high``, ``n``.
    """
    summary = []
    for column in columns:
        values = [row[column] for row in rows]
        result = bootstrap_ci(mean_statistic(values), len(values), num_samples, level, seed)
        summary.append(
            {
                "metric": column,
                "value": result.estimate,
                "ci_low": result.low,
                "ci_high": result.high,
                "n": len(values),
            }
        )
    return summary


def format_summary(summary: list[dict]) -> str:
    """``summary`` as a fixed-width text table: metric, mean, interval, images.

    Args:
        summary: The rows of :func:`summarize` (``metric``, ``value``, ``ci_low``,
            ``ci_high``, ``n``).

    Returns:
        The table, one line per metric under a header line.
    """
    width = max(len("metric"), *(len(row["metric"]) for row in summary))
    lines = [f"{'metric':<{width}}  {'mean':>9}  {'interval':>21}  {'n':>5}"]
    for row in summary:
        interval = f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
        lines.append(
            f"{row['metric']:<{width}}  {row['value']:>9.4f}  {interval:>21}  {row['n']:>5}"
        )
    return "\n".join(lines)


def _image_name(batch: dict, batch_idx: int, i: int) -> str:
    """The image's file; for a volume slice ``<volume>#<slice index>``."""
    name = str(batch["path"][i]) if "path" in batch else f"<test batch {batch_idx} image {i}>"
    if "slice_index" in batch:
        name += f"#{int(batch['slice_index'][i])}"
    return name


def _mask_name(batch: dict, i: int) -> str:
    return str(batch["mask_path"][i]) if "mask_path" in batch else ""


def _gathered(trainer: Trainer, rows: list[dict]) -> list[dict]:
    """Every process's rows (in rank order) under DDP; ``rows`` itself otherwise."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if trainer.world_size == 1 or not distributed:
        return rows
    parts: list = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, rows)
    return [row for part in parts for row in part]
