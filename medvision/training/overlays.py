"""Validation overlays: what the segmenter draws on a few validation images, after each epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from medvision.data.visualize import (
    display_scale,
    enlarge,
    label_overlay,
    overlay,
    titled_grid,
    to_display,
)
from medvision.evaluation.label_maps import labels_from_probabilities
from medvision.utils.files import save_png
from medvision.utils.runs import run_folder

#: The panels of a row, left to right.
PANELS = ("truth", "prediction (truth outlined)")


class ValidationOverlays(Callback):
    """After each validation epoch, a grid of ``image | truth | prediction`` for a few images.

    Saved as ``overlays/val_epoch<NNN>.png`` in the run folder (see :func:`run_folder`), and
    logged to W&B as ``val/overlays`` when a ``WandbLogger`` is attached. Uses the first
    validation batch. One row per image, each panel titled (the image's file name, ``truth``,
    ``prediction``) under a header naming the epoch. Images whose longer side is under 256 px
    (``DISPLAY_SIZE``) are enlarged by a whole factor, masks pixel for pixel (nearest
    neighbour), so that outlines stay readable. Binary masks are tinted red with the truth
    outlined in green; multi-class models draw label maps in the classes' palette colours
    (:func:`~medvision.data.visualize.label_overlay`).

    Args:
        num_images: How many images of the first validation batch to draw, one row each
            (fewer when the batch is smaller).
    """

    def __init__(self, num_images: int = 4) -> None:
        self.num_images = num_images
        self._batch: dict | None = None

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and "mask" in batch:
            kept = {k: batch[k][: self.num_images] for k in ("image", "mask")}
            paths = batch.get("path")
            kept["path"] = None if paths is None else list(paths)[: self.num_images]
            self._batch = kept

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._batch is None or trainer.sanity_checking:
            return
        with torch.no_grad():
            logits = pl_module(self._batch["image"])
        probs = logits.softmax(1) if logits.shape[1] > 1 else logits.sigmoid()
        epoch = trainer.current_epoch
        grid = self._grid(
            self._batch["image"],
            self._batch["mask"],
            labels_from_probabilities(probs, pl_module.threshold),
            self._batch["path"],
            epoch,
        )
        folder = run_folder(trainer) / "overlays"
        save_png(folder / f"val_epoch{epoch:03d}.png", grid)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    key="val/overlays",
                    images=[grid],
                    step=trainer.global_step,
                    caption=[f"epoch {epoch}: image | truth | prediction"],
                )
        self._batch = None

    @staticmethod
    def _grid(
        images: torch.Tensor,
        masks: torch.Tensor,
        preds: torch.Tensor,
        paths: list | None = None,
        epoch: int = 0,
    ) -> np.ndarray:
        rows, titles = [], []
        for index, (image, mask, pred) in enumerate(zip(images, masks, preds, strict=True)):
            rgb = to_display(image.float().cpu().numpy().transpose(1, 2, 0))
            factor = display_scale(*rgb.shape[:2])
            rgb = enlarge(rgb, factor, smooth=True)
            predicted = enlarge(pred.cpu().numpy(), factor)
            if mask.ndim == 3:  # binary 1 x H x W
                truth, draw = enlarge(mask[0].cpu().numpy() > 0.5, factor), overlay
            else:  # label map H x W
                truth, draw = enlarge(mask.cpu().numpy(), factor), label_overlay
            rows.append([rgb, draw(rgb, truth), draw(rgb, predicted, truth)])
            titles.append([image_title(paths, index), *PANELS])
        header = f"Validation epoch {epoch}: image | truth | prediction"
        return titled_grid(rows, titles, header)


def image_title(paths: list | None, index: int) -> str:
    """The title of a row's image panel: its file's name, or ``image <index>`` without one.

    Args:
        paths: The batch's ``path`` entries (None when the dataset gives none).
        index: The row, 0 first.
    """
    if paths is None or index >= len(paths) or not paths[index]:
        return f"image {index}"
    return Path(str(paths[index])).name
