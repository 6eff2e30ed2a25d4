"""Test-time augmentation: predictions averaged over transformed copies of each image.

One implementation for ``medvision predict --tta NAME`` and
``medvision.load_model(...).predict(x, tta=NAME)``: :func:`predict_with_tta` runs a model's
``predict_step`` and averages its probabilities; :class:`PredictionModule` is the trained
model with that option, as ``medvision predict`` runs it (the model itself holds no predict
option).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightning.pytorch import LightningModule

#: The ``predict_step`` output holding each task's probabilities.
PROBABILITIES = {"segmentation": "probs", "classification": "class_probs"}

#: The test-time augmentations by name: ``flip`` averages the image and its left-right mirror.
TTA_NAMES = ("flip",)


def check_tta(name: str | None) -> str | None:
    """``name`` if it is a known test-time augmentation (or None for none).

    Args:
        name: A name from :data:`TTA_NAMES`, or None.

    Raises:
        ValueError: naming the option and the known names.
    """
    if name is None or name in TTA_NAMES:
        return name
    raise ValueError(
        f"unknown test-time augmentation tta={name!r} (--tta): use one of {list(TTA_NAMES)}, "
        "or leave it out for none."
    )


def tta_probabilities(
    probabilities: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    name: str | None,
    spatial: bool,
) -> torch.Tensor:
    """``probabilities(images)``, averaged with the prediction of transformed images.

    ``flip``: the mean of the probabilities of the images and of their horizontal mirror
    images; a spatial output (masks) is mirrored back before averaging.

    Args:
        probabilities: Images ``N x C x H x W`` -> probabilities (sigmoid or softmax):
            ``N x 1 x H x W`` when ``spatial``, else ``N x K``.
        images: The network's input batch.
        name: A name of :data:`TTA_NAMES`, or None for the plain prediction.
        spatial: Whether the output is a map aligned with the image.

    Returns:
        Probabilities of the same shape as ``probabilities(images)``.
    """
    check_tta(name)
    return _augmented(probabilities(images), probabilities, images, name, spatial)


def _augmented(plain, probabilities, images, name, spatial) -> torch.Tensor:
    """``plain`` (the probabilities of ``images``) averaged over the augmentation ``name``."""
    if name is None:
        return plain
    mirrored = probabilities(images.flip(-1))
    if spatial:
        mirrored = mirrored.flip(-1)
    return (plain + mirrored) / 2


def predict_with_tta(
    module: LightningModule, batch: dict, batch_idx: int, name: str | None
) -> dict:
    """``module.predict_step(batch)`` with its probabilities averaged over the augmentation.

    Args:
        module: A medvision model (its ``task`` names the output of :data:`PROBABILITIES`).
        batch: A predict batch (``image`` ``N x C x H x W`` and the samples' other keys).
        batch_idx: The batch's index.
        name: A name of :data:`TTA_NAMES`, or None for the plain prediction.

    Returns:
        The ``predict_step`` output, its probabilities augmented.
    """
    check_tta(name)
    output = module.predict_step(batch, batch_idx)
    if name is None:
        return output
    key = PROBABILITIES[module.task]

    def probabilities(images: torch.Tensor) -> torch.Tensor:
        return module.predict_step({**batch, "image": images}, batch_idx)[key]

    output[key] = _augmented(output[key], probabilities, batch["image"], name, key == "probs")
    return output


class PredictionModule(LightningModule):
    """A trained model with its predict-time options: what ``medvision predict`` runs.

    ``predict_step`` is the model's, with test-time augmentation (:func:`predict_with_tta`);
    the model (:attr:`module`, whose weights are loaded already) is not changed. Lightning
    hands it the trainer, so its ``configure_model`` (channels-last on a GPU) still applies.

    Args:
        module: The trained medvision model (``SegmentationModule``, ``ClassificationModule``).
        tta: A name of :data:`TTA_NAMES`, or None.
    """

    def __init__(self, module: LightningModule, tta: str | None = None) -> None:
        super().__init__()
        self.module = module
        self.tta = check_tta(tta)

    def configure_model(self) -> None:
        self.module.configure_model()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.module(image)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return predict_with_tta(self.module, batch, batch_idx, self.tta)
