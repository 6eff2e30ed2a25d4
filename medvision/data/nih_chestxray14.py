"""NIH ChestX-ray14: multi-label findings on frontal chest X-rays, in the NIH release layout.

Layout::

    <data_dir>/Data_Entry_2017.csv   (Image Index, Finding Labels "A|B" or "No Finding",
                                      Follow-up #, Patient ID, ...)
    <data_dir>/images/00000001_000.png   (any depth below images/, e.g. images_001/images/)
    <data_dir>/train_val_list.txt, test_list.txt   (optional: the official split)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from medvision.data.classification import ClassificationDataModule
from medvision.data.datasets import ClassificationDataset
from medvision.data.screening import (
    BadFile,
    check_image,
    scan_files,
    screen_csv_rows,
)

log = logging.getLogger(__name__)

_LAYOUT_HINT = (
    "Expected the NIH ChestX-ray14 layout: <data_dir>/Data_Entry_2017.csv and the PNGs under "
    "<data_dir>/images/ (https://nihcc.app.box.com/v/ChestXray-NIHCC)."
)


@dataclass(frozen=True)
class NIHRecord:
    """One row of ``Data_Entry_2017.csv``: image file, patient, and its findings.

    Attributes:
        image: The ``Image Index``, a file name such as ``00000001_000.png``.
        patient: The ``Patient ID`` (the split group).
        findings: The finding names of ``Finding Labels``; empty for ``No Finding``.
    """

    image: str
    patient: str
    findings: frozenset[str]


class NIHChestXray14DataModule(ClassificationDataModule):
    """Multi-label classification of the 14 NIH ChestX-ray14 findings (or a subset, ``labels``).

    Samples: ``{"image": float32 in_channels x H x W in [0, 1], "label": float32 K of 0/1,
    "label_mask": float32 K of ones, "path"}`` at ``image_size``; ``No Finding`` is all zeros.
    ``class_names`` are ``labels`` in the order given.

    Splits are by patient: with the official ``train_val_list.txt`` / ``test_list.txt`` in
    ``data_dir``, test is the official test list and validation a patient-grouped
    ``val_fraction`` of the rest; without them, a patient-grouped split stratified by
    "any finding" (``test_fraction`` first). No patient's images straddle two splits. With
    ``num_folds`` (k-fold cross-validation, ``medvision-cv``) the patients outside the test set
    are cut into ``num_folds`` folds instead (stratified alike), fold ``fold`` validating; the
    test set is the same as without folds, for every fold.

    A CSV row whose image is not on disk is a problem (see ``missing_images``). A row with a
    finding name outside :attr:`findings`, without an image or patient, or repeating an
    earlier image is a problem, and so is an image that cannot be decoded (``check_images``).
    All problems are reported in one error, or those rows left out with ``bad_files: exclude``
    (see :class:`~medvision.data.datamodule.MedVisionDataModule`). In ``predict`` an unreadable
    image is left out and reported; the others are predicted: the ``.png`` files of
    ``predict_dir``, at any depth. The other options are
    :class:`~medvision.data.classification.ClassificationDataModule`'s.

    Args:
        data_dir: The folder holding ``Data_Entry_2017.csv`` and ``images/``.
        labels: The findings to classify, in this order; null: all 14 (:attr:`findings`).
        val_fraction: Fraction of the patients held out for validation (with the official
            lists: of the patients outside the test list); unused with ``num_folds``.
        test_fraction: Fraction of the patients held out for testing; unused with the official
            lists. The same for every fold.
        missing_images: ``error``: a CSV row whose image is not on disk is a problem;
            ``skip``: such rows are left out with a logged count (a partial download).
    """

    findings = (
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Effusion",
        "Emphysema",
        "Fibrosis",
        "Hernia",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pleural_Thickening",
        "Pneumonia",
        "Pneumothorax",
    )
    no_finding = "No Finding"
    metadata_filename = "Data_Entry_2017.csv"
    image_dirname = "images"
    official_lists = ("train_val_list.txt", "test_list.txt")
    multilabel = True

    def __init__(
        self,
        data_dir: str | Path = "data/nih_chestxray14",
        labels: list[str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        missing_images: Literal["error", "skip"] = "error",
        **kwargs,
    ) -> None:
        super().__init__(data_dir, **kwargs)
        unknown = sorted(set(labels or []) - set(self.findings))
        if unknown:
            raise ValueError(f"labels {unknown} are not NIH findings; known: {self.findings}")
        if missing_images not in ("error", "skip"):
            raise ValueError(f"missing_images must be 'error' or 'skip', got {missing_images!r}")
        self.labels = list(labels or self.findings)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split = self._seeded_split(val_fraction, test_fraction)
        self.missing_images = missing_images
        self._save_hyperparameters()

    @property
    def class_names(self) -> list[str]:
        return list(self.labels)

    def _setup_splits(self) -> None:
        records, bad_rows = read_nih_rows(self.data_dir / self.metadata_filename)
        records, paths, missing = self._locate_images(records)
        unreadable: list[BadFile] = []
        if self.check_images:
            good, unreadable = scan_files(list(zip(records, paths, strict=True)), _check, _path)
            records, paths = [r for r, _ in good], [p for _, p in good]
        self._screen(
            bad_rows + missing + unreadable,
            "bad rows or images",
            "Fix the rows or files, or delete the rows from the CSV.",
        )
        targets = self.targets(records)
        indices = self._split(records)
        self._stage_datasets({k: ([paths[i] for i in v], targets[v]) for k, v in indices.items()})
        train = targets[indices["train"]]
        self._class_counts = dict(zip(self.labels, train.sum(0).astype(int).tolist(), strict=True))
        self._known_counts = {name: len(train) for name in self.labels}
        log.info(
            "NIH ChestX-ray14 %s: %d images of %d patients; %s; training positives %s",
            self.data_dir,
            len(records),
            len({r.patient for r in records}),
            ", ".join(f"{k} {len(v)}" for k, v in indices.items()),
            self._class_counts,
        )

    def targets(self, records: list[NIHRecord]) -> np.ndarray:
        """``N x K`` float32 0/1 matrix of the records' findings among ``labels``.

        Args:
            records: N metadata records.
        """
        return np.array(
            [[name in r.findings for name in self.labels] for r in records], dtype=np.float32
        )

    def _locate_images(
        self, records: list[NIHRecord]
    ) -> tuple[list[NIHRecord], list[Path], list[BadFile]]:
        """The records whose image is under ``images/``, their paths, and the rows without one.

        With ``missing_images: skip`` rows without an image are dropped and counted instead.
        """
        image_dir = self.data_dir / self.image_dirname
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir} is missing. {_LAYOUT_HINT}")
        on_disk = {p.name: p for p in image_dir.rglob("*.png")}
        missing = [r for r in records if r.image not in on_disk]
        if records and len(missing) == len(records):
            raise FileNotFoundError(f"no image of {self.metadata_filename} is under {image_dir}")
        found = [r for r in records if r.image in on_disk]
        if self.missing_images == "skip":
            if missing:
                log.warning(
                    "%d of %d CSV rows have no image on disk; skipped", len(missing), len(records)
                )
            return found, [on_disk[r.image] for r in found], []
        problems = [
            BadFile(
                f"{self.metadata_filename} row {r.image}",
                f"not under {image_dir}. Add the image, or set missing_images: skip to use only "
                "those present.",
            )
            for r in missing
        ]
        return found, [on_disk[r.image] for r in found], problems

    def _split(self, records: list[NIHRecord]) -> dict[str, np.ndarray]:
        patients = [r.patient for r in records]
        sick = {r.patient for r in records if r.findings}
        stratify = [int(p in sick) for p in patients]  # one value per patient
        lists = [self.data_dir / name for name in self.official_lists]
        if not all(path.is_file() for path in lists):
            return self.split.grouped_indices(patients, stratify)
        official_test = set(lists[1].read_text().split())
        is_test = np.array([r.image in official_test for r in records])
        rest = np.flatnonzero(~is_test)
        inner = replace(self.split, test_fraction=0.0).grouped_indices(
            [patients[i] for i in rest], [stratify[i] for i in rest]
        )
        log.info("Using the official NIH test list (%s)", lists[1])
        return {
            "train": rest[inner["train"]],
            "val": rest[inner["val"]],
            "test": np.flatnonzero(is_test),
        }

    def _predict_dataset(self) -> ClassificationDataset:
        return self._predict_images((".png",))


def read_nih_rows(path: Path) -> tuple[list[NIHRecord], list[BadFile]]:
    """Good rows of ``Data_Entry_2017.csv``, and a problem for each bad row.

    A row is bad with a finding name outside the 14 (or ``No Finding``), an empty
    ``Image Index`` or ``Patient ID``, or an image an earlier row has. A missing file or column
    is an error.

    Args:
        path: The metadata CSV (columns ``Image Index``, ``Finding Labels``, ``Patient ID``).

    Returns:
        ``(records, problems)``: the good rows in file order, and a
        :class:`~medvision.data.screening.BadFile` per bad row naming its line.
    """
    return screen_csv_rows(
        path, "Image Index", "Patient ID", ["Finding Labels"], _row_problem, _record, _LAYOUT_HINT
    )


def _findings(row: dict) -> frozenset[str]:
    names = {n.strip() for n in (row["Finding Labels"] or "").split("|") if n.strip()}
    return frozenset(names - {NIHChestXray14DataModule.no_finding})


def _row_problem(row: dict) -> str | None:
    """What is wrong with a row's findings, or None."""
    unknown = sorted(_findings(row) - set(NIHChestXray14DataModule.findings))
    if unknown:
        return (
            f"unknown findings {unknown}; Finding Labels must be '|'-joined names from "
            f"{sorted(NIHChestXray14DataModule.findings)} or 'No Finding'"
        )
    return None


def _record(row: dict) -> NIHRecord:
    return NIHRecord(row["Image Index"].strip(), row["Patient ID"].strip(), _findings(row))


def _check(item: tuple[NIHRecord, Path]) -> None:
    check_image(item[1])


def _path(item: tuple[NIHRecord, Path]) -> Path:
    return item[1]
