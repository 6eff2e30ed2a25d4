"""One training case of DICOM: a folder holding one series and its SEG, read into canonical
volumes.

:func:`read_case` reads the series (:func:`~medvision.data.dicom_series.read_dicom_series`: HU,
slices in position order), checks its positions (:func:`check_positions`), places the SEG's
frames on its slices (:func:`~medvision.data.dicom_seg.seg_labels`) and gives both in canonical
(RAS+) orientation on the grid :func:`~medvision.data.nifti.series_nifti` gives the series, as
a NIfTI volume would be read. Errors name the file and the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvision.data.dicom import require_pydicom
from medvision.data.dicom_seg import Overlap, Unlisted, read_seg, seg_labels
from medvision.data.dicom_series import is_segmentation, read_dicom_series
from medvision.data.errors import ImageReadError
from medvision.data.nifti import VolumeInfo, canonical_volume, require_nibabel, series_nifti

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case folder, from their headers.

    Attributes:
        folder: The case folder.
        seg: Its SEG file.
        series: The image files of its one series.
        patient_id: ``PatientID`` of the series (the case folder's name when it has none).
        study_uid: ``StudyInstanceUID`` of the series.
        sop_uids: ``SOPInstanceUID`` of each file of ``series``, by file.
        shape: The canonical (RAS+) shape the series reads as (from the first header).
    """

    folder: Path
    seg: Path
    series: tuple[Path, ...]
    patient_id: str
    study_uid: str
    sop_uids: Mapping[Path, str]
    shape: tuple[int, int, int]


def find_case_files(folder: str | Path) -> CaseFiles:
    """Sort a case folder's files (headers only) into its series and its SEG.

    Args:
        folder: The case folder: one series and one SEG file; hidden files are ignored.

    Raises:
        ImageReadError: a file that is not DICOM, no SEG, two SEGs, two series, or no series;
            naming the folder (or file) and the fix.
    """
    pydicom = require_pydicom()
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    segs, series = [], {}
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # InvalidDicomError, truncated headers
            raise ImageReadError(
                f"{path}: is not a readable DICOM file ({type(exc).__name__}: {exc}). A case "
                "folder holds the files of one series and one SEG: remove it.",
                path,
            ) from exc
        if is_segmentation(ds):
            segs.append(path)
        else:
            series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    if not segs:
        raise ImageReadError(
            f"{folder}: holds no DICOM SEG file beside its series. Export the segmentation as "
            "DICOM SEG into the case folder (3D Slicer: docs/clinical_data.md), or remove the "
            "case.",
            folder,
        )
    if len(segs) > 1:
        raise ImageReadError(
            f"{folder}: holds {len(segs)} SEG files ({segs[0].name}, {segs[1].name}); a case has "
            "one. Keep the one to train on (its segments can hold several classes).",
            folder,
        )
    if not series:
        raise ImageReadError(f"{folder}: holds a SEG but no image series.", folder)
    if len(series) > 1:
        shown = "; ".join(
            f"{uid or '(no SeriesInstanceUID)'}: {len(found)} files, e.g. {found[0][0].name}"
            for uid, found in series.items()
        )
        raise ImageReadError(
            f"{folder}: holds {len(series)} series ({shown}). Keep one series per case folder: "
            "the one its SEG segments.",
            folder,
        )
    (found,) = series.values()
    first = found[0][1]
    patient = str(first.get("PatientID", "") or "").strip()
    if not patient:
        log.warning("%s: the series has no PatientID; the case counts as its own patient", folder)
    return CaseFiles(
        folder=folder,
        seg=segs[0],
        series=tuple(p for p, _ in found),
        patient_id=patient or f"case:{folder.name}",
        study_uid=str(first.get("StudyInstanceUID", "")),
        sop_uids={p: str(ds.get("SOPInstanceUID", "")) for p, ds in found},
        shape=_canonical_shape(first, len(found)),
    )


def _canonical_shape(first, count: int) -> tuple[int, int, int]:
    """The canonical shape of a series of ``count`` slices like ``first``: its stored
    ``columns x rows x slices`` permuted as :func:`nibabel.as_closest_canonical` would."""
    require_nibabel()
    from nibabel.orientations import io_orientation

    orientation = np.array(first.get("ImageOrientationPatient") or (1, 0, 0, 0, 1, 0), float)
    along_row, along_column = orientation[:3], orientation[3:]
    ras = np.eye(4)
    ras[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ np.stack(
        [along_row, along_column, np.cross(along_row, along_column)], axis=1
    )
    stored = (int(first.Columns), int(first.Rows), count)
    shape = [0, 0, 0]
    for axis, (target, _) in enumerate(io_orientation(ras)):
        shape[int(target)] = stored[axis]
    return tuple(shape)


@dataclass(frozen=True)
class DicomCase:
    """A case read for training: canonical (RAS+) arrays as a NIfTI volume would give them.

    Attributes:
        image: float32 ``x x y x z`` in HU (rescaled).
        labels: uint8 of the same shape: 0 background, class indices (1 for binary).
        info: Grid and spacing (``path`` is the case folder).
        files: The case's files.
    """

    image: np.ndarray
    labels: np.ndarray
    info: VolumeInfo
    files: CaseFiles


def read_case(
    folder: str | Path | CaseFiles,
    class_names: Sequence[str],
    unlisted: Unlisted = "error",
    overlap: Overlap = "error",
) -> DicomCase:
    """Read a case folder's series and SEG into canonical image and label volumes.

    Args:
        folder: The case folder, or its files as :func:`find_case_files` found them.
        class_names: The classes (:func:`~medvision.data.dicom_seg.segment_classes`).
        unlisted: What a segment outside ``class_names`` does: ``error`` or ``ignore``.
        overlap: Several classes on one pixel: ``error``, or ``last`` (the class listed later in
            ``class_names`` wins). A binary model merges its one class's segments.

    Raises:
        ImageReadError: as :func:`find_case_files`, :func:`check_positions` and
            :func:`~medvision.data.dicom_seg.seg_labels`, naming the file and the fix.
    """
    files = folder if isinstance(folder, CaseFiles) else find_case_files(folder)
    volume, info = read_dicom_series(files.folder)
    check_positions(info)
    uids = [files.sop_uids[Path(p)] for p in info.files]
    seg = read_seg(files.seg)
    labels = seg_labels(seg, files.seg, files.study_uid, uids, info, class_names, unlisted, overlap)
    image, volume_info = canonical_volume(series_nifti(volume, info), files.folder)
    canonical, _ = canonical_volume(series_nifti(labels, info), files.seg)
    return DicomCase(image, np.ascontiguousarray(canonical), volume_info, files)


def check_positions(info) -> None:
    """Refuse a series whose slices cannot carry SEG frames: slices without
    ``ImagePositionPatient``, or a gap where a slice is missing.

    Args:
        info: The series' :class:`~medvision.data.dicom.DicomInfo` (duplicate positions are
            refused already by :func:`~medvision.data.dicom_series.read_dicom_series`).

    Raises:
        ImageReadError: naming the file and the fix.
    """
    if info.positions is None:
        raise ImageReadError(
            f"{info.files[0]}: the slices of {info.path} lack ImagePositionPatient (or "
            "ImageOrientationPatient), so SEG frames cannot be placed on them. Re-export the "
            "series with its position tags.",
            info.files[0],
        )
    gaps = np.linalg.norm(np.diff(info.positions, axis=0), axis=1)
    if len(gaps) > 1:
        usual = float(np.median(gaps))
        wide = np.flatnonzero(gaps > 1.5 * usual + 1e-3)
        if len(wide):
            k = int(wide[0])
            raise ImageReadError(
                f"{info.files[k + 1]}: lies {gaps[k]:.3g} mm from the slice before it "
                f"({info.files[k]}), the others {usual:.3g} mm apart: slices are missing from "
                f"the series in {info.path}. Copy the whole series into the folder.",
                info.files[k + 1],
            )


__all__ = ["CaseFiles", "DicomCase", "check_positions", "find_case_files", "read_case"]
