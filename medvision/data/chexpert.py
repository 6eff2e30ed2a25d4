"""CheXpert: chest X-ray observations labelled 1 / 0 / -1 (uncertain) / blank by a report labeler.

Layout (the "small" release)::

    <data_dir>/train.csv, valid.csv   (Path, Sex, Age, Frontal/Lateral, AP/PA, 14 observations)
    <data_dir>/train/patient00001/study1/view1_frontal.jpg

``data_dir`` is the release folder (the one holding ``train.csv``). ``Path`` values start with
the release folder's name (``CheXpert-v1.0-small/train/...``), so they are resolved against
``data_dir``'s parent (or, for tables rewritten without the prefix, ``data_dir`` itself).
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np

from medvision.data.classification import ClassificationDataModule
from medvision.data.datasets import ClassificationDataset
from medvision.data.screening import BadFile, check_image, scan_files

log = logging.getLogger(__name__)

Uncertainty = Literal["ones", "zeros", "ignore"]

_LAYOUT_HINT = (
    "Expected the CheXpert layout: <data_dir>/train.csv and valid.csv with a Path column, and "
    "the images they name (https://stanfordmlgroup.github.io/competitions/chexpert/)."
)
_PATIENT = re.compile(r"(patient\d+)")


class CheXpertDataModule(ClassificationDataModule):
    """CheXpert as multi-label (``mode: multilabel``) or single-label (``mode: multiclass``).

    ``multilabel``: targets for ``labels``, with the ``uncertainty`` and ``blank`` policies
    applied. Samples carry ``label`` (float32 K) and ``label_mask`` (1 where known).

    ``multiclass`` (the GAN study's setup): keep the images with exactly one positive among
    ``labels`` (its 6: Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion,
    No Finding), optionally a seeded random ``max_per_class`` per class; ``label`` is the class
    index (in the order of ``labels``).

    ``train.csv`` is split by patient into train and validation (``val_fraction``), or with
    ``num_folds`` (k-fold cross-validation, ``medvision-cv``) its patients are cut into
    ``num_folds`` folds, fold ``fold`` validating; ``valid.csv`` (other patients) is the test
    set, the same for every fold.

    A row whose image is missing, whose ``Path`` has no ``patientNNNNN`` folder or whose label
    cell is not 1, 0, -1 or blank is a problem, and so is an image that cannot be decoded
    (``check_images``, for the images used). All problems are reported in one error, or those
    rows left out with ``bad_files: exclude`` (see
    :class:`~medvision.data.datamodule.MedVisionDataModule`). In ``predict`` an unreadable image is
    left out and reported; the others are predicted: the jpg and png files of ``predict_dir``,
    at any depth. The other options are
    :class:`~medvision.data.classification.ClassificationDataModule`'s.

    Args:
        data_dir: The release folder, the one holding ``train.csv`` and ``valid.csv``.
        mode: ``multilabel`` (one sigmoid target per label) or ``multiclass`` (images with
            exactly one positive label, as one class index).
        labels: The observations to use, in this order; null: the 5 competition ones
            (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion).
        uncertainty: What an uncertain label (-1) becomes: ``ones`` (U-Ones), ``zeros``, or
            ``ignore`` (left out of loss and metrics); or a mapping giving a policy per label,
            e.g. ``{Atelectasis: ones, Cardiomegaly: zeros}`` (labels not named: ``zeros``).
        blank: What a blank cell becomes: ``zeros``, or ``ignore`` (left out).
        frontal_only: Drop lateral views (by the ``Frontal/Lateral`` column).
        max_per_class: ``multiclass`` only: keep at most this many images per class, a seeded
            random subset; null: all.
        val_fraction: Fraction of ``train.csv``'s patients held out for validation; unused
            with ``num_folds``.
    """

    observations = (
        "No Finding",
        "Enlarged Cardiomediastinum",
        "Cardiomegaly",
        "Lung Opacity",
        "Lung Lesion",
        "Edema",
        "Consolidation",
        "Pneumonia",
        "Atelectasis",
        "Pneumothorax",
        "Pleural Effusion",
        "Pleural Other",
        "Fracture",
        "Support Devices",
    )
    competition_labels = (
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Pleural Effusion",
    )
    csv_files = {"train": "train.csv", "test": "valid.csv"}

    def __init__(
        self,
        data_dir: str | Path = "data/chexpert",
        mode: Literal["multilabel", "multiclass"] = "multilabel",
        labels: list[str] | None = None,
        uncertainty: Uncertainty | dict[str, Uncertainty] = "ones",
        blank: Literal["zeros", "ignore"] = "zeros",
        frontal_only: bool = True,
        max_per_class: int | None = None,
        val_fraction: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(data_dir, **kwargs)
        self.labels = list(labels or self.competition_labels)
        unknown = sorted(set(self.labels) - set(self.observations))
        if unknown:
            raise ValueError(f"labels {unknown} are not CheXpert observations: {self.observations}")
        if mode not in ("multilabel", "multiclass"):
            raise ValueError(f"mode must be 'multilabel' or 'multiclass', got {mode!r}")
        self.policies = self._policies(uncertainty)
        if blank not in ("zeros", "ignore"):
            raise ValueError(f"blank must be 'zeros' or 'ignore', got {blank!r}")
        self.mode = mode
        self.blank = blank
        self.frontal_only = frontal_only
        self.max_per_class = max_per_class
        self.val_fraction = val_fraction
        self.split = self._seeded_split(val_fraction)
        self._save_hyperparameters()

    def _policies(self, uncertainty) -> dict[str, str]:
        if isinstance(uncertainty, str):
            policies = dict.fromkeys(self.labels, uncertainty)
        else:
            unknown = sorted(set(uncertainty) - set(self.labels))
            if unknown:
                raise ValueError(f"uncertainty names {unknown}, which are not among labels")
            policies = {name: uncertainty.get(name, "zeros") for name in self.labels}
        bad = {k: v for k, v in policies.items() if v not in ("ones", "zeros", "ignore")}
        if bad:
            raise ValueError(f"uncertainty must be ones, zeros or ignore; got {bad}")
        return policies

    @property
    def multilabel(self) -> bool:
        """True in ``multilabel`` mode (sigmoid targets), False in ``multiclass``."""
        return self.mode == "multilabel"

    @property
    def class_names(self) -> list[str]:
        return list(self.labels)

    def _setup_splits(self) -> None:
        tables, bad = {}, []
        for stage, name in self.csv_files.items():
            paths, raw, problems = self._read(self.data_dir / name)
            tables[stage], bad = (paths, raw), bad + problems
        paths, raw = tables["train"]
        split = self.split.grouped_indices([patient_of(p) for p in paths], [0] * len(paths))
        parts = {
            "train": self._targets([paths[i] for i in split["train"]], raw[split["train"]]),
            "val": self._targets([paths[i] for i in split["val"]], raw[split["val"]]),
            "test": self._targets(*tables["test"]),
        }
        if self.check_images:
            parts, unreadable = _scan(parts)
            bad += unreadable
        self._screen(bad, "bad rows or images", "Fix the rows or files, or delete the rows.")
        self._stage_datasets(parts)
        self._count(parts["train"][1])
        log.info(
            "CheXpert %s (%s, labels %s): %s",
            self.data_dir,
            self.mode,
            self.labels,
            ", ".join(f"{k} {len(v)}" for k, v in self.datasets.items()),
        )

    def _read(self, path: Path) -> tuple[list[Path], np.ndarray, list[BadFile]]:
        """Image paths and raw label matrix (1, 0, -1, NaN for blank) of one CSV's good rows,
        and a problem for each bad row (image not found, no patient folder, bad label cell)."""
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing. {_LAYOUT_HINT}")
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"Path", *self.labels} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: no column {sorted(missing)}. {_LAYOUT_HINT}")
            rows = list(enumerate(reader, start=2))  # (line in the CSV, row)
        if self.frontal_only and rows and "Frontal/Lateral" in rows[0][1]:
            rows = [(line, r) for line, r in rows if r["Frontal/Lateral"] == "Frontal"]
        paths, cells, problems = [], [], []
        for line, row in rows:
            where = f"{path} row {line}"
            try:
                resolved = self._row_image(row["Path"])
                cells.append([_cell(row[name], name) for name in self.labels])
            except ValueError as exc:
                problems.append(BadFile(where, str(exc)))
                continue
            paths.append(resolved)
        raw = np.array(cells, dtype=np.float32).reshape(len(paths), len(self.labels))
        return paths, raw, problems

    def _row_image(self, relative: str | None) -> Path:
        """The image file a ``Path`` cell names; a ``ValueError`` says what is wrong with it."""
        resolved = self._resolve(relative or "")
        if resolved is None:
            raise ValueError(f"image {relative} not found. Check data_dir. {_LAYOUT_HINT}")
        patient_of(resolved)
        return resolved

    def _resolve(self, relative: str) -> Path | None:
        for base in (self.data_dir, self.data_dir.parent):
            candidate = base / relative
            if candidate.is_file():
                return candidate
        return None

    def _targets(self, paths: list[Path], raw: np.ndarray) -> tuple[list[Path], np.ndarray]:
        """Apply the uncertainty/blank policies; in ``multiclass`` keep single-positive rows."""
        targets = raw.copy()
        for j, name in enumerate(self.labels):
            column = targets[:, j]
            uncertain = column == -1
            column[uncertain] = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[self.policies[name]]
            if self.blank == "zeros":
                column[np.isnan(raw[:, j])] = 0.0
        if self.mode == "multilabel":
            return paths, targets
        single = (raw == 1).sum(1) == 1
        keep = np.flatnonzero(single)
        classes = (raw[keep] == 1).argmax(1)
        if self.max_per_class is not None:  # a seeded random subset of each class
            taken = Counter()
            chosen = []
            for position in np.random.default_rng(self.seed).permutation(len(keep)):
                if taken[classes[position]] < self.max_per_class:
                    taken[classes[position]] += 1
                    chosen.append(keep[position])
            keep = np.sort(np.array(chosen, dtype=int))
            classes = (raw[keep] == 1).argmax(1)
        return [paths[i] for i in keep], classes.astype(int)

    def _count(self, targets: np.ndarray) -> None:
        if self.mode == "multiclass":
            counts = Counter(targets.tolist())
            self._class_counts = {name: counts[i] for i, name in enumerate(self.labels)}
            self._known_counts = None
            return
        self._class_counts = {n: int(np.nansum(targets[:, j])) for j, n in enumerate(self.labels)}
        known = (~np.isnan(targets)).sum(0)
        self._known_counts = {n: int(known[j]) for j, n in enumerate(self.labels)}

    def _predict_dataset(self) -> ClassificationDataset:
        return self._predict_images((".jpg", ".jpeg", ".png"))


def patient_of(path: Path) -> str:
    """``patient00001`` from a CheXpert image path (the split group).

    Args:
        path: An image path with a ``patientNNNNN`` folder in it; without one, ``ValueError``.
    """
    match = _PATIENT.search(str(path))
    if match is None:
        raise ValueError(f"{path}: no patientNNNNN folder in the path; cannot split by patient")
    return match.group(1)


def _cell(value: str | None, column: str) -> float:
    value = (value or "").strip()
    if value == "":
        return np.nan
    try:
        number = float(value)
    except ValueError:
        number = None
    if number not in (1.0, 0.0, -1.0):
        raise ValueError(f"column {column!r} holds {value!r}; expected 1, 0, -1 or blank")
    return number


def _scan(parts: dict[str, tuple[list[Path], np.ndarray]]):
    """Decode every image of every split once: the splits without bad images, and those."""
    items = [
        (stage, i, path) for stage, (paths, _) in parts.items() for i, path in enumerate(paths)
    ]
    good, bad = scan_files(items, lambda item: check_image(item[2]), lambda item: item[2])
    kept = {stage: [i for s, i, _ in good if s == stage] for stage in parts}
    return {
        stage: ([paths[i] for i in kept[stage]], targets[kept[stage]])
        for stage, (paths, targets) in parts.items()
    }, bad
