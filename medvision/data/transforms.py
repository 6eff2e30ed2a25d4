"""Albumentations pipelines: resizing plus named augmentation presets.

Image and mask go through one ``Compose`` call, so every geometric change hits both alike.
Images are resized with area/linear interpolation, masks with nearest neighbour.
"""

from __future__ import annotations

from typing import Literal

import albumentations as A
import cv2
import torch

SegmentationAugmentation = Literal["none", "basic", "elastic"]
ClassificationAugmentation = Literal["none", "basic", "strong"]


def as_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``256`` -> ``(256, 256)``; ``[h, w]`` -> ``(h, w)``."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def segmentation_transform(
    image_size: int | tuple[int, int],
    augmentation: SegmentationAugmentation = "none",
    resize: bool = True,
) -> A.Compose:
    """Resize to ``image_size``, then augment image and mask together.

    With ``resize=False`` the input must already be at ``image_size`` (an in-memory cache of
    resized samples): only the augmentation runs, drawing the same random numbers as with
    the resize (an always-applied step draws none).

    Presets:
        ``none``: resize only (validation, test, predict).
        ``basic``: horizontal flip and shift-scale-rotate (the FCN vs U-Net study's
        rotation/shift augmentation).
        ``elastic``: ``basic`` plus elastic deformation, as in the U-Net paper.
    """
    height, width = as_hw(image_size)
    steps: list[A.BasicTransform] = []
    if resize:
        steps.append(
            A.Resize(
                height, width, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
            )
        )
    if augmentation in ("basic", "elastic"):
        steps += [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                translate_percent=(-0.0625, 0.0625),
                scale=(0.9, 1.1),
                rotate=(-15, 15),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=0.7,
            ),
        ]
    if augmentation == "elastic":
        steps.append(
            A.ElasticTransform(
                alpha=min(height, width) * 0.5,
                sigma=min(height, width) * 0.05,
                border_mode=cv2.BORDER_CONSTANT,
                p=0.5,
            )
        )
    elif augmentation not in ("none", "basic"):
        raise ValueError(f"augmentation must be 'none', 'basic' or 'elastic', got {augmentation!r}")
    return A.Compose(steps)


def classification_transform(
    image_size: int | tuple[int, int], augmentation: ClassificationAugmentation = "none"
) -> A.Compose:
    """Resize to ``image_size``, with random crops and photometric changes for training.

    Presets:
        ``none``: resize only (validation, test, predict).
        ``basic``: horizontal flip, rotation up to 10 degrees and a random resized crop covering
        80-100% of the image, the chest X-ray study's RandomHorizontalFlip, RandomRotation and
        RandomCrop.
        ``strong``: ``basic`` with wider crops and rotations, plus brightness/contrast, gamma,
        blur or noise, and coarse dropout.
    """
    height, width = as_hw(image_size)
    if augmentation == "none":
        return A.Compose([A.Resize(height, width, interpolation=cv2.INTER_AREA)])
    if augmentation not in ("basic", "strong"):
        raise ValueError(f"augmentation must be 'none', 'basic' or 'strong', got {augmentation!r}")
    strong = augmentation == "strong"
    steps: list[A.BasicTransform] = [
        A.HorizontalFlip(p=0.5),
        A.Rotate(limit=20 if strong else 10, border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.7),
        A.RandomResizedCrop(
            (height, width),
            scale=(0.6 if strong else 0.8, 1.0),
            ratio=(0.85, 1.18),
            interpolation=cv2.INTER_AREA,
        ),
    ]
    if strong:
        steps += [
            A.RandomBrightnessContrast(0.2, 0.2, p=0.7),
            A.RandomGamma((80, 120), p=0.5),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.01, 0.05))]),
            A.CoarseDropout(
                num_holes_range=(1, 4),
                hole_height_range=(0.05, 0.15),
                hole_width_range=(0.05, 0.15),
                p=0.3,
            ),
        ]
    return A.Compose(steps)


def reseed_for_worker(transform: A.Compose, last_seed: int | None) -> int | None:
    """Tie the augmentation stream to PyTorch's seed; returns the seed now in use.

    ``Compose`` keeps a private RNG seeded from system entropy, so ``seed_everything`` alone does
    not make augmentations repeatable, and forked DataLoader workers would copy one RNG and replay
    the same augmentations in every worker and every epoch. This reseeds the ``Compose`` (never
    the global RNGs): inside a worker from the worker seed that PyTorch draws anew each epoch,
    in the main process (``num_workers=0``) once from ``torch.initial_seed()``.
    """
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() if info is None else info.seed
    if seed != last_seed:
        transform.set_random_seed(seed % 2**32)
    return seed
