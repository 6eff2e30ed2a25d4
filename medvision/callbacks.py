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

from medvision.data.base import BadFile, resize_mask
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
from medvision.provenance import run_info

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

    Input files that failed (the datamodule's ``predict_failures``: unreadable, no mask, ...)
    and images whose outputs could not be made are listed in ``failed.csv`` (``file``,
    ``problem``) and kept in :attr:`failures`; such an image leaves no mask or overlay behind.
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
        self._own_failures: list[BadFile] = []
        self._active = False
        self.failures: list[BadFile] = []

    def _root(self, trainer: Trainer) -> Path:
        return prediction_root(self.output_dir, trainer)

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows = []
        self._num_written = 0
        self._own_failures, self._active, self.failures = [], False, []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if "probs" not in prediction:
            return
        self._active = True
        root = self._root(trainer)
        threshold = pl_module.threshold if self.threshold is None else self.threshold
        for i, path in enumerate(prediction["path"]):
            try:
                self._write_one(root, prediction, i, threshold)
            except (ValueError, OSError) as exc:  # this image's outputs go; the others stay
                for folder in ("masks", "overlays"):
                    (root / folder / f"{Path(path).stem}.png").unlink(missing_ok=True)
                self._own_failures.append(BadFile(path, f"not predicted: {exc}"))
                log.warning("Not predicted: %s", self._own_failures[-1])

    def _write_one(self, root: Path, prediction: dict, i: int, threshold: float) -> None:
        """The mask, overlay and metrics row of the ``i``-th image of a batch."""
        path = prediction["path"][i]
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
        truth, row = None, None
        if "mask_path" in prediction:
            mask_path = prediction["mask_path"][i]
            mask = binarize_mask(read_image(mask_path), mask_path)
            truth = resize_mask(mask, (height, width)).astype(bool)
            dice, iou = overlap_scores(torch.from_numpy(pred)[None], torch.from_numpy(truth)[None])
            row = {"image": path, "mask": mask_path, "dice": float(dice), "iou": float(iou)}
        if self.overlays:
            save_png(
                root / "overlays" / f"{stem}.png",
                overlay(to_display(read_image(path)), pred, truth),
            )
        if row is not None:
            self._rows.append(row)
        self._num_written += 1

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        root = self._root(trainer)
        if self._active:
            self.failures = report_failures(trainer, root, self._own_failures)
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
    Input files that failed (the datamodule's ``predict_failures``) have no row: they are
    listed in ``failed.csv`` (``file``, ``problem``) beside it and kept in :attr:`failures`.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self._rows: list[dict] = []
        self.failures: list[BadFile] = []

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows = []
        self.failures = []

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
        root = prediction_root(self.output_dir, trainer)
        self.failures = report_failures(trainer, root, [])
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


def prediction_root(output_dir: Path | None, trainer: Trainer) -> Path:
    """Where predictions go: ``output_dir``, else ``<default_root_dir>/predictions``."""
    return output_dir or Path(trainer.default_root_dir) / "predictions"


def report_failures(trainer: Trainer, root: Path, own: list[BadFile]) -> list[BadFile]:
    """The datamodule's ``predict_failures`` plus ``own``, written to ``root/failed.csv``.

    Without failures a ``failed.csv`` left by an earlier run in ``root`` is removed, so the
    folder never lists files that this run predicted. Returns the failures.
    """
    failures = [*getattr(trainer.datamodule, "predict_failures", ()), *own]
    name = "failed.csv" if trainer.world_size == 1 else f"failed.rank{trainer.global_rank}.csv"
    if not failures:
        (root / name).unlink(missing_ok=True)
        return []
    rows = [{"file": f.path, "problem": f.problem} for f in failures]
    write_csv(root / name, rows, ["file", "problem"])
    log.warning("%d input files were not predicted; listed in %s", len(failures), root / name)
    return failures


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
    Input files that could not be predicted are listed in ``failed.csv`` there and in
    :attr:`failures` (``medvision predict`` then exits with status 1).
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

    @property
    def failures(self) -> list[BadFile]:
        """The input files the last ``predict`` could not use (:class:`BadFile`, path and why)."""
        return [failure for writer in self.writers for failure in writer.failures]


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
    """Saves what makes a run repeatable in its folder, and sends it to every logger.

    Beside Lightning's ``config.yaml`` (the resolved config, seed included) it writes
    ``run_info.json``: package versions, hardware, the medvision git commit and the command
    line (:func:`medvision.provenance.run_info`). Loggers (W&B included) get the config with
    the run info under ``run_info``.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # trainer.log_dir is a broadcast under DDP: every process asks here, not rank 0 alone
        # in save_config (which Lightning calls on rank 0 only)
        self._log_dir = trainer.log_dir
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = json.loads(self.parser.dump(self.config, skip_none=False, format="json"))
        info = run_info()
        if self._log_dir is not None:
            path = Path(self._log_dir) / "run_info.json"
            write_atomically(path, lambda tmp: tmp.write_text(json.dumps(info, indent=1)))
        for logger in trainer.loggers:
            logger.log_hyperparams({**config, "run_info": info})


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient (see :class:`NonFiniteGuard`)."""


class NonFiniteGuard(Callback):
    """Stops training at a NaN or infinite loss or gradient, saying where and what to do.

    Before each optimizer step, the losses of its backward passes and the gradients (not
    under a ``16-mixed`` gradient scaler, which skips overflowing steps itself) are checked
    together, in one wait for the GPU per step. The
    error names the epoch, step and batch, the batch's files (the samples' ``path``) and the
    newest checkpoint saved so far, from which to resume after fixing the cause. With
    ``max_skipped`` above 0, up to that many such steps are skipped instead (their gradients
    are dropped, so the optimizer leaves the weights alone), each logged with its files and
    counted in ``train/skipped_steps``; one more stops the run. The CLI adds this callback to
    every ``fit`` unless the config lists one.
    """

    def __init__(self, max_skipped: int = 0) -> None:
        if max_skipped < 0:
            raise ValueError(f"max_skipped must be >= 0, got {max_skipped}")
        self.max_skipped = max_skipped
        self.skipped = 0
        self._files: list[str] = []
        self._batch_idx = -1
        self._losses: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module, batch, batch_idx: int) -> None:
        paths = batch.get("path") if isinstance(batch, dict) else None
        self._files = [str(p) for p in paths] if paths is not None else []
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: Trainer, pl_module, loss: torch.Tensor) -> None:
        # kept on the device: the check waits for the GPU once per step, before the update
        self._losses.append(loss.detach())

    def on_before_optimizer_step(self, trainer: Trainer, pl_module, optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        losses, self._losses = self._losses, []
        check_grads = not _scales_gradients(trainer)
        fault = _non_finite(losses, params if check_grads else [])
        if fault is None:
            return
        self.skipped += 1
        if self.skipped > self.max_skipped:
            raise NonFiniteError(self._message(trainer, fault))
        for param in params:
            param.grad = None  # the optimizer skips parameters without a gradient
        log.warning(
            "Skipped a step (%d of at most %d): %s",
            self.skipped,
            self.max_skipped,
            self._where(trainer, fault),
        )
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)

    def _where(self, trainer: Trainer, fault: str) -> str:
        files = ", ".join(self._files[:8]) + (" ..." if len(self._files) > 8 else "")
        return (
            f"{fault} at epoch {trainer.current_epoch}, step {trainer.global_step}, batch "
            f"{self._batch_idx} (files: {files or 'not known'})"
        )

    def _message(self, trainer: Trainer, fault: str) -> str:
        checkpoint = _newest_checkpoint(trainer)
        resume = (
            f"The last good checkpoint is {checkpoint}; resume from it with --ckpt_path "
            f"{checkpoint}"
            if checkpoint
            else "No checkpoint was saved before this step"
        )
        return (
            f"Training stopped: {self._where(trainer, fault)}. {resume} after fixing the cause: "
            "check those files, lower the learning rate, or use 32-bit precision. "
            "NonFiniteGuard(max_skipped=N) skips up to N such steps instead."
        )


def _scales_gradients(trainer: Trainer) -> bool:
    return getattr(trainer.precision_plugin, "scaler", None) is not None


def _non_finite(losses: list[torch.Tensor], params: list[torch.Tensor]) -> str | None:
    """What is NaN or infinite among the step's losses and the gradients, in one device sync."""
    grads = [p.grad for p in params if p.grad is not None]
    values = [loss.float().flatten() for loss in losses]
    if grads:
        values.append(torch.stack(torch._foreach_norm(grads)).float())
    if not values or bool(torch.isfinite(torch.cat(values)).all()):
        return None
    for loss in losses:
        if not torch.isfinite(loss).all():
            return f"the loss is {loss.float().flatten()[0].item()}"
    return "a gradient is NaN or infinite"


def _newest_checkpoint(trainer: Trainer) -> str | None:
    paths = {
        path
        for callback in trainer.checkpoint_callbacks
        for path in (
            getattr(callback, "best_model_path", ""),
            getattr(callback, "last_model_path", ""),
        )
        if path and Path(path).is_file()
    }
    return max(paths, key=lambda p: Path(p).stat().st_mtime, default=None)
