"""Augmentation: albumentations pipelines (resizing plus named presets) and a batched one.

Image and mask go through one ``Compose`` call, so every geometric change hits both alike.
Images are resized with area/linear interpolation, masks with nearest neighbour.
:class:`BatchSegmentationAugmentation` applies the ``basic`` segmentation preset to a whole
batch of tensors on its device (GPU-side augmentation of the in-memory cache).
"""

from __future__ import annotations

import math
from typing import Literal

import albumentations as A
import cv2
import torch
import torch.nn.functional as F

from medvision.utils.sizes import as_hw

SegmentationAugmentation = Literal["none", "basic", "elastic"]
ClassificationAugmentation = Literal["none", "basic", "strong"]
BatchAugmentation = Literal["none", "basic"]

# The ``basic`` segmentation preset, shared by the CPU pipeline and the batched one.
BASIC_HORIZONTAL_FLIP = 0.5  # probability
BASIC_AFFINE = 0.7  # probability of the shift-scale-rotate
BASIC_TRANSLATE = 0.0625  # at most this fraction of the width (x) and of the height (y)
BASIC_SCALE = (0.9, 1.1)  # x and y drawn independently
BASIC_ROTATE = 15.0  # degrees, either way


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

    Args:
        image_size: Output size, one side or ``(height, width)`` in pixels.
        augmentation: The preset, ``none``, ``basic`` or ``elastic``; others raise
            ``ValueError``.
        resize: Resize first; False when the input is already at ``image_size``.

    Returns:
        An albumentations ``Compose`` to call as ``transform(image=..., mask=...)`` with
        ``H x W (x C)`` numpy arrays.
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
            A.HorizontalFlip(p=BASIC_HORIZONTAL_FLIP),
            A.Affine(
                translate_percent=(-BASIC_TRANSLATE, BASIC_TRANSLATE),
                scale=BASIC_SCALE,
                rotate=(-BASIC_ROTATE, BASIC_ROTATE),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=BASIC_AFFINE,
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

    Args:
        image_size: Output size, one side or ``(height, width)`` in pixels.
        augmentation: The preset, ``none``, ``basic`` or ``strong``; others raise
            ``ValueError``.

    Returns:
        An albumentations ``Compose`` to call as ``transform(image=...)`` with an
        ``H x W (x C)`` numpy array.
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

    Args:
        transform: The pipeline to reseed, in place.
        last_seed: The seed this call returned last time (None at first); an equal seed
            leaves the stream running.
    """
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() if info is None else info.seed
    if seed != last_seed:
        transform.set_random_seed(seed % 2**32)
    return seed


class BatchSegmentationAugmentation(torch.nn.Module):
    """The ``basic`` segmentation preset on a whole batch of tensors, on the batch's device.

    For samples that are already tensors at the training size (the in-memory cache with
    ``gpu_augmentation: true``): ``forward(images, masks)`` takes float ``N x C x H x W``
    images and float ``N x 1 x H x W`` masks of 0/1 on any one device and returns both,
    augmented alike, with the same shapes, dtypes and device.

    Presets:
        ``none``: the batch unchanged.
        ``basic``: as :func:`segmentation_transform`'s ``basic``, per sample: a horizontal
        flip with probability ``horizontal_flip`` (0.5) and a vertical one with probability
        ``vertical_flip`` (0, as the CPU preset has none), then with probability ``affine``
        (0.7) a shift of up to 6.25% of the width and height, a scale in [0.9, 1.1] per axis
        and a rotation of up to 15 degrees about the centre. Flips are exact; the affine map
        is one ``affine_grid``/``grid_sample``: bilinear for the image, nearest for the mask
        (which stays 0/1), zeros moved in from outside the image for both (the CPU preset's
        constant border). Unlike the CPU preset, shifts are not rounded to whole pixels.

    ``elastic`` and other presets are refused: they run on the CPU only (albumentations).
    Random numbers come from the module's own CPU ``torch.Generator`` seeded with ``seed``
    (the global RNGs are neither used nor reseeded), so a seed gives the same draws on any
    device; :meth:`reseed` restarts the stream (e.g. with ``seed + rank`` per DDP process).

    Args:
        preset: ``none`` or ``basic``; others raise ``ValueError``.
        seed: Seed of the module's random stream.
        horizontal_flip: Probability in [0, 1] of a left-right flip per sample.
        vertical_flip: Probability in [0, 1] of an up-down flip per sample.
        affine: Probability in [0, 1] of the shift-scale-rotate per sample.
    """

    presets = ("none", "basic")

    def __init__(
        self,
        preset: BatchAugmentation = "basic",
        seed: int = 0,
        horizontal_flip: float = BASIC_HORIZONTAL_FLIP,
        vertical_flip: float = 0.0,
        affine: float = BASIC_AFFINE,
    ) -> None:
        super().__init__()
        if preset not in self.presets:
            raise ValueError(
                f"BatchSegmentationAugmentation supports the presets {self.presets}, got "
                f"{preset!r}; the other segmentation presets (elastic) run on the CPU only."
            )
        probabilities = dict(
            horizontal_flip=horizontal_flip, vertical_flip=vertical_flip, affine=affine
        )
        for name, value in probabilities.items():
            if not 0 <= value <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {value}")
        self.preset = preset
        self.seed = seed
        self.probabilities = probabilities
        self.generator = torch.Generator()
        self.reseed()

    def reseed(self, offset: int = 0) -> None:
        """Restart the random stream from ``seed + offset``.

        Args:
            offset: Added to ``seed``, e.g. the process's global rank under DDP.
        """
        self.generator.manual_seed(self.seed + offset)

    def extra_repr(self) -> str:
        chances = ", ".join(f"{name}={p:g}" for name, p in self.probabilities.items())
        return f"preset={self.preset!r}, seed={self.seed}, {chances}"

    def forward(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(images, masks)
        if self.preset == "none":
            return images, masks
        count = images.shape[0]
        horizontal = self._draw(count) < self.probabilities["horizontal_flip"]
        vertical = self._draw(count) < self.probabilities["vertical_flip"]
        affine = self._draw(count) < self.probabilities["affine"]
        thetas = self._draw_thetas(count, images.shape[-2], images.shape[-1])
        images, masks = _flip_where(horizontal, -1, images, masks)
        images, masks = _flip_where(vertical, -2, images, masks)
        chosen = affine.nonzero().flatten()
        if len(chosen) == 0:
            return images, masks
        return _warp_some(images, masks, chosen, thetas[chosen])

    def _draw(self, count: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        uniform = torch.rand(count, generator=self.generator, dtype=torch.float64)
        return low + (high - low) * uniform

    def _draw_thetas(self, count: int, height: int, width: int) -> torch.Tensor:
        """``N x 2 x 3`` sampling matrices of random shift-scale-rotates (:func:`affine_theta`)."""
        return affine_theta(
            angle=self._draw(count, -BASIC_ROTATE, BASIC_ROTATE),
            scale_x=self._draw(count, *BASIC_SCALE),
            scale_y=self._draw(count, *BASIC_SCALE),
            shift_x=self._draw(count, -BASIC_TRANSLATE, BASIC_TRANSLATE),
            shift_y=self._draw(count, -BASIC_TRANSLATE, BASIC_TRANSLATE),
            height=height,
            width=width,
        )


def affine_theta(
    angle: torch.Tensor,
    scale_x: torch.Tensor,
    scale_y: torch.Tensor,
    shift_x: torch.Tensor,
    shift_y: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """``N x 2 x 3`` matrices for ``affine_grid`` (``align_corners=False``) of a centred affine.

    The forward map, in pixels about the image centre, scales by ``scale_x``/``scale_y``, then
    rotates by ``angle`` degrees, then shifts by ``shift_x`` of the width and ``shift_y`` of
    the height, as albumentations' ``Affine``. ``affine_grid`` wants the inverse (output to
    input) in coordinates normalized to [-1, 1] per axis, so for non-square images the
    rotation is conjugated with the ``width/2, height/2`` scaling. The five transform
    parameters are length-``N`` tensors (computed in float64); the result is float32.

    Args:
        angle: Rotation in degrees, with albumentations' ``Affine`` sign convention.
        scale_x: Horizontal scale factor (1: unchanged).
        scale_y: Vertical scale factor.
        shift_x: Horizontal shift as a fraction of the width.
        shift_y: Vertical shift as a fraction of the height.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        ``N x 2 x 3`` float32 matrices.
    """
    angle, scale_x, scale_y, shift_x, shift_y = (
        torch.as_tensor(v, dtype=torch.float64) for v in (angle, scale_x, scale_y, shift_x, shift_y)
    )
    radians = angle * (math.pi / 180)
    cos, sin = radians.cos(), radians.sin()
    aspect = height / width
    # inverse rotation, then inverse scale, both in pixel units; then pixels -> normalized
    linear = torch.stack(
        [
            torch.stack([cos / scale_x, -sin * aspect / scale_x], dim=-1),
            torch.stack([sin / (aspect * scale_y), cos / scale_y], dim=-1),
        ],
        dim=-2,
    )
    shift = torch.stack([2 * shift_x, 2 * shift_y], dim=-1)  # normalized units
    offset = -(linear @ shift.unsqueeze(-1))
    return torch.cat([linear, offset], dim=-1).float()


def _check_batch(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.ndim != 4 or masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(
            "expected images N x C x H x W and masks N x 1 x H x W, got "
            f"{tuple(images.shape)} and {tuple(masks.shape)}"
        )
    if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(
            f"images {tuple(images.shape)} and masks {tuple(masks.shape)} differ in batch size "
            "or height x width"
        )
    if images.device != masks.device:
        raise ValueError(f"images are on {images.device} but masks on {masks.device}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point (e.g. in [0, 1]), got {images.dtype}")


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor (random draws) on ``device``. To a GPU it is copied from pinned memory
    without blocking: a plain copy would wait for the GPU to finish its queued work."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _flip_where(
    flags: torch.Tensor, dim: int, images: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip along ``dim`` the samples whose entry of the CPU bool tensor ``flags`` is True."""
    if not flags.any():
        return images, masks
    where = _to_device(flags, images.device).view(-1, 1, 1, 1)
    return (
        torch.where(where, images.flip(dim), images),
        torch.where(where, masks.flip(dim), masks),
    )


def _warp_some(
    images: torch.Tensor, masks: torch.Tensor, chosen: torch.Tensor, thetas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample the samples at indices ``chosen`` with the sampling matrices ``thetas``."""
    index = _to_device(chosen, images.device)
    selected = images.index_select(0, index)
    size = [len(chosen), 1, *images.shape[-2:]]
    grid = F.affine_grid(
        _to_device(thetas.to(selected.dtype), images.device), size, align_corners=False
    )
    warped = F.grid_sample(
        selected, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    warped_masks = F.grid_sample(
        masks.index_select(0, index).to(grid.dtype),
        grid,
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )
    return (
        images.index_copy(0, index, warped),
        masks.index_copy(0, index, warped_masks.to(masks.dtype)),
    )


def batch_augmentation_for(
    augmentation: str, cache: bool, gpu_augmentation: bool, seed: int
) -> BatchSegmentationAugmentation | None:
    """The batched augmentation that ``gpu_augmentation: true`` asks for, or None when off.

    Refuses it (``ValueError``) without ``cache: true`` and for presets other than
    ``none``/``basic``.

    Args:
        augmentation: The datamodule's augmentation preset.
        cache: Whether the datamodule caches its samples in memory.
        gpu_augmentation: Whether the batches are to be augmented on the device.
        seed: Seed of the augmentation's random stream.
    """
    if not gpu_augmentation:
        return None
    if not cache:
        raise ValueError(
            "gpu_augmentation: true augments the in-memory cache's samples on the device and "
            "needs cache: true (--data.init_args.cache=true); or set gpu_augmentation: false."
        )
    if augmentation not in BatchSegmentationAugmentation.presets:
        raise ValueError(
            f"augmentation: {augmentation} runs on the CPU only; with gpu_augmentation: true "
            f"use augmentation {' or '.join(BatchSegmentationAugmentation.presets)}, or set "
            "gpu_augmentation: false."
        )
    return BatchSegmentationAugmentation(augmentation, seed=seed)
