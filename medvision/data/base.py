"""Pieces every datamodule shares: seeded splits and k-fold, the segmentation dataset, loaders."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from medvision.data.io import (
    ImageReadError,
    binarize_mask,
    normalize_intensity,
    read_image,
    to_channels,
    write_csv,
)
from medvision.data.samplers import WeightedClassSampler
from medvision.data.transforms import (
    BatchSegmentationAugmentation,
    as_hw,
    reseed_for_worker,
    segmentation_transform,
)

T = TypeVar("T")
BadFiles = Literal["error", "exclude"]

log = logging.getLogger(__name__)


def split_indices(
    num_items: int,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    num_folds: int | None = None,
    fold: int = 0,
) -> dict[str, np.ndarray]:
    """Seeded train/val/test split of ``range(num_items)``, or one fold of k-fold CV.

    The test set (``test_fraction``) is drawn first and is the same for every fold. Without
    ``num_folds`` the rest is split by ``val_fraction``; with it, the rest is cut into
    ``num_folds`` folds and fold number ``fold`` (0-based) is the validation set.
    Returns sorted index arrays under ``"train"``, ``"val"`` and ``"test"``.
    """
    _check_split_args(val_fraction, test_fraction, num_folds, fold)
    order = np.random.default_rng(seed).permutation(num_items)
    num_test = round(num_items * test_fraction)
    test, rest = order[:num_test], order[num_test:]
    if num_folds is not None:
        if len(rest) < num_folds:
            raise ValueError(
                f"{len(rest)} items outside the test set cannot make {num_folds} folds"
            )
        folds = np.array_split(rest, num_folds)
        val = folds[fold]
        train = np.concatenate([f for i, f in enumerate(folds) if i != fold])
    else:
        num_val = round(num_items * val_fraction)
        val, train = rest[:num_val], rest[num_val:]
    if len(train) == 0:
        raise ValueError(f"the split leaves no training items out of {num_items}")
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _check_split_args(
    val_fraction: float, test_fraction: float, num_folds: int | None, fold: int
) -> None:
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1:
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must lie in [0, 1)"
        )
    if num_folds is None and val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction + test_fraction must be below 1")
    if num_folds is not None and (num_folds < 2 or not 0 <= fold < num_folds):
        raise ValueError(
            f"need num_folds >= 2 and 0 <= fold < num_folds, got num_folds={num_folds}, fold={fold}"
        )


def grouped_split_indices(
    groups: Sequence[str],
    labels: Sequence[int],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    num_folds: int | None = None,
    fold: int = 0,
    mixed_labels: Literal["error", "majority"] = "error",
) -> dict[str, np.ndarray]:
    """:func:`split_indices` for items that come in groups: a group never straddles two splits.

    ``groups[i]`` names the group of item ``i`` (a lesion, a patient) and ``labels[i]`` its
    class. The items of one group must share a label, or with ``mixed_labels: majority`` the
    group counts as its most frequent label. Groups are split per label (stratified),
    test first, then validation by ``val_fraction`` or as fold ``fold`` of ``num_folds``; the
    test set is the same for every fold. Returns sorted item indices per split.
    """
    _check_split_args(val_fraction, test_fraction, num_folds, fold)
    groups, labels = np.asarray(groups), np.asarray(labels)
    names, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    group_labels = labels[first]
    mixed = np.bincount(inverse, weights=group_labels[inverse] != labels) > 0
    if mixed.any() and mixed_labels == "error":
        raise ValueError(
            f"groups with items of different labels: {[str(m) for m in names[mixed][:5]]}"
        )
    for group in np.flatnonzero(mixed):  # majority label, ties to the smallest
        group_labels[group] = np.bincount(labels[inverse == group]).argmax()
    rng = np.random.default_rng(seed)
    split_of_group = np.empty(len(names), dtype=object)
    for label in np.unique(group_labels):
        members = rng.permutation(np.flatnonzero(group_labels == label))
        num_test = round(len(members) * test_fraction)
        split_of_group[members[:num_test]] = "test"
        rest = members[num_test:]
        if num_folds is not None:
            chunks = np.array_split(rest, num_folds)
            split_of_group[rest] = "train"
            split_of_group[chunks[fold]] = "val"
        else:
            num_val = round(len(members) * val_fraction)
            split_of_group[rest[:num_val]] = "val"
            split_of_group[rest[num_val:]] = "train"
    item_split = split_of_group[inverse]
    indices = {name: np.flatnonzero(item_split == name) for name in ("train", "val", "test")}
    if len(indices["train"]) == 0:
        raise ValueError(f"the split leaves no training items out of {len(groups)}")
    return indices


def stratified_split(
    labels: Sequence[int], fraction: float, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of indices into ``(rest, held_out)``, ``fraction`` of each class held out.

    Every class with at least two items puts at least one into ``held_out``, so per-class
    metrics exist on it. Returns sorted index arrays.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = round(len(members) * fraction)
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        held_out.append(members[:count])
    held = np.sort(np.concatenate(held_out)) if held_out else np.array([], dtype=int)
    rest = np.setdiff1d(np.arange(len(labels)), held)
    return rest, held


@dataclass(frozen=True)
class BadFile:
    """One input file that cannot be used, and why (``problem`` says what to do about it)."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def bad_file(path: str | Path, message: str) -> BadFile:
    """A :class:`BadFile` from an error message that may start with ``"<path>: "``."""
    return BadFile(str(path), message.removeprefix(f"{path}: "))


def scan_files(
    items: Sequence[T], check: Callable[[T], object], path_of: Callable[[T], Path] = Path
) -> tuple[list[T], list[BadFile]]:
    """Run ``check`` on every item once, in a thread pool: ``(good items, bad files)``.

    A ``ValueError`` raised by ``check`` (:class:`~medvision.data.io.ImageReadError`
    included) marks its item bad: the file is the error's ``path`` when it has one (the mask
    of an image/mask pair, say), else ``path_of(item)``. For decoding a whole dataset once up
    front, so that every bad file is reported together.
    """

    def problem(item: T) -> BadFile | None:
        try:
            check(item)
        except ValueError as exc:
            return bad_file(getattr(exc, "path", None) or path_of(item), str(exc))
        return None

    with ThreadPoolExecutor(default_num_workers()) as pool:
        found = list(pool.map(problem, items))
    good = [item for item, bad in zip(items, found, strict=True) if bad is None]
    return good, [bad for bad in found if bad is not None]


def check_image(path: Path) -> None:
    """Decode one image (see :func:`~medvision.data.io.read_image`); raise if it cannot be."""
    read_image(path)


def check_pair(pair: tuple[Path, Path | None], same_size: bool = True) -> None:
    """Decode an image and its mask (when not ``None``): mask binary, and of the same size."""
    image = read_image(pair[0])
    if pair[1] is not None:
        mask = binarize_mask(read_image(pair[1]), pair[1])
        if same_size:
            check_same_size(pair[0], image, pair[1], mask)


def distinct_stems(pairs: list[tuple]) -> tuple[list[tuple], list[BadFile]]:
    """``(image, ...)`` items whose images differ in file stem, and a problem for the others.

    Segmentation writes ``<stem>.png`` per image, so ``a.png`` after ``a.jpg`` would overwrite
    its outputs: the later one is refused, naming the first.
    """
    first: dict[str, Path] = {}
    kept, clashes = [], []
    for pair in pairs:
        taken = first.setdefault(pair[0].stem, pair[0])
        if taken == pair[0]:
            kept.append(pair)
        else:
            clashes.append(
                BadFile(
                    str(pair[0]),
                    f"has the same name as {taken.name}, and both would be written as "
                    f"{pair[0].stem}.png. Rename one of them.",
                )
            )
    return kept, clashes


def _known_after_setup(counts: dict[str, int] | None, name: str) -> dict[str, int]:
    if counts is None:
        raise RuntimeError(f"{name} is known after setup('fit')")
    return dict(counts)


def problem_report(problems: Sequence[str], what: str, fix: str, max_listed: int = 10) -> str:
    """One error message for many bad files: a count, the first ``max_listed``, and the fix."""
    listed = "\n  ".join(problems[:max_listed])
    more = f"\n  ... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
    return f"{len(problems)} {what}:\n  {listed}{more}\n{fix}"


def default_num_workers() -> int:
    """Loader workers that fit the machine: one per usable CPU core, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(8, cores)


class SegmentationDataset(Dataset):
    """Image files with optional binary masks, as dict samples at a fixed size.

    Each sample holds ``image``: float32 ``C x H x W`` in [0, 1] (see
    :func:`~medvision.data.io.normalize_intensity`), ``path``: the image file, and
    ``original_size``: int64 ``[height, width]`` as stored. With masks it also holds
    ``mask``: float32 ``1 x H x W`` of 0/1 and ``mask_path``. ``transform`` is applied to
    image and mask in one call (resize plus augmentation). A mask of another size than its
    image is an error, or, with ``resize_masks``, resized to it by nearest neighbour.
    """

    def __init__(
        self,
        image_paths: Sequence[Path],
        mask_paths: Sequence[Path] | None,
        transform,
        in_channels: int = 1,
        intensity_window: tuple[float, float] | None = None,
        resize_masks: bool = False,
    ) -> None:
        if mask_paths is not None and len(mask_paths) != len(image_paths):
            raise ValueError("image_paths and mask_paths differ in length")
        self.image_paths = list(image_paths)
        self.mask_paths = None if mask_paths is None else list(mask_paths)
        self.transform = transform
        self.in_channels = in_channels
        self.intensity_window = intensity_window
        self.resize_masks = resize_masks
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict:
        self._worker_seed = reseed_for_worker(self.transform, self._worker_seed)
        sample, image, mask = self._decode(index)
        return self._finish(sample, self.transform, image, mask)

    def _decode(self, index: int) -> tuple[dict, np.ndarray, np.ndarray | None]:
        """``(sample without image/mask, H x W x C float32 image, H x W 0/1 mask or None)``."""
        path = self.image_paths[index]
        raw = read_image(path)
        image = normalize_intensity(to_channels(raw, self.in_channels), self.intensity_window)
        sample = {"path": str(path), "original_size": torch.tensor(raw.shape[:2])}
        if self.mask_paths is None:
            return sample, image, None
        mask_path = self.mask_paths[index]
        mask = binarize_mask(read_image(mask_path), mask_path)
        if self.resize_masks:
            mask = resize_mask(mask, raw.shape[:2])
        check_same_size(path, raw, mask_path, mask)
        sample["mask_path"] = str(mask_path)
        return sample, image, mask

    @staticmethod
    def _finish(sample: dict, transform, image: np.ndarray, mask: np.ndarray | None) -> dict:
        """Run ``transform`` on image (and mask) and put them into ``sample`` as tensors."""
        if mask is None:
            image = transform(image=image)["image"]
        else:
            out = transform(image=image, mask=mask)
            image = out["image"]
            sample["mask"] = torch.from_numpy(out["mask"]).float().unsqueeze(0)
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
    :meth:`fill_cache` refuses when the arrays would exceed ``max_bytes``. ``image_size`` is
    ``(height, width)``; ``resize_masks`` as in :class:`SegmentationDataset`.
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
    ) -> None:
        super().__init__(
            image_paths, mask_paths, resize, in_channels, intensity_window, resize_masks
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
        return self._finish(sample, self.augment, image, mask)


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

    With ``cache`` it is a :class:`CachedSegmentationDataset` (resize once, augment on each
    access; call :func:`fill_caches` before reading). ``kwargs``: ``in_channels``,
    ``intensity_window``, ``resize_masks``.
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

    ``source`` (the data folder) is named in the error when the caches would not fit.
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


def batch_augmentation_for(
    augmentation: str, cache: bool, gpu_augmentation: bool, seed: int
) -> BatchSegmentationAugmentation | None:
    """The batched augmentation that ``gpu_augmentation: true`` asks for, or None when off.

    Refuses it without ``cache: true`` and for presets other than ``none``/``basic``.
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


class ClassificationDataset(Dataset):
    """Image files with integer class labels, as dict samples at a fixed size.

    Each sample holds ``image``: float32 ``in_channels x H x W`` in [0, 1] (min-max scaled per
    image, so 8- and 16-bit files agree), ``path``: the file, and, when ``labels`` are given,
    ``label``: int64 class index; or, for ``labels`` given as an ``N x K`` float array of 0/1
    with NaN for unknown (multi-label), ``label``: float32 ``K`` (unknown as 0) and
    ``label_mask``: float32 ``K``, 1 where the label is known. ``transform`` is an
    albumentations call (resize plus augmentation) on the ``H x W x C`` float image;
    ``preprocess(image, path)``, when given, runs before it (e.g.
    :class:`~medvision.data.lesion_focus.LesionFocus` cropping to a lesion).
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


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 0/1 mask at ``size`` (height, width), by nearest neighbour; unchanged if already there."""
    if mask.shape[:2] == tuple(size):
        return mask
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def check_same_size(image_path: Path, image: np.ndarray, mask_path: Path, mask: np.ndarray):
    """Raise an ``ImageReadError`` naming both files when image and mask differ in height/width."""
    if image.shape[:2] != mask.shape[:2]:
        raise ImageReadError(
            f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image {image_path} is "
            f"{image.shape[0]}x{image.shape[1]} (height x width). Re-export the mask at the "
            "image's size, or remove the pair.",
            mask_path,
        )


class MedVisionDataModule(L.LightningDataModule):
    """Loader plumbing and input checks shared by medvision's datamodules.

    Subclasses define ``class_names``, fill ``self.datasets`` (keys ``train``, ``val``,
    ``test``, ``predict``) in ``setup``, and set ``self._class_counts`` for classification.
    Loaders pin memory on CUDA machines and keep workers alive between epochs; under DDP the
    val and test loaders give each sample to exactly one process (no padding repeats).

    Bad input files found in ``setup`` (see :meth:`_screen`) stop the run with one error that
    lists them all (``bad_files: error``), or with ``bad_files: exclude`` are left out: a
    warning lists them, :attr:`excluded_files` holds them, and ``excluded_files.csv`` (``file``,
    ``problem``) is written to the run folder (the trainer's log folder, which holds
    ``checkpoints/``; nothing is written when no trainer is attached). In ``predict`` a bad
    file never stops the others: it is left out, warned about and kept in
    :attr:`predict_failures` (which the prediction writer puts in ``failed.csv``).

    When a subclass sets :attr:`batch_augmentation` (a
    :class:`~medvision.data.transforms.BatchSegmentationAugmentation`), training batches get
    it in :meth:`on_after_batch_transfer`, on the device, after the transfer; its random stream
    restarts at ``setup("fit")`` from its seed plus the process's global rank.
    """

    def __init__(
        self, batch_size: int = 16, num_workers: int | None = None, bad_files: BadFiles = "error"
    ) -> None:
        super().__init__()
        if bad_files not in ("error", "exclude"):
            raise ValueError(f"bad_files must be 'error' or 'exclude', got {bad_files!r}")
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.bad_files = bad_files
        self.datasets: dict[str, Dataset] = {}
        self.excluded_files: list[BadFile] = []
        self.predict_failures: list[BadFile] = []
        self._class_counts: dict[str, int] | None = None
        self._known_counts: dict[str, int] | None = None
        self.batch_augmentation: BatchSegmentationAugmentation | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_counts(self) -> dict[str, int]:
        """Training images per class name (positives per label if multi-label); after ``setup``."""
        return _known_after_setup(self._class_counts, "class_counts")

    @property
    def known_counts(self) -> dict[str, int]:
        """Multi-label: training images whose label is known (not ignored), per label."""
        return _known_after_setup(self._known_counts, "known_counts")

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            self.datasets["predict"] = self._predict_dataset()
        elif "train" not in self.datasets:
            self._setup_splits()
        if stage == "fit" and self.batch_augmentation is not None:
            self.batch_augmentation.reseed(self.trainer.global_rank if self.trainer else 0)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Run :attr:`batch_augmentation` on a training batch's ``image`` and ``mask``.

        Lightning calls this on the device the batch was moved to. Batches of validation,
        test, predict and the sanity check, and every batch when no augmentation is set,
        pass unchanged.
        """
        trainer = self.trainer
        if self.batch_augmentation is None or trainer is None or not trainer.training:
            return batch
        batch = dict(batch)
        batch["image"], batch["mask"] = self.batch_augmentation(batch["image"], batch["mask"])
        return batch

    def _setup_splits(self) -> None:
        """Fill ``self.datasets`` with ``train``, ``val`` (and ``test``) splits."""
        raise NotImplementedError

    def _predict_dataset(self) -> Dataset:
        """The dataset of ``predict_dir``."""
        raise NotImplementedError

    def _screen(self, bad: Sequence[BadFile], what: str, fix: str) -> None:
        """Act on the bad files one ``setup`` found, as ``bad_files`` says.

        ``error``: one ``ValueError`` listing every file with its problem, then ``fix``.
        ``exclude``: the caller leaves them out; here they are warned about, kept in
        :attr:`excluded_files` and written to ``excluded_files.csv`` in the run folder.
        """
        if not bad:
            return
        bad = sorted(bad, key=lambda b: b.path)
        if self.bad_files == "error":
            raise ValueError(
                problem_report(
                    [str(b) for b in bad],
                    what,
                    f"{fix} Or set bad_files: exclude (--data.init_args.bad_files exclude) to "
                    "train without them; they are then listed in excluded_files.csv.",
                )
            )
        self.excluded_files += bad
        path = self._excluded_files_csv()
        log.warning(
            "%s\nThey are excluded (bad_files: exclude)%s.",
            problem_report([str(b) for b in bad], what, fix, max_listed=len(bad)),
            f" and listed in {path}" if path else "",
        )

    def _excluded_files_csv(self) -> Path | None:
        """Write :attr:`excluded_files` to the run folder; its path, or None without a trainer."""
        trainer = self.trainer
        if trainer is None:
            return None
        from medvision.callbacks import run_folder  # callbacks import this module

        path = run_folder(trainer) / "excluded_files.csv"
        if trainer.is_global_zero:
            rows = [{"file": b.path, "problem": b.problem} for b in self.excluded_files]
            write_csv(path, rows, ["file", "problem"])
        return path

    def _scan_predict(
        self,
        items: Sequence[T],
        check: Callable[[T], object],
        path_of: Callable[[T], Path] = Path,
        earlier: Sequence[BadFile] = (),
    ) -> list[T]:
        """The items of ``predict_dir`` that ``check`` accepts; the others are failures.

        Each bad file (and each of the ``earlier`` ones the caller found, such as an image
        without its mask) is warned about and kept in :attr:`predict_failures`; predict goes on
        with the rest. If nothing is left, one error lists them all.
        """
        good, bad = scan_files(items, check, path_of)
        failures = sorted([*earlier, *bad], key=lambda b: b.path)
        if failures and not good:
            raise ValueError(
                problem_report(
                    [str(b) for b in failures],
                    f"files in {self._predict_folder()} that cannot be predicted, and no other",
                    "Fix or replace them.",
                )
            )
        for failure in failures:
            log.warning("Not predicted: %s", failure)
        self.predict_failures = failures
        return good

    def _predict_folder(self) -> Path:
        """``self.predict_dir``, checked to be given and to exist."""
        folder = getattr(self, "predict_dir", None)
        if folder is None:
            raise ValueError("predict needs a folder of images: pass --data.predict_dir DIR")
        if not folder.is_dir():
            raise FileNotFoundError(f"predict_dir {folder} does not exist or is not a folder.")
        return folder

    def _loader(self, stage: str, shuffle: bool = False, sampler=None) -> DataLoader:
        if stage not in self.datasets:
            raise RuntimeError(f"no {stage} dataset: call setup() for this stage first")
        return DataLoader(
            self.datasets[stage],
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0 and stage != "predict",
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def _weighted_train_loader(self, seed: int) -> DataLoader:
        """Training loader drawing classes equally often, one share per DDP process."""
        trainer = self.trainer
        sampler = WeightedClassSampler(
            self.datasets["train"].labels,
            num_replicas=trainer.world_size if trainer else None,
            rank=trainer.global_rank if trainer else None,
            seed=seed,
        )
        return self._loader("train", sampler=sampler)

    def _evaluation_sampler(self, stage: str) -> DistributedSampler | None:
        """Under DDP, a sampler giving each ``stage`` sample to exactly one process; else None.

        Lightning's default for val/test pads every process to the same count by repeating
        samples, which counts those samples twice in the metrics. This one does not pad, so
        processes may differ by one sample; being a ``DistributedSampler``, Lightning keeps it.
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        return UnrepeatedDistributedSampler(
            self.datasets[stage],
            num_replicas=trainer.world_size,
            rank=trainer.global_rank,
            shuffle=False,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", sampler=self._evaluation_sampler("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", sampler=self._evaluation_sampler("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")


__all__ = [
    "bad_file",
    "BadFile",
    "BadFiles",
    "batch_augmentation_for",
    "check_image",
    "check_pair",
    "check_same_size",
    "CachedSegmentationDataset",
    "ClassificationDataset",
    "default_num_workers",
    "distinct_stems",
    "fill_caches",
    "grouped_split_indices",
    "MedVisionDataModule",
    "problem_report",
    "resize_mask",
    "scan_files",
    "segmentation_dataset",
    "SegmentationDataset",
    "split_indices",
    "stratified_split",
]
