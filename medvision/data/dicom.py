"""DICOM files as numpy arrays, read with pydicom; errors name the file and the fix.

A series (a folder of slices) is read by :func:`medvision.data.dicom_series.read_dicom_series`.

What happens to the stored pixels, in the DICOM order (PS3.4 N.2.1):

1. Modality LUT: ``RescaleSlope``/``RescaleIntercept`` (or a Modality LUT Sequence) by
   :func:`pydicom.pixels.apply_modality_lut`. CT values come out in Hounsfield units.
2. VOI window, only when asked for (``window``): ``(level, width)`` maps ``level - width/2`` to
   0 and ``level + width/2`` to 1, linearly in between and clipped (DICOM ``LINEAR_EXACT``);
   ``"file"`` uses the file's own VOI LUT or first ``WindowCenter``/``WindowWidth`` through
   :func:`pydicom.pixels.apply_voi_lut`, scaled from its output range to [0, 1].
3. Polarity: ``MONOCHROME1`` (high = dark) is turned into ``MONOCHROME2`` (high = bright).
   Without a window each value ``v`` becomes ``lo + hi - v``, where ``lo`` and ``hi`` are the
   rescaled values of the smallest and largest pixel the stored bits can hold (e.g. 0 and 4095
   for 12-bit unsigned at slope 1, intercept 0): the range stays the same, mirrored. With a
   window the [0, 1] result ``y`` becomes ``1 - y``.

Colour images (RGB, YBR, palette) are returned as ``H x W x 3`` without steps 1-3. pydicom is an
optional dependency: ``pip install "medvision-lightning[dicom]"`` (pydicom, pylibjpeg,
pylibjpeg-libjpeg; the last two decode JPEG-compressed pixel data).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medvision.data.errors import ImageReadError

DICOM_EXTRA = 'pip install "medvision-lightning[dicom]"'
#: A window: ``(level, width)`` in the rescaled unit (HU for CT), ``"file"`` or ``None`` (none).
Window = tuple[float, float] | Literal["file"] | None

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class DicomInfo:
    """What :func:`read_dicom` (and ``read_dicom_series``) tell besides the pixels.

    Attributes:
        path: the file, or the series folder.
        files: the files in the order of the returned slices (one for a single file).
        shape: the returned array's shape.
        frames: frames in the file (``NumberOfFrames``), or slices in the series.
        pixel_spacing: ``(row spacing, column spacing)`` in mm (``PixelSpacing``), or None.
        slice_spacing: mm between slice centres (from the positions for a series, else
            ``SpacingBetweenSlices`` or ``SliceThickness``), or None for a single slice.
        photometric: ``PhotometricInterpretation`` as stored (``MONOCHROME1`` is inverted).
        modality: ``Modality`` (``CT``, ``DX``, ...), ``""`` when absent.
        rescale: ``(slope, intercept)`` applied, or None (none stored).
        window: the window applied, as given (``(level, width)`` or ``"file"``), or None.
        slice_order: how a series was sorted: ``"position"`` (along the slice normal),
            ``"instance number"``, or ``None`` for a single file.
        positions: ``ImagePositionPatient`` of each returned slice (``N x 3``, mm), or None.
        orientation: ``ImageOrientationPatient`` (row and column direction cosines), or None.
    """

    path: str
    files: tuple[str, ...]
    shape: tuple[int, ...]
    frames: int
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None
    photometric: str
    modality: str
    rescale: tuple[float, float] | None
    window: tuple[float, float] | str | None
    slice_order: str | None = None
    positions: np.ndarray | None = None
    orientation: tuple[float, ...] | None = None


def require_pydicom():
    """The ``pydicom`` module; an ImportError naming the extra to install when it is missing."""
    try:
        import pydicom
    except ImportError as exc:
        raise ImportError(f"Reading DICOM needs pydicom: {DICOM_EXTRA}") from exc
    return pydicom


def read_dicom(path: str | Path, window: Window = None) -> tuple[np.ndarray, DicomInfo]:
    """Decode one DICOM file: a single frame (``H x W``) or a multi-frame one (``F x H x W``).

    Args:
        path: the ``.dcm`` file (any name; DICOM is recognised by its content).
        window: ``None`` for rescaled values (HU for CT), ``(level, width)`` or ``"file"``
            for a windowed image in [0, 1] (see the module docstring).

    Returns:
        ``(pixels, info)``: float32 ``H x W`` or ``F x H x W`` (frames in stored order) for
        grayscale, ``[F x] H x W x 3`` as decoded for colour; ``info`` a :class:`DicomInfo`.

    Raises:
        ImageReadError: not DICOM, no pixel data, a compressed transfer syntax without an
            installed decoder, or undecodable pixels; the message names the file and the fix.
    """
    path = Path(path)
    ds = open_dicom(path)
    values = dicom_values(ds, path, window)
    spacing = _functional(ds, "PixelMeasuresSequence", "SpacingBetweenSlices")
    spacing = spacing or _functional(ds, "PixelMeasuresSequence", "SliceThickness")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    info = DicomInfo(
        path=str(path),
        files=(str(path),),
        shape=values.shape,
        frames=frames,
        slice_spacing=float(spacing) if spacing and frames > 1 else None,
        window=window,
        **header_fields(ds),
    )
    return values, info


def read_dicom_slice(path: str | Path) -> np.ndarray:
    """One 2D DICOM image for :func:`medvision.data.io.read_image`: rescaled, never windowed.

    Args:
        path: a single-frame DICOM file.

    Returns:
        float32 ``H x W`` of rescaled values (HU for CT; ``MONOCHROME1`` inverted), or
        ``H x W x 3`` for colour.

    Raises:
        ImageReadError: as :func:`read_dicom`, and for a multi-frame file.
    """
    path = Path(path)
    ds = open_dicom(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:  # refused before decoding all frames
        raise ImageReadError(
            f"{path}: is a multi-frame DICOM ({frames} frames), not a single 2D slice. "
            "Read it with medvision.data.dicom.read_dicom, or convert the volume to NIfTI "
            "(e.g. dcm2niix) and train on it with medvision.data.volumes.VolumeSliceDataModule.",
            path,
        )
    return dicom_values(ds, path, None)


#: The UIDs that place a DICOM file in its PACS: study, series, instance.
INSTANCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def instance_uids(path: str | Path) -> dict[str, str]:
    """The Study, Series and SOP Instance UIDs of a DICOM file (header only, pixels not read).

    Args:
        path: The file.

    Returns:
        ``{"StudyInstanceUID": ..., "SeriesInstanceUID": ..., "SOPInstanceUID": ...}``; ``""``
        for a UID the file lacks.

    Raises:
        ImageReadError: not a readable DICOM file, naming it.
    """
    pydicom = require_pydicom()
    try:
        with _pydicom_silenced():
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(INSTANCE_UIDS))
    except Exception as exc:
        raise ImageReadError(
            f"{path}: is not a readable DICOM file ({type(exc).__name__}: {exc}).", path
        ) from exc
    return {key: str(ds.get(key, "")) for key in INSTANCE_UIDS}


# --- one file ---------------------------------------------------------------------------------


def open_dicom(path: str | Path):
    """Parse a DICOM file (pixels not yet decoded) and check that it holds pixel data.

    Args:
        path: the file.

    Returns:
        The ``pydicom.Dataset``.

    Raises:
        ImageReadError: empty, missing, not DICOM, or without pixel data; names the file.
    """
    path = Path(path)
    pydicom = require_pydicom()
    if path.is_file() and path.stat().st_size == 0:
        raise ImageReadError(f"{path}: is empty (0 bytes). Re-copy the file or remove it.", path)
    try:
        with _pydicom_silenced():
            ds = pydicom.dcmread(path)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found.", path) from None
    except Exception as exc:  # InvalidDicomError, truncated files, ...
        raise ImageReadError(
            f"{path}: is not a readable DICOM file ({type(exc).__name__}: {exc}). Re-export it "
            "or remove it from the folder.",
            path,
        ) from exc
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        kind = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
        raise ImageReadError(
            f"{path}: is a DICOM file without pixel data ({kind}), e.g. a report, a DICOMDIR "
            "or a presentation state. Remove it from the image folder.",
            path,
        )
    return ds


def _pixels(ds, path: Path) -> np.ndarray:
    """``ds.pixel_array``, after checking that a decoder for its transfer syntax is installed."""
    from pydicom.pixels import get_decoder

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise ImageReadError(
                f"{path}: its pixel data is compressed as {syntax.name}, which pydicom cannot "
                "decode. Convert the file to an uncompressed transfer syntax (e.g. "
                "gdcmconv --raw, or dcmdjpeg) first.",
                path,
            ) from None
        if not decoder.is_available:
            raise ImageReadError(
                f"{path}: its pixel data is compressed as {syntax.name} and no decoder for it "
                f"is installed. Install one: {DICOM_EXTRA} (JPEG), or one of: "
                f"{'; '.join(decoder.missing_dependencies)}.",
                path,
            )
    try:
        with _pydicom_silenced():
            return ds.pixel_array
    except Exception as exc:  # decoders raise many types; the file is the useful part
        detail = " ".join(str(exc).split())  # pydicom lists each plugin's error on its own line
        raise ImageReadError(
            f"{path}: its pixel data cannot be decoded ({type(exc).__name__}: {detail}). The "
            "file is damaged or truncated: re-export it or remove it.",
            path,
        ) from exc


@contextlib.contextmanager
def _pydicom_silenced():
    """pydicom's own log records off while pixels are decoded: a failing decoder logs its
    traceback without the file's name, and the error raised here names it in one line."""
    logger = logging.getLogger("pydicom")  # its modules' loggers inherit this level
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def dicom_values(ds, path: str | Path, window: Window = None) -> np.ndarray:
    """Decode the pixels of an opened file (:func:`open_dicom`) and apply steps 1-3.

    Args:
        ds: the dataset.
        path: its file, for error messages.
        window: as in :func:`read_dicom`.

    Returns:
        float32 values (``[F x] H x W``), or the decoded ``[F x] H x W x 3`` for colour.
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    path = Path(path)
    pixels = _pixels(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in _MONOCHROME:
        if window is not None:
            raise ImageReadError(
                f"{path}: is a colour image ({photometric}); a window applies to grayscale "
                "only. Read it with window=None.",
                path,
            )
        return apply_color_lut(pixels, ds) if photometric == "PALETTE COLOR" else pixels
    view = _lut_view(ds, path)
    values = apply_modality_lut(pixels, view).astype(np.float64)
    if window is None:
        if photometric == "MONOCHROME1":
            lo, hi = apply_modality_lut(_storable_range(view), view).astype(np.float64)
            values = lo + hi - values
        return values.astype(np.float32)
    scaled = _windowed(values, view, window, path)
    return (1.0 - scaled if photometric == "MONOCHROME1" else scaled).astype(np.float32)


def _windowed(values: np.ndarray, view, window: Window, path: Path) -> np.ndarray:
    """``values`` through the window, scaled from the window's output range to [0, 1]."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_voi_lut

    if window == "file":
        has_window = "WindowCenter" in view and "WindowWidth" in view
        if "VOILUTSequence" not in view and not has_window:
            raise ImageReadError(
                f"{path}: has no VOI window of its own (WindowCenter/WindowWidth or a VOI LUT "
                "Sequence). Give one as window=(level, width), or read without a window.",
                path,
            )
        voi = view
    else:
        level, width = (float(v) for v in window)
        if width <= 0:
            raise ValueError(f"window width must be positive, got {width} (level {level})")
        voi = Dataset()
        voi.PhotometricInterpretation = "MONOCHROME2"
        voi.BitsStored, voi.PixelRepresentation = 16, 1
        voi.WindowCenter, voi.WindowWidth = level, width
        voi.VOILUTFunction = "LINEAR_EXACT"
    # the ends of the output range: what far-below and far-above inputs map to
    probes = _storable_range(view) if "VOILUTSequence" in voi else np.array([-1e12, 1e12])
    with np.errstate(over="ignore"):  # a sigmoid window overflows at the probes
        low, high = apply_voi_lut(probes, voi).astype(np.float64)
        out = apply_voi_lut(values, voi).astype(np.float64)
    if high == low:
        raise ImageReadError(f"{path}: its VOI window maps every value to {low}.", path)
    return np.clip((out - low) / (high - low), 0.0, 1.0)


def _lut_view(ds, path: Path):
    """A small dataset with the LUT attributes of ``ds``, taken from its functional groups
    (enhanced multi-frame files) when they are not at the top level."""
    from pydicom.dataset import Dataset

    view = Dataset()
    view.PhotometricInterpretation = ds.PhotometricInterpretation
    view.BitsStored = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    view.PixelRepresentation = int(ds.get("PixelRepresentation", 0))
    for keyword in ("ModalityLUTSequence", "VOILUTSequence", "VOILUTFunction"):
        if keyword in ds:
            setattr(view, keyword, ds[keyword].value)
    for group, keyword in (
        ("PixelValueTransformationSequence", "RescaleSlope"),
        ("PixelValueTransformationSequence", "RescaleIntercept"),
        ("FrameVOILUTSequence", "WindowCenter"),
        ("FrameVOILUTSequence", "WindowWidth"),
    ):
        value = _functional(ds, group, keyword, path)
        if value is not None:
            setattr(view, keyword, value)
    return view


def _functional(ds, group: str, keyword: str, path: Path | None = None):
    """``keyword`` at the top level, else in the shared or (all equal) per-frame functional
    group ``group`` of an enhanced multi-frame file; None when absent."""
    if keyword in ds:
        return ds[keyword].value
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        found = [
            item[group][0][keyword].value
            for item in ds.get(sequence) or []
            if group in item and item[group].value and keyword in item[group][0]
        ]
        if found and any(str(v) != str(found[0]) for v in found):
            raise ImageReadError(
                f"{path}: {keyword} differs between frames ({found[0]} and a different value); "
                "frames with their own values are not supported. Split the file into "
                "single-frame files.",
                path,
            )
        if found:
            return found[0]
    return None


def _storable_range(view) -> np.ndarray:
    """The smallest and largest stored pixel value the bits allow, as ``[lo, hi]``."""
    bits = int(view.BitsStored)
    if int(view.PixelRepresentation) == 0:
        return np.array([0, 2**bits - 1], dtype=np.int64)
    return np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.int64)


def header_fields(ds) -> dict:
    """:class:`DicomInfo` fields read from the header.

    Args:
        ds: A pydicom ``Dataset`` (its header; no pixels are decoded).

    Returns:
        ``pixel_spacing``, ``photometric``, ``modality``, ``rescale`` and ``orientation``.
    """
    return {
        "pixel_spacing": _pixel_spacing(ds),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "modality": str(ds.get("Modality", "")),
        "rescale": _rescale(ds),
        "orientation": _orientation(ds),
    }


def _rescale(ds) -> tuple[float, float] | None:
    slope = _functional(ds, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _functional(ds, "PixelValueTransformationSequence", "RescaleIntercept")
    return None if slope is None or intercept is None else (float(slope), float(intercept))


def _pixel_spacing(ds) -> tuple[float, float] | None:
    spacing = _functional(ds, "PixelMeasuresSequence", "PixelSpacing")
    return None if not spacing else (float(spacing[0]), float(spacing[1]))


def _orientation(ds) -> tuple[float, ...] | None:
    value = _functional(ds, "PlaneOrientationSequence", "ImageOrientationPatient")
    return None if not value else tuple(float(v) for v in value)


__all__ = [
    "DICOM_EXTRA",
    "DicomInfo",
    "INSTANCE_UIDS",
    "Window",
    "dicom_values",
    "header_fields",
    "instance_uids",
    "open_dicom",
    "read_dicom",
    "read_dicom_slice",
    "require_pydicom",
]
