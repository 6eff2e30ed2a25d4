"""What the datamodules of whole-image labels share: their options and their datasets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medvision.data.datamodule import MedVisionDataModule
from medvision.data.datasets import ClassificationDataset
from medvision.data.screening import check_image
from medvision.data.transforms import ClassificationAugmentation, classification_transform


class ClassificationDataModule(MedVisionDataModule):
    """Base of the datamodules that label whole images (:class:`ChestXrayDataModule`,
    :class:`NIHChestXray14DataModule`, :class:`CheXpertDataModule`): the options they share,
    with their defaults, and their datasets.

    Samples are ``{"image": float32 in_channels x H x W in [0, 1], "label", "path",
    "original_size"}`` (see :class:`~medvision.data.datasets.ClassificationDataset`): the label
    an int64 class index, or a float32 vector of 0/1 per label for multi-label data. A
    subclass lists its own options and passes these on in ``**kwargs``; ``seed``,
    ``num_workers``, ``bad_files`` and the folds are
    :class:`~medvision.data.datamodule.MedVisionDataModule`'s.

    Args:
        data_dir: The dataset's root folder.
        image_size: Size images are resized to: one side of a square, or ``[height, width]``,
            in pixels.
        in_channels: Channels of the image tensor: 1 (grayscale) or 3 (RGB, for ImageNet
            encoders); every file is converted to it.
        augmentation: Training augmentation: ``none``, ``basic`` (flip, rotation, resized
            crop) or ``strong`` (``basic`` plus photometric changes and dropout; see
            :func:`~medvision.data.transforms.classification_transform`).
        check_images: Decode every image used once in ``setup`` and report all unreadable
            ones before training.
        predict_dir: Folder of images for ``medvision predict``, searched recursively.
        batch_size: Samples per batch, per process.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        image_size: int | tuple[int, int] = 224,
        in_channels: int = 1,
        augmentation: ClassificationAugmentation = "none",
        check_images: bool = True,
        predict_dir: str | Path | None = None,
        batch_size: int = 32,
        **kwargs,
    ) -> None:
        super().__init__(
            data_dir, image_size, in_channels, augmentation, predict_dir, batch_size, **kwargs
        )
        self.check_images = check_images
        options = dict(image_size=image_size, in_channels=in_channels, augmentation=augmentation)
        self._share(**options, check_images=check_images)

    def _classification_dataset(
        self, paths: Sequence[Path], labels, augmentation: str = "none"
    ) -> ClassificationDataset:
        """The images at ``paths`` with their ``labels`` (class indices, a multi-hot array, or
        None when unknown), resized and augmented (``augmentation``) as the options say."""
        transform = classification_transform(self.image_size, augmentation)
        return ClassificationDataset(paths, labels, transform, self.in_channels)

    def _stage_datasets(self, parts: dict[str, tuple[Sequence[Path], np.ndarray]]) -> None:
        """``self.datasets[stage]`` for every ``stage -> (paths, labels)`` of ``parts``, the
        training one augmented."""
        for stage, (paths, labels) in parts.items():
            augmentation = self.augmentation if stage == "train" else "none"
            self.datasets[stage] = self._classification_dataset(paths, labels, augmentation)

    def _predict_images(self, suffixes: Sequence[str]) -> ClassificationDataset:
        """Every file of ``predict_dir`` (at any depth) with one of ``suffixes``, unlabelled;
        an unreadable one is left out and listed (see :meth:`_scan_predict`)."""
        self._predict_folder()
        found = self.predict_dir.rglob("*")
        paths = sorted(p for p in found if p.suffix.lower() in suffixes and p.is_file())
        if not paths:
            kinds = "/".join(suffix.lstrip(".") for suffix in suffixes)
            raise FileNotFoundError(f"{self.predict_dir}: no {kinds} images to predict on.")
        return self._classification_dataset(self._scan_predict(paths, check_image), None)


__all__ = ["ClassificationDataModule"]
