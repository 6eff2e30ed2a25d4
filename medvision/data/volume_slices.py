"""Volumes decoded once into resized 2D slices kept in memory, and the dataset serving them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medvision.data.datasets import mask_tensor
from medvision.data.io import ImageReadError, normalize_intensity
from medvision.data.nifti import VolumeInfo, check_same_geometry, load_volume, slices_along
from medvision.data.transforms import reseed_for_worker, segmentation_transform
from medvision.utils.sizes import as_hw


@dataclass
class VolumeSlices:
    """Resized slices of one or more volumes, kept in memory.

    Attributes:
        images: float16 ``N x H x W`` in [0, 1].
        masks: uint8 ``N x H x W`` labels (0/1 for binary masks, class indices for label
            maps), or None without masks.
        records: per slice ``path`` and ``volume_path`` (the image volume), ``slice_index``,
            ``num_slices`` (of its volume), ``slice_axis``, ``original_size`` (``(h, w)``
            before resizing), ``spacing`` (``(row, col)`` pixel size in mm of the RESIZED
            slice: the volume's voxel size times ``original / resized``) and, with masks,
            ``mask_path``.
    """

    images: np.ndarray
    masks: np.ndarray | None
    records: list[dict]

    @staticmethod
    def concat(parts: list[VolumeSlices], size: tuple[int, int], masks: bool) -> VolumeSlices:
        """All ``parts`` in order in one; an empty one at ``size`` when there are none."""
        if not parts:
            empty = np.zeros((0, *size), np.float16)
            return VolumeSlices(empty, empty.astype(np.uint8) if masks else None, [])
        return VolumeSlices(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.masks for p in parts]) if masks else None,
            [r for p in parts for r in p.records],
        )


def mask_labels(mask: np.ndarray, path: str | Path, num_classes: int = 1) -> np.ndarray:
    """A stored mask volume as uint8 labels; refuses fractions, negatives and unknown labels.

    Args:
        mask: The mask volume as stored (any numeric dtype; a float one must hold integers).
        path: Its file, named in errors.
        num_classes: 1: binary, labels 0 and 1; 2 or more: a label map with labels
            ``0..num_classes-1`` (0 = background).

    Returns:
        uint8 labels of the same shape.

    Raises:
        ImageReadError: naming ``path``, the values found and the fix.
    """
    if mask.dtype.kind == "f" and not np.array_equal(mask, np.round(mask)):
        raise ImageReadError(
            f"{path}: mask holds non-integer values (a probability map?). Save integer labels, "
            "0 for background and 1, 2, ... for the structures.",
            path,
        )
    top = max(num_classes - 1, 1)
    low, high = (float(mask.min()), float(mask.max())) if mask.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise ImageReadError(
            f"{path}: mask values go from {low:g} to {high:g}; expected labels 0 to {top}.", path
        )
    labels = mask.astype(np.uint8)
    if high > top:
        shown = ", ".join(str(v) for v in np.unique(labels)[:8])
        if num_classes == 1:
            raise ImageReadError(
                f"{path}: mask holds labels {shown}; only binary masks (0/1) with one class "
                "name. For a label map, give class_names one name per label (background "
                "first); to segment one structure, merge its labels into 1 (e.g. (mask > 0)) "
                "and save the mask again.",
                path,
            )
        raise ImageReadError(
            f"{path}: mask holds labels {shown}, but num_classes={num_classes} allows 0 to "
            f"{top} (one per class name, background 0). Give class_names one name per label "
            "value, or relabel the mask.",
            path,
        )
    return labels


def decode_volume(
    image_path: Path,
    mask_path: Path | None,
    axis: int,
    image_size: int | tuple[int, int],
    window: tuple[float, float] | None = None,
    empty_slice_fraction: float | None = None,
    rng: np.random.Generator | None = None,
    num_classes: int = 1,
) -> VolumeSlices:
    """Read a volume (and mask) once and keep its slices along ``axis``, resized.

    Args:
        image_path: The image volume (``.nii``/``.nii.gz``), read in canonical (RAS+)
            orientation.
        mask_path: Its mask volume on the same grid; None: no mask.
        axis: The axis to slice along: 0, 1 or 2 (2: axial slices).
        image_size: Size slices are resized to: one side of a square, or
            ``(height, width)``, in pixels.
        window: ``[low, high]`` (e.g. HU ``[-1000, 400]``) to clip intensities to before
            scaling them to [0, 1]; None: min-max scaling over the whole volume.
        empty_slice_fraction: Keep all slices with foreground and this fraction, in [0, 1],
            of the empty ones; None: keep every slice. Needs a mask.
        rng: Draws the empty slices kept; None: a fresh unseeded generator.
        num_classes: 1 for binary masks, the number of classes (background included) for
            label maps (see :func:`mask_labels`).

    Returns:
        The kept slices, resized, with a record each.

    Raises:
        ImageReadError: an unreadable or non-3D file, a mask off the image's grid, a mask that
            is not binary (or holds labels beyond ``num_classes``), or non-finite intensities;
            the message names the file.
    """
    image, info = load_volume(image_path)
    labels = None
    if mask_path is not None:
        _check_finite(image, image_path)
        mask, mask_info = load_volume(mask_path)
        check_same_geometry(info, mask_info)
        labels = mask_labels(mask, mask_path, num_classes)
    return cut_slices(
        image, labels, info, axis, image_size, window, empty_slice_fraction, rng, mask_path
    )


def cut_slices(
    image: np.ndarray,
    labels: np.ndarray | None,
    info: VolumeInfo,
    axis: int,
    image_size: int | tuple[int, int],
    window: tuple[float, float] | None = None,
    empty_slice_fraction: float | None = None,
    rng: np.random.Generator | None = None,
    mask_path: str | Path | None = None,
) -> VolumeSlices:
    """The slices of a canonical volume (and its labels) along ``axis``, scaled and resized.

    What :func:`decode_volume` does once the files are read; a reader of another layout (DICOM
    series with their SEG, :mod:`medvision.data.dicom_seg`) gives its arrays here.

    Args:
        image: The canonical (RAS+) volume ``x x y x z`` as stored (HU for CT).
        labels: uint8 labels of the same shape (:func:`mask_labels`), or None.
        info: The image's :class:`~medvision.data.nifti.VolumeInfo` (``path``, spacing).
        axis: The axis to slice along: 0, 1 or 2.
        image_size: Size slices are resized to: one side of a square, or ``(height, width)``.
        window: ``[low, high]`` clipped and scaled to [0, 1]; None: min-max over the volume.
        empty_slice_fraction: As in :func:`decode_volume`; needs ``labels``.
        rng: Draws the empty slices kept.
        mask_path: The labels' file, recorded in each slice's ``mask_path``.

    Returns:
        The kept slices, resized, with a record each.

    Raises:
        ImageReadError: non-finite intensities, naming ``info.path``.
    """
    image_path = info.path
    image = image.astype(np.float32, copy=False)
    _check_finite(image, image_path)
    image = slices_along(normalize_intensity(image, window), axis)
    if labels is not None:
        labels = slices_along(labels, axis)
    keep = np.arange(len(image))
    if labels is not None and empty_slice_fraction is not None:
        filled = labels.reshape(len(labels), -1).any(axis=1)
        empty = np.flatnonzero(~filled)
        drawn = (rng or np.random.default_rng()).choice(
            empty, round(empty_slice_fraction * len(empty)), replace=False
        )
        keep = np.sort(np.concatenate([np.flatnonzero(filled), drawn]))
    resize = segmentation_transform(image_size, "none")
    size = as_hw(image_size)
    in_plane = [info.spacing[a] for a in range(3) if a != axis]
    spacing = tuple(mm * n / m for mm, n, m in zip(in_plane, image.shape[1:], size, strict=True))
    images = np.zeros((len(keep), *size), np.float16)
    masks = None if labels is None else np.zeros((len(keep), *size), np.uint8)
    records = []
    for row, k in enumerate(keep):
        if labels is None:
            images[row] = resize(image=image[k][..., None])["image"][..., 0]
        else:
            out = resize(image=image[k][..., None], mask=labels[k])
            images[row], masks[row] = out["image"][..., 0], out["mask"]
        record = {"path": str(image_path), "volume_path": str(image_path)}
        record.update(slice_index=int(k), num_slices=len(image), slice_axis=axis)
        record["original_size"] = tuple(image.shape[1:])
        record["spacing"] = spacing
        if mask_path is not None:
            record["mask_path"] = str(mask_path)
        records.append(record)
    return VolumeSlices(images, masks, records)


def _check_finite(image: np.ndarray, path: str | Path) -> None:
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ImageReadError(
            f"{path}: holds NaN or infinite values. Re-export it with finite intensities.",
            path,
        )


class VolumeSliceDataset(Dataset):
    """Slices kept in memory (:class:`VolumeSlices`) as dict samples, augmented on access.

    Each sample holds ``image``: float32 ``in_channels x H x W`` in [0, 1]; with masks
    ``mask_path`` and ``mask``: float32 ``1 x H x W`` of 0/1 (``num_classes`` 1), or int64
    ``H x W`` class indices (``num_classes >= 2``); and ``path`` / ``volume_path`` (the image
    volume), ``slice_index``, ``num_slices``, ``slice_axis``, ``original_size`` (int64
    ``[h, w]`` of the slice in the volume) and ``spacing`` (float64 ``[row, col]`` mm per
    pixel at ``H x W``).

    Args:
        slices: The slices to serve (see :func:`decode_volume`).
        augment: albumentations call run on image and mask alike at each access (the slices
            are resized already).
        in_channels: Channels of the image tensor: 1, or 3 (the slice repeated).
        num_classes: 1 for binary masks, or the number of classes of label maps.
    """

    def __init__(
        self, slices: VolumeSlices, augment, in_channels: int = 1, num_classes: int = 1
    ) -> None:
        self.slices = slices
        self.augment = augment
        self.in_channels = in_channels
        self.num_classes = num_classes
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.slices.records)

    def __getitem__(self, index: int) -> dict:
        self._worker_seed = reseed_for_worker(self.augment, self._worker_seed)
        sample = dict(self.slices.records[index])
        sample["original_size"] = torch.tensor(sample["original_size"])
        sample["spacing"] = torch.tensor(sample["spacing"], dtype=torch.float64)
        image = np.repeat(
            self.slices.images[index].astype(np.float32)[..., None], self.in_channels, -1
        )
        if self.slices.masks is None:
            image = self.augment(image=image)["image"]
        else:
            out = self.augment(image=image, mask=self.slices.masks[index])
            image = out["image"]
            sample["mask"] = mask_tensor(out["mask"], self.num_classes > 1)
        sample["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return sample


__all__ = ["VolumeSliceDataset", "VolumeSlices", "cut_slices", "decode_volume", "mask_labels"]
