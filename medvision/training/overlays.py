"""Validation overlays: what the segmenter draws on a few validation images, after each epoch."""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from medvision.data.visualize import label_overlay, overlay, to_display
from medvision.evaluation.label_maps import labels_from_probabilities
from medvision.utils.files import save_png
from medvision.utils.runs import run_folder


class ValidationOverlays(Callback):
    """After each validation epoch, a grid of ``image | truth | prediction`` for a few images.

    Saved as ``overlays/val_epoch<NNN>.png`` in the run folder (see :func:`run_folder`), and
    logged to W&B as ``val/overlays`` when a ``WandbLogger`` is attached. Uses the first
    validation batch. Multi-class models draw label maps in the classes' palette colours
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
            self._batch = {k: batch[k][: self.num_images] for k in ("image", "mask")}

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._batch is None or trainer.sanity_checking:
            return
        with torch.no_grad():
            logits = pl_module(self._batch["image"])
        probs = logits.softmax(1) if logits.shape[1] > 1 else logits.sigmoid()
        grid = self._grid(
            self._batch["image"],
            self._batch["mask"],
            labels_from_probabilities(probs, pl_module.threshold),
        )
        folder = run_folder(trainer) / "overlays"
        save_png(folder / f"val_epoch{trainer.current_epoch:03d}.png", grid)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    key="val/overlays",
                    images=[grid],
                    step=trainer.global_step,
                    caption=["image | truth | prediction"],
                )
        self._batch = None

    @staticmethod
    def _grid(images: torch.Tensor, masks: torch.Tensor, preds: torch.Tensor) -> np.ndarray:
        rows = []
        for image, mask, pred in zip(images, masks, preds, strict=True):
            rgb = to_display(image.float().cpu().numpy().transpose(1, 2, 0))
            predicted = pred.cpu().numpy()
            if mask.ndim == 3:  # binary 1 x H x W
                truth, draw = mask[0].cpu().numpy() > 0.5, overlay
            else:  # label map H x W
                truth, draw = mask.cpu().numpy(), label_overlay
            rows.append(
                np.concatenate([rgb, draw(rgb, truth), draw(rgb, predicted, truth)], axis=1)
            )
        return np.concatenate(rows, axis=0)
