"""Chest X-rays sorted into one folder per class: the Kaggle ImageFolder layout.

Layout (any subset of the split folders; ``train/`` is required)::

    <data_dir>/train/COVID19/*.png
    <data_dir>/train/NORMAL/*.jpeg
    <data_dir>/val/...
    <data_dir>/test/...
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Literal

from medvision.data.classification import ClassificationDataModule
from medvision.data.datasets import ClassificationDataset
from medvision.data.io import IMAGE_SUFFIXES, files_under
from medvision.data.screening import BadFile, check_image, problem_report, scan_files
from medvision.data.splits import grouped_split_indices, stratified_split
from medvision.data.synthetic import write_chest_xray

log = logging.getLogger(__name__)

_LAYOUT_HINT = (
    "Expected one folder per class under each split: <data_dir>/train/<CLASS>/*.png|jpg "
    "(and optionally val/ and test/ alike), as in the Kaggle chest X-ray datasets. To predict "
    "without the training folders, give the classes: --data.class_names [A,B,...]. To try "
    "medvision without it, run: medvision fit --config configs/quickstart_chestxray.yaml"
)


class ChestXrayDataModule(ClassificationDataModule):
    """Single-label chest X-ray classification from ``<data_dir>/<split>/<CLASS>/<image>``.

    Class names are the class folder names, sorted; every split folder used must hold every
    class folder, and none may be empty. Files may be png/jpg/jpeg/bmp/tif, 8- or 16-bit
    grayscale, RGB or RGBA, of any size: each is converted to ``in_channels`` (1 or 3), min-max
    scaled to [0, 1] and resized to ``image_size``. Samples are ``{"image": float32
    in_channels x H x W, "label": int64, "path"}``. Hidden files (``.DS_Store``) are ignored;
    any other file that is not an image is an error. Every image is decoded once in ``setup``
    (``check_images``); all unreadable ones are reported together, or left out with
    ``bad_files: exclude`` (see :class:`~medvision.data.datamodule.MedVisionDataModule`).

    Splits: ``train`` is the ``train/`` folder. The test set is the folder named
    ``test_split``; there is none when that folder does not exist. Validation is the ``val/``
    folder if present and not used otherwise; else a stratified ``val_fraction`` of train
    (each ``group_pattern`` group kept on one side; a patient counts as their most frequent
    class). With ``num_folds`` (k-fold cross-validation, ``medvision-cv``) every image outside
    the test set (``train/``, and ``val/`` unless it is the test set) is cut into
    ``num_folds`` folds stratified by class (each class's images shuffled with ``seed`` and
    dealt evenly; each ``group_pattern`` group kept in one fold), fold ``fold`` validating and
    the others training; the test folder is the same for every fold. ``class_counts``
    (training images per class) is known after ``setup``.

    ``medvision predict`` reads ``predict_dir``: class subfolders (their names must be known
    classes; the true class is then reported beside the prediction) or loose images, searched
    recursively. A file that cannot be read (or, among loose images, is not an image) is left
    out and reported; the others are predicted. The other options are
    :class:`~medvision.data.classification.ClassificationDataModule`'s.

    Args:
        data_dir: The folder holding ``train/`` (required), ``val/`` and ``test/``, each with
            one subfolder per class.
        merge_val_into_train: Move ``val/`` into train and carve validation from the whole,
            as the chest X-ray study did.
        val_fraction: Fraction of train carved out for validation, stratified by class, when
            no ``val/`` folder validates (absent, merged, or the test split).
        test_split: The split folder used as the test set: ``test``, or ``val`` to keep the
            given ``val/`` folder untouched for testing (validation is then carved from train).
        sampler: ``weighted`` draws training images so that every class is equally frequent
            (see :class:`~medvision.data.samplers.WeightedClassSampler`; works under DDP);
            ``none`` shuffles.
        class_names: The classes and their order (indices); null: the sorted class folder
            names. Give them to ``predict`` on a machine without the training folders.
        group_pattern: A regex whose first group is the patient in a file name (e.g.
            ``^(\\d{8})_`` for NIH names), keeping each patient's images on one side of the
            carved validation split; null: images are independent.
    """

    split_dirnames = ("train", "val", "test")
    test_split_hint = (
        "Add a test/ folder, or test on the val/ folder with --data.init_args.test_split val "
        "(fit with it too: validation is then carved from train/)."
    )

    def __init__(
        self,
        data_dir: str | Path = "data/chest_xray",
        merge_val_into_train: bool = False,
        val_fraction: float = 0.2,
        test_split: str = "test",
        sampler: Literal["none", "weighted"] = "none",
        class_names: list[str] | None = None,
        group_pattern: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(data_dir, **kwargs)
        if sampler not in ("none", "weighted"):
            raise ValueError(f"sampler must be 'none' or 'weighted', got {sampler!r}")
        if test_split == "train":
            raise ValueError("test_split cannot be 'train'")
        self.merge_val_into_train = merge_val_into_train
        self.val_fraction = val_fraction
        self.test_split = test_split
        self.sampler = sampler
        self.group_pattern = None if group_pattern is None else re.compile(group_pattern)
        self._class_names = None if class_names is None else tuple(class_names)
        # the model records class_names; loggers merge both hparams and need equal values
        self._save_hyperparameters(ignore=["class_names"])

    # --- dataset facts, linked to the model by the CLI -------------------------------------

    @property
    def class_names(self) -> list[str]:
        """Class folder names, sorted (known from the folders before ``setup``), or as given."""
        if self._class_names is None:
            self._class_names = tuple(find_class_names(self._split_dirs()))
        return list(self._class_names)

    # --- setup ------------------------------------------------------------------------------

    def _split_dirs(self) -> dict[str, Path]:
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"data_dir {self.data_dir} does not exist. {_LAYOUT_HINT}")
        if not (self.data_dir / "train").is_dir():
            raise FileNotFoundError(f"{self.data_dir / 'train'} is missing. {_LAYOUT_HINT}")
        return {
            name: self.data_dir / name
            for name in self.split_dirnames
            if (self.data_dir / name).is_dir()
        }

    def _setup_splits(self) -> None:
        dirs = self._split_dirs()
        found = find_class_names(dirs)
        if sorted(found) != sorted(self.class_names):
            raise ValueError(
                f"class_names {self.class_names} differ from the class folders in "
                f"{self.data_dir}: {found}"
            )
        items = {
            name: list_labelled_images(folder, self.class_names) for name, folder in dirs.items()
        }
        if self.check_images:
            items = self._scan(items)
        train_paths, train_labels = items.pop("train")
        test = items.pop(self.test_split, None)
        val = items.pop("val", None)
        pooled = self.merge_val_into_train or self.num_folds is not None
        if pooled and val is not None:
            train_paths, train_labels = train_paths + val[0], train_labels + val[1]
            val = None
        if val is None:
            rest, held = self._carve_validation(train_paths, train_labels)
            val = ([train_paths[i] for i in held], [train_labels[i] for i in held])
            train_paths = [train_paths[i] for i in rest]
            train_labels = [train_labels[i] for i in rest]
        splits = {"train": (train_paths, train_labels), "val": val}
        if test is not None:
            splits["test"] = test
        self._stage_datasets(splits)
        counts = Counter(train_labels)
        self._class_counts = {c: counts[i] for i, c in enumerate(self.class_names)}
        log.info(
            "Chest X-ray %s, classes %s: %s",
            self.data_dir,
            self.class_names,
            ", ".join(f"{name} {len(paths)}" for name, (paths, _) in splits.items()),
        )

    def _scan(self, items: dict[str, tuple[list[Path], list[int]]]):
        """Decode every image once; the bad ones raise, or are left out (``bad_files``)."""
        flat = [
            (path, split, label)
            for split, (paths, labels) in items.items()
            for path, label in zip(paths, labels, strict=True)
        ]
        good, bad = scan_files(flat, lambda item: check_image(item[0]), lambda item: item[0])
        self._screen(
            bad,
            "unreadable images",
            "Fix or remove these files (check_images: false skips this scan, not the error).",
        )
        kept: dict[str, tuple[list[Path], list[int]]] = {split: ([], []) for split in items}
        for path, split, label in good:
            kept[split][0].append(path)
            kept[split][1].append(label)
        return kept

    def _carve_validation(self, paths: list[Path], labels: list[int]):
        """Stratified ``val_fraction`` of train, or fold ``fold`` of ``num_folds``; each
        ``group_pattern`` group kept whole (an image is its own group without a pattern)."""
        if self.group_pattern is None and self.num_folds is None:
            return stratified_split(labels, self.val_fraction, self.seed)
        if self.group_pattern is None:
            groups = [str(p) for p in paths]
        else:
            groups = [group_of(p, self.group_pattern) for p in paths]
        split = grouped_split_indices(
            groups,
            labels,
            self.val_fraction,
            0.0,
            self.seed,
            self.num_folds,
            self.fold,
            mixed_labels="majority",
        )
        return split["train"], split["val"]

    def _predict_dataset(self) -> ClassificationDataset:
        self._predict_folder()
        subfolders = _visible_subdirs(self.predict_dir)
        strangers: list[Path] = []
        if subfolders and {p.name for p in subfolders} <= set(self.class_names):
            paths, labels = list_labelled_images(self.predict_dir, self.class_names, partial=True)
        else:
            (paths, strangers), labels = files_under(self.predict_dir), None
        if not paths and not strangers:
            raise FileNotFoundError(
                f"{self.predict_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) to predict on."
            )
        not_images = [
            BadFile(str(p), f"not an image ({', '.join(IMAGE_SUFFIXES)}).") for p in strangers
        ]
        items = list(zip(paths, labels or [None] * len(paths), strict=True))
        items = self._scan_predict(
            items, lambda item: check_image(item[0]), lambda item: item[0], earlier=not_images
        )
        truth = "with their class folders as truth" if labels else None
        paths, labels = self._predict_inputs(items, self.predict_dir, truth)
        return self._classification_dataset(paths, labels, "none")

    def train_dataloader(self):
        if self.sampler == "none":
            return self._loader("train", shuffle=True)
        return self._weighted_train_loader(seed=self.seed)


class SyntheticChestXrayDataModule(ChestXrayDataModule):
    """:class:`ChestXrayDataModule` on X-ray-like images it writes to ``data_dir`` if absent.

    For the quickstart and tests: four deliberately imbalanced classes (COVID19, NORMAL,
    PNEUMONIA, TUBERCULOSIS) in ``train/``, ``val/`` and ``test/``, as mixed png/jpg files of
    mixed sizes and modes (see :func:`~medvision.data.synthetic.write_chest_xray`). Not real
    data. An existing ``data_dir/train`` is used as it is, never overwritten. The other
    arguments are :class:`ChestXrayDataModule`'s.

    Args:
        scale: Multiplies the images per split and class (``CHEST_XRAY_COUNTS``; at least 1).
        image_px: Nominal side of the written images in pixels (90-130% wide, 90-120% high).
    """

    def __init__(self, *args, scale: float = 1.0, image_px: int = 64, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scale = scale
        self.image_px = image_px

    def prepare_data(self) -> None:
        self._write_if_absent()

    def _split_dirs(self) -> dict[str, Path]:
        self._write_if_absent()  # class names are read before prepare_data runs
        return super()._split_dirs()

    def _write_if_absent(self) -> None:
        if (self.data_dir / "train").is_dir():
            return
        log.info("Writing synthetic chest X-rays to %s (not real data)", self.data_dir)
        self.write_synthetic()

    def write_synthetic(self) -> None:
        """Write the synthetic class folders into ``data_dir``."""
        write_chest_xray(self.data_dir, scale=self.scale, size=self.image_px, seed=self.seed)


# --- folder scanning ------------------------------------------------------------------------


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def group_of(path: Path, pattern: re.Pattern) -> str:
    """The first capture of ``pattern`` in the file name (a patient id), else the name itself.

    Args:
        path: An image file.
        pattern: A compiled regex with at least one group.
    """
    match = pattern.search(path.name)
    return match.group(1) if match else path.name


def find_class_names(split_dirs: dict[str, Path]) -> list[str]:
    """Sorted class folder names; an error names any split folder lacking one of them.

    Args:
        split_dirs: Split name (``train``, ``val``, ``test``) -> its folder; ``train`` must be
            there.

    Returns:
        The union of the class folder names, sorted.
    """
    per_split = {name: {p.name for p in _visible_subdirs(d)} for name, d in split_dirs.items()}
    classes = sorted(set().union(*per_split.values()))
    if not classes:
        raise FileNotFoundError(f"{split_dirs['train']} has no class folders. {_LAYOUT_HINT}")
    problems = [
        f"{split_dirs[name] / c}: missing (class {c!r} exists in another split)"
        for name, present in per_split.items()
        for c in classes
        if c not in present
    ]
    if problems:
        raise FileNotFoundError(
            problem_report(problems, "missing class folders", "Every split needs every class.")
        )
    return classes


def list_images_recursive(folder: Path) -> list[Path]:
    """Image files under ``folder`` at any depth, sorted; an error names any non-image file.

    Hidden files and folders (names starting with ``.``) are ignored.

    Args:
        folder: The folder to search.
    """
    files, strangers = files_under(folder)
    if strangers:
        raise ValueError(
            problem_report(
                [str(p) for p in strangers],
                f"files that are not images ({', '.join(IMAGE_SUFFIXES)})",
                "Move them out of the data folder.",
            )
        )
    return files


def list_labelled_images(
    split_dir: Path, class_names: list[str], partial: bool = False
) -> tuple[list[Path], list[int]]:
    """Image paths and class indices of ``split_dir/<CLASS>/**``; empty class folders are errors.

    A file directly in ``split_dir`` (outside a class folder) is an error.

    Args:
        split_dir: A split folder with one subfolder per class.
        class_names: The classes; a class's index in this list is its label.
        partial: Allow missing class folders (predict folders need not hold every class).

    Returns:
        ``(paths, labels)``: the images, sorted per class, and their class indices.
    """
    loose = [str(p) for p in split_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
    if loose:
        raise ValueError(
            problem_report(
                loose, f"files outside a class folder in {split_dir}", "Move each into its class."
            )
        )
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(class_names):
        class_dir = split_dir / name
        if partial and not class_dir.is_dir():
            continue
        found = list_images_recursive(class_dir)
        if not found:
            raise FileNotFoundError(
                f"{class_dir}: class folder holds no images. Add images of class {name!r} or "
                "remove the folder from every split."
            )
        paths += found
        labels += [index] * len(found)
    return paths, labels


__all__ = [
    "ChestXrayDataModule",
    "SyntheticChestXrayDataModule",
    "find_class_names",
    "list_images_recursive",
    "list_labelled_images",
]
