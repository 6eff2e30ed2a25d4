"""NIfTI volumes in and label volumes out, with nibabel; errors name the file and the fix.

Volumes are read in nibabel's closest canonical orientation (RAS+: array axis 0 runs to the
patient's Right, 1 to Anterior, 2 to Superior; see :func:`nibabel.as_closest_canonical`), so
an image and its mask, or volumes stored with flipped or permuted axes, agree voxel for voxel.
Predictions are written back in the INPUT file's own layout, affine and shape (the canonical
reorientation undone with :func:`nibabel.orientations.apply_orientation`), so they overlay on
the input in ITK-SNAP or 3D Slicer. nibabel is an optional dependency:
``pip install "medvision-lightning[nifti]"``.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvision.data.dicom import DicomInfo
from medvision.data.dicom_series import read_dicom_series, series_affine
from medvision.data.errors import ImageReadError
from medvision.utils.files import write_atomically

NIFTI_EXTRA = 'pip install "medvision-lightning[nifti]"'
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class VolumeInfo:
    """Where a volume's voxels sit, before and after the canonical reorientation.

    Attributes:
        path: the file.
        shape: shape of the canonical (RAS+) array, ``(x, y, z)``.
        affine: 4 x 4 voxel-to-world (mm) matrix of the canonical array.
        spacing: voxel size in mm along the canonical axes.
        original_shape: shape as stored in the file.
        original_affine: the file's own 4 x 4 affine.
    """

    path: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    original_shape: tuple[int, int, int]
    original_affine: np.ndarray


def require_nibabel():
    """The ``nibabel`` module; an ImportError naming the extra to install when it is missing."""
    try:
        import nibabel
    except ImportError as exc:
        raise ImportError(f"Reading NIfTI needs nibabel: {NIFTI_EXTRA}") from exc
    return nibabel


def is_nifti(path: str | Path) -> bool:
    """Whether the file name ends in ``.nii`` or ``.nii.gz`` (any case).

    Args:
        path: A file path; only its name is looked at.
    """
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | Path) -> str:
    """The file name without ``.nii`` or ``.nii.gz``: ``case_01.nii.gz`` -> ``case_01``.

    Args:
        path: A file path; a name without a NIfTI suffix loses its last suffix.
    """
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def canonical_shape(path: str | Path) -> tuple[int, int, int]:
    """The canonical (RAS+) shape of a 3D NIfTI volume, from its header alone (no voxels read).

    Args:
        path: The ``.nii``/``.nii.gz`` file.

    Raises:
        ImageReadError: as :func:`load_volume`, for a file that is not a 3D NIfTI volume.
    """
    require_nibabel()
    from nibabel.orientations import io_orientation

    image = _open(Path(path))
    shape = [0, 0, 0]
    for axis, (target, _) in enumerate(io_orientation(image.affine)):
        shape[int(target)] = int(image.shape[axis])
    return tuple(shape)


def load_volume(path: str | Path) -> tuple[np.ndarray, VolumeInfo]:
    """Read a 3D ``.nii``/``.nii.gz`` volume in the closest canonical (RAS+) orientation.

    Args:
        path: the NIfTI file, or a folder holding one DICOM series (:func:`series_image`).

    Returns:
        ``(volume, info)``: the ``x x y x z`` array in its stored dtype (float when the header
        scales it, ``scl_slope``), and a :class:`VolumeInfo`.

    Raises:
        ImageReadError: not a NIfTI file, unreadable or truncated voxels, or not 3D (a 4D time
            series or multi-channel volume is refused); the message names the file and the fix.
    """
    path = Path(path)
    return canonical_volume(_open(path), path)


def canonical_volume(image, path: str | Path) -> tuple[np.ndarray, VolumeInfo]:
    """A 3D nibabel image (a file's, or one made in memory) in the closest canonical (RAS+)
    orientation, as :func:`load_volume` gives it.

    Args:
        image: The nibabel image.
        path: Its file (or series folder), recorded and named in errors.

    Returns:
        ``(volume, info)`` as :func:`load_volume`.
    """
    nib = require_nibabel()
    try:
        canonical = nib.as_closest_canonical(image)
        volume = np.asanyarray(canonical.dataobj)
    except Exception as exc:  # gzip, zlib and EOF errors of damaged files
        raise ImageReadError(
            f"{path}: its voxels cannot be read ({type(exc).__name__}: {exc}). The file is "
            "damaged or truncated: re-export it or remove it.",
            path,
        ) from exc
    info = VolumeInfo(
        path=str(path),
        shape=tuple(int(n) for n in canonical.shape),
        affine=np.asarray(canonical.affine, dtype=np.float64),
        spacing=tuple(float(z) for z in canonical.header.get_zooms()[:3]),
        original_shape=tuple(int(n) for n in image.shape),
        original_affine=np.asarray(image.affine, dtype=np.float64),
    )
    return volume, info


def _open(path: Path):
    """``nibabel.load`` (header only, voxels stay on disk), checked to be a 3D volume; a
    folder is read as a DICOM series (:func:`series_image`)."""
    nib = require_nibabel()
    if path.is_dir():
        return series_image(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ImageReadError(f"{path}: is empty (0 bytes). Re-copy the file or remove it.", path)
    try:
        image = nib.load(path)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found.", path) from None
    except Exception as exc:  # ImageFileError, gzip errors, bad headers
        raise ImageReadError(
            f"{path}: is not a readable NIfTI volume ({type(exc).__name__}: {exc}). Re-export "
            "it as .nii or .nii.gz, or remove it.",
            path,
        ) from exc
    if len(image.shape) == 4:
        raise ImageReadError(
            f"{path}: is 4D (shape {tuple(image.shape)}): a time series or several channels, "
            "not one 3D volume. Split it into 3D files (nibabel.funcs.four_to_three) and keep "
            "the one to segment.",
            path,
        )
    if len(image.shape) != 3:
        raise ImageReadError(
            f"{path}: has shape {tuple(image.shape)}, not a 3D volume (x, y, z). Save the "
            "volume as a 3D NIfTI.",
            path,
        )
    return image


def series_image(folder: str | Path):
    """A DICOM series folder as an in-memory NIfTI image, on the grid dcm2niix would write.

    Values are rescaled (HU for CT; see :func:`medvision.data.dicom_series.read_dicom_series`),
    laid out ``columns x rows x slices`` with the affine of
    :func:`medvision.data.dicom_series.series_affine` as qform and sform (scanner coordinates).
    Read and written like a file by :func:`load_volume` and :func:`write_label_volume`.

    Args:
        folder: The series folder.

    Raises:
        ImageReadError: as :func:`~medvision.data.dicom_series.read_dicom_series`, naming the
            file.
    """
    try:
        volume, info = read_dicom_series(folder)
    except FileNotFoundError as error:
        raise ImageReadError(str(error), folder) from None
    return series_nifti(volume, info)


def series_nifti(slices: np.ndarray, info: DicomInfo):
    """Slices of a DICOM series (or labels of them) as an in-memory NIfTI image on the grid
    dcm2niix would write: ``columns x rows x slices``, the affine of
    :func:`~medvision.data.dicom_series.series_affine` as qform and sform.

    Args:
        slices: ``S x rows x columns``, in the order of ``info.files`` (any dtype).
        info: The series' :class:`~medvision.data.dicom.DicomInfo`
            (:func:`~medvision.data.dicom_series.read_dicom_series`).
    """
    nib = require_nibabel()
    affine = series_affine(info)
    image = nib.Nifti1Image(np.ascontiguousarray(slices.transpose(2, 1, 0)), affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    return image


def check_same_geometry(image: VolumeInfo, mask: VolumeInfo, atol: float = 1e-3) -> None:
    """Refuse a mask whose stored shape or affine differs from its image's.

    Args:
        image: the image's :class:`VolumeInfo`.
        mask: the mask's.
        atol: largest difference (mm) allowed between affine entries (header rounding).

    Raises:
        ImageReadError: naming both files and both shapes or affines; its ``path`` is the mask.
    """
    if mask.original_shape != image.original_shape:
        ours, theirs = f"shape {mask.original_shape}", f"shape {image.original_shape}"
    elif not np.allclose(mask.original_affine, image.original_affine, atol=atol):
        ours = f"affine {_one_line(mask.original_affine)}"
        theirs = f"affine {_one_line(image.original_affine)}"
    else:
        return
    raise ImageReadError(
        f"{mask.path}: mask has {ours} but its image {image.path} has {theirs}. The mask "
        "must lie on the image's voxel grid: re-export it from the image (e.g. resample it onto "
        "the image in 3D Slicer or ITK-SNAP), or remove the pair.",
        mask.path,
    )


def _one_line(affine: np.ndarray) -> str:
    return np.array2string(np.asarray(affine)[:3], precision=3, separator=",").replace("\n", "")


def slices_along(volume: np.ndarray, axis: int) -> np.ndarray:
    """The 2D slices of ``volume`` along ``axis`` (0, 1 or 2), as a view ``S x H x W``.

    Slice ``k`` is ``volume`` indexed ``k`` on ``axis``; the other two axes keep their order
    (canonical ``axis=2`` gives axial slices of ``x x y``).

    Args:
        volume: A 3D array.
        axis: The axis to slice along; others raise ``ValueError``.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    return np.moveaxis(volume, axis, 0)


def assemble_slices(slices: Sequence[np.ndarray], axis: int) -> np.ndarray:
    """Stack 2D slices (in slice order) back into a volume, the inverse of :func:`slices_along`.

    Args:
        slices: ``S`` arrays of one shape ``H x W``.
        axis: the axis they were taken along.

    Returns:
        The volume, with ``S`` on ``axis``.
    """
    return np.stack(list(slices), axis=axis)


def label_image(labels: np.ndarray, reference: str | Path, name: str = "labels"):
    """A canonical-orientation label volume as a NIfTI image on the grid of ``reference``.

    The canonical reorientation of ``reference`` is undone, so the image has the reference's
    own shape and affine (qform and sform with their codes): it overlays on the input in
    ITK-SNAP or 3D Slicer.

    Args:
        labels: integer labels 0-255 (0 = background), shaped like the reference's canonical
            array (see :func:`load_volume`).
        reference: the input volume the labels were predicted for (a NIfTI file, or a DICOM
            series folder: the labels then lie on the grid :func:`series_image` gives it).
        name: what errors call the labels (the file they are written to).

    Returns:
        A ``nibabel`` image of uint8 labels.

    Raises:
        ValueError: ``labels`` not of the reference's canonical shape, or outside 0-255.
    """
    require_nibabel()
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    ref = _open(Path(reference))
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{name}: labels must lie in 0-255, got {labels.min()}-{labels.max()}")
    undo = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(ref.affine))
    data = apply_orientation(np.asarray(labels), undo).astype(np.uint8)
    if data.shape != tuple(ref.shape):
        raise ValueError(
            f"{name}: labels of canonical shape {labels.shape} do not fit {reference} (stored "
            f"shape {tuple(ref.shape)}, canonical {canonical_shape(reference)})."
        )
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    out = type(ref)(data, ref.affine, header)
    out.header.set_qform(*ref.header.get_qform(coded=True))
    out.header.set_sform(*ref.header.get_sform(coded=True))
    out.header.set_slope_inter(1.0, 0.0)
    return out


def write_label_volume(path: str | Path, labels: np.ndarray, reference: str | Path) -> None:
    """Write a canonical-orientation label volume as NIfTI on the grid of ``reference``
    (:func:`label_image`), atomically; gzip-compressed when ``path`` ends in ``.gz``.

    Args:
        path: output ``.nii`` or ``.nii.gz``.
        labels: integer labels 0-255, shaped like the reference's canonical array.
        reference: the input volume the labels were predicted for.

    Raises:
        ValueError: ``labels`` not of the reference's canonical shape, or outside 0-255.
    """
    save_nifti(path, label_image(labels, reference, str(path)))


def save_nifti(path: str | Path, image) -> None:
    """Write a nibabel image atomically; gzip-compressed when ``path`` ends in ``.gz``.

    Args:
        path: output ``.nii`` or ``.nii.gz``.
        image: The nibabel image (e.g. :func:`label_image`'s).
    """
    path = Path(path)
    blob = image.to_bytes()
    if path.name.lower().endswith(".gz"):
        blob = gzip.compress(blob, compresslevel=6, mtime=0)
    write_atomically(path, lambda tmp: tmp.write_bytes(blob))


def write_predicted_volume(
    path: str | Path, slices: Sequence[np.ndarray], axis: int, reference: str | Path
) -> None:
    """Assemble per-slice predicted masks and write them on the grid of ``reference``.

    Args:
        path: output ``.nii`` or ``.nii.gz``.
        slices: one ``H x W`` integer mask per slice of the reference's canonical array along
            ``axis``, in slice order, at the slice's own size (0/1 now; labels up to 255).
        axis: the canonical axis the slices were taken along.
        reference: the input volume (its affine and shape are written).
    """
    write_label_volume(path, assemble_slices(slices, axis), reference)


__all__ = [
    "NIFTI_EXTRA",
    "NIFTI_SUFFIXES",
    "VolumeInfo",
    "assemble_slices",
    "canonical_shape",
    "canonical_volume",
    "check_same_geometry",
    "is_nifti",
    "label_image",
    "load_volume",
    "nifti_stem",
    "require_nibabel",
    "save_nifti",
    "series_image",
    "series_nifti",
    "slices_along",
    "write_label_volume",
    "write_predicted_volume",
]
