"""Predicted label volumes as DICOM SEG objects beside their series, and the output formats of
``medvision predict`` (``--output_format seg,nifti``).

A SEG (:func:`write_seg`) is written with highdicom on the source series: a new series of the
source's patient and study, referencing every source instance, one ``BINARY`` frame per
slice and segment; a binary model writes one segment, a label-map model one per class
(background excepted), each labelled with its class name, ``SegmentAlgorithmType``
``AUTOMATIC`` and the algorithm named from the checkpoint's record (:class:`SegSettings`).
3D Slicer (with QuantitativeReporting), OHIF and PACS viewers show it over the series.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import medvision
from medvision.data.dicom_seg_build import GENERIC_CODE, Code, SegmentSpec, build_seg
from medvision.data.dicom_series import open_series
from medvision.data.errors import ImageReadError
from medvision.data.visualize import class_color
from medvision.models.record import Preprocessing
from medvision.utils.files import write_atomically

#: What ``--output_format`` may name: DICOM SEG, NIfTI label volumes, PNG masks.
OUTPUT_FORMATS = ("seg", "nifti", "png")
#: The formats each input kind of a model can write.
FORMATS_OF_INPUT = {"image": ("png",), "volume": ("nifti", "seg")}
#: What each format's file name ends in.
SUFFIXES = {"seg": ".seg.dcm", "nifti": ".nii.gz"}
#: The new series' number: the source's plus this.
SERIES_NUMBER_OFFSET = 1000


def parse_output_format(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``--output_format`` as a tuple of format names; None when not given.

    Args:
        value: ``"seg"``, ``"seg,nifti"``, ``"[seg, nifti]"`` or a list of names.

    Raises:
        ValueError: an unknown or empty format, naming the option and the choices.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip().strip("[]").replace(",", " ").split()
    formats = tuple(dict.fromkeys(str(v).strip().lower() for v in value))
    unknown = [f for f in formats if f not in OUTPUT_FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"--output_format {','.join(map(str, value)) or '(empty)'}: use one or more of "
            f"{', '.join(OUTPUT_FORMATS)} (e.g. --output_format seg,nifti)."
        )
    return formats


def check_output_format(formats: Sequence[str] | None, record: Preprocessing) -> None:
    """Refuse formats that the model's input kind cannot write.

    Args:
        formats: The parsed ``--output_format`` (None: each input's default).
        record: The predicting model's record (its ``input``).

    Raises:
        ValueError: naming the formats, what the model writes and the fix.
    """
    allowed = FORMATS_OF_INPUT[record.input]
    wrong = [f for f in formats or () if f not in allowed]
    if wrong:
        kind = "3D volumes" if record.input == "volume" else "2D images"
        raise ValueError(
            f"--output_format {','.join(wrong)}: this model predicts {kind}, which are written "
            f"as {' or '.join(allowed)}. "
            + (
                "A SEG or NIfTI needs a model trained on volumes (input: volume)."
                if record.input == "image"
                else "PNG masks are written by models of 2D images."
            )
        )


def default_formats(source: str | Path) -> tuple[str, ...]:
    """What a volume model writes for an input without ``--output_format``: a DICOM series
    gets a SEG and a NIfTI, a NIfTI file a NIfTI.

    Args:
        source: The input (a NIfTI file, or a DICOM series folder).
    """
    return ("nifti", "seg") if Path(source).is_dir() else ("nifti",)


@dataclass(frozen=True)
class SegSettings:
    """What a predicted SEG says of the model and its segments.

    Args:
        class_names: The model's classes (one: binary; else background first).
        algorithm_name: ``AlgorithmName`` (and the SEG's model name), e.g. ``Unet resnet18``.
        algorithm_version: ``AlgorithmVersion``: the medvision version that predicts.
        segment_codes: Per class name, its ``(category, type)`` codes, each ``(scheme, code,
            meaning)``; classes without one get the generic code (SNOMED CT "Tissue",
            :data:`~medvision.data.dicom_seg_build.GENERIC_CODE`).
        parameters: ``AlgorithmParameters`` (the checkpoint file).
    """

    class_names: tuple[str, ...]
    algorithm_name: str = "medvision model"
    algorithm_version: str = medvision.__version__
    segment_codes: Mapping[str, tuple[Code, Code]] = field(default_factory=dict)
    parameters: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(
        cls,
        record: Preprocessing,
        checkpoint: str | Path | None = None,
        segment_codes: Mapping | None = None,
    ) -> SegSettings:
        """The settings of a checkpoint's model: its classes and network, and the codes given.

        Args:
            record: The predicting model's record.
            checkpoint: Its checkpoint (its file name goes into ``AlgorithmParameters``).
            segment_codes: ``--prediction_writer.segment_codes`` (see :func:`parse_codes`).
        """
        init = record.network.get("init_args", {})
        parts = [str(init[key]) for key in ("arch", "encoder_name", "model_name") if init.get(key)]
        name = " ".join(parts) or str(record.network.get("class_path", "")).rsplit(".", 1)[-1]
        return cls(
            class_names=tuple(record.class_names),
            algorithm_name=name or "medvision model",
            segment_codes=parse_codes(segment_codes, record.class_names),
            parameters={"checkpoint": Path(checkpoint).name} if checkpoint else {},
        )

    def segments(self) -> list[SegmentSpec]:
        """One :class:`~medvision.data.dicom_seg_build.SegmentSpec` per label value 1, 2, ...: the
        class names (background excepted), their codes and palette colours."""
        names = self.class_names if len(self.class_names) == 1 else self.class_names[1:]
        return [
            SegmentSpec(
                name,
                *self.segment_codes.get(name, (GENERIC_CODE, GENERIC_CODE)),
                color=tuple(int(v) for v in class_color(number)),
            )
            for number, name in enumerate(names, start=1)
        ]


def parse_codes(codes: Mapping | None, class_names: Sequence[str]) -> dict[str, tuple[Code, Code]]:
    """``segment_codes`` checked: ``{class: {"category": [scheme, code, meaning], "type": [...]}}``.

    A class without ``category`` (or ``type``) gets the generic code for it.

    Args:
        codes: As given (YAML or JSON), or None.
        class_names: The model's classes (one, or background first).

    Raises:
        ValueError: a class the model has no segment for, or a code that is not three
            non-empty strings; naming the option and the fix.
    """
    segments = list(class_names) if len(class_names) == 1 else list(class_names)[1:]
    parsed = {}
    for name, entry in (codes or {}).items():
        if name not in segments:
            raise ValueError(
                f"--prediction_writer.segment_codes names {name!r}, which is not a segment of "
                f"this model (its segments: {segments})."
            )
        unknown = set(entry) - {"category", "type"}
        if unknown:
            raise ValueError(
                f"--prediction_writer.segment_codes {name}: unknown keys {sorted(unknown)}; give "
                "category and type, each [scheme, code, meaning]."
            )
        parsed[name] = tuple(_code(entry.get(key), name, key) for key in ("category", "type"))
    return parsed


def _code(value, name: str, key: str) -> Code:
    if value is None:
        return GENERIC_CODE
    parts = [str(v).strip() for v in value] if not isinstance(value, str) else []
    if len(parts) != 3 or not all(parts):
        raise ValueError(
            f"--prediction_writer.segment_codes {name}.{key} {value!r}: give [scheme, code, "
            'meaning], e.g. [SCT, "39607008", Lung].'
        )
    return tuple(parts)


def write_seg(path: str | Path, labels, series: str | Path, settings: SegSettings) -> None:
    """Write a series' predicted labels as a DICOM SEG, atomically.

    Args:
        path: The ``.dcm`` file to write.
        labels: The labels on the series' grid as NIfTI holds them: an array (or a nibabel
            image, :func:`medvision.data.nifti.label_image`) ``columns x rows x slices`` in
            slice position order; uint8 0/1, or class indices.
        series: The source series folder.
        settings: The model's :class:`SegSettings`.

    Raises:
        ValueError: labels that do not fit the series, or a series a SEG cannot be derived
            from (no ``FrameOfReferenceUID``, no positions), naming the file.
        ImportError: highdicom is not installed (naming the extra).
    """
    sources, files, _, _ = open_series(series)
    data = np.asarray(getattr(labels, "dataobj", labels)).transpose(2, 1, 0)
    if data.shape != (len(files), int(sources[0].Rows), int(sources[0].Columns)):
        raise ValueError(
            f"{series}: labels of shape {data.shape} (slices x rows x columns) do not fit its "
            f"{len(files)} slices of {sources[0].Rows}x{sources[0].Columns}."
        )
    number = int(sources[0].get("SeriesNumber") or 0) % 2**30 + SERIES_NUMBER_OFFSET
    try:
        seg = build_seg(
            sources,
            data,
            settings.segments(),
            algorithm=(settings.algorithm_name, settings.algorithm_version),
            series_description=f"medvision {settings.algorithm_name}",
            series_number=number,
            software_version=medvision.__version__,
            parameters=settings.parameters,
        )
    except (ImageReadError, ImportError):
        raise
    except Exception as exc:  # highdicom on a series it cannot derive from
        raise ValueError(
            f"{series}: highdicom cannot derive a SEG from this series "
            f"({type(exc).__name__}: {exc}). Write NIfTI instead (--output_format nifti)."
        ) from exc
    write_atomically(path, lambda tmp: seg.save_as(tmp, enforce_file_format=True))


__all__ = [
    "FORMATS_OF_INPUT",
    "OUTPUT_FORMATS",
    "SUFFIXES",
    "SegSettings",
    "check_output_format",
    "default_formats",
    "parse_codes",
    "parse_output_format",
    "write_seg",
]
