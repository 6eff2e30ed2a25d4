"""Test-time augmentation: predictions averaged over transformed copies of each image.

One implementation for ``medvision predict --tta NAME`` and
``medvision.load_model(...).predict(x, tta=NAME)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

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
    plain = probabilities(images)
    if name is None:
        return plain
    mirrored = probabilities(images.flip(-1))
    if spatial:
        mirrored = mirrored.flip(-1)
    return (plain + mirrored) / 2
