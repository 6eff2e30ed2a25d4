"""Prediction writer for volumes: per-slice masks gathered into one NIfTI per input volume."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from lightning.pytorch import LightningModule, Trainer

from medvision.apply.prediction_output import FolderPredictionWriter, report_failures
from medvision.apply.seg_writer import (
    SUFFIXES,
    SegSettings,
    default_formats,
    parse_output_format,
    write_seg,
)
from medvision.data.nifti import assemble_slices, label_image, save_nifti
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

    ``output_format`` chooses the files: ``nifti`` (``<name>.nii.gz``) and ``seg``
    (``<name>.seg.dcm``, a DICOM SEG of a DICOM series input, see
    :func:`~medvision.apply.seg_writer.write_seg`); by default a DICOM series gets both and a
    NIfTI file its NIfTI (:func:`~medvision.apply.seg_writer.default_formats`); a series that
    cannot have a SEG (no ``FrameOfReferenceUID``) then gets its NIfTI and a warning, while an
    ``output_format`` that asks for ``seg`` lists it as failed.

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
        output_format: ``nifti``, ``seg`` or both (a list, or ``"seg,nifti"``); None: each
            input's default.
        seg: What a SEG says of the model; None: its class names only (a generic name).
    """

    def __init__(
        self,
        output_dir: str | None = None,
        threshold: float | None = None,
        output_format: str | list[str] | None = None,
        seg: SegSettings | None = None,
    ) -> None:
        super().__init__(output_dir)
        self.threshold = threshold
        self.output_format = parse_output_format(output_format)
        self.seg = seg
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
        stem = self.folder(trainer) / self.name(volume)
        try:
            labels = assemble_slices([slices[k] for k in sorted(slices)], axis)
            image = label_image(labels, volume, f"{stem}.*")
        except (ValueError, OSError) as exc:  # this volume fails; the others go on
            self._fail(volume, f"not predicted: {exc}")
            return
        for kind in self.output_format or default_formats(volume):
            path = stem.with_name(stem.name + SUFFIXES[kind])
            try:
                if kind == "nifti":
                    save_nifti(path, image)
                elif not Path(volume).is_dir():
                    raise ValueError(
                        "a SEG refers to the DICOM instances it segments, and this input is a "
                        "NIfTI file. Predict its DICOM series, or drop seg from --output_format."
                    )
                else:
                    seg = self.seg or SegSettings(tuple(self.outputs.class_names))
                    write_seg(path, image, volume, seg)
            except (ValueError, OSError, ImportError) as exc:  # ImportError: no highdicom
                if self.output_format is None and kind == "seg":  # a default, not asked for
                    log.warning("%s: no DICOM SEG written, only NIfTI: %s", volume, exc)
                else:
                    self._fail(volume, f"not written as {kind}: {exc}")
                continue
            self.written.append(path)

    def _fail(self, volume: str, problem: str) -> None:
        self._own_failures.append(BadFile(volume, problem))
        log.warning("Not predicted: %s", self._own_failures[-1])

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
            log.info("%d predicted label files written to %s", len(self.written), root)


__all__ = ["VolumePredictionWriter"]
