"""A segmenter's test report: per-image Dice, IoU, HD95 and surface Dice, with bootstrap CIs."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer

from medvision.evaluation.label_maps import (
    SURFACE_MISSING,
    image_scores,
    score_columns,
    surface_metrics_available,
)
from medvision.evaluation.statistics import Statistic, mean_statistic
from medvision.evaluation.summary import TestReport

log = logging.getLogger(__name__)


class SegmentationTestReport(TestReport):
    """At the end of ``test``, a segmenter's per-image scores and their means with 95% CIs.

    Its per-image scorer scores every image's prediction (the ``preds`` that
    :class:`~medvision.models.SegmentationModule`'s ``test_step`` returns) against its mask,
    at the network's input size: Dice, IoU, HD95 and normalized surface Dice at the module's
    ``surface_tolerance`` (see :func:`medvision.evaluation.label_maps.image_scores`; empty
    masks as :mod:`medvision.evaluation.surface_metrics` defines them), per class and as the
    mean over the scored classes for label maps. Distances are in mm when the batches carry
    ``spacing`` (the pixel size in mm, as the NIfTI volume datamodule gives it) and in pixels
    otherwise (said in the log). The rest is :class:`~medvision.evaluation.summary.TestReport`:

    - ``test_per_image.csv``: ``image``, ``mask``, ``dice``, ``iou``, ``hd95``,
      ``surface_dice`` and, for label maps, ``<metric>/<class>``. A volume slice's ``image``
      is ``<volume>#<slice index>``.
    - ``test_summary.csv``: ``metric``, ``value`` (the mean over images), ``ci_low``,
      ``ci_high`` (the percentile bootstrap interval over images) and ``n`` (images), one row
      per column above.

    It logs ``test/hd95`` and ``test/surface_dice`` (and per class). Without MONAI, HD95 and
    surface Dice are left out with one warning naming the extra to install. The CLI adds this
    callback to every segmenter's trainer (:func:`medvision.cli.runs.task_callbacks`).

    Args:
        num_samples: Bootstrap resamples.
        level: Confidence level of the intervals.
        seed: Seed of the bootstrap's own random generator.
    """

    _surface = True
    _spacing: bool | None = None

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_test_epoch_start(trainer, pl_module)
        self._spacing = None
        self._surface = surface_metrics_available()
        if not self._surface:
            warnings.warn(SURFACE_MISSING, stacklevel=1)

    def score_batch(self, pl_module, outputs, batch: dict, batch_idx: int) -> list[dict] | None:
        if not isinstance(outputs, dict) or "preds" not in outputs or "mask" not in batch:
            return None
        preds, truths = outputs["preds"].cpu(), batch["mask"].cpu()
        if truths.ndim == 4:  # binary masks N x 1 x H x W
            truths = truths[:, 0] > 0.5
        spacing = batch.get("spacing")
        self._spacing = spacing is not None
        rows = []
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
            rows.append({**names, **scores})
        return rows

    def per_image(self, pl_module, batches: list) -> tuple[list[dict], dict[str, Statistic]]:
        rows = [row for part in batches for row in part]
        columns = score_columns(pl_module.class_names, pl_module.include_background, self._surface)
        return rows, {c: mean_statistic([row[c] for row in rows]) for c in columns}

    def logged(self, pl_module) -> dict[str, float]:
        boundary = [r for r in self.summary if r["metric"].startswith(("hd95", "surface_dice"))]
        return {f"test/{r['metric']}": r["value"] for r in boundary}

    def write(self, trainer: Trainer, pl_module: LightningModule) -> Path:
        """The shared files (see :class:`TestReport`), and the distances' unit in the log.

        Args:
            trainer: The trainer (its run folder and loggers).
            pl_module: The module under test.
        """
        if self._surface:
            unit = "mm (pixel spacing from the data)" if self._spacing else "pixels (no spacing)"
            log.info(
                "HD95 and surface Dice (tolerance %g) in %s, at the network's input size",
                pl_module.surface_tolerance,
                unit,
            )
        return super().write(trainer, pl_module)


def _image_name(batch: dict, batch_idx: int, i: int) -> str:
    """The image's file; for a volume slice ``<volume>#<slice index>``."""
    name = str(batch["path"][i]) if "path" in batch else f"<test batch {batch_idx} image {i}>"
    if "slice_index" in batch:
        name += f"#{int(batch['slice_index'][i])}"
    return name


def _mask_name(batch: dict, i: int) -> str:
    return str(batch["mask_path"][i]) if "mask_path" in batch else ""
