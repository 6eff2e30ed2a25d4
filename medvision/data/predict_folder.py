"""Predicting on a folder of new images with a checkpoint's own preprocessing, no training data.

:class:`ImageFolderPredictDataModule` is what ``medvision predict --ckpt_path CKPT
--data.predict_dir DIR`` runs without ``--config``: its arguments come from the checkpoint's
preprocessing record (:mod:`medvision.models.record`). It builds the same datasets and
transforms as the training datamodules' predict (:class:`SegmentationDataset` /
:class:`ClassificationDataset` with the ``none`` preset), so its inputs are the ones the
matching config would give. :func:`predict_dataset` and :class:`ArrayImageDataset` serve
:func:`medvision.load_model` the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from medvision.data.datamodule import MedVisionDataModule
from medvision.data.datasets import ClassificationDataset, SegmentationDataset
from medvision.data.io import IMAGE_SUFFIXES, files_under, normalize_intensity, to_channels
from medvision.data.screening import BadFile, check_image, check_pair, distinct_names
from medvision.data.transforms import (
    as_hw,
    classification_transform,
    reseed_for_worker,
    segmentation_transform,
)

log = logging.getLogger(__name__)

Task = Literal["segmentation", "classification"]
#: Subfolders of a segmentation ``predict_dir`` that hold masks, not images to predict on.
MASK_FOLDERS = ("masks", "2d_masks")
#: Their sibling image folders: the images to predict on when a mask folder is beside them.
IMAGE_FOLDERS = ("images", "2d_images")


def predict_transform(task: Task, image_size: int | Sequence[int]):
    """The resize-only transform the training datamodules use to predict ``task``.

    Args:
        task: ``segmentation`` (bilinear resize) or ``classification`` (area resize).
        image_size: ``(height, width)`` or one side.
    """
    if task == "segmentation":
        return segmentation_transform(image_size, "none")
    return classification_transform(image_size, "none")


def predict_dataset(
    task: Task,
    paths: Sequence[Path],
    image_size: int | Sequence[int],
    in_channels: int,
    intensity_window: Sequence[float] | None = None,
    masks: Sequence[Path] | None = None,
    labels: Sequence[int] | None = None,
    num_classes: int = 1,
) -> Dataset:
    """The dataset a training datamodule would predict ``paths`` with (see module docstring).

    Args:
        task: ``segmentation`` or ``classification``.
        paths: Image files.
        image_size: Size the network sees, ``(height, width)`` or one side.
        in_channels: 1 or 3.
        intensity_window: ``(low, high)`` for segmentation, or None (min-max per image).
        masks: Segmentation: a mask per image, to score against.
        labels: Classification: a class index per image (its class folder).
        num_classes: Segmentation: 1 for binary masks, K >= 2 for label maps.

    Returns:
        A :class:`SegmentationDataset` or :class:`ClassificationDataset` of dict samples.
    """
    transform = predict_transform(task, image_size)
    if task == "segmentation":
        window = None if intensity_window is None else tuple(intensity_window)
        return SegmentationDataset(
            paths, masks, transform, in_channels, window, num_classes=num_classes
        )
    return ClassificationDataset(paths, labels, transform, in_channels)


class ArrayImageDataset(Dataset):
    """Decoded images in memory (numpy arrays) as the samples a file dataset would make.

    Each image is what reading a file gives: raw intensities ``H x W`` or ``H x W x C``
    (C up to 4; any dtype). Samples: ``image`` (float32 ``in_channels x H x W`` at the
    transform's size), ``original_size`` and ``path`` (``<array N>``).

    Args:
        images: The arrays.
        transform: :func:`predict_transform` of the task.
        in_channels: 1 or 3.
        intensity_window: ``(low, high)`` or None (min-max per image).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        transform,
        in_channels: int,
        intensity_window: Sequence[float] | None = None,
    ) -> None:
        self.images = [check_array(image, f"<array {i}>") for i, image in enumerate(images)]
        self.transform = transform
        self.in_channels = in_channels
        self.intensity_window = None if intensity_window is None else tuple(intensity_window)
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        self._worker_seed = reseed_for_worker(self.transform, self._worker_seed)
        raw = self.images[index]
        image = normalize_intensity(to_channels(raw, self.in_channels), self.intensity_window)
        image = self.transform(image=image)["image"]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "original_size": torch.tensor(raw.shape[:2]),
            "path": f"<array {index}>",
        }


def check_array(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` if it is one decoded 2D image (``H x W`` or ``H x W x C``, C <= 4, finite).

    Args:
        image: The array.
        name: How errors name it.

    Raises:
        ValueError: naming ``name``, the shape found and the layout expected.
    """
    image = np.asarray(image)
    if (
        not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] <= 4))
        or min(image.shape[:2], default=0) < 1
    ):
        raise ValueError(
            f"{name}: shape {tuple(image.shape)} is not one image: give raw intensities "
            "H x W or H x W x C (channels last, C <= 4), one image per array."
        )
    if image.dtype.kind not in "biuf":
        raise ValueError(f"{name}: dtype {image.dtype} is not a numeric image.")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ValueError(f"{name}: holds NaN or infinite values; give finite intensities.")
    return image


class ImageFolderPredictDataModule(MedVisionDataModule):
    """Images of ``predict_dir`` prepared as a checkpoint's preprocessing record says; predict only.

    ``medvision predict --ckpt_path CKPT --data.predict_dir DIR`` (no ``--config``) builds it
    from CKPT's record; any argument can still be overridden on the command line (logged).
    Images are read from ``predict_dir`` at any depth (png, jpg, tif, bmp; any size); files
    that are not images, or cannot be read, are left out, warned about and listed in
    ``failed.csv`` by the prediction writer, and the others are predicted.

    Segmentation: ``predict_mask_dir`` (optional) holds a mask ``<stem>.*`` per image, to
    score the predictions against (``metrics.csv``): binary masks for a model of one class,
    label maps (class indices) for a model of two or more ``class_names``. Without it, a
    ``masks`` or ``2d_masks`` subfolder of ``predict_dir`` is used as if it were given (the
    Kaggle lung layout, ``2d_images/`` + ``2d_masks/``, is scored as it is) and never taken
    for images. Outputs keep the images' subfolders (``masks/<patient>/<stem>.png``), so
    patient-per-folder layouts with repeated file names predict whole.
    Classification: when ``predict_dir`` holds only class folders named after classes
    (single-label), their names are reported as the true ``label``; otherwise every image is
    loose.

    Args:
        task: ``segmentation`` or ``classification``.
        class_names: The classes, in the model's output order.
        image_size: Size the network sees (``[height, width]`` or one side).
        in_channels: 1 or 3.
        intensity_window: ``[low, high]`` or None (min-max per image).
        multilabel: Classification with independent labels.
        predict_dir: The folder of images to predict on.
        predict_mask_dir: Segmentation: masks of the same file stems, to score against.
        batch_size: Images per batch.
        num_workers: Loader processes (default: one per usable CPU core, at most 8).
    """

    def __init__(
        self,
        task: Task = "classification",
        class_names: list[str] | None = None,
        image_size: int | tuple[int, int] = 224,
        in_channels: int = 1,
        intensity_window: tuple[float, float] | None = None,
        multilabel: bool = False,
        predict_dir: str | Path | None = None,
        predict_mask_dir: str | Path | None = None,
        batch_size: int = 16,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            predict_dir=predict_dir,
            batch_size=batch_size,
            num_workers=num_workers,
        )
        if task not in ("segmentation", "classification"):
            raise ValueError(f"task must be 'segmentation' or 'classification', got {task!r}")
        if not class_names:
            raise ValueError("class_names must name the model's classes (the checkpoint has them)")
        if predict_mask_dir is not None and task != "segmentation":
            raise ValueError("predict_mask_dir scores masks: it needs task: segmentation")
        self.task = task
        self._class_names = [str(name) for name in class_names]
        self.image_size = as_hw(image_size)
        self.intensity_window = intensity_window
        self.multilabel = multilabel
        self.predict_mask_dir = None if predict_mask_dir is None else Path(predict_mask_dir)
        self.predict_root: Path | None = None  # predict: the folder the images were found in

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    def _setup_splits(self) -> None:
        raise RuntimeError(
            f"{type(self).__name__} only predicts: fit, validate and test need the training "
            "datamodule (give the run's --config)."
        )

    def _predict_dataset(self) -> Dataset:
        folder = self._predict_folder()
        if self.task == "segmentation":
            return self._segmentation_images(folder)
        return self._classification_images(folder)

    def _segmentation_images(self, folder: Path) -> Dataset:
        folder, mask_dir = self._image_and_mask_folders(folder)
        self.predict_root = folder
        skipped = [folder / name for name in MASK_FOLDERS if (folder / name).is_dir()]
        images, strangers = files_under(folder, skip=[*skipped, *([mask_dir] if mask_dir else [])])
        failures = [_not_an_image(p) for p in strangers]
        pairs = [(p, None if mask_dir is None else _mask_of(p, folder, mask_dir)) for p in images]
        if mask_dir is not None:
            failures += [
                BadFile(
                    str(p), f"no mask named {p.stem}.* in {mask_dir}. Add it or remove the image."
                )
                for p, m in pairs
                if m is None
            ]
            pairs = [(p, m) for p, m in pairs if m is not None]
        pairs, clashes = distinct_names(pairs, folder, _first)
        self._nothing_found(pairs or failures)
        check = partial(check_pair, num_classes=self.num_classes)
        pairs = self._scan_predict(pairs, check, _first, earlier=failures + clashes)
        truth = None if mask_dir is None else f"scored against the masks in {mask_dir}"
        images, masks = self._predict_inputs(pairs, folder, truth)
        return predict_dataset(
            "segmentation",
            images,
            self.image_size,
            self.in_channels,
            self.intensity_window,
            masks=masks,
            num_classes=self.num_classes,
        )

    def _image_and_mask_folders(self, folder: Path) -> tuple[Path, Path | None]:
        """Where the images are, and the masks to score them against (or None).

        ``predict_mask_dir`` when given. Otherwise a mask folder in ``predict_dir``
        (:data:`MASK_FOLDERS`, the Kaggle lung layout's ``2d_masks``) is used as if it were
        given, and the images are those of its sibling image folder (:data:`IMAGE_FOLDERS`)
        when there is one, else of ``predict_dir`` without the mask folder.
        """
        if self.predict_mask_dir is not None:
            if not self.predict_mask_dir.is_dir():
                raise FileNotFoundError(
                    f"predict_mask_dir {self.predict_mask_dir} does not exist or is not a folder."
                )
            return folder, self.predict_mask_dir
        masks = next((folder / n for n in MASK_FOLDERS if (folder / n).is_dir()), None)
        if masks is None:
            return folder, None
        images = next((folder / n for n in IMAGE_FOLDERS if (folder / n).is_dir()), folder)
        log.info(
            "Scoring the predictions against the masks in %s (as with --data.predict_mask_dir)",
            masks,
        )
        return images, masks

    def _classification_images(self, folder: Path) -> Dataset:
        self.predict_root = folder
        subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        loose = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        labelled = (
            not self.multilabel
            and subfolders
            and not loose
            and {p.name for p in subfolders} <= set(self.class_names)
        )
        items: list[tuple[Path, int | None]] = []
        strangers: list[Path] = []
        if labelled:
            for sub in sorted(subfolders):
                images, others = files_under(sub)
                items += [(p, self.class_names.index(sub.name)) for p in images]
                strangers += others
        else:
            images, strangers = files_under(folder)
            items = [(p, None) for p in images]
        self._nothing_found(items or strangers)
        items = self._scan_predict(
            items,
            lambda item: check_image(item[0]),
            _first,
            earlier=[_not_an_image(p) for p in strangers],
        )
        log.info(
            "Predicting on %d images from %s%s",
            len(items),
            folder,
            " with their class folders as truth" if labelled else "",
        )
        labels = [label for _, label in items] if labelled else None
        return predict_dataset(
            "classification",
            [p for p, _ in items],
            self.image_size,
            self.in_channels,
            labels=labels,
        )

    def _nothing_found(self, found: Sequence) -> None:
        if not found:
            raise FileNotFoundError(
                f"{self.predict_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) to predict on."
            )


def _first(item: tuple) -> Path:
    return item[0]


def _not_an_image(path: Path) -> BadFile:
    return BadFile(str(path), f"not an image ({', '.join(IMAGE_SUFFIXES)}); move it elsewhere.")


def _mask_of(image: Path, folder: Path, mask_dir: Path) -> Path | None:
    """The mask ``<stem>.*`` of ``image`` in ``mask_dir``, in the image's subfolder under
    ``folder`` first (same suffix first), or None."""
    subfolder = image.parent.relative_to(folder)
    for place in dict.fromkeys((mask_dir / subfolder, mask_dir)):
        for suffix in (image.suffix, *IMAGE_SUFFIXES):
            candidate = place / f"{image.stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None
