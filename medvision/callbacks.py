"""Callbacks: prediction files, validation overlays, epoch timing, and the logged config."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from scipy import ndimage

from medvision.data.base import resize_mask
from medvision.data.io import (
    binarize_mask,
    normalize_intensity,
    read_image,
    save_png,
    to_channels,
    write_atomically,
    write_csv,
)
from medvision.metrics import binarize, overlap_scores

log = logging.getLogger(__name__)

_PRED_COLOR = np.array([255, 64, 64], dtype=np.float32)
_TRUTH_COLOR = np.array([64, 255, 64], dtype=np.uint8)


def to_display(image: np.ndarray) -> np.ndarray:
    """Any stored image (``H x W [x C]``, any dtype) as uint8 RGB ``H x W x 3`` for viewing."""
    channels = 3 if image.ndim == 3 and image.shape[-1] >= 3 else 1
    scaled = normalize_intensity(to_channels(image, channels))
    return (np.repeat(scaled, 3 // channels, axis=-1) * 255).round().astype(np.uint8)


def overlay(
    image_rgb: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None, alpha: float = 0.4
) -> np.ndarray:
    """Tint predicted pixels red and outline the true mask in green; uint8 ``H x W x 3``."""
    out = image_rgb.astype(np.float32)
    out[pred] = (1 - alpha) * out[pred] + alpha * _PRED_COLOR
    out = out.round().astype(np.uint8)
    if truth is not None:
        out[truth & ~ndimage.binary_erosion(truth)] = _TRUTH_COLOR
    return out


def run_folder(trainer: Trainer) -> Path:
    """This run's own folder, the one that holds its ``checkpoints/``.

    ``<save_dir>/<name>/<version>`` of the first logger, as Lightning's ``ModelCheckpoint``
    builds it (``logs/version_3`` for the CSV logger, ``<project>/<run id>`` for W&B), or
    ``default_root_dir`` without a logger.
    """
    if not trainer.loggers or trainer.loggers[0].save_dir is None:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir) / str(logger.name) / version


class SegmentationPredictionWriter(BasePredictionWriter):
    """Writes what ``medvision predict`` makes of each image, at the image's original size.

    For every input ``<stem>.*``: ``masks/<stem>.png`` (0/255) and ``overlays/<stem>.png``
    (prediction tinted red, true outline green when a mask is known), under ``output_dir``
    (default ``<trainer.default_root_dir>/predictions``). When the inputs have masks,
    ``metrics.csv`` lists per-image Dice and IoU and the mean is logged. Probabilities are
    resized to the original size before thresholding at ``threshold`` (default: the
    model's). Files are written atomically.
    """

    def __init__(
        self, output_dir: str | None = None, overlays: bool = True, threshold: float | None = None
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.overlays = overlays
        self.threshold = threshold
        self._rows: list[dict] = []
        self._num_written = 0

    def _root(self, trainer: Trainer) -> Path:
        return self.output_dir or Path(trainer.default_root_dir) / "predictions"

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows = []
        self._num_written = 0

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if "probs" not in prediction:
            return
        root = self._root(trainer)
        threshold = pl_module.threshold if self.threshold is None else self.threshold
        for i, path in enumerate(prediction["path"]):
            height, width = (int(v) for v in prediction["original_size"][i])
            probs = F.interpolate(
                prediction["probs"][i : i + 1].float(),
                size=(height, width),
                mode="bilinear",
                align_corners=False,
            )
            pred = binarize(probs, threshold)[0, 0].cpu().numpy()
            stem = Path(path).stem
            save_png(root / "masks" / f"{stem}.png", pred.astype(np.uint8) * 255)
            self._num_written += 1
            truth = None
            if "mask_path" in prediction:
                mask_path = prediction["mask_path"][i]
                mask = binarize_mask(read_image(mask_path), mask_path)
                truth = resize_mask(mask, (height, width)).astype(bool)
                dice, iou = overlap_scores(
                    torch.from_numpy(pred)[None], torch.from_numpy(truth)[None]
                )
                self._rows.append(
                    {"image": path, "mask": mask_path, "dice": float(dice), "iou": float(iou)}
                )
            if self.overlays:
                save_png(
                    root / "overlays" / f"{stem}.png",
                    overlay(to_display(read_image(path)), pred, truth),
                )

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        root = self._root(trainer)
        if self._rows:
            name = (
                "metrics.csv"
                if trainer.world_size == 1
                else f"metrics.rank{trainer.global_rank}.csv"
            )
            write_csv(root / name, self._rows, ["image", "mask", "dice", "iou"])
            dice = np.mean([r["dice"] for r in self._rows])
            iou = np.mean([r["iou"] for r in self._rows])
            log.info(
                "Predicted %d images with masks: mean Dice %.4f, mean IoU %.4f (%s)",
                len(self._rows),
                dice,
                iou,
                root / name,
            )
        if self._num_written:
            log.info("%d prediction masks written to %s", self._num_written, root / "masks")


class ClassificationPredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` for what ``medvision predict`` makes of each image.

    Columns: ``file``, ``pred`` (class name), ``label`` (true class name, when the images sit in
    class folders), then ``prob_<class>`` for every class. For a multi-label model ``pred``
    (and ``label``) list the labels above the model's tuned thresholds, joined by ``|``.
    Written atomically under ``output_dir`` (default ``<trainer.default_root_dir>/predictions``)
    at the end of predict; under DDP each process writes ``predictions.rank<N>.csv``.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self._rows: list[dict] = []

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if "class_probs" not in prediction:
            return
        names = pl_module.class_names
        probs = prediction["class_probs"].cpu()
        multilabel = getattr(pl_module, "multilabel", False)
        for i, path in enumerate(prediction["path"]):
            if multilabel:
                positive = probs[i] > pl_module.thresholds.cpu()
                row = {"file": path, "pred": _joined(names, positive)}
                if "label" in prediction:
                    row["label"] = _joined(names, prediction["label"][i] > 0.5)
            else:
                row = {"file": path, "pred": names[int(probs[i].argmax())]}
                if "label" in prediction:
                    row["label"] = names[int(prediction["label"][i])]
            row.update(
                {
                    f"prob_{name}": round(float(p), 6)
                    for name, p in zip(names, probs[i], strict=True)
                }
            )
            self._rows.append(row)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._rows:
            return
        root = self.output_dir or Path(trainer.default_root_dir) / "predictions"
        name = (
            "predictions.csv"
            if trainer.world_size == 1
            else f"predictions.rank{trainer.global_rank}.csv"
        )
        write_csv(root / name, self._rows)
        if "label" in self._rows[0]:
            correct = sum(r["pred"] == r["label"] for r in self._rows)
            log.info(
                "Predicted %d images from class folders: accuracy %.4f",
                len(self._rows),
                correct / len(self._rows),
            )
        log.info("Predictions of %d images written to %s", len(self._rows), root / name)


def _joined(names: list[str], chosen: torch.Tensor) -> str:
    """Names where ``chosen`` is true, joined by ``|`` (the NIH label style); ``""`` if none."""
    return "|".join(name for name, keep in zip(names, chosen.tolist(), strict=True) if keep)


class PredictionWriter(BasePredictionWriter):
    """What ``medvision predict`` writes, for whichever task the model does.

    Segmentation models get :class:`SegmentationPredictionWriter`'s masks, overlays and
    metrics; classifiers :class:`ClassificationPredictionWriter`'s ``predictions.csv``. Both go
    under ``output_dir`` (default ``<trainer.default_root_dir>/predictions``). ``threshold``
    overrides a segmenter's own (``--prediction_writer.threshold 0.4``): the model's settings
    come from its checkpoint in ``predict``, so ``--model.init_args.threshold`` does not apply.
    """

    def __init__(
        self, output_dir: str | None = None, overlays: bool = True, threshold: float | None = None
    ) -> None:
        super().__init__(write_interval="batch")
        self.writers = (
            SegmentationPredictionWriter(output_dir, overlays, threshold),
            ClassificationPredictionWriter(output_dir),
        )

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for writer in self.writers:
            writer.on_predict_epoch_start(trainer, pl_module)

    def write_on_batch_end(self, *args, **kwargs) -> None:
        for writer in self.writers:
            writer.write_on_batch_end(*args, **kwargs)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for writer in self.writers:
            writer.on_predict_epoch_end(trainer, pl_module)


class ValidationOverlays(Callback):
    """After each validation epoch, a grid of ``image | truth | prediction`` for a few images.

    Saved as ``overlays/val_epoch<NNN>.png`` in the run folder (see :func:`run_folder`), and
    logged to W&B as ``val/overlays`` when a ``WandbLogger`` is attached. Uses the first
    validation batch.
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
            probs = pl_module(self._batch["image"]).sigmoid()
        grid = self._grid(
            self._batch["image"],
            self._batch["mask"],
            binarize(probs, pl_module.threshold),
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
            truth = mask[0].cpu().numpy() > 0.5
            predicted = pred[0].cpu().numpy()
            rows.append(
                np.concatenate([rgb, overlay(rgb, truth), overlay(rgb, predicted, truth)], axis=1)
            )
        return np.concatenate(rows, axis=0)


class EpochTimer(Callback):
    """Wall and CPU seconds of every training epoch, written to the run folder as JSON.

    An epoch is timed from its start to the next epoch's start (the last one to the end of
    training), so its time holds everything it costs: training, validation, logging and
    checkpoint saving. (Lightning runs checkpoint callbacks after all others at epoch end: a
    timer stopped in ``on_train_epoch_end`` would leave the saving out.) CPU time is this
    process's, all threads; loader workers are other processes and not counted. After each
    epoch ``epoch_times.json`` (``[{"epoch", "wall_s", "cpu_s"}, ...]``) is rewritten,
    atomically, in the run folder (see :func:`run_folder`) or at ``output``.
    """

    def __init__(self, output: str | Path | None = None) -> None:
        self.output = None if output is None else Path(output)
        self.epochs: list[dict] = []
        self._start: tuple[int, float, float] | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close_epoch(trainer)
        self._start = (trainer.current_epoch, time.perf_counter(), time.process_time())

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close_epoch(trainer)

    def _close_epoch(self, trainer: Trainer) -> None:
        if self._start is None:
            return
        epoch, wall, cpu = self._start
        self._start = None
        self.epochs.append(
            {
                "epoch": epoch,
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
            }
        )
        if trainer.is_global_zero:
            path = self.output or run_folder(trainer) / "epoch_times.json"
            write_atomically(path, lambda tmp: tmp.write_text(json.dumps(self.epochs, indent=1)))


class LoggedSaveConfigCallback(SaveConfigCallback):
    """Saves the resolved config in the run folder and sends it to every logger (W&B included)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = json.loads(self.parser.dump(self.config, skip_none=False, format="json"))
        for logger in trainer.loggers:
            logger.log_hyperparams(config)
