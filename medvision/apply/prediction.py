"""What ``medvision predict`` writes: masks and overlays, label volumes, or a CSV of classes.

:class:`PredictionWriter` is the command's writer (``--prediction_writer.*``): it picks one
task writer, once, from the model's preprocessing record (task and input kind):
:class:`SegmentationPredictionWriter` for 2D segmentation,
:class:`~medvision.apply.volume_writer.VolumePredictionWriter` for volumes and
:class:`ClassificationPredictionWriter` for classifiers. Each task writer also works alone as
a callback of a plain ``trainer.predict``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer

from medvision.apply.explanations import CLI_OPTIONS, CamExplainer, check_cam
from medvision.apply.prediction_output import (
    FolderPredictionWriter,
    ModelOutputs,
    prediction_folder,
    report_failures,
    with_dicom_uids,
)
from medvision.apply.seg_writer import SegSettings, check_output_format, parse_output_format
from medvision.apply.tta import PredictionModule, check_tta
from medvision.apply.volume_writer import VolumePredictionWriter
from medvision.data.datasets import resize_mask
from medvision.data.io import read_image
from medvision.data.screening import BadFile, read_mask
from medvision.data.visualize import label_overlay, overlay, to_display
from medvision.evaluation.label_maps import (
    SURFACE_MISSING,
    image_scores,
    labels_at_size,
    surface_metrics_available,
)
from medvision.models.record import Preprocessing
from medvision.utils.files import save_png, write_csv, write_text

log = logging.getLogger(__name__)


class SegmentationPredictionWriter(FolderPredictionWriter):
    """Writes what ``medvision predict`` makes of each image, at the image's original size.

    Each input is named by its path under the inputs' folder, subfolders kept (see
    ``FolderPredictionWriter.name``). Under ``output_dir`` (default: a new
    ``predictions/<timestamp>`` folder, see ``medvision.apply.prediction_output``) go
    ``masks/<name>.png`` and ``overlays/<name>.png``. Binary models (one probability channel):
    the mask is 0/255, the overlay the prediction tinted red with the true outline in green.
    Multi-class models (softmax over K channels): the mask is a label map, uint8 pixel value =
    class index (0 = background), and the overlay tints each class in its colour of the fixed
    palette ``medvision.data.visualize.PALETTE`` (true outlines in the same colours).
    Probabilities are resized to the original size (bilinear) before thresholding at
    ``threshold`` (default: the model's) or taking the most probable class. When the inputs
    have masks, ``metrics.csv`` lists per image ``dice``, ``iou``, ``hd95`` and
    ``surface_dice`` (and ``<metric>/<class>`` for label maps; see
    ``medvision.evaluation.label_maps.image_scores``), at the original size, distances in
    pixels, surface Dice at the model's ``surface_tolerance``; without MONAI the last two are
    left out with a warning. The mean is logged. Files are written atomically.

    Batches hold the model's ``probs`` (``N x K x h x w``) with the inputs' ``path`` and
    ``original_size`` (and ``mask_path`` to score against). Input files that failed (the
    datamodule's ``predict_failures``: unreadable, no mask, ...) and images whose outputs could
    not be made are listed in ``failed.csv`` (``file``, ``problem``) and kept in the list
    ``failures``; such an image leaves no mask or overlay behind.

    Args:
        output_dir: The folder to write into (missing or empty); None: a new
            ``predictions/<timestamp>`` folder of the checkpoint's run.
        overlays: Also write ``overlays/<name>.png`` for each image.
        threshold: Probability in [0, 1] above which a pixel of a binary model is
            foreground; None: the model's. Unused by multi-class models.
    """

    def __init__(
        self, output_dir: str | None = None, overlays: bool = True, threshold: float | None = None
    ) -> None:
        super().__init__(output_dir)
        self.overlays = overlays
        self.threshold = threshold
        self._rows: list[dict] = []
        self._num_written = 0
        self._own_failures: list[BadFile] = []
        self._surface: bool | None = None
        self.failures: list[BadFile] = []

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows, self._num_written = [], 0
        self._own_failures, self.failures = [], []
        self._surface = None

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        root = self.folder(trainer)
        threshold = self.outputs.mask_threshold if self.threshold is None else self.threshold
        for i, path in enumerate(prediction["path"]):
            try:
                self._write_one(root, prediction, i, threshold)
            except (ValueError, OSError) as exc:  # this image's outputs go; the others stay
                for folder in ("masks", "overlays"):
                    (root / folder / f"{self.name(path)}.png").unlink(missing_ok=True)
                self._own_failures.append(BadFile(path, f"not predicted: {exc}"))
                log.warning("Not predicted: %s", self._own_failures[-1])

    def _write_one(self, root: Path, prediction: dict, i: int, threshold: float | None) -> None:
        """The mask (label map), overlay and metrics row of the ``i``-th image of a batch."""
        path = prediction["path"][i]
        height, width = (int(v) for v in prediction["original_size"][i])
        probs = prediction["probs"][i]
        multiclass = probs.shape[0] > 1
        pred = labels_at_size(probs, (height, width), threshold)
        name = self.name(path)
        save_png(root / "masks" / f"{name}.png", pred.astype(np.uint8) * (1 if multiclass else 255))
        truth, row = None, None
        if "mask_path" in prediction:
            mask_path = prediction["mask_path"][i]
            truth = resize_mask(read_mask(mask_path, probs.shape[0]), (height, width))
            truth = truth if multiclass else truth.astype(bool)
            row = {"image": path, "mask": mask_path, **self._scores(pred, truth, probs.shape[0])}
        if self.overlays:
            draw = label_overlay if multiclass else overlay
            save_png(
                root / "overlays" / f"{name}.png", draw(to_display(read_image(path)), pred, truth)
            )
        if row is not None:
            self._rows.append(row)
        self._num_written += 1

    def _scores(self, pred: np.ndarray, truth: np.ndarray, num_classes: int) -> dict:
        """:func:`~medvision.evaluation.label_maps.image_scores` with the model's classes and
        tolerance."""
        if self._surface is None:
            self._surface = surface_metrics_available()
            if not self._surface:
                log.warning(SURFACE_MISSING)
        names = list(self.outputs.class_names)
        if len(names) != num_classes:  # a model without names: classes by index
            names = ["foreground"] if num_classes == 1 else [str(k) for k in range(num_classes)]
        return image_scores(
            pred,
            truth,
            names,
            self.outputs.include_background,
            self.outputs.surface_tolerance,
            None,
            self._surface,
        )

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        root = self.folder(trainer)
        self.failures = report_failures(trainer, root, self._own_failures)
        if self._rows:
            name = (
                "metrics.csv"
                if trainer.world_size == 1
                else f"metrics.rank{trainer.global_rank}.csv"
            )
            write_csv(root / name, self._rows, list(self._rows[0]))
            means = ", ".join(
                f"mean {metric} {np.mean([r[metric] for r in self._rows]):.4f}"
                for metric in ("dice", "iou", "hd95", "surface_dice")
                if metric in self._rows[0]
            )
            log.info("Predicted %d images with masks: %s (%s)", len(self._rows), means, root / name)
        if self._num_written:
            log.info("%d prediction masks written to %s", self._num_written, root / "masks")


class ClassificationPredictionWriter(FolderPredictionWriter):
    """Writes ``predictions.csv`` for what ``medvision predict`` makes of each image.

    Columns: ``file`` (the input as found, subfolders included; when inputs are DICOM, then
    their ``StudyInstanceUID``, ``SeriesInstanceUID`` and ``SOPInstanceUID``, to join the
    results back to the PACS), ``pred`` (class name),
    ``label`` (true class name, when the images sit in class folders), then ``prob_<class>``
    for every class. For a multi-label model ``pred`` (and ``label``) list the labels above
    the model's tuned thresholds, joined by ``|``. Written atomically under ``output_dir``
    (default: a new ``predictions/<timestamp>`` folder, see the module
    ``medvision.apply.prediction_output``) at the end of predict; under DDP each process
    writes ``predictions.rank<N>.csv``. Batches hold the model's ``class_probs`` (``N x K``)
    with the inputs' ``path`` (and ``label``). Input files that failed (the datamodule's
    ``predict_failures``) have no row: they are listed in ``failed.csv`` (``file``,
    ``problem``) beside it and kept in :attr:`failures`.

    Args:
        output_dir: The folder to write into (missing or empty); None: a new
            ``predictions/<timestamp>`` folder of the checkpoint's run.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(output_dir)
        self._rows: list[dict] = []
        self.failures: list[BadFile] = []

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows = []
        self.failures = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        names = list(self.outputs.class_names)
        probs = prediction["class_probs"].cpu()
        for i, path in enumerate(prediction["path"]):
            if self.outputs.multilabel:
                positive = probs[i] > torch.tensor(self.outputs.thresholds)
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
        root = self.folder(trainer)
        self.failures = report_failures(trainer, root, [])
        name = (
            "predictions.csv"
            if trainer.world_size == 1
            else f"predictions.rank{trainer.global_rank}.csv"
        )
        write_csv(root / name, *with_dicom_uids(self._rows))
        if "label" in self._rows[0]:
            correct = sum(r["pred"] == r["label"] for r in self._rows)
            log.info(
                "Predicted %d images from class folders: accuracy %.4f",
                len(self._rows),
                correct / len(self._rows),
            )
        log.info("Predictions of %d images written to %s", len(self._rows), root / name)


def probabilities_at_size(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Probabilities ``K x h x w`` resized bilinearly (``align_corners=False``) to ``size``.

    Args:
        probs: Probabilities ``K x h x w`` (K = 1 for a binary model).
        size: ``(height, width)``.

    Returns:
        float32 ``1 x K x height x width``.
    """
    return F.interpolate(probs[None].float(), size=size, mode="bilinear", align_corners=False)


def _joined(names: list[str], chosen: torch.Tensor) -> str:
    """Names where ``chosen`` is true, joined by ``|`` (the NIH label style); ``""`` if none."""
    return "|".join(name for name, keep in zip(names, chosen.tolist(), strict=True) if keep)


class PredictionWriter(FolderPredictionWriter):
    """What ``medvision predict`` writes, for whichever task and input the model has.

    One task writer is chosen from the model's preprocessing record
    (:mod:`medvision.models.record`), once: segmentation of images gets
    :class:`SegmentationPredictionWriter`'s masks, overlays and metrics, segmentation of
    volumes :class:`~medvision.apply.volume_writer.VolumePredictionWriter`'s NIfTI label
    volumes and DICOM SEGs (``output_format``), classifiers
    :class:`ClassificationPredictionWriter`'s ``predictions.csv``. All go
    under ``output_dir`` (``--output DIR``; default: a new ``predictions/<timestamp>`` folder
    in the checkpoint's run folder, see :mod:`~medvision.apply.prediction_output`), with
    ``prediction_info.json`` (the checkpoint, ``tta``, threshold and the preprocessing used).
    ``medvision predict`` hands the record, the model and its checkpoint over with
    :meth:`use`; in a plain ``trainer.predict`` the model's own record is read at the start.
    ``threshold`` overrides a segmenter's own (``--prediction_writer.threshold 0.4``).
    ``tta`` (``--tta flip``) is the test-time augmentation the predicting
    :class:`~medvision.apply.tta.PredictionModule` applies. Input files that could not be
    predicted are listed in ``failed.csv`` there and in :attr:`failures` (``medvision
    predict`` then exits with status 1).

    ``cam`` (``--cam gradcam`` or ``hirescam``; classifiers only) also writes
    ``cams/<name>.png``: the heat map of where the evidence for the predicted class lies (or
    for ``cam_class``, a class name or index), over the image at its own size, from the layer
    ``cam_target_layer`` (default: the network's last spatial feature map); see
    :class:`~medvision.apply.explanations.CamExplainer`. The heat maps are of the image as it
    is (no TTA).

    Args:
        output_dir: The folder to write into (``--output DIR``; missing or empty); None: a
            new ``predictions/<timestamp>`` folder in the checkpoint's run folder.
        overlays: Segmentation of images: also write ``overlays/<name>.png``.
        threshold: Segmentation: the mask threshold instead of the model's own.
        tta: Test-time augmentation (``--tta flip``), or None.
        cam: Classifiers: ``gradcam`` or ``hirescam`` heat maps in ``cams/`` (``--cam``), or
            None for none.
        cam_target_layer: The network's layer the heat maps explain (``layer4``,
            ``features``); None: its last spatial feature map.
        cam_class: The class every heat map explains (name or index); None: each image's
            predicted class.
        output_format: What to write (``--output_format``): ``png`` (2D images), ``nifti``
            and/or ``seg`` (volumes: a DICOM series gets a DICOM SEG), as a list or
            ``"seg,nifti"``; None: each input's default (see
            :mod:`~medvision.apply.seg_writer`).
        segment_codes: A SEG's coded concepts per class name: ``{class: {category: [scheme,
            code, meaning], type: [...]}}``; classes without get SNOMED CT "Tissue".
    """

    def __init__(
        self,
        output_dir: str | None = None,
        overlays: bool = True,
        threshold: float | None = None,
        tta: str | None = None,
        cam: str | None = None,
        cam_target_layer: str | None = None,
        cam_class: int | str | None = None,
        output_format: str | list[str] | None = None,
        segment_codes: dict[str, dict[str, list[str]]] | None = None,
    ) -> None:
        super().__init__(output_dir)
        self.overlays, self.threshold = overlays, threshold
        self.output_format = parse_output_format(output_format)
        self.segment_codes = segment_codes
        self.tta = check_tta(tta)
        self.cam = check_cam(cam)
        if cam is None and (cam_target_layer is not None or cam_class is not None):
            raise ValueError(
                "--prediction_writer.cam_target_layer and --prediction_writer.cam_class choose "
                "what --cam explains: add --cam gradcam (or hirescam)."
            )
        self.cam_target_layer, self.cam_class = cam_target_layer, cam_class
        self.record: Preprocessing | None = None
        self.model: LightningModule | None = None
        self.writer: FolderPredictionWriter | None = None
        self.explainer: CamExplainer | None = None

    def use(
        self, record: Preprocessing, model: LightningModule, checkpoint: Path | None = None
    ) -> None:
        """Predict for ``model`` as ``record`` states: its task writer is chosen here.

        Args:
            record: The preprocessing record of the predicting model (task, input kind,
                classes, thresholds).
            model: The trained module (explained by ``cam``).
            checkpoint: The checkpoint it came from (recorded; names the default folder).
        """
        self.record, self.model, self.checkpoint = record, model, checkpoint
        check_output_format(self.output_format, record)
        if record.task == "classification":
            writer = ClassificationPredictionWriter(self.output_dir)
        elif record.input == "volume":
            seg = SegSettings.from_record(record, checkpoint, self.segment_codes)
            writer = VolumePredictionWriter(
                self.output_dir, self.threshold, self.output_format, seg
            )
        else:
            writer = SegmentationPredictionWriter(self.output_dir, self.overlays, self.threshold)
        writer.outputs, writer.checkpoint = ModelOutputs.from_record(record), checkpoint
        self.writer = writer
        if self.cam is not None:
            self.explainer = CamExplainer(
                model, self.cam, self.cam_target_layer, self.cam_class, CLI_OPTIONS
            )

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.writer is None:  # a plain trainer.predict: the model describes itself
            self._use_module(pl_module)
        self.root = prediction_folder(self.output_dir, trainer, self.checkpoint)
        self.writer.root = self.root  # one folder, the task writer's
        self.writer.start(trainer, pl_module)

    def _use_module(self, pl_module: LightningModule) -> None:
        describe = getattr(pl_module, "preprocessing", None)
        record = describe() if callable(describe) else None
        if record is None:
            raise ValueError(
                f"PredictionWriter needs the preprocessing record of {type(pl_module).__name__}: "
                "a medvision model whose datamodule has describe_input(), or use(record, model)."
            )
        if self.tta is not None and not isinstance(pl_module, PredictionModule):
            raise ValueError(
                f"tta={self.tta!r} is applied by medvision.apply.tta.PredictionModule: predict "
                "with PredictionModule(model, tta) (medvision predict --tta does)."
            )
        self.use(record, pl_module)

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.writer.on_predict_epoch_start(trainer, pl_module)

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.writer.write_on_batch_end(
            trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
        )
        if self.explainer is not None:
            paths = list(prediction["path"])
            self.explainer.write(
                self.root, batch["image"], paths, [self.writer.name(p) for p in paths]
            )

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.writer.on_predict_epoch_end(trainer, pl_module)
        if trainer.is_global_zero and self.root is not None and self.root.is_dir():
            write_text(self.root / "prediction_info.json", json.dumps(self._info(), indent=1))
            if self.explainer is not None:
                log.info("Heat maps (%s) in %s", self.cam, self.root / "cams")
            log.info("Predictions of this run are in %s", self.root)

    def _info(self) -> dict:
        """What produced these predictions: checkpoint, options and the preprocessing used."""
        checkpoint = self.checkpoint
        return {
            "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
            "tta": self.tta,
            "threshold": self.threshold,
            "output_format": None if self.output_format is None else list(self.output_format),
            "cam": None if self.explainer is None else self.explainer.describe(),
            "preprocessing": self.record.to_dict(),
        }

    @property
    def failures(self) -> list[BadFile]:
        """The input files the last ``predict`` could not use (:class:`BadFile`, path and why)."""
        return [] if self.writer is None else list(self.writer.failures)
