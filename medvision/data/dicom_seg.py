"""DICOM Segmentation objects (SEG) read against the slices of their series.

A SEG's frames are placed on the slices they reference: by each frame's source SOP Instance
UID (``DerivationImageSequence``), or by its ``ImagePositionPatient`` when it has no reference;
never by file or frame order (:func:`seg_labels`). Segments become classes by their labels
(:func:`segment_classes`). A case folder (one series and its SEG) is read by
:mod:`medvision.data.dicom_case`; SEGs are written by :mod:`medvision.data.dicom_seg_build`.

Every inconsistency is one :class:`~medvision.data.errors.ImageReadError` naming the file and
the fix. highdicom (and pydicom) come with the ``dicom`` extra:
``pip install "medvision-lightning[dicom]"``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medvision.data.dicom import DICOM_EXTRA, require_pydicom
from medvision.data.errors import ImageReadError

log = logging.getLogger(__name__)

Unlisted = Literal["error", "ignore"]
Overlap = Literal["error", "last"]


def require_highdicom():
    """The ``highdicom`` module; an ImportError naming the extra to install when it is missing."""
    try:
        import highdicom
    except ImportError as exc:
        raise ImportError(f"DICOM SEG needs highdicom: {DICOM_EXTRA}") from exc
    return highdicom


@contextlib.contextmanager
def highdicom_quiet() -> Iterator[None]:
    """highdicom's INFO records (one per module it copies) off while it reads or writes."""
    logger = logging.getLogger("highdicom")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class Segment:
    """One segment of a SEG.

    Args:
        number: ``SegmentNumber`` (1, 2, ...).
        label: ``SegmentLabel``, stripped.
    """

    number: int
    label: str


def read_seg(path: str | Path):
    """Open a SEG file with highdicom (pixels decoded on first use).

    Args:
        path: The SEG file.

    Returns:
        A ``highdicom.seg.Segmentation``.

    Raises:
        ImageReadError: not a readable DICOM Segmentation, naming the file.
    """
    hd = require_highdicom()
    try:
        with highdicom_quiet():
            return hd.seg.segread(path)
    except Exception as exc:  # not DICOM, not a SEG, malformed sequences
        raise ImageReadError(
            f"{path}: is not a readable DICOM Segmentation ({type(exc).__name__}: {exc}). "
            "Re-export it as DICOM SEG, or remove it.",
            path,
        ) from exc


def segments_of(seg) -> list[Segment]:
    """The segments a SEG describes (``SegmentSequence``), by number; segment 0 (the background
    a label-map SEG may describe) is not one.

    Args:
        seg: A SEG (:func:`read_seg`, or a pydicom dataset of one).
    """
    found = [
        Segment(int(item.SegmentNumber), str(item.get("SegmentLabel", "")).strip())
        for item in seg.get("SegmentSequence", [])
        if int(item.SegmentNumber) != 0
    ]
    return sorted(found, key=lambda s: s.number)


def default_class_names(seg_path: str | Path) -> list[str]:
    """The classes a SEG names: its one segment's label (binary), or background and every
    segment label in segment-number order (a label map).

    Args:
        seg_path: The SEG file (its header is read).
    """
    pydicom = require_pydicom()
    labels = [s.label for s in segments_of(pydicom.dcmread(seg_path, stop_before_pixels=True))]
    labels = list(dict.fromkeys(labels))
    if not labels:
        raise ImageReadError(f"{seg_path}: describes no segments (SegmentSequence).", seg_path)
    return labels if len(labels) == 1 else ["background", *labels]


def segment_classes(
    segments: Sequence[Segment],
    class_names: Sequence[str],
    path: str | Path,
    unlisted: Unlisted = "error",
) -> dict[int, int]:
    """Which class each segment number is: segment labels matched to ``class_names``.

    Labels match names case-insensitively. With one class name (binary) its segment is class 1;
    with two or more, ``class_names[0]`` is the background and ``class_names[i]`` class ``i``.

    Args:
        segments: The SEG's segments (:func:`segments_of`).
        class_names: The classes, background first for label maps.
        path: The SEG file, named in errors.
        unlisted: A segment whose label is not a class: ``error``, or ``ignore`` (left out,
            its pixels background).

    Returns:
        ``{segment number: class index}`` (1 for a binary model).

    Raises:
        ImageReadError: a segment not in ``class_names`` (with ``unlisted: error``).
    """
    names = list(class_names) if len(class_names) == 1 else list(class_names)[1:]
    index = {name.strip().lower(): i for i, name in enumerate(names, start=1)}
    classes = {}
    for segment in segments:
        found = index.get(segment.label.lower())
        if found is not None:
            classes[segment.number] = found
        elif unlisted == "error":
            shown = ", ".join(f"{s.number} {s.label!r}" for s in segments)
            raise ImageReadError(
                f"{path}: segment {segment.number} {segment.label!r} is not in class_names "
                f"{list(class_names)} (its segments: {shown}). Add its label to class_names "
                "(--data.init_args.class_names, background first for several classes), or set "
                "--data.init_args.unlisted_segments ignore to train without it.",
                path,
            )
    return classes


def seg_labels(
    seg,
    path: str | Path,
    study_uid: str,
    uids: Sequence[str],
    info,
    class_names: Sequence[str],
    unlisted: Unlisted = "error",
    overlap: Overlap = "error",
) -> np.ndarray:
    """A SEG's frames as uint8 class labels ``S x rows x columns`` on the series' slices.

    Args:
        seg: The SEG (:func:`read_seg`).
        path: Its file, named in errors.
        study_uid: ``StudyInstanceUID`` of the series: the SEG's must be the same.
        uids: SOP Instance UIDs of the series' slices, in slice order (``info.files``).
        info: The series' ``DicomInfo``: size, positions.
        class_names: The classes (:func:`segment_classes`).
        unlisted: What a segment outside ``class_names`` does.
        overlap: Several classes on one pixel: ``error``, or ``last`` (the class listed later
            in ``class_names`` wins). A binary model merges its one class's segments.

    Raises:
        ImageReadError: a SEG of another study, references to instances not in the series,
            frames of another size, a segment outside ``class_names``, a frame placed on no
            slice, or overlapping classes (with ``overlap: error``).
    """
    study = str(seg.get("StudyInstanceUID", ""))
    if study != study_uid:
        raise ImageReadError(
            f"{path}: is a SEG of study {study}, but the series in {info.path} belongs to "
            f"study {study_uid}. Put the SEG with the series it segments.",
            path,
        )
    slice_of = {uid: k for k, uid in enumerate(uids)}
    frames = _frame_places(seg, path)
    referenced = {uid for *_, uid in seg.get_source_image_uids()} | {
        uid for _, uid, _ in frames if uid is not None
    }
    missing = sorted(referenced - set(slice_of))
    if missing:
        raise ImageReadError(
            f"{path}: references {len(missing)} instances that are not in its series in "
            f"{info.path} (first: {missing[0]}). Slices are missing from the folder, or the "
            "SEG segments another series: copy the whole series it was drawn on.",
            path,
        )
    rows, columns = info.shape[1:]
    if (int(seg.Rows), int(seg.Columns)) != (rows, columns):
        raise ImageReadError(
            f"{path}: its frames are {seg.Rows}x{seg.Columns} but the slices of its series "
            f"({info.files[0]}) are {rows}x{columns} (rows x columns). Export the SEG on the "
            "series' own grid (not resampled).",
            path,
        )
    classes = segment_classes(segments_of(seg), class_names, path, unlisted)
    pixels = _frame_pixels(seg, path)
    labels = np.zeros((len(uids), rows, columns), np.uint8)
    for (number, uid, position), frame in zip(frames, pixels, strict=True):
        k = slice_of[uid] if uid is not None else _slice_at(position, info, path)
        for value, label in _frame_classes(frame, number, classes, path, class_names, unlisted):
            _paint(labels, k, value, label, overlap, path, info, classes)
    return labels


def _frame_places(seg, path: Path) -> list[tuple[int | None, str | None, np.ndarray | None]]:
    """Per frame: its segment number (None for a label-map SEG), the SOP Instance UID of the
    slice it references (or None) and its ``ImagePositionPatient`` (or None)."""
    shared = (seg.get("SharedFunctionalGroupsSequence") or [None])[0]
    count = int(seg.get("NumberOfFrames", 1) or 1)
    per_frame = seg.get("PerFrameFunctionalGroupsSequence") or [None] * count
    labelmap = str(seg.get("SegmentationType", "")) == "LABELMAP"
    places = []
    for item in per_frame:
        number = None if labelmap else _in_group(item, shared, "SegmentIdentificationSequence")
        number = None if number is None else int(number.ReferencedSegmentNumber)
        if number is None and not labelmap:
            raise ImageReadError(
                f"{path}: a frame names no segment (SegmentIdentificationSequence).", path
            )
        uid = None
        for derivation in (item or {}).get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                uid = uid or str(source.ReferencedSOPInstanceUID)
        plane = _in_group(item, shared, "PlanePositionSequence")
        position = None if plane is None else np.array(plane.ImagePositionPatient, float)
        if uid is None and position is None:
            raise ImageReadError(
                f"{path}: a frame neither references a source instance nor gives its position, "
                "so its slice is unknown. Re-export the SEG from the series.",
                path,
            )
        places.append((number, uid, position))
    return places


def _in_group(item, shared, keyword: str):
    for group in (item, shared):
        if group is not None and keyword in group and len(group[keyword].value):
            return group[keyword].value[0]
    return None


def _frame_pixels(seg, path: Path) -> np.ndarray:
    """The SEG's frames ``F x rows x columns``: 0/1 (binary; fractional above half its
    maximum) or segment numbers (label map)."""
    try:
        frames = np.asarray(seg.pixel_array)
    except Exception as exc:
        raise ImageReadError(
            f"{path}: its frames cannot be decoded ({type(exc).__name__}: {exc}).", path
        ) from exc
    frames = frames[None] if frames.ndim == 2 else frames
    if str(seg.get("SegmentationType", "")) == "FRACTIONAL":
        return (frames > int(seg.get("MaximumFractionalValue", 255)) / 2).astype(np.uint8)
    return frames


def _frame_classes(frame, number, classes, path, class_names, unlisted):
    """``(pixels, class)`` pairs of one frame: its segment's, or each segment number of a
    label-map frame."""
    numbers = [number] if number is not None else [int(v) for v in np.unique(frame) if v]
    for n in numbers:
        if n not in classes:
            if unlisted == "error":  # a number the SegmentSequence does not describe
                raise ImageReadError(
                    f"{path}: frames hold segment {n}, which is not in class_names "
                    f"{list(class_names)}. Describe it in the SEG, or set "
                    "--data.init_args.unlisted_segments ignore.",
                    path,
                )
            continue
        yield (frame > 0 if number is not None else frame == n), classes[n]


def _slice_at(position: np.ndarray, info, path: Path) -> int:
    normal = np.cross(*np.reshape(info.orientation, (2, 3)))
    heights = info.positions @ normal
    k = int(np.argmin(np.abs(heights - position @ normal)))
    if abs(heights[k] - position @ normal) > 0.01 * (info.slice_spacing or 1.0) + 1e-3:
        raise ImageReadError(
            f"{path}: a frame at {position.tolist()} (mm) lies on no slice of its series "
            f"{info.path}. Export the SEG on the series' own slices.",
            path,
        )
    return k


def _paint(labels, k, pixels, label, overlap, path, info, classes) -> None:
    """Write ``label`` where ``pixels`` on slice ``k``; another class there is an overlap."""
    current = labels[k]
    clash = pixels & (current != 0) & (current != label)
    if clash.any() and overlap == "error":
        other = int(current[clash][0])
        number_of = {c: n for n, c in sorted(classes.items(), reverse=True)}
        first, second = sorted((other, label))
        raise ImageReadError(
            f"{path}: segments {number_of[first]} and {number_of[second]} overlap in "
            f"{int(clash.sum())} pixels of the slice {info.files[k]}, but a label map holds one "
            "class per pixel. Choose: --data.init_args.overlap last (the class listed later in "
            "class_names wins: order them so, e.g. [background, liver, tumour]), or train "
            "one binary model per segment (class_names: [<its label>]).",
            path,
        )
    current[pixels] = np.maximum(current[pixels], label)


__all__ = [
    "Overlap",
    "Segment",
    "Unlisted",
    "default_class_names",
    "highdicom_quiet",
    "read_seg",
    "require_highdicom",
    "seg_labels",
    "segment_classes",
    "segments_of",
]
