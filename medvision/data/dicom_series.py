"""A DICOM series (one folder of single-frame files) as a volume, read with pydicom.

Each slice goes through :func:`medvision.data.dicom.dicom_values` (rescale, optional window,
MONOCHROME1 inversion; see :mod:`medvision.data.dicom`), and the slices are stacked in their
order along the slice normal.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medvision.data.dicom import DicomInfo, Window, dicom_values, header_fields, open_dicom
from medvision.data.errors import ImageReadError

log = logging.getLogger(__name__)

#: SOP classes of segmentation objects: Segmentation Storage, Label Map Segmentation Storage.
SEGMENTATION_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")


def read_dicom_series(folder: str | Path, window: Window = None) -> tuple[np.ndarray, DicomInfo]:
    """Decode a folder holding the single-frame files of one series into a volume.

    Slices are sorted by their position along the slice normal (``ImagePositionPatient``
    projected on the cross product of the ``ImageOrientationPatient`` row and column
    directions), or, when a file lacks those, by ``InstanceNumber``. Each slice gets its own
    rescale. Hidden files and segmentation objects (DICOM SEG: the series' annotation) are
    left out; every other file must be a DICOM image of the series.

    Args:
        folder: the series folder (files of any name, e.g. ``IM0001`` or ``1.2.3.dcm``).
        window: as in :func:`medvision.data.dicom.read_dicom`.

    Returns:
        ``(volume, info)``: float32 ``S x H x W``, slice 0 lowest along the normal (or lowest
        instance number); ``info.slice_spacing`` from the positions when known.

    Raises:
        FileNotFoundError: no files in ``folder``.
        ImageReadError: a file as in :func:`~medvision.data.dicom.read_dicom`; slices of
            different sizes (two files named with their sizes), of several series or
            orientations, or at one position.
    """
    folder = Path(folder)
    datasets, files, positions, kind = open_series(folder)
    volume = np.stack([dicom_values(ds, p, window) for ds, p in zip(datasets, files, strict=True)])
    info = DicomInfo(
        path=str(folder),
        files=tuple(str(p) for p in files),
        shape=volume.shape,
        frames=len(files),
        slice_spacing=_series_spacing(datasets[0], positions, folder),
        window=window,
        slice_order=kind,
        positions=positions,
        **header_fields(datasets[0]),
    )
    return volume, info


def open_series(folder: str | Path) -> tuple[list, list[Path], np.ndarray | None, str]:
    """The datasets and files of a series folder in slice order, pixels not decoded.

    Checked as :func:`read_dicom_series` checks them: one stack of single-frame slices of one
    size. Segmentation objects (DICOM SEG) in the folder are not slices and are left out.

    Args:
        folder: The series folder.

    Returns:
        ``(datasets, files, positions, order kind)``: positions ``N x 3`` (mm) in slice order,
        or None when sorted by ``InstanceNumber``; kind ``"position"`` or ``"instance number"``.

    Raises:
        FileNotFoundError: no files, or only SEG files, in ``folder``.
        ImageReadError: as :func:`read_dicom_series`.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{folder}: holds no DICOM files.")
    opened = [(open_dicom(p), p) for p in files]
    opened = [(ds, p) for ds, p in opened if not is_segmentation(ds)]
    if not opened:
        raise FileNotFoundError(f"{folder}: holds DICOM SEG files but no image series.")
    datasets, files = [ds for ds, _ in opened], [p for _, p in opened]
    _check_one_series(datasets, files)
    order, positions, kind = _slice_order(datasets, files)
    datasets, files = [datasets[i] for i in order], [files[i] for i in order]
    sizes = [(int(ds.Rows), int(ds.Columns)) for ds in datasets]
    for ds, path, size in zip(datasets, files, sizes, strict=True):
        if size != sizes[0]:
            raise ImageReadError(
                f"{path}: is {size[0]}x{size[1]} but {files[0]} is {sizes[0][0]}x{sizes[0][1]} "
                f"(rows x columns): the slices of {folder} differ in size. Keep one series per "
                "folder and remove the odd slices (e.g. a localizer).",
                path,
            )
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise ImageReadError(
                f"{path}: is a multi-frame file inside the series folder {folder}. Read it on "
                "its own with read_dicom, or move it out.",
                path,
            )
    return datasets, files, positions, kind


def series_affine(info: DicomInfo) -> np.ndarray:
    """The 4 x 4 voxel-to-world (RAS+, mm) affine of a series read as NIfTI orders its voxels.

    The NIfTI array of a series is ``columns x rows x slices`` (as ``load_volume`` of the
    module ``medvision.data.nifti`` reads a series folder): voxel ``(i, j, k)`` lies at
    ``P_0 + i * dc * X + j * dr * Y + k * S`` in DICOM's patient
    coordinates (LPS), with ``X``, ``Y`` the row and column directions of
    ``ImageOrientationPatient``, ``(dr, dc)`` the ``PixelSpacing``, ``P_0`` the first slice's
    ``ImagePositionPatient`` and ``S`` the step between slice positions; LPS becomes RAS by
    negating x and y, as dcm2niix writes it. Without positions (slices ordered by instance
    number) the axes are taken as the identity, at the spacings known (1 mm otherwise).

    Args:
        info: What :func:`read_dicom_series` tells of the series (its ``DicomInfo``).

    Returns:
        float64 ``4 x 4``.
    """
    row_spacing, column_spacing = info.pixel_spacing or (1.0, 1.0)
    orientation = np.array(info.orientation or (1, 0, 0, 0, 1, 0), dtype=np.float64)
    along_row, along_column = orientation[:3], orientation[3:]
    normal = np.cross(along_row, along_column)
    positions = info.positions
    if positions is not None and len(positions) > 1:
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
    else:
        step = normal * (info.slice_spacing or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = along_row * column_spacing
    lps[:3, 1] = along_column * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = positions[0] if positions is not None else 0.0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def is_segmentation(ds) -> bool:
    """Whether a dataset is a DICOM Segmentation (``Modality`` SEG), not an image slice.

    Args:
        ds: A pydicom ``Dataset`` (its header).
    """
    return str(ds.get("Modality", "")).upper() == "SEG" or str(ds.get("SOPClassUID", "")) in (
        SEGMENTATION_SOP_CLASSES
    )


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is named ``*.dcm`` or starts with DICOM's ``DICM`` preamble.

    Args:
        path: A file.
    """
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as file:
            return file.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _check_one_series(datasets: list, files: list[Path]) -> None:
    """Refuse a folder mixing series (different ``SeriesInstanceUID``), naming two files."""
    first = datasets[0].get("SeriesInstanceUID")
    for ds, path in zip(datasets, files, strict=True):
        if ds.get("SeriesInstanceUID") != first:
            raise ImageReadError(
                f"{path}: belongs to series {ds.get('SeriesInstanceUID')}, but {files[0]} to "
                f"series {first}. Put each series in its own folder.",
                path,
            )


def _slice_order(datasets: list, files: list[Path]) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(order, positions in that order or None, "position" | "instance number")``."""
    if all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for ds in datasets):
        orientation = np.array(datasets[0].ImageOrientationPatient, dtype=np.float64)
        for ds, path in zip(datasets, files, strict=True):
            if not np.allclose(ds.ImageOrientationPatient, orientation, atol=1e-4):
                raise ImageReadError(
                    f"{path}: is oriented {list(ds.ImageOrientationPatient)}, but {files[0]} "
                    f"{orientation.tolist()}: not one stack of parallel slices. Move the odd "
                    "slices (e.g. a localizer) out of the folder.",
                    path,
                )
        normal = np.cross(orientation[:3], orientation[3:])
        positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=np.float64)
        order = np.argsort(positions @ normal, kind="stable")
        _refuse_duplicates((positions @ normal)[order], [files[i] for i in order], "position")
        return order, positions[order], "position"
    if all("InstanceNumber" in ds for ds in datasets):
        numbers = np.array([int(ds.InstanceNumber) for ds in datasets])
        order = np.argsort(numbers, kind="stable")
        _refuse_duplicates(numbers[order], [files[i] for i in order], "InstanceNumber")
        return order, None, "instance number"
    lacking = next(
        p
        for ds, p in zip(datasets, files, strict=True)
        if "InstanceNumber" not in ds and "ImagePositionPatient" not in ds
    )
    raise ImageReadError(
        f"{lacking}: has neither ImagePositionPatient/ImageOrientationPatient nor "
        "InstanceNumber, so the slices of its folder cannot be ordered. Re-export the series "
        "with its position tags.",
        lacking,
    )


def _refuse_duplicates(keys: np.ndarray, files: list[Path], what: str) -> None:
    same = np.flatnonzero(np.isclose(np.diff(keys), 0.0, atol=1e-4))
    if len(same):
        first, second = files[same[0]], files[same[0] + 1]
        raise ImageReadError(
            f"{second}: has the same {what} as {first}. A folder must hold one series of "
            "distinct slices (not several echoes, phases or repeats): split them up.",
            second,
        )


def _series_spacing(first, positions: np.ndarray | None, folder: Path) -> float | None:
    """Median distance between slice positions; or the first file's spacing tags."""
    if positions is not None and len(positions) > 1:
        gaps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        spacing = float(np.median(gaps))
        if not np.allclose(gaps, spacing, rtol=0.01, atol=1e-3):
            log.warning(
                "%s: slice gaps vary from %.3g to %.3g mm (missing slices?); spacing %.3g mm "
                "is their median.",
                folder,
                gaps.min(),
                gaps.max(),
                spacing,
            )
        return spacing
    value = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
    return None if value is None else float(value)


__all__ = [
    "SEGMENTATION_SOP_CLASSES",
    "is_dicom_file",
    "is_segmentation",
    "open_series",
    "read_dicom_series",
    "series_affine",
]
