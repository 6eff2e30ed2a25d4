"""Prediction writer for volumes: per-slice masks gathered into one NIfTI per input volume."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from lightning.pytorch import LightningModule, Trainer

from medvision.apply.prediction_output import FolderPredictionWriter, report_failures
from medvision.data.nifti import write_predicted_volume
from medvision.data.screening import BadFile
from medvision.evaluation.label_maps import labels_at_size

log = logging.getLogger(__name__)


class VolumePredictionWriter(FolderPredictionWriter):
    """Writes ``<output_dir>/<name>.nii.gz`` once all slices of a volume are predicted.

    ``<name>`` is the volume's path under the inputs' folder without ``.nii[.gz]`` (a DICOM
    series: its folder's path), subfolders kept: ``p1/ct.nii.gz`` and ``p2/ct.nii.gz`` give
    ``p1/ct.nii.gz`` and ``p2/ct.nii.gz``. For predict batches of volume slices (see the
    datamodule :class:`~medvision.data.volumes.VolumeSliceDataModule`): the model's
    ``predict_step`` returns ``probs`` (``N x 1 x h x w`` sigmoid probabilities, or
    ``N x K x h x w`` softmax ones of a multi-class model) with the batch's ``volume_path``,
    ``slice_index``, ``num_slices``, ``slice_axis`` and ``original_size``. Each slice's
    probabilities are resized (bilinear) to the slice's size in the volume and thresholded at
    ``threshold``, or for K channels each voxel given its most probable class; when a volume's
    last slice is in, the mask volume (uint8: 0/1, or class indices 0..K-1) is written with
    the INPUT file's affine and shape (see
    :func:`~medvision.data.nifti.write_predicted_volume`), atomically, and its slices are
    freed (a DICOM series' labels lie on the grid :func:`~medvision.data.nifti.series_image`
    gives it). The prediction writer
    (:class:`~medvision.apply.PredictionWriter`) hands its folder over as :attr:`root`.

    Volumes that could not be written, or that did not get all their slices, are listed in
    ``failed.csv`` with the datamodule's
    ``predict_failures`` and kept in :attr:`failures`. A volume's slices must all reach one
    process: under DDP (``world_size > 1``) predict is refused.

    Args:
        output_dir: The folder to write into (missing or empty); None: a new
            ``predictions/<timestamp>`` folder of the checkpoint's run (see
            :func:`~medvision.apply.prediction_output.prediction_folder`).
        threshold: Probability in [0, 1] above which a voxel of a binary model is foreground;
            None: the model's. Unused by multi-class models.
    """

    def __init__(self, output_dir: str | None = None, threshold: float | None = None) -> None:
        super().__init__(output_dir)
        self.threshold = threshold
        self._pending: dict[str, dict[int, np.ndarray]] = {}
        self._expected: dict[str, int] = {}
        self._own_failures: list[BadFile] = []
        self.written: list[Path] = []
        self.failures: list[BadFile] = []

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._pending, self._expected = {}, {}
        self._own_failures, self.written, self.failures = [], [], []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if trainer.world_size > 1:
            raise RuntimeError(
                "predict on volumes gathers all slices of a volume in one process; with "
                f"{trainer.world_size} processes they would be split. Run predict on one "
                "device: --trainer.devices 1 --trainer.strategy auto."
            )
        threshold = self.outputs.mask_threshold if self.threshold is None else self.threshold
        for i, volume in enumerate(prediction["volume_path"]):
            height, width = (int(v) for v in prediction["original_size"][i])
            probs = prediction["probs"][i]
            mask = labels_at_size(probs, (height, width), threshold).astype(np.uint8)
            slices = self._pending.setdefault(volume, {})
            slices[int(prediction["slice_index"][i])] = mask
            self._expected[volume] = int(prediction["num_slices"][i])
            if len(slices) == self._expected[volume]:
                self._write(trainer, volume, int(prediction["slice_axis"][i]))

    def _write(self, trainer: Trainer, volume: str, axis: int) -> None:
        slices = self._pending.pop(volume)
        path = self.folder(trainer) / f"{self.name(volume)}.nii.gz"
        try:
            write_predicted_volume(path, [slices[k] for k in sorted(slices)], axis, volume)
        except (ValueError, OSError) as exc:  # this volume fails; the others go on
            self._own_failures.append(BadFile(volume, f"not predicted: {exc}"))
            log.warning("Not predicted: %s", self._own_failures[-1])
            return
        self.written.append(path)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for volume, slices in self._pending.items():
            self._own_failures.append(
                BadFile(
                    volume,
                    f"not predicted: only {len(slices)} of its {self._expected[volume]} slices "
                    "reached the writer (limit_predict_batches?)",
                )
            )
        self._pending = {}
        root = self.folder(trainer)
        self.failures = report_failures(trainer, root, self._own_failures)
        if self.written:
            log.info("%d predicted mask volumes written to %s", len(self.written), root)


__all__ = ["VolumePredictionWriter"]
