"""Segmentation as a LightningModule, binary or multi-class: any smp architecture, or FCN-8s.

Binary (``num_classes == 1``): sigmoid, 0/1 masks ``N x 1 x H x W``. Multi-class
(``num_classes >= 2``): softmax, int64 label maps ``N x H x W`` with 0 the background. See
:class:`SegmentationModule` and ``docs/models.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
import timm
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from medvision.evaluation.label_maps import labels_from_probabilities
from medvision.evaluation.metrics import multiclass_segmentation_metrics, segmentation_metrics
from medvision.models.base import MedVisionModule
from medvision.models.losses import build_loss
from medvision.models.nets.fcn import FCN
from medvision.models.weights import explain_download_failure
from medvision.utils.class_names import check_class_names

#: Too many or too few ``class_names``: the message.
COUNT_MESSAGE = (
    "{count} class_names {names} for num_classes={num_classes}: give one name per class "
    "(label maps: the background first)."
)


def create_segmentation_net(
    arch: str,
    encoder_name: str,
    encoder_weights: str | None,
    in_channels: int,
    classes: int,
    **kwargs,
) -> nn.Module:
    """``smp.create_model`` for smp's architectures, :class:`FCN` for ``arch="FCN"``.

    Pretrained encoder weights come from the internet; offline, this raises an error that says
    how to go on (``encoder_weights: null``, or a pre-filled cache). An unknown ``arch`` or
    ``encoder_name`` is a one-line ``ValueError`` naming the option and where to find the names.

    Args:
        arch: An smp architecture (``Unet``, ``FPN``, ...) or ``FCN``; case-insensitive.
        encoder_name: An smp encoder (``resnet34``, ...) or ``tu-<timm name>``.
        encoder_weights: Pretrained encoder weights (``imagenet``: downloaded), or None.
        in_channels: Image channels.
        classes: Output channels: 1 (binary) or K (classes of a label map).
        **kwargs: More keyword arguments of the architecture.

    Returns:
        The network, mapping ``N x in_channels x H x W`` images to ``N x classes x H x W``
        logits.
    """
    check_net_names(arch, encoder_name)
    with explain_download_failure(
        f"the {encoder_weights!r} weights of encoder {encoder_name!r}",
        "Set encoder_weights: null to train from scratch.",
    ):
        if arch.lower() == "fcn":
            return FCN(
                encoder_name,
                encoder_weights=encoder_weights,
                in_channels=in_channels,
                classes=classes,
                **kwargs,
            )
        return smp.create_model(
            arch,
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=classes,
            **kwargs,
        )


def check_net_names(arch: str, encoder_name: str) -> None:
    """Raise a one-line ``ValueError`` for an ``arch`` or ``encoder_name`` smp does not know.

    Args:
        arch: An smp architecture name (``smp.MODEL_ARCHITECTURES_MAPPING``) or ``FCN``;
            case-insensitive.
        encoder_name: An smp encoder (``smp.encoders.get_encoder_names()``) or a timm model
            as ``tu-<name>``.
    """
    if arch.lower() != "fcn" and arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        known = [cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()]
        raise ValueError(
            f"unknown arch {arch!r} (model.init_args.arch): use one of {known + ['FCN']}."
        )
    if encoder_name.startswith("tu-"):
        known_encoder = timm.is_model(encoder_name.removeprefix("tu-"))
    else:
        known_encoder = encoder_name in smp.encoders.get_encoder_names()
    if not known_encoder:
        raise ValueError(
            f"unknown encoder_name {encoder_name!r} (model.init_args.encoder_name): use an smp "
            "encoder such as resnet34, efficientnet-b0 or mit_b0 (all: "
            "smp.encoders.get_encoder_names()), or a timm model as 'tu-<timm name>'."
        )


class SegmentationModule(MedVisionModule):
    """Segmentation of 2D images: binary masks, or multi-class label maps.

    ``num_classes`` (linked from the datamodule by the CLI) sets the mode:

    - ``1``, binary: logits ``N x 1 x H x W``, masks 0/1 float ``N x 1 x H x W``; sigmoid,
      foreground above ``threshold``.
    - ``K >= 2``, multi-class: logits ``N x K x H x W``, masks int64 label maps ``N x H x W``
      (0 = background); softmax, each pixel its most probable class (argmax). Dice and IoU
      are logged per class (``val/dice/<class>``) and as their mean over the foreground
      classes (``val/dice``, so monitors work as in binary mode).

    Batches are dicts with ``image`` (float ``N x in_channels x H x W``) and ``mask``. Logged
    per stage (``train/``, ``val/``, ``test/``): ``loss``, ``dice`` and ``iou`` (means of
    per-image scores), ``pixel_accuracy``. ``test`` also writes per-image scores with HD95
    and surface Dice and bootstrap intervals
    (:class:`~medvision.evaluation.SegmentationTestReport`). ``predict_step`` returns
    ``probs`` (sigmoid ``N x 1 x H x W`` or softmax ``N x K x H x W``) with the batch's
    paths and sizes, which :class:`~medvision.apply.PredictionWriter` turns into files.

    Args:
        arch: An smp architecture (``Unet``, ``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus``, ...)
            or ``FCN`` (FCN-8s on the same encoder).
        encoder_name: An smp encoder (``resnet34``, ``efficientnet-b0``, ...) or
            ``tu-<timm name>``.
        encoder_weights: Pretrained encoder weights (``imagenet``: downloaded), or null.
        in_channels: Image channels, 1 or 3 (linked from the datamodule).
        num_classes: 1 for binary masks; K >= 2 for label maps of K classes with the
            background (linked from the datamodule).
        class_names: One name per class, background first for label maps (linked; kept in
            the checkpoint and used for per-class metrics).
        loss: A name (binary: bce, dice, bce_dice, focal, unet_weighted_bce; multi-class:
            cross_entropy, dice, dice_ce, focal), an nn.Module class path, or null for
            bce_dice (binary) or dice_ce (multi-class).
        threshold: Binary: probability above which a pixel is foreground.
        jaccard_floor: Also log thresholded_iou, per-image IoU below this counting 0
            (ISIC 2018: 0.65); binary only.
        include_background: Multi-class: score the background class too (MONAI's name), in
            the means and per class.
        surface_tolerance: Surface Dice tolerance of the test report and predict's
            metrics.csv: pixels, or mm where the datamodule gives pixel spacing.
        arch_kwargs: More keyword arguments of the architecture.
        optimizer: The optimizer (class path and init_args in YAML).
        lr_scheduler: An LR scheduler, or null.
        lr_scheduler_monitor: Metric a ReduceLROnPlateau watches.
        channels_last: NHWC memory layout; null: on for CUDA GPUs only.
        compile: torch.compile the network (true, or a dict of its options).
    """

    task = "segmentation"

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "resnet34",
        encoder_weights: str | None = None,
        in_channels: int = 1,
        num_classes: int = 1,
        class_names: Sequence[str] | None = None,
        loss: str | None = None,
        threshold: float = 0.5,
        jaccard_floor: float | None = None,
        include_background: bool = False,
        surface_tolerance: float = 1.0,
        arch_kwargs: dict | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_monitor: str = "val/loss",
        channels_last: bool | None = None,
        compile: bool | dict = False,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, lr_scheduler_monitor, channels_last, compile)
        if num_classes < 1:
            raise ValueError(
                f"num_classes must be 1 (binary) or more (label maps), got {num_classes}"
            )
        self.class_names = check_class_names(
            class_names, num_classes, binary_name="foreground", count_message=COUNT_MESSAGE
        )
        if not (surface_tolerance >= 0):
            raise ValueError(
                f"surface_tolerance must be >= 0 (pixels or mm), got {surface_tolerance}"
            )
        if jaccard_floor is not None and num_classes > 1:
            raise ValueError(
                "jaccard_floor (ISIC's thresholded Jaccard) scores binary masks; leave it out "
                f"with num_classes={num_classes}."
            )
        # callables and modules are not hyperparameters; a loss given by name is
        not_saved = ["optimizer", "lr_scheduler"] + (
            [] if isinstance(loss, str | None) else ["loss"]
        )
        self.save_hyperparameters(ignore=not_saved)
        self.net = create_segmentation_net(
            arch, encoder_name, encoder_weights, in_channels, num_classes, **(arch_kwargs or {})
        )
        self._network_args = dict(arch=arch, encoder_name=encoder_name, arch_kwargs=arch_kwargs)
        self.num_classes = num_classes
        self.multiclass = num_classes > 1
        if loss is None:
            loss = "dice_ce" if self.multiclass else "bce_dice"
        self.loss = build_loss(loss, num_classes)
        self.threshold = threshold
        self.include_background = include_background
        self.surface_tolerance = surface_tolerance
        for stage in ("train", "val", "test"):
            # the masks' range check waits for the GPU; val and test still check the pipeline
            metrics, per_class = self._metrics(jaccard_floor, validate_args=stage != "train")
            setattr(self, f"{stage}_metrics", metrics.clone(prefix=f"{stage}/"))
            if per_class is not None:
                setattr(self, f"{stage}_class_metrics", per_class.clone(prefix=f"{stage}/"))

    def _metrics(self, jaccard_floor, validate_args: bool):
        if not self.multiclass:
            return segmentation_metrics(self.threshold, jaccard_floor, validate_args), None
        return multiclass_segmentation_metrics(
            self.class_names, self.include_background, validate_args
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.to_memory_format(image))

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        return self._step(batch, stage)[0]

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The loss, and the predicted masks or label maps ``N x H x W`` (see
        :func:`~medvision.evaluation.label_maps.labels_from_probabilities`; binary: in ``test``
        only)."""
        logits = self(batch["image"])
        mask = batch["mask"]
        self._check_mask(mask, logits)
        loss = self.loss(logits, mask)
        size = len(mask)
        metrics = getattr(self, f"{stage}_metrics")
        probs = logits.detach().softmax(1) if self.multiclass else logits.detach().sigmoid()
        preds = None
        if self.multiclass or stage == "test":
            preds = labels_from_probabilities(probs, self.threshold)
        self.log_loss(stage, loss, batch_size=size)
        if self.multiclass:
            metrics.update(preds, mask)
            per_class = getattr(self, f"{stage}_class_metrics")
            per_class.update(preds, mask)
            self.log_dict(per_class, on_step=False, on_epoch=True, batch_size=size)
        else:
            metrics.update(probs, mask)
        self.log_dict(
            metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=size
        )
        return loss, preds

    def _check_mask(self, mask: torch.Tensor, logits: torch.Tensor) -> None:
        """Refuse masks of the other mode (shapes and dtype only: nothing waits for a GPU)."""
        if self.multiclass:
            good = mask.ndim == 3 and not mask.is_floating_point()
            expected = "int64 label maps N x H x W"
        else:
            good = mask.ndim == 4 and mask.shape[1] == 1
            expected = "0/1 masks N x 1 x H x W"
        if not good or mask.shape[-2:] != logits.shape[-2:]:
            raise ValueError(
                f"SegmentationModule(num_classes={self.num_classes}) needs {expected} at the "
                f"logits' size {tuple(logits.shape[-2:])}, but the batch has masks of shape "
                f"{tuple(mask.shape)} ({mask.dtype}). The datamodule's class_names decide: one "
                "name for binary masks, one per label (background first) for label maps; the "
                "CLI links them to the model."
            )

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        """The loss, and the predictions ``preds`` (``N x H x W``) for the test report."""
        loss, preds = self._step(batch, "test")
        return {"loss": loss, "preds": preds}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a multi-class checkpoint whose classes differ from this run's (by name)."""
        super().on_load_checkpoint(checkpoint)
        trained = checkpoint.get("hyper_parameters", {}).get("class_names")
        if self.multiclass and trained is not None and list(trained) != self.class_names:
            raise ValueError(
                f"the checkpoint was trained on classes {list(trained)} but this run has "
                f"{self.class_names}: label values would name the wrong structures. Use data "
                f"with --data.init_args.class_names {list(trained)}, in that order."
            )

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """The batch without its images, with ``probs``: sigmoid ``N x 1 x H x W`` or softmax
        ``N x K x H x W`` at the network's size (test-time augmentation is applied on top by
        :mod:`medvision.apply`)."""
        output = {key: value for key, value in batch.items() if key != "image"}
        output["probs"] = self.probabilities(batch["image"])
        return output

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Sigmoid ``N x 1 x H x W`` (binary) or softmax ``N x K x H x W`` of ``image``."""
        logits = self(image)
        return logits.softmax(1) if self.multiclass else logits.sigmoid()

    def describe_output(self) -> dict:
        """Segmentation, the threshold, the classes and the network (see
        :mod:`medvision.models.record`)."""
        init_args = dict(self._network_args)
        init_args.update(
            include_background=self.include_background, surface_tolerance=self.surface_tolerance
        )
        return {
            "task": "segmentation",
            "mask_threshold": float(self.threshold),
            "network": {
                "class_path": "medvision.models.SegmentationModule",
                "init_args": init_args,
            },
        }
