"""Images and their masks in two folders, paired by file name: binary masks or label maps.

Layout (the folder names are settings)::

    <data_dir>/images/case_001.png     <data_dir>/masks/case_001.png
    <data_dir>/images/case_002.jpg     <data_dir>/masks/case_002.png
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from medvision.data.datamodule import MASK_CLASS_NAMES, MedVisionDataModule
from medvision.data.datasets import SegmentationDataset, fill_caches
from medvision.data.io import IMAGE_SUFFIXES, list_images
from medvision.data.screening import BadFile, check_pair, distinct_stems, pair_by_key, scan_files
from medvision.data.transforms import SegmentationAugmentation
from medvision.utils.class_names import check_class_names

log = logging.getLogger(__name__)

_LAYOUT_HINT = (
    "Expected <data_dir>/<image_dirname>/ with the images and <data_dir>/<mask_dirname>/ with "
    "one mask of the same file name (any image suffix, e.g. case_01.jpg and case_01.png) per "
    "image. To try multi-class segmentation without data, run: "
    "medvision fit --config configs/quickstart_multiclass.yaml"
)


class SegmentationFolderDataModule(MedVisionDataModule):
    """Segmentation of images whose masks sit in a folder beside them, paired by file stem.

    Images: any 2D file :func:`~medvision.data.io.read_image` reads (png, jpg, tif, bmp,
    dcm), any size, 1 or 3 channels. Masks, by ``class_names``:

    - one name (``[lesion]``): binary masks, 0/1 or 0/255 (see
      :func:`~medvision.data.io.binarize_mask`); samples' ``mask`` float ``1 x H x W``.
    - two or more, background first (``[background, liver, tumour]``): label maps whose
      pixel values are the class indices ``0..K-1`` (a grayscale or palette PNG, or an integer
      TIFF; see :func:`~medvision.data.io.read_label_mask`); samples' ``mask`` int64
      ``H x W``. The CLI gives the model ``num_classes`` (the number of names) and the names.

    Every pair is decoded once in ``setup``; a mask without its image (or the reverse), of
    another size, unreadable, or with labels outside ``0..K-1`` is reported with the others
    in one error (or left out with ``bad_files: exclude``). Splits: seeded
    ``val_fraction``/``test_fraction``, or fold ``fold`` of ``num_folds``. ``cache``,
    ``cache_limit_gb``, ``intensity_window`` and ``augmentation`` as in
    :class:`~medvision.data.lung_ct.LungCTDataModule` (masks are warped by nearest neighbour,
    so labels stay labels). ``predict_dir`` holds images (or this layout: then its masks score
    the predictions), ``predict_mask_dir`` masks of the same names to score against.
    ``batch_size``, ``num_workers`` and ``bad_files`` are
    :class:`~medvision.data.datamodule.MedVisionDataModule`'s.

    Args:
        data_dir: The folder holding ``image_dirname`` and ``mask_dirname``.
        class_names: One name (binary masks) or one per label value, background first.
        image_dirname: The images' folder.
        mask_dirname: The masks' folder.
        image_size: Size the network sees (``[height, width]`` or one side).
        in_channels: 1 or 3.
        augmentation: ``none``, ``basic`` or ``elastic`` (training only).
        intensity_window: ``[low, high]`` clipped and scaled to [0, 1]; None: per image.
        val_fraction: Share of the images for validation.
        test_fraction: Share for testing.
        predict_dir: Images to predict on.
        predict_mask_dir: Their masks, to score the predictions.
        cache: Decode and resize every sample once, into memory.
        cache_limit_gb: Refuse a cache above this size.
    """

    def __init__(
        self,
        data_dir: str | Path = "data/segmentation",
        class_names: Sequence[str] = ("foreground",),
        image_dirname: str = "images",
        mask_dirname: str = "masks",
        image_size: int | tuple[int, int] = 256,
        in_channels: int = 1,
        augmentation: SegmentationAugmentation = "basic",
        intensity_window: tuple[float, float] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        predict_dir: str | Path | None = None,
        predict_mask_dir: str | Path | None = None,
        cache: bool = False,
        cache_limit_gb: float = 4.0,
        **kwargs,
    ) -> None:
        super().__init__(data_dir, image_size, in_channels, augmentation, predict_dir, **kwargs)
        if image_dirname == mask_dirname:
            raise ValueError(
                f"images and masks share the folder {image_dirname!r}: give the masks their own "
                "folder (mask_dirname), paired with the images by file name."
            )
        self.class_names = check_class_names(class_names, names_hint=MASK_CLASS_NAMES)
        self.image_dirname, self.mask_dirname = image_dirname, mask_dirname
        self.intensity_window = intensity_window
        self.split = self._seeded_split(val_fraction, test_fraction)
        self.predict_mask_dir = None if predict_mask_dir is None else Path(predict_mask_dir)
        self.cache = cache
        self.cache_limit_gb = cache_limit_gb
        # the model records class_names; loggers merge both hparams and need equal values
        self._save_hyperparameters(ignore=["class_names"])

    def _check(self):
        """:func:`~medvision.data.screening.check_pair` for this datamodule's masks."""
        return partial(check_pair, num_classes=self.num_classes)

    def _setup_splits(self) -> None:
        data_dir = self.data_dir
        if not data_dir.is_dir():
            raise FileNotFoundError(f"data_dir {data_dir} does not exist. {_LAYOUT_HINT}")
        for name in (self.image_dirname, self.mask_dirname):
            if not (data_dir / name).is_dir():
                raise FileNotFoundError(f"{data_dir / name} is missing. {_LAYOUT_HINT}")
        pairs, unpaired = pair_by_stem(data_dir / self.image_dirname, data_dir / self.mask_dirname)
        if not pairs and not unpaired:
            raise FileNotFoundError(
                f"{data_dir / self.image_dirname} holds no images. {_LAYOUT_HINT}"
            )
        pairs, clashes = distinct_stems(pairs)
        pairs, bad = scan_files(pairs, self._check(), _first)
        self._screen(unpaired + clashes + bad, "bad image/mask pairs", "Fix or remove these files.")
        indices = self.split.indices(len(pairs))
        for stage, idx in indices.items():
            self.datasets[stage] = self._segmentation_dataset(
                [pairs[i][0] for i in idx],
                [pairs[i][1] for i in idx],
                self.augmentation if stage == "train" else "none",
                self.cache,
            )
        if self.cache:
            fill_caches(self.datasets, self.cache_limit_gb, data_dir)
        log.info(
            "Segmentation folder %s (%s): %s",
            data_dir,
            "binary masks"
            if self.num_classes == 1
            else f"label maps of {self.num_classes} classes",
            ", ".join(f"{k} {len(v)}" for k, v in indices.items()),
        )

    def _predict_dataset(self) -> SegmentationDataset:
        folder, mask_dir = self._predict_folder(), self.predict_mask_dir
        if (folder / self.image_dirname).is_dir():  # the training layout
            if mask_dir is None and (folder / self.mask_dirname).is_dir():
                mask_dir = folder / self.mask_dirname
            folder = folder / self.image_dirname
        if mask_dir is not None and not mask_dir.is_dir():
            raise FileNotFoundError(f"predict_mask_dir {mask_dir} does not exist.")
        if mask_dir is None:
            pairs, unpaired = [(p, None) for p in list_images(folder)], []
        else:
            pairs, unpaired = pair_by_stem(folder, mask_dir, masks_without_images=False)
        if not pairs and not unpaired:
            raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}).")
        pairs, clashes = distinct_stems(pairs)
        pairs = self._scan_predict(pairs, self._check(), _first, earlier=unpaired + clashes)
        truth = None if mask_dir is None else f"with masks from {mask_dir}"
        images, masks = self._predict_inputs(pairs, folder, truth)
        return self._segmentation_dataset(images, masks, "none")


def pair_by_stem(
    image_dir: Path, mask_dir: Path, masks_without_images: bool = True
) -> tuple[list[tuple[Path, Path]], list[BadFile]]:
    """Images and the mask of the same file stem, and each file without its partner.

    A mask ``<stem>.png`` is preferred where several suffixes share a stem. Returns
    ``(pairs sorted by image name, unpaired)``; with ``masks_without_images`` off, a mask
    without an image is not reported (predict scores only the images it is given).

    Args:
        image_dir: The images' folder.
        mask_dir: The masks' folder.
        masks_without_images: Report masks that have no image.
    """
    masks: dict[str, Path] = {}
    for path in sorted(list_images(mask_dir), key=lambda p: p.suffix.lower() != ".png"):
        masks.setdefault(path.stem, path)
    return pair_by_key(
        [(p.stem, p) for p in list_images(image_dir)],
        masks,
        lambda stem: f"{stem}.* in {mask_dir}",
        (lambda stem: f"{stem}.* in {image_dir}") if masks_without_images else None,
    )


def _first(pair: tuple) -> Path:
    return pair[0]


__all__ = ["SegmentationFolderDataModule", "pair_by_stem"]
