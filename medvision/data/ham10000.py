"""HAM10000 dermoscopy: lesion segmentation and diagnosis classification from one layout.

Layout (as published, with the ISIC 2018 task 1 lesion masks beside it)::

    <data_dir>/images/ISIC_0027419.jpg
    <data_dir>/masks/ISIC_0027419_segmentation.png
    <data_dir>/HAM10000_metadata.csv   (lesion_id, image_id, dx, dx_type, age, sex, localization)
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medvision.data.base import (
    ClassificationDataset,
    MedVisionDataModule,
    SegmentationDataset,
    find_problems,
    grouped_split_indices,
    problem_report,
)
from medvision.data.io import IMAGE_SUFFIXES, binarize_mask, list_images, read_image
from medvision.data.lesion_focus import LesionFocus
from medvision.data.transforms import (
    classification_transform,
    segmentation_transform,
)

log = logging.getLogger(__name__)

_LAYOUT_HINT = (
    "Expected the HAM10000 layout: <data_dir>/images/ISIC_<id>.jpg, "
    "<data_dir>/masks/ISIC_<id>_segmentation.png (segmentation) and "
    "<data_dir>/HAM10000_metadata.csv (Harvard Dataverse doi:10.7910/DVN/DBW86T; masks from "
    "ISIC 2018 task 1)."
)


@dataclass(frozen=True)
class HAM10000Record:
    """One metadata row: the image file, its lesion (split group) and diagnosis code."""

    image_id: str
    lesion_id: str
    dx: str


class HAM10000DataModule(MedVisionDataModule):
    """HAM10000 images for ``task: segmentation`` (lesion masks) or ``classification`` (dx).

    Classes are the 7 diagnosis codes (:attr:`diagnoses`), or the names a ``label_map`` merges
    them into, e.g. the seed study's ``{mel: MEL, nv: NV, bkl: OTHER, bcc: OTHER, akiec: OTHER,
    vasc: OTHER, df: OTHER}``; either way sorted. Segmentation has the one class ``lesion``.

    Splits are grouped by ``lesion_id`` and stratified by diagnosis: all images of one lesion
    land in the same split, so a model is never tested on a lesion it trained on. ``test``
    (``test_fraction``) is drawn first and is the same for every fold of ``num_folds``.

    Samples: ``{"image": float32 3 x H x W in [0, 1], "path", ...}`` at ``image_size``
    (``[height, width]``; keep HAM's 3:4 aspect, e.g. ``[192, 256]``), plus ``"mask"`` (float32
    ``1 x H x W`` of 0/1, ``mask_path``, ``original_size``) for segmentation or ``"label"``
    (int64) for classification. A mask of another size than its image is resized to it by
    nearest neighbour; how many were is logged.

    Segment-then-classify: with ``lesion_focus: crop`` (or ``mask``) each image is cropped to
    its lesion's bounding box plus ``lesion_margin`` (or its background blacked out) before
    resizing, using ``lesion_mask_dir/<image_id>.png``. Those masks come from ``medvision
    predict`` with a segmentation checkpoint, or are predicted once in ``prepare_data`` by the
    checkpoint given as ``lesion_segmenter`` (see :mod:`medvision.pipelines`).

    Every metadata row is checked in ``setup`` (image present, known dx, mask present for
    segmentation) and every file decoded once (``check_images``); all problems are reported
    in one error. Images without a metadata row are not used, and their number is logged.
    """

    diagnoses = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
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
        seed: int = 42,
        num_folds: int | None = None,
        fold: int = 0,
        sampler: Literal["none", "weighted"] = "none",
        check_images: bool = True,
        lesion_focus: Literal["none", "crop", "mask"] = "none",
        lesion_mask_dir: str | Path | None = None,
        lesion_segmenter: str | Path | None = None,
        lesion_margin: float = 0.1,
        predict_dir: str | Path | None = None,
        batch_size: int = 16,
        num_workers: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
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
        self.data_dir = Path(data_dir)
        self.task = task
        self.label_map = label_map
        self.image_size = image_size
        self.augmentation = augmentation
        self.split = dict(
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            num_folds=num_folds,
            fold=fold,
        )
        self.sampler = sampler
        self.check_images = check_images
        self.focus = None
        if lesion_focus != "none":
            self.focus = LesionFocus(lesion_mask_dir, lesion_focus, lesion_margin)
        self.lesion_segmenter = None if lesion_segmenter is None else Path(lesion_segmenter)
        self.predict_dir = None if predict_dir is None else Path(predict_dir)
        self.save_hyperparameters()

    # --- dataset facts, linked to the model by the CLI -------------------------------------

    @property
    def class_names(self) -> list[str]:
        """``["lesion"]`` for segmentation; dx codes or ``label_map`` names, sorted."""
        if self.task == "segmentation":
            return ["lesion"]
        if self.label_map is None:
            return list(self.diagnoses)
        return sorted(set(self.label_map.values()))

    def label_of(self, dx: str) -> int:
        """Class index of a diagnosis code, through ``label_map`` when given."""
        name = dx if self.label_map is None else self.label_map[dx]
        return self.class_names.index(name)

    # --- setup ------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.lesion_segmenter is None or self.focus is None:
            return
        from medvision.pipelines import predict_lesion_masks  # needs the models package

        images = self._image_paths(read_metadata(self.data_dir / self.metadata_filename))
        if self.predict_dir is not None:
            images += self._predict_images()
        written = predict_lesion_masks(self.lesion_segmenter, images, self.focus.mask_dir)
        log.info("Lesion masks: %d predicted, %d already there", written, len(images) - written)

    def _setup_splits(self) -> None:
        records = read_metadata(self.data_dir / self.metadata_filename)
        self._check_labels(records)
        images = self._image_paths(records)
        masks = self._mask_paths(records) if self.task == "segmentation" else None
        if self.check_images:
            self._scan(images, masks)
        if self.focus is not None:
            self._check_lesion_masks(images)
        if self.task == "classification":
            labels = [self.label_of(r.dx) for r in records]
        else:
            labels = [0] * len(records)  # the one class, "lesion"
        stratify = [self.diagnoses.index(r.dx) for r in records]  # by dx even when merged
        indices = grouped_split_indices([r.lesion_id for r in records], stratify, **self.split)
        for stage, idx in indices.items():
            augmentation = self.augmentation if stage == "train" else "none"
            self.datasets[stage] = self._dataset(
                [images[i] for i in idx],
                None if masks is None else [masks[i] for i in idx],
                [labels[i] for i in idx],
                augmentation,
            )
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

    def _image_paths(self, records: list[HAM10000Record]) -> list[Path]:
        image_dir = self.data_dir / self.image_dirname
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir} is missing. {_LAYOUT_HINT}")
        on_disk = {p.stem: p for p in list_images(image_dir, IMAGE_SUFFIXES)}
        missing = [
            f"{self.metadata_filename} row {r.image_id} (lesion {r.lesion_id}): no image "
            f"{image_dir / r.image_id}.jpg"
            for r in records
            if r.image_id not in on_disk
        ]
        if missing:
            raise FileNotFoundError(
                problem_report(
                    missing,
                    "metadata rows without an image",
                    "Add the images or delete their rows from the metadata CSV.",
                )
            )
        unused = len(on_disk) - len({r.image_id for r in records})
        if unused:
            log.info("%d images in %s have no metadata row and are not used", unused, image_dir)
        return [on_disk[r.image_id] for r in records]

    def _mask_paths(self, records: list[HAM10000Record]) -> list[Path]:
        mask_dir = self.data_dir / self.mask_dirname
        if not mask_dir.is_dir():
            raise FileNotFoundError(f"{mask_dir} is missing (task: segmentation). {_LAYOUT_HINT}")
        paths = [mask_dir / f"{r.image_id}{self.mask_suffix}" for r in records]
        missing = [
            f"{p}: missing, for image {r.image_id}"
            for p, r in zip(paths, records, strict=True)
            if not p.is_file()
        ]
        if missing:
            raise FileNotFoundError(
                problem_report(
                    missing, "missing masks", "Add the masks, or use task: classification."
                )
            )
        return paths

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

    def _scan(self, images: list[Path], masks: list[Path] | None) -> None:
        """Decode every file once; count masks of another size than their image."""
        resized: list[Path] = []

        def check(pair: tuple[Path, Path | None]) -> None:
            image = read_image(pair[0])
            if pair[1] is not None:
                mask = binarize_mask(read_image(pair[1]), pair[1])
                if mask.shape[:2] != image.shape[:2]:
                    resized.append(pair[1])

        problems = find_problems(zip(images, masks or [None] * len(images), strict=True), check)
        if problems:
            raise ValueError(problem_report(problems, "unreadable files", "Fix or remove them."))
        if resized:
            log.warning(
                "%d masks differ in size from their image and are resized to it by nearest "
                "neighbour (first: %s)",
                len(resized),
                resized[0],
            )

    def _dataset(self, images, masks, labels, augmentation):
        if self.task == "segmentation":
            return SegmentationDataset(
                images,
                masks,
                segmentation_transform(self.image_size, augmentation),
                in_channels=3,
                resize_masks=True,
            )
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
        masks = None
        mask_dir = self.predict_dir / self.mask_dirname
        if self.task == "segmentation" and mask_dir.is_dir():
            masks = [mask_dir / f"{p.stem}{self.mask_suffix}" for p in images]
            missing = [str(m) for m in masks if not m.is_file()]
            if missing:
                raise FileNotFoundError(
                    problem_report(missing, "missing masks", "Add them or remove the masks folder.")
                )
        log.info("Predicting on %d images from %s", len(images), self.predict_dir)
        return self._dataset(images, masks, None, "none")

    def _predict_images(self) -> list[Path]:
        image_dir = self.predict_dir / self.image_dirname
        images = list_images(image_dir if image_dir.is_dir() else self.predict_dir)
        if not images:
            raise FileNotFoundError(f"{self.predict_dir}: no images to predict on.")
        return images

    def train_dataloader(self):
        if self.sampler == "none":
            return self._loader("train", shuffle=True)
        return self._weighted_train_loader(seed=self.split["seed"])


def read_metadata(path: Path) -> list[HAM10000Record]:
    """Rows of ``HAM10000_metadata.csv``; errors name the file, the line and the fix."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. {_LAYOUT_HINT}")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"lesion_id", "image_id", "dx"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: no column {sorted(missing)}; found {reader.fieldnames}.")
        records, problems = [], []
        for line, row in enumerate(reader, start=2):
            dx = (row["dx"] or "").strip().lower()
            if dx not in HAM10000DataModule.diagnoses:
                problems.append(f"{path} line {line} ({row['image_id']}): unknown dx {row['dx']!r}")
                continue
            records.append(HAM10000Record(row["image_id"].strip(), row["lesion_id"].strip(), dx))
    if problems:
        raise ValueError(
            problem_report(
                problems,
                "rows with an unknown diagnosis",
                f"dx must be one of {', '.join(HAM10000DataModule.diagnoses)}.",
            )
        )
    if not records:
        raise ValueError(f"{path}: has no rows.")
    return records
