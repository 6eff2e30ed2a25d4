"""Synthetic DICOM cases: a CT series and its SEG per case folder, with NIfTI twins if asked.

The CT phantoms are :func:`~medvision.data.synthetic_volumes.ct_phantom_hu`'s, the SEG is
written by highdicom (:func:`~medvision.data.dicom_seg_build.build_seg`, ``MANUAL`` segments, as an
annotator's export), so tests and ``configs/quickstart_dicom_seg.yaml`` run the real readers.
The NIfTI twins hold the same voxels on the same grid (the affine dcm2niix would give the
series), for comparing the two paths. Not real data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medvision.data.dicom import require_pydicom
from medvision.data.dicom_cases import DicomSegDataModule
from medvision.data.dicom_seg_build import SegmentSpec, build_seg
from medvision.data.nifti import require_nibabel
from medvision.data.synthetic_volumes import ct_phantom_hu
from medvision.data.visualize import class_color

log = logging.getLogger(__name__)

_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Where voxel (0, 0, 0) lies, RAS mm (write_nifti_volumes' origin): LPS (-12, -15, -40).
_ORIGIN_LPS = (-12.0, -15.0, -40.0)


def case_labels(blob: np.ndarray, num_classes: int) -> np.ndarray:
    """The phantom's foreground as labels: 0/1, or split into ``num_classes - 1`` bands along
    the first axis (label 1 lowest), for label maps.

    Args:
        blob: uint8 0/1 ``x x y x z`` (:func:`~medvision.data.synthetic_volumes.ct_phantom_hu`).
        num_classes: 1 (binary) or the number of classes, background included.
    """
    if num_classes == 1:
        return blob.astype(np.uint8)
    bands = np.minimum(
        np.arange(blob.shape[0]) * (num_classes - 1) // blob.shape[0] + 1, num_classes - 1
    )
    return (blob * bands[:, None, None]).astype(np.uint8)


def write_dicom_seg_cases(
    root: str | Path,
    num_cases: int = 4,
    shape: tuple[int, int, int] = (32, 32, 6),
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5),
    class_names: Sequence[str] = ("lung",),
    cases_per_patient: int = 1,
    seed: int = 0,
    nifti_dir: str | Path | None = None,
) -> list[Path]:
    """Write ``root/case_<i>/``: a CT series (one file per slice) and its SEG.

    Case ``i`` is :func:`~medvision.data.synthetic_volumes.ct_phantom_hu` of ``shape`` drawn
    with ``(seed, i)``, the volume :func:`~medvision.data.synthetic_volumes.write_nifti_volumes`
    writes for the same seed and index, laid out as axial DICOM slices: slice ``k`` is the
    phantom's ``[:, :, k]`` transposed (rows along its second axis), 12-bit with intercept
    -1024, ``PixelSpacing`` ``(spacing[1], spacing[0])``. Files are named in a seeded shuffled
    order without extension (``IM0003``) and numbered from the top slice down, so neither
    names nor numbers follow the positions; the SEG (``seg.dcm``) segments the labels of
    :func:`case_labels`, one segment per class (labels ``class_names``, or its one name).

    Args:
        root: The dataset folder (made if missing).
        num_cases: How many case folders.
        shape: ``(x, y, z)``: columns, rows and slices of every series.
        spacing: Voxel size in mm along ``x``, ``y``, ``z``.
        class_names: One name (binary), or background first and one name per segment.
        cases_per_patient: Consecutive cases share a ``PatientID`` (each its own study).
        seed: Seed of the phantoms, file names and UIDs.
        nifti_dir: Also write the same volumes and labels as NIfTI twins,
            ``nifti_dir/images/case_<i>.nii.gz`` and ``nifti_dir/masks/case_<i>.nii.gz``.

    Returns:
        The case folders.
    """
    require_pydicom()
    from pydicom.uid import generate_uid

    root = Path(root)
    names = list(class_names)
    segments = names if len(names) == 1 else names[1:]
    specs = [
        SegmentSpec(name, color=tuple(int(v) for v in class_color(i)))
        for i, name in enumerate(segments, start=1)
    ]
    cases = []
    for index in range(num_cases):
        hu, blob = ct_phantom_hu(shape, np.random.default_rng([seed, index]))
        labels = case_labels(blob, len(names))
        folder = root / f"case_{index:03d}"
        patient = f"SYNTH{index // cases_per_patient:03d}"
        uids = {
            key: generate_uid(entropy_srcs=[str(seed), str(index), key])
            for key in ("study", "series", "frame")
        }
        sources = write_ct_series(folder, hu, spacing, patient, uids, seed=seed + index)
        seg = build_seg(sources, labels.transpose(2, 1, 0), specs, series_description="Labels")
        seg.save_as(folder / "seg.dcm", enforce_file_format=True)
        if nifti_dir is not None:
            _write_twins(Path(nifti_dir), folder.name, hu, labels, spacing)
        cases.append(folder)
    log.info("Wrote %d synthetic DICOM cases (series + SEG) %s to %s", num_cases, shape, root)
    return cases


def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    patient_id: str,
    uids: dict[str, str],
    seed: int = 0,
) -> list:
    """Write a CT volume ``x x y x z`` (HU) as axial single-frame CT Image files.

    Args:
        folder: Made if missing.
        hu: The volume; slice ``k`` is ``hu[:, :, k].T`` (rows x columns).
        spacing: mm along ``x``, ``y``, ``z``.
        patient_id: ``PatientID``.
        uids: ``study``, ``series`` and ``frame`` (of reference) UIDs.
        seed: Seed of the file names and SOP Instance UIDs.

    Returns:
        The written datasets in slice order (bottom first).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    count = hu.shape[2]
    names = np.random.default_rng([seed, 1]).permutation(count)
    written = []
    for k in range(count):
        uid = generate_uid(entropy_srcs=[uids["series"], str(k)])
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
            _CT_IMAGE,
            uid,
        )
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = _CT_IMAGE, uid
        ds.PatientName, ds.PatientID = f"Synthetic^{patient_id}", patient_id
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = uids["study"], "1", ""
        ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "20240101", "120000", ""
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "CT", uids["series"], 1
        ds.SeriesDescription, ds.Manufacturer = "Synthetic CT", "medvision (synthetic)"
        ds.PatientPosition, ds.Laterality = "HFS", ""
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = uids["frame"], ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber, ds.AcquisitionNumber, ds.KVP = count - k, 1, 120
        ds.ContentDate, ds.ContentTime = "20240101", "120000"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [*_ORIGIN_LPS[:2], _ORIGIN_LPS[2] + k * spacing[2]]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        stored = np.clip(hu[:, :, k].T.astype(np.int32) + 1024, 0, 4095).astype("<u2")
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        ds.save_as(folder / f"IM{names[k]:04d}", enforce_file_format=True)
        written.append(ds)
    return written


def _write_twins(root: Path, name: str, hu, labels, spacing) -> None:
    """The case as NIfTI, on the grid dcm2niix gives its series (LPS to RAS: x, y negated)."""
    nib = require_nibabel()
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = (-_ORIGIN_LPS[0], -_ORIGIN_LPS[1], _ORIGIN_LPS[2])
    for folder, data in (("images", hu), ("masks", labels)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        image = nib.Nifti1Image(data, affine)
        image.header.set_qform(affine, code=1)
        image.header.set_sform(affine, code=1)
        nib.save(image, root / folder / f"{name}.nii.gz")


class SyntheticDicomSegDataModule(DicomSegDataModule):
    """:class:`~medvision.data.dicom_cases.DicomSegDataModule` on synthetic case folders it
    writes to ``data_dir`` if absent (:func:`write_dicom_seg_cases`; not real data).

    An existing ``data_dir`` is used as it is, never overwritten. ``class_names`` are the
    written segments' (background first for several). The other arguments are
    :class:`~medvision.data.dicom_cases.DicomSegDataModule`'s.

    Args:
        num_cases: How many case folders to write.
        volume_shape: ``(columns, rows, slices)`` of every series.
        class_names: One name (binary), or background first and one name per segment.
    """

    def __init__(
        self,
        *args,
        num_cases: int = 8,
        volume_shape: tuple[int, int, int] = (64, 64, 16),
        class_names: Sequence[str] = ("lung",),
        **kwargs,
    ) -> None:
        super().__init__(*args, class_names=class_names, **kwargs)
        self.num_cases = num_cases
        self.volume_shape = tuple(volume_shape)

    def prepare_data(self) -> None:
        if self.data_dir.is_dir():
            log.info("Using the synthetic DICOM cases already in %s", self.data_dir)
            return
        log.info("Writing %d synthetic DICOM cases to %s", self.num_cases, self.data_dir)
        write_dicom_seg_cases(
            self.data_dir,
            self.num_cases,
            self.volume_shape,
            class_names=self.class_names,
            seed=self.split.seed,
        )


__all__ = [
    "SyntheticDicomSegDataModule",
    "case_labels",
    "write_ct_series",
    "write_dicom_seg_cases",
]
