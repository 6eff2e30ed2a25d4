"""Lung masks on axial CT slices: the Kaggle "finding-lungs-in-ct-data" layout.

Layout (file names pair an image with its mask)::

    <data_dir>/2d_images/ID_0000_Z_0142.tif
    <data_dir>/2d_masks/ID_0000_Z_0142.tif
"""

from __future__ import annotations

import logging
from pathlib import Path

from medvision.data.base import (
    MedVisionDataModule,
    SegmentationDataset,
    check_same_size,
    find_problems,
    problem_report,
    split_indices,
)
from medvision.data.io import (
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    binarize_mask,
    list_images,
    read_image,
)
from medvision.data.synthetic import write_lung_ct
from medvision.data.transforms import SegmentationAugmentation, segmentation_transform

log = logging.getLogger(__name__)

_LAYOUT_HINT = (
    "Expected the Kaggle 'finding-lungs-in-ct-data' layout: <data_dir>/2d_images/*.tif and "
    "<data_dir>/2d_masks/*.tif with matching file names (download: "
    "kaggle datasets download kmader/finding-lungs-in-ct-data). To try medvision without it, "
    "run: medvision fit --config configs/quickstart.yaml"
)


class LungCTDataModule(MedVisionDataModule):
    """CT slices and binary lung masks, split train/val/test with a seed or by k-fold.

    Images may be TIFFs of any dtype (uint8, uint16, int16, float32), 1 or 3 channels, any size;
    masks 0/1 or 0/255. Samples are ``{"image": float32 in_channels x H x W in [0, 1],
    "mask": float32 1 x H x W of 0/1, "path", "mask_path", "original_size"}`` at
    ``image_size``. Intensities are min-max scaled per image, or clipped to
    ``intensity_window`` (e.g. ``[-1000, 400]`` HU) when given.

    Every pair is decoded once in ``setup`` and all problems (missing partner, unreadable file,
    mask of another size) are reported together before training starts.

    ``medvision predict`` reads every image in ``predict_dir`` (png, jpg, tif; any size). When
    ``predict_dir`` has the Kaggle layout, or ``predict_mask_dir`` is given, the masks of the same
    file name are used to score the predictions.
    """

    num_classes = 1
    class_names = ("lung",)
    image_dirname = "2d_images"
    mask_dirname = "2d_masks"

    def __init__(
        self,
        data_dir: str | Path = "data/lung_ct",
        image_size: int | tuple[int, int] = 256,
        in_channels: int = 1,
        augmentation: SegmentationAugmentation = "basic",
        intensity_window: tuple[float, float] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 42,
        num_folds: int | None = None,
        fold: int = 0,
        predict_dir: str | Path | None = None,
        predict_mask_dir: str | Path | None = None,
        batch_size: int = 16,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        self.data_dir = Path(data_dir)
        self.image_size = image_size
        self.in_channels = in_channels
        self.augmentation = augmentation
        self.intensity_window = intensity_window
        self.split = dict(
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            num_folds=num_folds,
            fold=fold,
        )
        self.predict_dir = None if predict_dir is None else Path(predict_dir)
        self.predict_mask_dir = None if predict_mask_dir is None else Path(predict_mask_dir)
        self.save_hyperparameters()

    def _setup_splits(self) -> None:
        images, masks = find_pairs(self.data_dir, self.image_dirname, self.mask_dirname)
        scan_pairs(images, masks)
        indices = split_indices(len(images), **self.split)
        for stage, idx in indices.items():
            augmentation = self.augmentation if stage == "train" else "none"
            self.datasets[stage] = self._dataset(
                [images[i] for i in idx], [masks[i] for i in idx], augmentation
            )
        log.info(
            "Lung CT %s: %s", self.data_dir, ", ".join(f"{k} {len(v)}" for k, v in indices.items())
        )

    def _predict_dataset(self) -> SegmentationDataset:
        folder = self._predict_folder()
        if (folder / self.image_dirname).is_dir():
            images, masks = find_pairs(
                folder, self.image_dirname, self.mask_dirname, masks_required=False
            )
        else:
            images = list_images(folder, IMAGE_SUFFIXES)
            masks = None
            if self.predict_mask_dir is not None:
                mask_dir = _existing_dir(self.predict_mask_dir, "predict_mask_dir")
                masks = [_partner(p, mask_dir) for p in images]
        if not images:
            raise FileNotFoundError(
                f"{self.predict_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) to predict on."
            )
        log.info(
            "Predicting on %d images from %s%s",
            len(images),
            self.predict_dir,
            " with masks" if masks else "",
        )
        return self._dataset(images, masks, "none")

    def _dataset(self, images, masks, augmentation) -> SegmentationDataset:
        return SegmentationDataset(
            images,
            masks,
            segmentation_transform(self.image_size, augmentation),
            self.in_channels,
            self.intensity_window,
        )


class SyntheticLungCTDataModule(LungCTDataModule):
    """:class:`LungCTDataModule` on phantom slices that it writes to ``data_dir`` if absent.

    For the quickstart and tests: ``num_slices`` deterministic CT-like slices of
    ``slice_size`` pixels (see :func:`~medvision.data.synthetic.write_lung_ct`) in the Kaggle
    layout. An existing ``data_dir/2d_images`` is used as it is, never overwritten.
    """

    def __init__(self, *args, num_slices: int = 120, slice_size: int = 64, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_slices = num_slices
        self.slice_size = slice_size

    def prepare_data(self) -> None:
        if (self.data_dir / self.image_dirname).is_dir():
            log.info("Using the synthetic lung CT slices already in %s", self.data_dir)
            return
        log.info(
            "Writing %d synthetic lung CT slices to %s (not real data)",
            self.num_slices,
            self.data_dir,
        )
        write_lung_ct(self.data_dir, self.num_slices, self.slice_size, seed=self.split["seed"])


def _existing_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist or is not a folder.")
    return path


def _partner(image: Path, mask_dir: Path) -> Path:
    for suffix in (image.suffix, *IMAGE_SUFFIXES):
        candidate = mask_dir / f"{image.stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{image}: no mask named {image.stem}.* in {mask_dir}. Add the mask, "
        "remove the image, or leave out the mask folder."
    )


def find_pairs(
    data_dir: Path, image_dirname: str, mask_dirname: str, masks_required: bool = True
) -> tuple[list[Path], list[Path] | None]:
    """Image TIFFs and their same-named masks; every missing partner is named in one error."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir {data_dir} does not exist. {_LAYOUT_HINT}")
    image_dir, mask_dir = data_dir / image_dirname, data_dir / mask_dirname
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir} is missing. {_LAYOUT_HINT}")
    images = list_images(image_dir, TIFF_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"{image_dir} holds no .tif/.tiff files. {_LAYOUT_HINT}")
    if not mask_dir.is_dir():
        if masks_required:
            raise FileNotFoundError(f"{mask_dir} is missing. {_LAYOUT_HINT}")
        return images, None
    masks = {p.name: p for p in list_images(mask_dir, TIFF_SUFFIXES)}
    problems = [f"{p}: no mask {mask_dir / p.name}" for p in images if p.name not in masks]
    image_names = {p.name for p in images}
    problems += [f"{m}: no image {image_dir / n}" for n, m in masks.items() if n not in image_names]
    if problems:
        raise FileNotFoundError(
            problem_report(
                problems, "unpaired files", "Add the missing partner or remove the file."
            )
        )
    return images, [masks[p.name] for p in images]


def scan_pairs(images: list[Path], masks: list[Path]) -> None:
    """Decode every pair once; raise one error listing every unreadable file or size mismatch."""

    def check(pair: tuple[Path, Path]) -> None:
        image_path, mask_path = pair
        image = read_image(image_path)
        mask = binarize_mask(read_image(mask_path), mask_path)
        check_same_size(image_path, image, mask_path, mask)

    problems = find_problems(zip(images, masks, strict=True), check)
    if problems:
        raise ValueError(
            problem_report(problems, "bad image/mask pairs", "Fix or remove these files.")
        )
