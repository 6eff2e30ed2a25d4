"""Lung masks on axial CT slices: the Kaggle "finding-lungs-in-ct-data" layout.

Layout (file names pair an image with its mask)::

    <data_dir>/2d_images/ID_0000_Z_0142.tif
    <data_dir>/2d_masks/ID_0000_Z_0142.tif
"""

from __future__ import annotations

import logging
from pathlib import Path

from medvision.data.datamodule import MedVisionDataModule
from medvision.data.datasets import SegmentationDataset, fill_caches
from medvision.data.io import IMAGE_SUFFIXES, TIFF_SUFFIXES, list_images
from medvision.data.screening import BadFile, check_pair, distinct_stems, pair_by_key, scan_files
from medvision.data.synthetic import write_lung_ct
from medvision.data.transforms import SegmentationAugmentation, batch_augmentation_for

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
    ``image_size``.

    Every pair is decoded once in ``setup`` and all problems (missing partner, unreadable or
    empty file, mask that is not binary or of another size) are reported together before
    training starts; ``bad_files: exclude`` leaves those pairs out instead (see
    :class:`~medvision.data.datamodule.MedVisionDataModule`).

    ``medvision predict`` reads every image in ``predict_dir`` (png, jpg, tif; any size). When
    ``predict_dir`` has the Kaggle layout, or ``predict_mask_dir`` is given, the masks of the same
    file name are used to score the predictions. An image that cannot be read (or whose mask
    cannot) is left out and reported; the others are predicted.

    The in-memory cache (``cache``) keeps every train/val/test sample decoded, normalized and
    resized (float16 images, uint8 masks; the size is logged), so an epoch runs the
    augmentation only (see :class:`~medvision.data.datasets.CachedSegmentationDataset`).
    Predict never caches. With ``gpu_augmentation`` training samples leave the cache
    unaugmented, and each training batch is flipped and shift-scale-rotated on the device it
    was moved to, image and mask alike, in :meth:`on_after_batch_transfer` (see
    :class:`~medvision.data.transforms.BatchSegmentationAugmentation`; its random stream is
    seeded from ``seed``). The LightningModule must not override ``on_after_batch_transfer``:
    Lightning would call only the datamodule's. ``batch_size``, ``num_workers`` and
    ``bad_files`` are :class:`~medvision.data.datamodule.MedVisionDataModule`'s.

    Args:
        data_dir: The folder holding ``2d_images/`` and ``2d_masks/``.
        image_size: Size slices and masks are resized to: one side of a square, or
            ``[height, width]``, in pixels.
        in_channels: Channels of the image tensor: 1 (grayscale) or 3 (the slice repeated,
            for ImageNet encoders).
        augmentation: Training augmentation: ``none``, ``basic`` (flip, shift-scale-rotate)
            or ``elastic`` (``basic`` plus elastic deformation).
        intensity_window: ``[low, high]`` to clip intensities to before scaling them to
            [0, 1] (e.g. ``[-1000, 400]`` HU for lungs); null: min-max scaling per image.
        val_fraction: Fraction of all pairs drawn for validation, in [0, 1) (unused with
            ``num_folds``).
        test_fraction: Fraction of all pairs held out for testing, in [0, 1); the same for
            every fold.
        predict_dir: Folder of images for ``medvision predict`` (loose images, or the Kaggle
            layout to score the predictions against its masks).
        predict_mask_dir: Folder of masks named as the images of ``predict_dir``, to score
            the predictions; null: none (or the Kaggle layout's).
        cache: Decode, normalize and resize every train/val/test sample once in ``setup``
            and keep it in memory.
        cache_limit_gb: Largest cache in GB; ``setup`` refuses a larger one.
        gpu_augmentation: Augment training batches on the device instead of in the loader;
            needs ``cache: true`` and ``augmentation`` ``none`` or ``basic``.
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
        predict_dir: str | Path | None = None,
        predict_mask_dir: str | Path | None = None,
        cache: bool = False,
        cache_limit_gb: float = 4.0,
        gpu_augmentation: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(data_dir, image_size, in_channels, augmentation, predict_dir, **kwargs)
        self.intensity_window = intensity_window
        self.split = self._seeded_split(val_fraction, test_fraction)
        self.predict_mask_dir = None if predict_mask_dir is None else Path(predict_mask_dir)
        self.cache = cache
        self.cache_limit_gb = cache_limit_gb
        self.batch_augmentation = batch_augmentation_for(
            augmentation, cache, gpu_augmentation, self.seed
        )
        self._save_hyperparameters()

    def _setup_splits(self) -> None:
        images, masks, unpaired = find_pairs(self.data_dir, self.image_dirname, self.mask_dirname)
        pairs, bad = scan_files(list(zip(images, masks, strict=True)), check_pair, _first)
        self._screen(unpaired + bad, "bad image/mask pairs", "Fix or remove these files.")
        images, masks = [image for image, _ in pairs], [mask for _, mask in pairs]
        indices = self.split.indices(len(images))
        for stage, idx in indices.items():
            on_cpu = stage == "train" and self.batch_augmentation is None
            self.datasets[stage] = self._segmentation_dataset(
                [images[i] for i in idx],
                [masks[i] for i in idx],
                self.augmentation if on_cpu else "none",
                self.cache,
            )
        if self.cache:
            fill_caches(self.datasets, self.cache_limit_gb, self.data_dir)
        log.info(
            "Lung CT %s: %s", self.data_dir, ", ".join(f"{k} {len(v)}" for k, v in indices.items())
        )

    def _predict_dataset(self) -> SegmentationDataset:
        pairs, unpaired = self._predict_pairs(self._predict_folder())
        pairs, clashes = distinct_stems(pairs)
        pairs = self._scan_predict(pairs, check_pair, _first, earlier=unpaired + clashes)
        truth = "with masks" if pairs[0][1] is not None else None
        images, masks = self._predict_inputs(pairs, self.predict_dir, truth)
        return self._segmentation_dataset(images, masks, "none")

    def _predict_pairs(self, folder: Path) -> tuple[list[tuple], list[BadFile]]:
        """``(image, mask or None)`` for the images of ``folder``, and those lacking a mask."""
        if (folder / self.image_dirname).is_dir():
            images, masks, unpaired = find_pairs(
                folder, self.image_dirname, self.mask_dirname, masks_required=False
            )  # a mask without its image is no input: only images count
            unpaired = [b for b in unpaired if Path(b.path).parent.name == self.image_dirname]
        else:
            images, masks, unpaired = list_images(folder, IMAGE_SUFFIXES), None, []
            if self.predict_mask_dir is not None:
                mask_dir = _existing_dir(self.predict_mask_dir, "predict_mask_dir")
                found = {p: _partner(p, mask_dir) for p in images}
                unpaired = [_no_mask(p, mask_dir) for p, m in found.items() if m is None]
                images = [p for p, m in found.items() if m is not None]
                masks = [found[p] for p in images]
        if not images and not unpaired:
            raise FileNotFoundError(
                f"{self.predict_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) to predict on."
            )
        return list(zip(images, masks or [None] * len(images), strict=True)), unpaired


class SyntheticLungCTDataModule(LungCTDataModule):
    """:class:`LungCTDataModule` on phantom slices that it writes to ``data_dir`` if absent.

    For the quickstart and tests: deterministic CT-like slices in the Kaggle layout, made by
    the function :func:`~medvision.data.synthetic.write_lung_ct`. An existing
    ``data_dir/2d_images`` is used as it is, never overwritten. The other arguments are those
    of :class:`LungCTDataModule`.

    Args:
        num_slices: How many slices (image and mask pairs) to write.
        slice_size: Side of the square slices, in pixels.
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
        write_lung_ct(self.data_dir, self.num_slices, self.slice_size, seed=self.split.seed)


def _existing_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist or is not a folder.")
    return path


def _first(pair: tuple[Path, Path | None]) -> Path:
    return pair[0]


def _partner(image: Path, mask_dir: Path) -> Path | None:
    """The mask ``<stem>.*`` of ``image`` in ``mask_dir`` (same suffix first), or None."""
    for suffix in (image.suffix, *IMAGE_SUFFIXES):
        candidate = mask_dir / f"{image.stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _no_mask(image: Path, mask_dir: Path) -> BadFile:
    return BadFile(
        str(image),
        f"no mask named {image.stem}.* in {mask_dir}. Add the mask, remove the image, or "
        "leave out the mask folder.",
    )


def find_pairs(
    data_dir: Path, image_dirname: str, mask_dirname: str, masks_required: bool = True
) -> tuple[list[Path], list[Path] | None, list[BadFile]]:
    """Image TIFFs and their same-named masks, and every file without its partner.

    A missing folder is an error (``FileNotFoundError`` naming it and the layout).

    Args:
        data_dir: The dataset's folder.
        image_dirname: Name of its image subfolder (``2d_images``).
        mask_dirname: Name of its mask subfolder (``2d_masks``).
        masks_required: False: a missing mask folder gives ``masks=None`` instead of an error.

    Returns:
        ``(images, masks, unpaired)``: the paired files in the same order, and a
        :class:`~medvision.data.screening.BadFile` for each image without a mask and each mask
        without an image.
    """
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
        return images, None, []
    pairs, unpaired = pair_by_key(
        [(p.name, p) for p in images],
        {p.name: p for p in list_images(mask_dir, TIFF_SUFFIXES)},
        lambda name: str(mask_dir / name),
        lambda name: str(image_dir / name),
    )
    return [image for image, _ in pairs], [mask for _, mask in pairs], unpaired
