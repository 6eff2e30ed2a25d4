"""HAM10000 dermoscopy: lesion segmentation and diagnosis classification from one layout.

Layout (as published, with the ISIC 2018 task 1 lesion masks beside it)::

    <data_dir>/images/ISIC_0027419.jpg
    <data_dir>/masks/ISIC_0027419_segmentation.png
    <data_dir>/HAM10000_metadata.csv   (lesion_id, image_id, dx, dx_type, age, sex, localization)
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Literal

from medvision.data.datamodule import MedVisionDataModule
from medvision.data.datasets import ClassificationDataset, fill_caches
from medvision.data.ham10000_metadata import (
    DIAGNOSES,
    LAYOUT_HINT,
    HAM10000Record,
    read_metadata_rows,
)
from medvision.data.io import IMAGE_SUFFIXES, binarize_mask, list_images, read_image
from medvision.data.lesion_focus import LesionFocus
from medvision.data.screening import (
    BadFile,
    check_pair,
    distinct_stems,
    problem_report,
    scan_files,
)
from medvision.data.transforms import batch_augmentation_for, classification_transform

log = logging.getLogger(__name__)


class HAM10000DataModule(MedVisionDataModule):
    """HAM10000 images for ``task: segmentation`` (lesion masks) or ``classification`` (dx).

    Classes are the 7 diagnosis codes (:attr:`diagnoses`) or the names ``label_map`` merges
    them into, sorted. Segmentation has the one class ``lesion``. Splits are grouped by
    ``lesion_id`` and stratified by diagnosis: all images of one lesion land in the same
    split, so a model is never tested on a lesion it trained on.

    Samples: ``{"image": float32 3 x H x W in [0, 1], "path", ...}`` at ``image_size``, plus
    ``"mask"`` (float32 ``1 x H x W`` of 0/1, ``mask_path``, ``original_size``) for
    segmentation or ``"label"`` (int64) for classification. A mask of another size than its
    image is resized to it by nearest neighbour; how many were is logged.

    Segment-then-classify (``lesion_focus``): the lesion masks come from ``medvision
    predict`` with a segmentation checkpoint, or are predicted once by
    :class:`medvision.pipelines.HAM10000LesionCropDataModule` from a segmentation checkpoint.

    Every metadata row is checked in ``setup`` (ids present and unique, known dx, image
    present, mask present for segmentation) and every file decoded once (``check_images``:
    readable, mask binary); all problems are reported in one error, or those rows left out
    with ``bad_files: exclude`` (see :class:`~medvision.data.datamodule.MedVisionDataModule`).
    Images without a metadata row are not used, and their number is logged. In ``predict`` an
    unreadable image is left out and reported; the others are predicted.

    The cache (float16 images and uint8 masks, 7 bytes per pixel: HAM10000's 10,015 images at
    192x256 take 3.4 GB; see :class:`~medvision.data.datasets.CachedSegmentationDataset`) and
    ``gpu_augmentation`` work as in :class:`~medvision.data.lung_ct.LungCTDataModule`; predict
    never caches. ``batch_size``, ``num_workers`` and ``bad_files`` are
    :class:`~medvision.data.datamodule.MedVisionDataModule`'s.

    Args:
        data_dir: The folder holding ``images/``, ``masks/`` and ``HAM10000_metadata.csv``.
        task: ``segmentation`` (lesion masks) or ``classification`` (diagnosis).
        label_map: dx code -> class name, merging diagnoses, e.g. the seed study's ``{mel: MEL,
            nv: NV, bkl: OTHER, bcc: OTHER, akiec: OTHER, vasc: OTHER, df: OTHER}``; every
            code present must be mapped. null: the 7 codes are the classes.
        image_size: ``[height, width]`` in pixels (or one side of a square); keep HAM's 3:4
            aspect, e.g. ``[192, 256]``.
        augmentation: Training augmentation: ``none``, ``basic``; ``elastic`` for
            segmentation, ``strong`` for classification.
        val_fraction: Fraction of the lesions drawn for validation (unused with ``num_folds``).
        test_fraction: Fraction of the lesions held out for testing, drawn first; the same for
            every fold.
        sampler: ``weighted`` draws training images so that every class is equally frequent
            (classification only); ``none`` shuffles.
        check_images: Decode every image (and mask) once in ``setup``: readable, masks binary.
        lesion_focus: Classification only: ``crop`` each image to its lesion's bounding box
            plus ``lesion_margin``, or ``mask`` (black out the background), before resizing;
            ``none``: whole images.
        lesion_mask_dir: Folder of lesion masks ``<image_id>.png`` for ``lesion_focus``.
        lesion_margin: Margin added around the lesion's box on each side, as a fraction of
            the box's height and width.
        predict_dir: Folder of images for ``medvision predict`` (its ``images/`` subfolder if
            present; with ``masks/`` beside it, segmentations are scored).
        cache: Segmentation only: decode and resize every train/val/test image and mask once
            in ``setup`` and keep them in memory.
        cache_limit_gb: Largest cache in GB; ``setup`` refuses a larger one.
        gpu_augmentation: Augment training batches on the device instead of in the loader;
            needs ``cache: true`` and ``augmentation`` ``none`` or ``basic``.
    """

    diagnoses = DIAGNOSES
    diagnosis_names = {
        "akiec": "actinic keratosis / intraepithelial carcinoma",
        "bcc": "basal cell carcinoma",
        "bkl": "benign keratosis-like lesion",
        "df": "dermatofibroma",
        "mel": "melanoma",
        "nv": "melanocytic nevus",
        "vasc": "vascular lesion",
    }
    metadata_filename = "HAM10000_metadata.csv"
    image_dirname = "images"
    mask_dirname = "masks"
    mask_suffix = "_segmentation.png"
    in_channels = 3

    def __init__(
        self,
        data_dir: str | Path = "data/ham10000",
        task: Literal["segmentation", "classification"] = "classification",
        label_map: dict[str, str] | None = None,
        image_size: int | tuple[int, int] = (192, 256),
        augmentation: Literal["none", "basic", "elastic", "strong"] = "basic",
        val_fraction: float = 0.1,
        test_fraction: float = 0.15,
        sampler: Literal["none", "weighted"] = "none",
        check_images: bool = True,
        lesion_focus: Literal["none", "crop", "mask"] = "none",
        lesion_mask_dir: str | Path | None = None,
        lesion_margin: float = 0.1,
        predict_dir: str | Path | None = None,
        cache: bool = False,
        cache_limit_gb: float = 4.0,
        gpu_augmentation: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(
            data_dir, image_size, self.in_channels, augmentation, predict_dir, **kwargs
        )
        if cache and task != "segmentation":
            raise ValueError(
                "cache: true keeps decoded images and masks for task: segmentation; set "
                "cache: false for task: classification."
            )
        if lesion_focus != "none" and (task != "classification" or lesion_mask_dir is None):
            raise ValueError(
                "lesion_focus needs task: classification and a lesion_mask_dir (filled by "
                "lesion_segmenter, or by medvision predict with a segmentation checkpoint)"
            )
        if task not in ("segmentation", "classification"):
            raise ValueError(f"task must be 'segmentation' or 'classification', got {task!r}")
        if sampler not in ("none", "weighted"):
            raise ValueError(f"sampler must be 'none' or 'weighted', got {sampler!r}")
        if sampler == "weighted" and task == "segmentation":
            raise ValueError("sampler: weighted balances classes; use it with task: classification")
        if label_map is not None:
            unknown = sorted(set(label_map) - set(self.diagnoses))
            if unknown:
                raise ValueError(
                    f"label_map has unknown dx codes {unknown}; known: {self.diagnoses}"
                )
        self.task = task
        self.label_map = label_map
        self.split = self._seeded_split(val_fraction, test_fraction)
        self.sampler = sampler
        self.check_images = check_images
        self.focus = None
        if lesion_focus != "none":
            self.focus = LesionFocus(lesion_mask_dir, lesion_focus, lesion_margin)
        self.cache = cache
        self.cache_limit_gb = cache_limit_gb
        self.batch_augmentation = batch_augmentation_for(
            augmentation, cache, gpu_augmentation, self.seed
        )
        self._save_hyperparameters()

    # --- dataset facts, linked to the model by the CLI -------------------------------------

    @property
    def class_names(self) -> list[str]:
        """``["lesion"]`` for segmentation; dx codes or ``label_map`` names, sorted."""
        if self.task == "segmentation":
            return ["lesion"]
        if self.label_map is None:
            return list(self.diagnoses)
        return sorted(set(self.label_map.values()))

    def describe_input(self) -> dict:
        """:meth:`MedVisionDataModule.describe_input`, with ``lesion_focus`` when it is on."""
        described = super().describe_input()
        if self.focus is not None:
            described["lesion_focus"] = {"mode": self.focus.mode, "margin": self.focus.margin}
        return described

    def label_of(self, dx: str) -> int:
        """Class index of a diagnosis code, through ``label_map`` when given.

        Args:
            dx: A HAM10000 diagnosis code, e.g. ``mel``.
        """
        name = dx if self.label_map is None else self.label_map[dx]
        return self.class_names.index(name)

    # --- setup ------------------------------------------------------------------------------

    def _setup_splits(self) -> None:
        records, bad_rows = read_metadata_rows(self.data_dir / self.metadata_filename)
        self._check_labels(records)
        items, missing = self._locate(records)
        unreadable: list[BadFile] = []
        if self.check_images:
            items, unreadable = self._scan(items)
        self._screen(
            bad_rows + missing + unreadable,
            "bad metadata rows or files",
            "Fix the rows or files, or delete the rows from the metadata CSV.",
        )
        records = [record for record, _, _ in items]
        images = [image for _, image, _ in items]
        masks = [mask for _, _, mask in items] if self.task == "segmentation" else None
        if self.focus is not None:
            self._check_lesion_masks(images)
        if self.task == "classification":
            labels = [self.label_of(r.dx) for r in records]
        else:
            labels = [0] * len(records)  # the one class, "lesion"
        stratify = [self.diagnoses.index(r.dx) for r in records]  # by dx even when merged
        indices = self.split.grouped_indices([r.lesion_id for r in records], stratify)
        for stage, idx in indices.items():
            on_cpu = stage == "train" and self.batch_augmentation is None
            self.datasets[stage] = self._dataset(
                [images[i] for i in idx],
                None if masks is None else [masks[i] for i in idx],
                [labels[i] for i in idx],
                self.augmentation if on_cpu else "none",
                self.cache,
            )
        if self.cache:
            fill_caches(self.datasets, self.cache_limit_gb, self.data_dir)
        counts = Counter(labels[i] for i in indices["train"])
        self._class_counts = {name: counts[i] for i, name in enumerate(self.class_names)}
        log.info(
            "HAM10000 %s (%s): %s images of %s lesions; %s",
            self.data_dir,
            self.task,
            len(records),
            len({r.lesion_id for r in records}),
            ", ".join(f"{k} {len(v)}" for k, v in indices.items()),
        )

    def _check_labels(self, records: list[HAM10000Record]) -> None:
        if self.label_map is None:
            return
        unmapped = sorted({r.dx for r in records} - set(self.label_map))
        if unmapped:
            raise ValueError(
                f"label_map does not say where dx {unmapped} go; add them (e.g. to OTHER)."
            )

    def _locate(self, records: list[HAM10000Record]) -> tuple[list[tuple], list[BadFile]]:
        """``(record, image, mask or None)`` per row whose files exist, and the rows lacking one.

        Masks are looked for with ``task: segmentation`` only.
        """
        image_dir, mask_dir = self.data_dir / self.image_dirname, self.data_dir / self.mask_dirname
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir} is missing. {LAYOUT_HINT}")
        segmentation = self.task == "segmentation"
        if segmentation and not mask_dir.is_dir():
            raise FileNotFoundError(f"{mask_dir} is missing (task: segmentation). {LAYOUT_HINT}")
        on_disk = {p.stem: p for p in list_images(image_dir, IMAGE_SUFFIXES)}
        unused = len(on_disk) - len({r.image_id for r in records})
        if unused > 0:
            log.info("%d images in %s have no metadata row and are not used", unused, image_dir)
        items, missing = [], []
        for r in records:
            mask = mask_dir / f"{r.image_id}{self.mask_suffix}" if segmentation else None
            if r.image_id not in on_disk:
                missing.append(
                    BadFile(
                        f"{image_dir / r.image_id}.jpg",
                        f"not found: no image for {self.metadata_filename} row {r.image_id} "
                        f"(lesion {r.lesion_id}). Add the image or delete the row.",
                    )
                )
            elif mask is not None and not mask.is_file():
                missing.append(
                    BadFile(
                        str(mask),
                        f"missing, for image {r.image_id}. Add the mask, or use task: "
                        "classification.",
                    )
                )
            else:
                items.append((r, on_disk[r.image_id], mask))
        return items, missing

    def _check_lesion_masks(self, images: list[Path]) -> None:
        missing = [
            str(self.focus.mask_path(p)) for p in images if not self.focus.mask_path(p).is_file()
        ]
        if missing:
            raise FileNotFoundError(
                problem_report(
                    missing,
                    "missing lesion masks",
                    "Give lesion_segmenter (a segmentation checkpoint) to predict them, or "
                    "point lesion_mask_dir at the masks/ folder that medvision predict wrote "
                    "with a segmentation checkpoint.",
                )
            )
        empty = self.focus.count_empty(images)
        log.info(
            "Lesion focus (%s) from %s; %d of %d masks are empty, those images stay whole",
            self.focus.mode,
            self.focus.mask_dir,
            empty,
            len(images),
        )

    def _scan(self, items: list[tuple]) -> tuple[list[tuple], list[BadFile]]:
        """Decode every image (and mask) once: ``(good items, bad files)``.

        Masks must be binary; one of another size than its image is resized to it later, and
        how many are is logged.
        """
        resized: list[Path] = []

        def check(item: tuple) -> None:
            _, image_path, mask_path = item
            image = read_image(image_path)
            if mask_path is not None:
                mask = binarize_mask(read_image(mask_path), mask_path)
                if mask.shape[:2] != image.shape[:2]:
                    resized.append(mask_path)

        good, bad = scan_files(items, check, lambda item: item[1])
        if resized:
            log.warning(
                "%d masks differ in size from their image and are resized to it by nearest "
                "neighbour (first: %s)",
                len(resized),
                sorted(resized)[0],
            )
        return good, bad

    def _dataset(self, images, masks, labels, augmentation, cache: bool = False):
        if self.task == "segmentation":
            return self._segmentation_dataset(images, masks, augmentation, cache, resize_masks=True)
        return ClassificationDataset(
            images,
            labels,
            classification_transform(self.image_size, augmentation),
            in_channels=3,
            preprocess=self.focus,
        )

    def _predict_dataset(self):
        self._predict_folder()
        images = self._predict_images()
        if self.focus is not None:
            self._check_lesion_masks(images)
        mask_dir = self.predict_dir / self.mask_dirname
        with_masks = self.task == "segmentation" and mask_dir.is_dir()
        pairs = [(p, self._mask_of(p, mask_dir) if with_masks else None) for p in images]
        failures = [
            BadFile(str(p), f"no mask {m}. Add it, or remove the masks folder.")
            for p, m in pairs
            if m is not None and not m.is_file()
        ]
        pairs = [(p, m) for p, m in pairs if m is None or m.is_file()]
        if self.task == "segmentation":
            pairs, clashes = distinct_stems(pairs)
            failures += clashes
        pairs = self._scan_predict(
            pairs, partial(check_pair, same_size=False), lambda pair: pair[0], earlier=failures
        )
        images, masks = self._predict_inputs(
            pairs, self.predict_dir, "with masks" if with_masks else None
        )
        return self._dataset(images, masks, None, "none")

    def _mask_of(self, image: Path, mask_dir: Path) -> Path:
        return mask_dir / f"{image.stem}{self.mask_suffix}"

    def _predict_images(self) -> list[Path]:
        image_dir = self.predict_dir / self.image_dirname
        images = list_images(image_dir if image_dir.is_dir() else self.predict_dir)
        if not images:
            raise FileNotFoundError(f"{self.predict_dir}: no images to predict on.")
        return images

    def train_dataloader(self):
        if self.sampler == "none":
            return self._loader("train", shuffle=True)
        return self._weighted_train_loader(seed=self.split.seed)
