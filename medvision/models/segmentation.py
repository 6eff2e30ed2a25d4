"""Binary segmentation as a LightningModule: any smp architecture, or FCN-8s on an smp encoder."""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
import timm
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from medvision.losses import build_loss
from medvision.metrics import segmentation_metrics
from medvision.models.base import MedVisionModule
from medvision.models.nets.fcn import FCN
from medvision.models.weights import explain_download_failure
from medvision.tta import tta_probabilities


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

    ``encoder_name`` is an smp encoder (``smp.encoders.get_encoder_names()``) or a timm model
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
    """Binary segmentation: logits ``N x 1 x H x W`` for images ``N x in_channels x H x W``.

    Batches are dicts with ``image`` (float) and ``mask`` (0/1 float ``N x 1 x H x W``).
    ``arch`` is any name ``smp.create_model`` knows (``Unet``, ``UnetPlusPlus``, ``FPN``,
    ``DeepLabV3Plus``, ...) or ``FCN``; ``encoder_name`` any smp encoder. ``loss`` is a name from
    :data:`medvision.losses.LOSS_NAMES` or an ``nn.Module``. Dice, IoU and pixel accuracy at
    ``threshold`` are logged per stage as ``train/dice``, ``val/iou``, ... (and
    ``thresholded_iou`` with ``jaccard_floor``, see
    :func:`~medvision.metrics.segmentation_metrics`). ``in_channels`` and ``num_classes`` (and
    ``class_names``, kept for the record) are normally linked from the datamodule by the CLI.

    ``predict_step`` returns sigmoid probabilities with the batch's paths and original sizes,
    which :class:`medvision.callbacks.SegmentationPredictionWriter` turns into mask files.
    """

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "resnet34",
        encoder_weights: str | None = None,
        in_channels: int = 1,
        num_classes: int = 1,
        class_names: Sequence[str] | None = None,
        loss: str = "bce_dice",
        threshold: float = 0.5,
        jaccard_floor: float | None = None,
        arch_kwargs: dict | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_monitor: str = "val/loss",
        channels_last: bool | None = None,
        compile: bool | dict = False,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, lr_scheduler_monitor, channels_last, compile)
        if num_classes != 1:
            raise ValueError(
                f"num_classes={num_classes}, but SegmentationModule segments 1 foreground class "
                "(binary masks). Multi-class masks are not supported yet."
            )
        # callables and modules are not hyperparameters; a loss given by name is
        not_saved = ["optimizer", "lr_scheduler"] + ([] if isinstance(loss, str) else ["loss"])
        self.save_hyperparameters(ignore=not_saved)
        self.net = create_segmentation_net(
            arch, encoder_name, encoder_weights, in_channels, num_classes, **(arch_kwargs or {})
        )
        self._network_args = dict(arch=arch, encoder_name=encoder_name, arch_kwargs=arch_kwargs)
        self.loss = build_loss(loss)
        self.threshold = threshold
        metrics = segmentation_metrics(threshold, jaccard_floor)
        # the masks' 0/1 check waits for the GPU; val and test still check the same pipeline's
        self.train_metrics = segmentation_metrics(
            threshold, jaccard_floor, validate_args=False
        ).clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.to_memory_format(image))

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch["image"])
        mask = batch["mask"]
        loss = self.loss(logits, mask)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(logits.detach().sigmoid(), mask)
        self.log_loss(stage, loss, batch_size=len(mask))
        self.log_dict(
            metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=len(mask)
        )
        return loss

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        output = {key: value for key, value in batch.items() if key != "image"}
        output["probs"] = tta_probabilities(
            lambda image: self(image).sigmoid(), batch["image"], self.predict_tta, spatial=True
        )
        return output

    def describe_output(self) -> dict:
        """Segmentation, the threshold, and the network (see :mod:`medvision.preprocessing`)."""
        return {
            "task": "segmentation",
            "mask_threshold": float(self.threshold),
            "network": {
                "class_path": "medvision.models.SegmentationModule",
                "init_args": dict(self._network_args),
            },
        }
