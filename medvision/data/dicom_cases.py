"""2D segmentation on DICOM series annotated with DICOM SEG, one case folder each, split by
patient.

Layout (file names are free; DICOM is recognised by its content)::

    <data_dir>/<case>/<the series' files>   one single-frame file per slice (CT, MR, ...)
    <data_dir>/<case>/<one SEG file>        the annotation: a DICOM Segmentation of that series
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from medvision.data.dicom_case import CaseFiles, find_case_files, read_case
from medvision.data.dicom_seg import Overlap, Unlisted, default_class_names
from medvision.data.screening import BadFile, scan_files
from medvision.data.volume_slices import VolumeSlices, cut_slices
from medvision.data.volumes import VolumeSliceDataModule
from medvision.utils.class_names import check_class_names

log = logging.getLogger(__name__)

_LAYOUT_HINT = (
    "Expected <data_dir>/<case>/ folders, each holding the files of one DICOM series and one "
    "DICOM SEG file of it (docs/clinical_data.md). To try medvision without data, run: "
    "medvision fit --config configs/quickstart_dicom_seg.yaml"
)


class DicomSegDataModule(VolumeSliceDataModule):
    """Segmentation of the slices of DICOM series, trained on their DICOM SEG annotations.

    Each case folder holds one series and one SEG (:func:`~medvision.data.dicom_case.read_case`):
    SEG frames are placed on the slices they reference (SOP Instance UIDs, else frame
    positions), never by file order; segments become classes by their labels. Series are
    read as the NIfTI volumes of :class:`~medvision.data.volumes.VolumeSliceDataModule` are
    (canonical RAS+ orientation on the grid dcm2niix would give, HU, the same slicing,
    ``empty_slice_fraction``, in-memory cache and ``cache_limit_gb``), so a model trained here
    predicts NIfTI files and series alike, and pixel spacing (the test report's HD95, in mm)
    comes from the series. Its checkpoints record ``input: volume``: ``medvision predict
    --ckpt_path CKPT --data.predict_dir FOLDER`` reads series folders (a SEG beside them is
    left out) and writes a DICOM SEG and a NIfTI per series (:mod:`medvision.apply.seg_writer`).

    Splits are drawn over patients (``PatientID``; a series without one is its own patient),
    seeded (or fold ``fold`` of ``num_folds``): no patient's cases are on two sides. A bad
    case (no SEG, two series, a SEG of another study or referencing instances the series lacks,
    frames of another size, an unknown segment, overlapping classes of a label map, missing or
    duplicate slice positions) is reported with the others, or left out with
    ``bad_files: exclude``. The other options are those of the volume datamodule (``axis``,
    ``image_size``, ``intensity_window`` in HU, ``empty_slice_fraction``, ``val_fraction`` and
    ``test_fraction``, here fractions of the patients, ``predict_dir``, ``cache_limit_gb``,
    ``in_channels``, ``augmentation``, ``gpu_augmentation``) and of
    :class:`~medvision.data.datamodule.MedVisionDataModule` (``batch_size``, ``num_workers``,
    ``bad_files``, ``seed``, ``num_folds``, ``fold``).

    Args:
        data_dir: The folder of case folders.
        class_names: The classes, by segment label (case-insensitive): one name for a binary
            model (its segment is the foreground), or background first and one label per class
            (``[background, liver, tumour]``), which picks and orders the segments. null: the
            first case's SEG names them (its one segment's label, or background and every
            label in segment-number order).
        unlisted_segments: A segment whose label is not in ``class_names``: ``error``, or
            ``ignore`` (its pixels are background).
        overlap: Pixels of a label-map model in segments of two classes: ``error``, or
            ``last`` (the class listed later in ``class_names`` wins).
    """

    def __init__(
        self,
        data_dir: str | Path = "data/dicom_seg",
        class_names: Sequence[str] | None = None,
        unlisted_segments: Unlisted = "error",
        overlap: Overlap = "error",
        **kwargs,
    ) -> None:
        for name, value, kind in (
            ("unlisted_segments", unlisted_segments, Unlisted),
            ("overlap", overlap, Overlap),
        ):
            if value not in get_args(kind):
                raise ValueError(f"{name} must be one of {get_args(kind)}, got {value!r}")
        self._names_from_seg = class_names is None
        super().__init__(
            data_dir,
            image_dirname="images",  # the volume layout's: not options here
            mask_dirname="masks",
            image_prefix="",
            mask_prefix="",
            class_names=("foreground",) if class_names is None else class_names,
            **kwargs,
        )
        self.unlisted_segments: Unlisted = unlisted_segments
        self.overlap: Overlap = overlap

    @property
    def class_names(self) -> list[str]:
        """The classes: as given, or read from the first case's SEG on first use."""
        if self._class_names is None:
            self._class_names = self._class_names_of_first_case()
        return list(self._class_names)

    @class_names.setter
    def class_names(self, names: Sequence[str]) -> None:
        self._class_names = None if self._names_from_seg else list(names)

    def _class_names_of_first_case(self) -> list[str]:
        cases, _ = find_cases(self.data_dir) if self.data_dir.is_dir() else ([], [])
        if not cases:
            raise ValueError(
                f"class_names: null reads the segment labels of the first case's SEG, but "
                f"data_dir {self.data_dir} holds no case folders. Give class_names "
                "(--data.init_args.class_names), or the data_dir. " + _LAYOUT_HINT
            )
        seg = find_case_files(cases[0]).seg
        names = check_class_names(default_class_names(seg), names_hint="one per segment label")
        log.info("class_names %s: the segment labels of %s", names, seg)
        return names

    def _setup_splits(self) -> None:
        cases, strangers = find_cases(self.data_dir)
        scanned: dict[Path, CaseFiles] = {}

        def scan(case: Path) -> None:
            scanned[case] = find_case_files(case)

        _, bad = scan_files(cases, scan)
        patients = [scanned[c].patient_id if c in scanned else f"case:{c.name}" for c in cases]
        self._check_memory_of([scanned[c] for c in cases if c in scanned])
        indices = self.split.grouped_indices(patients, [0] * len(cases))
        scannable = [(i, c) for i, c in enumerate(cases) if c in scanned]

        def decode(case: Path, fraction: float | None, rng) -> VolumeSlices:
            return self._decode_case(scanned[case], fraction, rng)

        decoded, unreadable = self._decode_parts(scannable, decode, indices)
        self._screen(strangers + bad + unreadable, "bad DICOM cases", "Fix or remove these cases.")
        self._fill_datasets(indices, decoded)
        log.info(
            "DICOM cases %s: %s",
            self.data_dir,
            ", ".join(
                f"{stage} {len({patients[i] for i in idx if i in decoded})} patients / "
                f"{sum(i in decoded for i in idx)} series / {len(self.datasets[stage])} slices"
                for stage, idx in indices.items()
            ),
        )

    def _decode_case(self, case: CaseFiles, fraction: float | None, rng) -> VolumeSlices:
        read = read_case(case, self.class_names, self.unlisted_segments, self.overlap)
        return cut_slices(
            read.image,
            read.labels,
            read.info,
            self.axis,
            self.image_size,
            self.intensity_window,
            fraction,
            rng,
            mask_path=read.files.seg,
        )

    def _check_memory_of(self, cases: list[CaseFiles]) -> None:
        """Refuse before decoding when all slices would exceed ``cache_limit_gb``."""
        self._refuse_over_memory(sum(case.shape[self.axis] for case in cases), self.data_dir)


def find_cases(data_dir: Path) -> tuple[list[Path], list[BadFile]]:
    """The case folders of ``data_dir`` (sorted, hidden ones ignored), and its loose files.

    Args:
        data_dir: The folder of case folders.

    Raises:
        FileNotFoundError: ``data_dir`` missing, or without case folders.
    """
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir {data_dir} does not exist. {_LAYOUT_HINT}")
    entries = sorted(p for p in data_dir.iterdir() if not p.name.startswith("."))
    cases = [p for p in entries if p.is_dir()]
    if not cases:
        raise FileNotFoundError(f"{data_dir} holds no case folders. {_LAYOUT_HINT}")
    loose = [
        BadFile(str(p), "not in a case folder: each case is a folder of its series and SEG.")
        for p in entries
        if not p.is_dir()
    ]
    return cases, loose


__all__ = ["DicomSegDataModule", "find_cases"]
