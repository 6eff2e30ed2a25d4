"""Pieces every datamodule shares: seeded splits and k-fold, the segmentation dataset, loaders."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medvision.data.io import binarize_mask, normalize_intensity, read_image, to_channels
from medvision.data.samplers import WeightedClassSampler
from medvision.data.transforms import reseed_for_worker

T = TypeVar("T")


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


def find_problems(items: Iterable[T], check: Callable[[T], object]) -> list[str]:
    """Run ``check`` on every item in a thread pool; the messages of the ``ValueError``s raised.

    For decoding a whole dataset once up front, so that every bad file is reported together.
    """

    def message(item: T) -> str | None:
        try:
            check(item)
        except ValueError as exc:  # ImageReadError included
            return str(exc)
        return None

    with ThreadPoolExecutor(default_num_workers()) as pool:
        return [m for m in pool.map(message, items) if m]


def _known_after_setup(counts: dict[str, int] | None, name: str) -> dict[str, int]:
    if counts is None:
        raise RuntimeError(f"{name} is known after setup('fit')")
    return dict(counts)


def check_decodable(paths: Sequence[Path]) -> None:
    """Decode every image once; one error lists each unreadable, empty or non-image file."""
    problems = find_problems(paths, read_image)
    if problems:
        raise ValueError(
            problem_report(
                problems,
                "unreadable images",
                "Fix or remove these files (check_images: false skips this scan, not the error).",
            )
        )


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
        path = self.image_paths[index]
        raw = read_image(path)
        image = normalize_intensity(to_channels(raw, self.in_channels), self.intensity_window)
        sample = {"path": str(path), "original_size": torch.tensor(raw.shape[:2])}
        if self.mask_paths is None:
            image = self.transform(image=image)["image"]
        else:
            mask_path = self.mask_paths[index]
            mask = binarize_mask(read_image(mask_path), mask_path)
            if self.resize_masks:
                mask = resize_mask(mask, raw.shape[:2])
            check_same_size(path, raw, mask_path, mask)
            out = self.transform(image=image, mask=mask)
            image = out["image"]
            sample["mask"] = torch.from_numpy(out["mask"]).float().unsqueeze(0)
            sample["mask_path"] = str(mask_path)
        sample["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return sample


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
    """Raise a ``ValueError`` naming both files when image and mask differ in height/width."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(
            f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image {image_path} is "
            f"{image.shape[0]}x{image.shape[1]} (height x width). Re-export the mask at the "
            "image's size, or remove the pair."
        )


class MedVisionDataModule(L.LightningDataModule):
    """Loader plumbing shared by medvision's datamodules.

    Subclasses define ``class_names``, fill ``self.datasets`` (keys ``train``, ``val``,
    ``test``, ``predict``) in ``setup``, and set ``self._class_counts`` for classification.
    Loaders pin memory on CUDA machines and keep workers alive between epochs.
    """

    def __init__(self, batch_size: int = 16, num_workers: int | None = None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.datasets: dict[str, Dataset] = {}
        self._class_counts: dict[str, int] | None = None
        self._known_counts: dict[str, int] | None = None

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

    def _setup_splits(self) -> None:
        """Fill ``self.datasets`` with ``train``, ``val`` (and ``test``) splits."""
        raise NotImplementedError

    def _predict_dataset(self) -> Dataset:
        """The dataset of ``predict_dir``."""
        raise NotImplementedError

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

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")


__all__ = [
    "ClassificationDataset",
    "check_decodable",
    "MedVisionDataModule",
    "SegmentationDataset",
    "check_same_size",
    "default_num_workers",
    "find_problems",
    "grouped_split_indices",
    "problem_report",
    "resize_mask",
    "split_indices",
    "stratified_split",
]
