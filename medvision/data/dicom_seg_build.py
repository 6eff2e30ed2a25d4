"""DICOM SEG objects written with highdicom: an annotation of a series, or a model's labels.

:func:`build_seg` makes a ``BINARY`` Segmentation of a label volume on its source series (the
series' patient and study, a new series, every source instance referenced); the synthetic
cases (:mod:`medvision.data.synthetic_dicom`) and ``medvision predict``
(:mod:`medvision.apply.seg_writer`) write theirs with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medvision.data.dicom_seg import highdicom_quiet, require_highdicom
from medvision.data.errors import ImageReadError

#: A coded concept: ``(scheme, code, meaning)``, e.g. ``("SCT", "39607008", "Lung")``.
Code = tuple[str, str, str]
#: The code of a segment whose class has none given: SNOMED CT "Tissue" as both category and
#: type (3D Slicer's default for a new segment).
GENERIC_CODE: Code = ("SCT", "85756007", "Tissue")


@dataclass(frozen=True)
class SegmentSpec:
    """What a written segment says of itself.

    Attributes:
        label: ``SegmentLabel`` (a class name).
        category: Segmented property category ``(scheme, code, meaning)``.
        type: Segmented property type ``(scheme, code, meaning)``.
        color: Recommended display colour, RGB 0-255.
    """

    label: str
    category: Code = GENERIC_CODE
    type: Code = GENERIC_CODE
    color: tuple[int, int, int] = (255, 0, 0)


#: Type 2 attributes of the Patient and Study modules a SEG copies from its source: a source
#: without them gets them empty (allowed for type 2) rather than failing.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def build_seg(
    sources: Sequence,
    labels: np.ndarray,
    segments: Sequence[SegmentSpec],
    algorithm: tuple[str, str] | None = None,
    series_description: str = "Segmentation",
    series_number: int = 300,
    software_version: str = "",
    parameters: Mapping[str, str] | None = None,
):
    """A BINARY DICOM SEG of ``labels`` on the series ``sources``, with highdicom.

    Args:
        sources: The series' pydicom datasets (headers), in the order of ``labels``' slices.
        labels: uint8 ``S x rows x columns``; value ``i`` is segment ``i`` (0: none).
        segments: Segment ``i + 1``'s description, one per label value 1, 2, ...
        algorithm: ``(name, version)`` of the algorithm that made them: ``AUTOMATIC``
            segments; None: ``MANUAL`` (an annotator's).
        series_description: ``SeriesDescription`` of the new series.
        series_number: ``SeriesNumber`` of the new series.
        software_version: ``SoftwareVersions`` of the writer.
        parameters: ``AlgorithmParameters`` (with ``algorithm``).

    Returns:
        The ``highdicom.seg.Segmentation`` (a pydicom dataset: ``save_as``).

    Raises:
        ImageReadError: a source without the frame of reference a SEG needs, naming its file.
    """
    hd = require_highdicom()
    from highdicom.seg import SegmentAlgorithmTypeValues as Kind
    from pydicom.sr.codedict import codes

    for ds in sources:
        if "FrameOfReferenceUID" not in ds:
            where = getattr(ds, "filename", None) or "a source slice"
            raise ImageReadError(
                f"{where}: has no FrameOfReferenceUID, which a SEG needs to lie on its series "
                "(an anonymizer may have removed it). Write NIfTI instead (--output_format "
                "nifti).",
                where,
            )
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    identification = None
    if algorithm is not None:
        identification = hd.AlgorithmIdentificationSequence(
            name=algorithm[0][:64],
            family=codes.cid7162.ArtificialIntelligence,
            version=algorithm[1][:64],
            parameters=dict(parameters or {}) or None,
        )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=spec.label[:64],
            segmented_property_category=_concept(spec.category),
            segmented_property_type=_concept(spec.type),
            algorithm_type=Kind.MANUAL if algorithm is None else Kind.AUTOMATIC,
            algorithm_identification=identification,
            display_color=hd.color.CIELabColor.from_rgb(*spec.color),
        )
        for number, spec in enumerate(segments, start=1)
    ]
    with highdicom_quiet():
        return _segmentation(
            hd,
            sources,
            labels,
            descriptions,
            algorithm,
            series_description,
            series_number,
            software_version,
        )


def _segmentation(hd, sources, labels, descriptions, algorithm, description, number, version):
    return hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=np.ascontiguousarray(labels, dtype=np.uint8),
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medvision",
        manufacturer_model_name=(algorithm[0] if algorithm else "annotation")[:64],
        software_versions=version or "unknown",
        device_serial_number="0",
        series_description=description[:64],
    )


def _concept(code: Code):
    """``(scheme, code, meaning)`` as highdicom's ``CodedConcept(value, scheme, meaning)``."""
    from highdicom.sr import CodedConcept

    scheme, value, meaning = code
    return CodedConcept(value, scheme, meaning)


__all__ = ["GENERIC_CODE", "Code", "SegmentSpec", "build_seg"]
