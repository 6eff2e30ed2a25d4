"""Datasets of image files as dict samples: segmentation (optionally cached) and classification."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from medvision.data.io import normalize_intensity, read_image, to_channels
from medvision.data.screening import check_same_size, default_num_workers, read_mask
from medvision.data.transforms import reseed_for_worker, segmentation_transform
from medvision.utils.sizes import as_hw

log = logging.getLogger(__name__)


class SegmentationDataset(Dataset):
    """Image files with optional masks (binary, or label maps), as dict samples at a fixed size.

    Each sample holds ``image``: float32 ``C x H x W`` in [0, 1] (see
    :func:`~medvision.data.io.normalize_intensity`), ``path``: the image file, and
    ``original_size``: int64 ``[height, width]`` as stored. With masks it also holds
    ``mask_path`` and ``mask``: with ``num_classes`` 1 float32 ``1 x H x W`` of 0/1 (binary
    masks); with ``num_classes >= 2`` int64 ``H x W`` class indices ``0..num_classes-1``
    (label maps, 0 = background; see :func:`~medvision.data.io.read_label_mask`).
    A mask of another size than its image is an error, or, with ``resize_masks``, resized to
    it by nearest neighbour.

    Args:
        image_paths: The image files, in sample order.
        mask_paths: One mask file per image, in the same order; None: no masks (predict).
        transform: albumentations call applied to image and mask together (resize plus
            augmentation; masks by nearest neighbour), on the ``H x W x C`` float32 image.
        in_channels: Channels of the image tensor: 1 (grayscale) or 3 (see
            :func:`~medvision.data.io.to_channels`).
        intensity_window: ``[low, high]`` to clip intensities to before scaling them to
            [0, 1]; None: min-max scaling per image.
        resize_masks: Resize a mask of another size than its image to the image's size
            (nearest neighbour) instead of refusing it.
        num_classes: 1 for binary masks, or the number of classes of label-map masks,
            background included.
    """

    def __init__(
        self,
        image_paths: Sequence[Path],
        mask_paths: Sequence[Path] | None,
        transform,
        in_channels: int = 1,
        intensity_window: tuple[float, float] | None = None,
        resize_masks: bool = False,
        num_classes: int = 1,
    ) -> None:
        if mask_paths is not None and len(mask_paths) != len(image_paths):
            raise ValueError("image_paths and mask_paths differ in length")
        self.image_paths = list(image_paths)
        self.mask_paths = None if mask_paths is None else list(mask_paths)
        self.transform = transform
        self.in_channels = in_channels
        self.intensity_window = intensity_window
        self.resize_masks = resize_masks
        self.num_classes = num_classes
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict:
        self._worker_seed = reseed_for_worker(self.transform, self._worker_seed)
        sample, image, mask = self._decode(index)
        return self._finish(sample, self.transform, image, mask, self.num_classes > 1)

    def _decode(self, index: int) -> tuple[dict, np.ndarray, np.ndarray | None]:
        """``(sample without image/mask, H x W x C float32 image, H x W uint8 mask or None)``."""
        path = self.image_paths[index]
        raw = read_image(path)
        image = normalize_intensity(to_channels(raw, self.in_channels), self.intensity_window)
        sample = {"path": str(path), "original_size": torch.tensor(raw.shape[:2])}
        if self.mask_paths is None:
            return sample, image, None
        mask_path = self.mask_paths[index]
        mask = read_mask(mask_path, self.num_classes)
        if self.resize_masks:
            mask = resize_mask(mask, raw.shape[:2])
        check_same_size(path, raw, mask_path, mask)
        sample["mask_path"] = str(mask_path)
        return sample, image, mask

    @staticmethod
    def _finish(
        sample: dict, transform, image: np.ndarray, mask: np.ndarray | None, labels: bool = False
    ) -> dict:
        """Run ``transform`` on image (and mask) and put them into ``sample`` as tensors.

        The mask becomes float ``1 x H x W`` (binary), or int64 ``H x W`` with ``labels``.
        """
        if mask is None:
            image = transform(image=image)["image"]
        else:
            out = transform(image=image, mask=mask)
            image = out["image"]
            sample["mask"] = mask_tensor(out["mask"], labels)
        sample["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return sample


class CachedSegmentationDataset(SegmentationDataset):
    """A :class:`SegmentationDataset` that decodes and resizes every sample once, into memory.

    ``resize`` (deterministic: resize only) runs once per sample in :meth:`fill_cache`;
    ``augment`` (the augmentation without the resize, see
    :func:`~medvision.data.transforms.segmentation_transform` with ``resize=False``) runs on
    every access, so an epoch does augmentation only. Images are kept as float16 (at most
    2.5e-4 from the float32 of the uncached path in [0, 1]), masks as uint8, each split in one
    array: filled in the main process before loader workers fork, they are shared
    copy-on-write by the workers (with the ``spawn`` start method each worker gets a copy).
    :meth:`fill_cache` refuses when the arrays would exceed ``max_bytes``.

    Args:
        image_paths: The image files, in sample order.
        mask_paths: One mask file per image, in the same order; None: no masks.
        resize: Deterministic albumentations call (resize only) run once per sample when the
            cache is filled.
        augment: albumentations call (the augmentation without the resize) run on every
            access.
        image_size: ``(height, width)`` that ``resize`` gives, in pixels.
        in_channels: Channels of the image tensor: 1 or 3.
        intensity_window: ``[low, high]`` to clip intensities to before scaling them to
            [0, 1]; None: min-max scaling per image.
        max_bytes: Largest cache in bytes; :meth:`fill_cache` refuses a larger one.
        resize_masks: As in :class:`SegmentationDataset`.
        num_classes: 1 for binary masks, or the number of classes of label maps.
    """

    def __init__(
        self,
        image_paths: Sequence[Path],
        mask_paths: Sequence[Path] | None,
        resize,
        augment,
        image_size: tuple[int, int],
        in_channels: int = 1,
        intensity_window: tuple[float, float] | None = None,
        max_bytes: float = 4e9,
        resize_masks: bool = False,
        num_classes: int = 1,
    ) -> None:
        super().__init__(
            image_paths,
            mask_paths,
            resize,
            in_channels,
            intensity_window,
            resize_masks,
            num_classes,
        )
        self.augment = augment
        self.image_size = image_size
        self.max_bytes = max_bytes
        self.images: np.ndarray | None = None
        self.masks: np.ndarray | None = None
        self.samples: list[dict] = []

    def nbytes(self) -> int:
        """Memory the cache takes: float16 images plus uint8 masks at ``image_size``."""
        pixels = len(self) * self.image_size[0] * self.image_size[1]
        return pixels * (2 * self.in_channels + (0 if self.mask_paths is None else 1))

    def fill_cache(self) -> None:
        """Decode, normalize and resize every sample into memory (threads; main process)."""
        if self.nbytes() > self.max_bytes:
            raise ValueError(
                f"cache: true would keep {len(self)} samples of {self.image_size[0]}x"
                f"{self.image_size[1]} in {self.nbytes() / 1e9:.2f} GB of memory, above "
                f"cache_limit_gb={self.max_bytes / 1e9:g}. Raise --data.init_args.cache_limit_gb "
                "if the machine has the memory (each DDP process keeps its own cache), or set "
                "cache: false."
            )
        with ThreadPoolExecutor(default_num_workers()) as pool:
            decoded = list(pool.map(self._resized, range(len(self))))
        self.samples = [sample for sample, _, _ in decoded]
        height, width = self.image_size
        empty = (0, height, width, self.in_channels)  # an empty split (e.g. test_fraction: 0)
        images = [image for _, image, _ in decoded]
        self.images = (np.stack(images) if images else np.zeros(empty)).astype(np.float16)
        if self.mask_paths is not None:
            masks = [mask for _, _, mask in decoded]
            self.masks = (np.stack(masks) if masks else np.zeros(empty[:3])).astype(np.uint8)

    def _resized(self, index: int) -> tuple[dict, np.ndarray, np.ndarray | None]:
        sample, image, mask = self._decode(index)
        if mask is None:
            return sample, self.transform(image=image)["image"], None
        out = self.transform(image=image, mask=mask)
        return sample, out["image"], out["mask"]

    def __getitem__(self, index: int) -> dict:
        if self.images is None:
            raise RuntimeError("CachedSegmentationDataset: call fill_cache() before reading")
        self._worker_seed = reseed_for_worker(self.augment, self._worker_seed)
        sample = dict(self.samples[index])
        image = self.images[index].astype(np.float32)
        mask = None if self.masks is None else self.masks[index]
        return self._finish(sample, self.augment, image, mask, self.num_classes > 1)


def segmentation_dataset(
    images: Sequence[Path],
    masks: Sequence[Path] | None,
    image_size: int | tuple[int, int],
    augmentation: str,
    cache: bool = False,
    cache_limit_gb: float = 4.0,
    **kwargs,
) -> SegmentationDataset:
    """A :class:`SegmentationDataset` at ``image_size`` augmented with ``augmentation``.

    Args:
        images: The image files.
        masks: One mask file per image; None: no masks.
        image_size: Size samples are resized to: one side of a square, or
            ``(height, width)``, in pixels.
        augmentation: Augmentation name (``none``, ``basic``, ``elastic``; see
            :func:`~medvision.data.transforms.segmentation_transform`).
        cache: Return a :class:`CachedSegmentationDataset` (resize once, augment on each
            access; call :func:`fill_caches` before reading).
        cache_limit_gb: Largest cache in GB (with ``cache``).
        **kwargs: ``in_channels``, ``intensity_window``, ``resize_masks``, ``num_classes``
            of :class:`SegmentationDataset`.

    Returns:
        The dataset, cached or not.
    """
    if not cache:
        return SegmentationDataset(
            images, masks, segmentation_transform(image_size, augmentation), **kwargs
        )
    return CachedSegmentationDataset(
        images,
        masks,
        segmentation_transform(image_size, "none"),
        segmentation_transform(image_size, augmentation, resize=False),
        as_hw(image_size),
        max_bytes=cache_limit_gb * 1e9,
        **kwargs,
    )


def fill_caches(
    datasets: dict[str, CachedSegmentationDataset], cache_limit_gb: float, source: Path
) -> None:
    """Check the caches of all splits together against ``cache_limit_gb``, then fill and log.

    Args:
        datasets: Split name (``train``, ``val``, ...) -> its cached dataset, all at one
            ``image_size``.
        cache_limit_gb: Largest total of all caches, in GB.
        source: The data folder, named in the error when the caches would not fit.

    Raises:
        ValueError: when the caches together would exceed ``cache_limit_gb``.
    """
    sizes = {stage: data.nbytes() for stage, data in datasets.items()}
    total, count = sum(sizes.values()), sum(len(d) for d in datasets.values())
    if total > cache_limit_gb * 1e9:
        raise ValueError(
            f"cache: true would keep {count} samples from {source} in {total / 1e9:.2f} GB of "
            f"memory, above cache_limit_gb={cache_limit_gb:g}. Raise "
            "--data.init_args.cache_limit_gb if the machine has the memory (each DDP process "
            "keeps its own cache), or set cache: false."
        )
    for dataset in datasets.values():
        dataset.fill_cache()
    height, width = next(iter(datasets.values())).image_size
    log.info(
        "Cached %s decoded samples at %sx%s in memory: %.2f MB (%s)",
        count,
        height,
        width,
        total / 1e6,
        ", ".join(f"{stage} {size / 1e6:.2f} MB" for stage, size in sizes.items()),
    )


class ClassificationDataset(Dataset):
    """Image files with integer class labels, as dict samples at a fixed size.

    Each sample holds ``image``: float32 ``in_channels x H x W`` in [0, 1] (min-max scaled per
    image, so 8- and 16-bit files agree), ``path``: the file, and, when ``labels`` are given,
    ``label``: int64 class index; or, for ``labels`` given as an ``N x K`` float array of 0/1
    with NaN for unknown (multi-label), ``label``: float32 ``K`` (unknown as 0) and
    ``label_mask``: float32 ``K``, 1 where the label is known.

    Args:
        image_paths: The image files, in sample order.
        labels: One class index per image, or an ``N x K`` float array of 0/1 with NaN for
            unknown (multi-label); None: no labels (predict).
        transform: albumentations call (resize plus augmentation) on the ``H x W x C``
            float32 image.
        in_channels: Channels of the image tensor: 1 (grayscale) or 3.
        preprocess: ``preprocess(image, path)`` run on the float image before ``transform``
            (e.g. :class:`~medvision.data.lesion_focus.LesionFocus` cropping to a lesion);
            None: none.
    """

    def __init__(
        self,
        image_paths: Sequence[Path],
        labels: Sequence[int] | None,
        transform,
        in_channels: int = 1,
        preprocess: Callable[[np.ndarray, Path], np.ndarray] | None = None,
    ) -> None:
        if labels is not None and len(labels) != len(image_paths):
            raise ValueError("image_paths and labels differ in length")
        self.image_paths = list(image_paths)
        self.multilabel = labels is not None and np.ndim(labels) == 2
        if labels is None:
            self.labels = None
        elif self.multilabel:
            self.labels = np.asarray(labels, dtype=np.float32)
        else:
            self.labels = [int(label) for label in labels]
        self.transform = transform
        self.in_channels = in_channels
        self.preprocess = preprocess
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict:
        self._worker_seed = reseed_for_worker(self.transform, self._worker_seed)
        path = self.image_paths[index]
        image = normalize_intensity(to_channels(read_image(path), self.in_channels))
        if self.preprocess is not None:
            image = self.preprocess(image, path)
        image = self.transform(image=image)["image"]
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "path": str(path),
        }
        if self.multilabel:
            target = torch.from_numpy(self.labels[index])
            sample["label_mask"] = (~target.isnan()).float()
            sample["label"] = target.nan_to_num(0.0)
        elif self.labels is not None:
            sample["label"] = torch.tensor(self.labels[index], dtype=torch.long)
        return sample


def mask_tensor(mask: np.ndarray, labels: bool) -> torch.Tensor:
    """A ``H x W`` mask as a sample's tensor: int64 ``H x W`` labels, or float ``1 x H x W``.

    Args:
        mask: uint8 0/1 mask or class indices.
        labels: Whether it is a label map (multi-class).
    """
    tensor = torch.from_numpy(np.ascontiguousarray(mask))
    return tensor.long() if labels else tensor.float().unsqueeze(0)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask (0/1 or labels) at ``size``, by nearest neighbour; unchanged if already there.

    Args:
        mask: ``H x W`` mask (uint8 0/1 or class indices).
        size: ``(height, width)`` to resize it to, in pixels.

    Returns:
        The mask at ``size``, of the same dtype.
    """
    if mask.shape[:2] == tuple(size):
        return mask
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
