"""Deterministic synthetic clinical files: DICOM series, DICOM class folders, NIfTI volume pairs.

Written with pydicom and nibabel in the layouts real data comes in, so tests and quickstarts run
the real readers (:mod:`medvision.data.dicom`, :mod:`medvision.data.nifti`). Not real data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from medvision.data.chest_xray import SyntheticChestXrayDataModule
from medvision.data.dicom import require_pydicom
from medvision.data.nifti import require_nibabel
from medvision.data.synthetic import CHEST_XRAY_CLASSES, CHEST_XRAY_COUNTS, chest_xray_phantom
from medvision.data.volumes import VolumeSliceDataModule

log = logging.getLogger(__name__)

#: SOP classes of the files written here.
_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
_MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
_DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def ct_phantom_hu(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A CT-like volume in Hounsfield units and its foreground, both ``x x y x z``.

    Args:
        shape: ``(x, y, z)`` voxels.
        rng: The random generator; the blob's size and place, and the noise, vary with it.

    Returns:
        ``(hu, blob)``: int16 ``hu`` with air -1000 around an elliptic body of soft tissue
        (about 40), and a dark ellipsoid "lung" (about -800) that spans only the middle slices
        along ``z``, with integer noise; ``blob`` uint8 0/1, 1 inside that ellipsoid.
    """
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    xx, yy, zz = np.meshgrid(x, y, z, indexing="ij")
    jitter = rng.uniform(-1, 1, size=5).astype(np.float32)
    body = (xx / 0.85) ** 2 + (yy / 0.7) ** 2 <= 1.0
    centre = 0.15 * jitter[:3]
    radii = (0.35 + 0.08 * jitter[3], 0.3 + 0.08 * jitter[4], 0.45)
    blob = (
        sum(((g - c) / r) ** 2 for g, c, r in zip((xx, yy, zz), centre, radii, strict=True)) <= 1.0
    )
    hu = np.where(body, 40, -1000).astype(np.int16)
    hu[blob & body] = -800
    hu += rng.integers(-20, 21, size=shape).astype(np.int16)
    return hu, (blob & body).astype(np.uint8)


def write_dicom_series(
    folder: str | Path,
    num_slices: int = 5,
    size: tuple[int, int] = (24, 20),
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = -1024.0,
    pixel_spacing: tuple[float, float] = (0.7, 0.8),
    slice_spacing: float = 2.5,
    window: tuple[float, float] = (40.0, 400.0),
    multiframe: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Write a CT series as DICOM: one file per slice, or one multi-frame file.

    Axial slices (``ImageOrientationPatient`` 1,0,0,0,1,0) at ``z = -20 + k * slice_spacing``,
    12-bit unsigned, with ``RescaleSlope``/``RescaleIntercept``, ``PixelSpacing`` and the VOI
    ``window`` (level, width) in the header. Single-frame files are named in a seeded shuffled
    order (``IM0003.dcm`` ...) and numbered (``InstanceNumber``) from the top slice down, so
    neither names nor numbers follow the positions. The multi-frame file
    (``folder/multiframe.dcm``) holds the frames bottom to top with ``SpacingBetweenSlices``.

    Args:
        folder: created if absent.
        num_slices: slices.
        size: ``(rows, columns)``.
        photometric: ``MONOCHROME2`` or ``MONOCHROME1`` (stored as is, not inverted).
        slope: ``RescaleSlope``.
        intercept: ``RescaleIntercept``.
        pixel_spacing: ``(row, column)`` spacing in mm.
        slice_spacing: mm between slices.
        window: ``(WindowCenter, WindowWidth)``.
        multiframe: one multi-frame file instead of one file per slice.
        seed: the phantom and the file order depend only on it.

    Returns:
        The stored pixel values, uint16 ``num_slices x rows x columns``, bottom slice first:
        a reader should give ``stored * slope + intercept`` (inverted for ``MONOCHROME1``).
    """
    require_pydicom()
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hu = np.moveaxis(ct_phantom_hu((*size, num_slices), np.random.default_rng(seed))[0], 2, 0)
    stored = np.clip(np.round((hu - intercept) / slope), 0, 4095).astype(np.uint16)
    series = generate_uid(entropy_srcs=[str(seed), "series"])
    common = {
        "Modality": "CT",
        "SeriesInstanceUID": series,
        "StudyInstanceUID": generate_uid(entropy_srcs=[str(seed), "study"]),
        "PhotometricInterpretation": photometric,
        "RescaleSlope": slope,
        "RescaleIntercept": intercept,
        "PixelSpacing": list(pixel_spacing),
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "WindowCenter": window[0],
        "WindowWidth": window[1],
    }
    if multiframe:
        uid = generate_uid(entropy_srcs=[str(seed), "multiframe"])
        extra = {"NumberOfFrames": num_slices, "SpacingBetweenSlices": slice_spacing}
        _write_dicom(folder / "multiframe.dcm", stored, _MULTIFRAME_WORD_SC, uid, common, extra)
        return stored
    names = np.random.default_rng([seed, 1]).permutation(num_slices)
    for k in range(num_slices):
        uid = generate_uid(entropy_srcs=[str(seed), "slice", str(k)])
        extra = {
            "ImagePositionPatient": [-10.0, -12.0, -20.0 + k * slice_spacing],
            "InstanceNumber": num_slices - k,
            "SliceThickness": slice_spacing,
        }
        _write_dicom(folder / f"IM{names[k]:04d}.dcm", stored[k], _CT_IMAGE, uid, common, extra)
    return stored


def _write_dicom(path: Path, stored: np.ndarray, sop_class: str, uid: str, *tags: dict) -> None:
    """One uncompressed little-endian DICOM file of 12-in-16-bit unsigned pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    ds.PatientID, ds.PatientName = "SYNTHETIC", "Synthetic^Phantom"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for group in tags:
        for keyword, value in group.items():
            setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_dicom_chest_xray(
    root: str | Path, scale: float = 0.25, size: int = 48, seed: int = 0
) -> dict[str, dict[str, int]]:
    """Write synthetic chest X-rays as DICOM in the ImageFolder layout ``root/<split>/<CLASS>/``.

    Images are :func:`~medvision.data.synthetic.chest_xray_phantom` as 12-bit DX files. Every
    second file is ``MONOCHROME1`` with inverted stored values, so that it reads as the same
    picture. Image ``i`` depends only on ``(seed, split, class, i)``. Needs pydicom.

    Args:
        root: The dataset folder (made if missing).
        scale: Multiplies :data:`~medvision.data.synthetic.CHEST_XRAY_COUNTS` per split and
            class (at least one each).
        size: Smallest side in pixels; height and width are each 1.0-1.2 times it.
        seed: Seed of the images and UIDs.

    Returns:
        The counts written, ``{split: {class: count}}``.
    """
    require_pydicom()
    from pydicom.uid import generate_uid

    root = Path(root)
    written: dict[str, dict[str, int]] = {}
    for split_index, (split, counts) in enumerate(CHEST_XRAY_COUNTS.items()):
        written[split] = {}
        for class_index, finding in enumerate(CHEST_XRAY_CLASSES):
            (root / split / finding).mkdir(parents=True, exist_ok=True)
            count = max(1, round(counts[finding] * scale))
            for i in range(count):
                rng = np.random.default_rng([seed, split_index, class_index, i])
                height, width = (int(size * rng.uniform(1.0, 1.2)) for _ in range(2))
                image = chest_xray_phantom(height, width, finding, rng)
                stored = np.round(image * 4095).astype(np.uint16)
                photometric = "MONOCHROME1" if i % 2 else "MONOCHROME2"
                if i % 2:
                    stored = 4095 - stored
                uid = generate_uid(entropy_srcs=[str(seed), split, finding, str(i)])
                tags = {"Modality": "DX", "PhotometricInterpretation": photometric}
                tags["PixelSpacing"] = [0.5, 0.5]
                path = root / split / finding / f"{finding.lower()}_{i:04d}.dcm"
                _write_dicom(path, stored, _DX_FOR_PRESENTATION, uid, tags)
            written[split][finding] = count
    log.info("Wrote synthetic DICOM chest X-rays to %s: %s", root, written)
    return written


def write_nifti_volumes(
    root: str | Path,
    num_volumes: int = 4,
    shape: tuple[int, int, int] = (32, 32, 12),
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5),
    flip_xy: bool = True,
    seed: int = 0,
    image_dirname: str = "images",
    mask_dirname: str = "masks",
    image_prefix: str = "",
    mask_prefix: str = "",
) -> list[tuple[Path, Path]]:
    """Write CT-like NIfTI volumes and their masks, ``vol_<i>.nii.gz`` in two folders.

    Images are int16 HU (:func:`ct_phantom_hu`), masks uint8 0/1 with a foreground blob in the
    middle slices along the third axis only. Volume ``i`` depends only on ``(seed, i)``.
    Needs nibabel.

    Args:
        root: The dataset folder (made if missing).
        num_volumes: How many image and mask pairs to write.
        shape: ``(x, y, z)`` voxels of every volume.
        spacing: Voxel sizes in mm along ``x``, ``y``, ``z`` (the affine's diagonal).
        flip_xy: Let the affine's first two axes point left and posterior (``diag(-sx, -sy,
            sz)``, as volumes converted from DICOM's LPS often are), so reading must reorient.
        seed: Seed of the volumes.
        image_dirname: The image folder's name (``imagesTr`` as in the Decathlon, or one
            ``3d_images`` folder for both, as in the Kaggle lung set).
        mask_dirname: The mask folder's name (``labelsTr``; may equal ``image_dirname``).
        image_prefix: Prefix of the image file names (e.g. ``IMG_``).
        mask_prefix: Prefix of the mask file names (e.g. ``MASK_``).

    Returns:
        ``(image, mask)`` paths.
    """
    nib = require_nibabel()
    root = Path(root)
    (root / image_dirname).mkdir(parents=True, exist_ok=True)
    (root / mask_dirname).mkdir(parents=True, exist_ok=True)
    signs = (-1.0, -1.0, 1.0) if flip_xy else (1.0, 1.0, 1.0)
    affine = np.diag([*(s * d for s, d in zip(signs, spacing, strict=True)), 1.0])
    affine[:3, 3] = (12.0, 15.0, -40.0)
    pairs = []
    for index in range(num_volumes):
        hu, blob = ct_phantom_hu(shape, np.random.default_rng([seed, index]))
        name = f"vol_{index:03d}.nii.gz"
        pair = (
            root / image_dirname / f"{image_prefix}{name}",
            root / mask_dirname / f"{mask_prefix}{name}",
        )
        for path, data in zip(pair, (hu, blob), strict=True):
            image = nib.Nifti1Image(data, affine)
            image.header.set_xyzt_units("mm", "sec")
            image.header.set_qform(affine, code=1)
            image.header.set_sform(affine, code=1)
            nib.save(image, path)
        pairs.append(pair)
    log.info("Wrote %d synthetic NIfTI volume pairs %s to %s", num_volumes, shape, root)
    return pairs


class SyntheticVolumeSliceDataModule(VolumeSliceDataModule):
    """:class:`~medvision.data.volumes.VolumeSliceDataModule` on phantom NIfTI volumes that it
    writes to ``data_dir`` if absent (:func:`write_nifti_volumes`; not real data).

    An existing ``data_dir/<image_dirname>`` is used as it is, never overwritten. The other
    arguments are :class:`~medvision.data.volumes.VolumeSliceDataModule`'s.

    Args:
        num_volumes: How many volume and mask pairs to write.
        volume_shape: ``(x, y, z)`` voxels of every volume.
    """

    def __init__(
        self,
        *args,
        num_volumes: int = 8,
        volume_shape: tuple[int, int, int] = (64, 64, 24),
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.num_volumes = num_volumes
        self.volume_shape = tuple(volume_shape)

    def prepare_data(self) -> None:
        if (self.data_dir / self.image_dirname).is_dir():
            log.info("Using the synthetic volumes already in %s", self.data_dir)
            return
        log.info("Writing %d synthetic NIfTI volumes to %s", self.num_volumes, self.data_dir)
        write_nifti_volumes(
            self.data_dir,
            self.num_volumes,
            self.volume_shape,
            seed=self.split.seed,
            image_dirname=self.image_dirname,
            mask_dirname=self.mask_dirname,
        )


class SyntheticDicomChestXrayDataModule(SyntheticChestXrayDataModule):
    """Synthetic chest X-ray class folders written as DICOM files (not real data).

    As :class:`~medvision.data.chest_xray.SyntheticChestXrayDataModule`, with the images
    written by :func:`write_dicom_chest_xray`.

    An existing ``data_dir/train`` is used as it is, never overwritten. The other arguments
    are :class:`~medvision.data.chest_xray.ChestXrayDataModule`'s.

    Args:
        scale: Multiplies the images per split and class (``CHEST_XRAY_COUNTS``; at least 1).
        image_px: Smallest side of the written images in pixels (each side 1.0-1.2 times it).
    """

    def __init__(self, *args, scale: float = 0.5, image_px: int = 64, **kwargs) -> None:
        super().__init__(*args, scale=scale, image_px=image_px, **kwargs)

    def write_synthetic(self) -> None:
        """Write the synthetic DICOM class folders into ``data_dir``."""
        write_dicom_chest_xray(self.data_dir, self.scale, self.image_px, self.seed)


__all__ = [
    "SyntheticDicomChestXrayDataModule",
    "SyntheticVolumeSliceDataModule",
    "ct_phantom_hu",
    "write_dicom_chest_xray",
    "write_dicom_series",
    "write_nifti_volumes",
]
