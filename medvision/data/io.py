"""Reading medical images from disk into numpy arrays, with errors that name the file.

Every reader here returns plain numpy arrays in ``H x W`` or ``H x W x C`` layout and raises
:class:`ImageReadError` (a ``ValueError``) whose message starts with the offending path and ends
with what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from medvision.data.errors import ImageReadError

TIFF_SUFFIXES = (".tif", ".tiff")
DICOM_SUFFIXES = (".dcm",)
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg", ".bmp", *DICOM_SUFFIXES)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def list_images(folder: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """All files in ``folder`` (not recursive) whose suffix is in ``suffixes``, sorted by name.

    Args:
        folder: The folder to list.
        suffixes: Lower-case suffixes with the dot (``.png``); a file's suffix is compared in
            lower case.

    Returns:
        The files' paths.
    """
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def files_under(folder: Path, skip: Sequence[Path] = ()) -> tuple[list[Path], list[Path]]:
    """Visible files under ``folder`` at any depth, sorted: ``(images, other files)``.

    Args:
        folder: The folder to search.
        skip: Folders inside it to leave out (mask folders).
    """
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not any(p.is_relative_to(left_out) for left_out in skip)
    )
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    return images, [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]


def read_image(path: str | Path) -> np.ndarray:
    """Decode one 2D image (TIFF of any dtype, PNG, JPEG, BMP, DICOM) to ``H x W`` or ``H x W x C``.

    The dtype is kept as stored (uint8, uint16, int16, float32, ...). Channel-first TIFFs
    (``C x H x W``) are moved to channel-last. Stacks of several slices are refused. A ``.dcm``
    file gives float32 rescaled values (HU for CT; MONOCHROME1 inverted), see
    :func:`medvision.data.dicom.read_dicom_slice`; it needs pydicom (an optional extra).

    Args:
        path: The image file; its suffix picks the decoder.

    Returns:
        ``H x W`` or ``H x W x C`` (C from 2 to 4) array, finite.

    Raises:
        ImageReadError: naming ``path``, for a missing, empty, undecodable or multi-slice
            file, or one with NaN or infinite values.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ImageReadError(f"{path}: is empty (0 bytes). Re-copy the file or remove it.", path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            array = tifffile.imread(path)
        elif path.suffix.lower() in DICOM_SUFFIXES:
            from medvision.data.dicom import read_dicom_slice  # pydicom is optional

            array = read_dicom_slice(path)
        else:
            with Image.open(path) as image:
                array = _pil_to_array(image)
    except (ImageReadError, ImportError):  # DICOM's own messages name the file and the fix
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found.", path) from None
    except Exception as exc:  # decoders raise many types; the file is the useful part
        raise ImageReadError(
            f"{path}: cannot be decoded as an image ({type(exc).__name__}: {exc}). "
            "The file is unreadable or truncated: re-export it or remove it from the folder.",
            path,
        ) from exc
    array = _to_hwc_or_hw(np.asarray(array), path)
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        raise ImageReadError(
            f"{path}: holds NaN or infinite values. Re-export it with finite intensities "
            "(e.g. replace NaN by the background value) or remove it.",
            path,
        )
    return array


def _pil_to_array(image: Image.Image) -> np.ndarray:
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("LA", "PA"):
        image = image.convert("RGBA")
    elif image.mode in ("CMYK", "YCbCr", "HSV", "LAB"):
        image = image.convert("RGB")
    return np.array(image)


def _to_hwc_or_hw(array: np.ndarray, path: Path) -> np.ndarray:
    array = np.squeeze(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (2, 3, 4)):
        return array
    raise ImageReadError(
        f"{path}: has shape {tuple(array.shape)}, not a single 2D slice (H x W or H x W x C with "
        "C <= 4). Multi-slice stacks must be split into one file per slice.",
        path,
    )


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """``image`` as ``H x W x channels`` (1 or 3): alpha dropped, RGB to luma, gray repeated.

    Args:
        image: ``H x W`` or ``H x W x C`` (C from 1 to 4, the last of 2 or 4 being alpha).
        channels: 1 or 3.

    Returns:
        ``H x W x channels``: the input's dtype, or float32 where RGB became luma.
    """
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] in (2, 4):  # gray+alpha or RGBA: the last channel is alpha
        image = image[..., :-1]
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return (image.astype(np.float32) @ _LUMA)[..., None]
    if channels == 3:
        return np.repeat(image, 3, axis=-1)
    raise ValueError(f"channels must be 1 or 3, got {channels}")


def normalize_intensity(image: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Map intensities of any dtype to float32 in [0, 1].

    Without a window each image is min-max scaled, so the same picture stored as uint8,
    uint16, int16 or float32 gives the same result. A constant image maps to zeros.

    Args:
        image: Array of any shape and dtype.
        window: ``(low, high)`` (e.g. a CT window in Hounsfield units): values are clipped to
            it and scaled linearly, the same for every image; None: min-max scaling.

    Returns:
        float32 array of ``image``'s shape, in [0, 1].
    """
    image = image.astype(np.float32, copy=False)
    if window is not None:
        low, high = float(window[0]), float(window[1])
    else:
        low, high = float(image.min()), float(image.max())
    if high <= low:
        return np.zeros_like(image, dtype=np.float32)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def binarize_mask(mask: np.ndarray, path: str | Path) -> np.ndarray:
    """Turn a stored binary mask into uint8 0/1; refuse what is not a binary mask.

    Accepted: one channel, or three (a colour mask: a pixel is foreground in any channel), of
    any dtype, with background 0 and foreground 1, 255 (or anything from 128 to 255, for masks
    resaved lossily) or the dtype's maximum. Foreground is any value above half the mask's
    maximum, which is exact for 0/1 and 0/255 masks and robust to the in-between values that
    lossy resaving (JPEG) leaves on edges. Refused with an :class:`ImageReadError` naming
    ``path``: negative values, an alpha channel (2 or 4 channels: which one is the mask?), and
    a maximum such as 2 or 7 (a label mask with several classes, not a binary one).

    Args:
        mask: The decoded mask, ``H x W`` or ``H x W x C``.
        path: Its file, named in errors.

    Returns:
        uint8 ``H x W`` of 0/1.
    """
    if mask.ndim == 3 and mask.shape[-1] in (2, 4):
        raise ImageReadError(
            f"{path}: mask has {mask.shape[-1]} channels (with alpha); expected a single-channel "
            "0/255 (or 0/1) image. Re-save the mask as grayscale without transparency.",
            path,
        )
    if mask.ndim == 3:
        mask = mask.max(axis=-1)
    if mask.size and float(mask.min()) < 0:
        raise ImageReadError(
            f"{path}: mask has negative values; expected 0/1 or 0/255. Re-export the mask as "
            "a binary image.",
            path,
        )
    peak = float(mask.max()) if mask.size else 0.0
    if peak == 0:
        return np.zeros(mask.shape, dtype=np.uint8)
    if not _binary_peak(peak, mask.dtype):
        values = np.unique(mask)
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise ImageReadError(
            f"{path}: mask values go up to {peak:g} ({shown}); expected a binary mask, 0/1 or "
            "0/255. For a label map of several classes, name them all (class_names with one "
            "name per label value, background first: multi-class segmentation); to segment "
            "one structure, set it to 255 (or 1) and everything else to 0.",
            path,
        )
    return (mask > peak / 2).astype(np.uint8)


def _binary_peak(peak: float, dtype: np.dtype) -> bool:
    """Whether ``peak`` can be the foreground value of a binary mask stored as ``dtype``."""
    if peak <= 1 or 128 <= peak <= 255:
        return True
    return np.issubdtype(dtype, np.integer) and peak == np.iinfo(dtype).max


def read_label_image(path: str | Path) -> np.ndarray:
    """Decode a label-map file: as :func:`read_image`, but a palette PNG gives its indices.

    A palette ("P" mode) PNG stores class indices and shows them in colour; :func:`read_image`
    would turn it into those colours, so here its indices are kept. Any other file is
    decoded by :func:`read_image`.

    Args:
        path: The mask file.

    Returns:
        ``H x W`` (or ``H x W x C``) array as stored.
    """
    path = Path(path)
    if path.suffix.lower() == ".png" and path.is_file() and path.stat().st_size:
        try:
            with Image.open(path) as image:
                if image.mode == "P":
                    return np.array(image)
        except Exception:  # noqa: BLE001 - read_image decodes again and says what is wrong
            pass
    return read_image(path)


def read_label_mask(mask: np.ndarray, path: str | Path, num_classes: int) -> np.ndarray:
    """Check a stored label map and return it as uint8 class indices ``H x W``.

    Accepted: one channel (or three equal ones: a gray map saved as RGB) of an integer (or
    bool) dtype, with values ``0..num_classes-1``; 0 is the background. Refused with an
    :class:`ImageReadError` naming ``path``, the values found and the fix: float values, an
    alpha channel, colour masks, and labels outside ``0..num_classes-1`` (e.g. a 0/255 binary
    mask in a multi-class setup).

    Args:
        mask: The decoded mask (see :func:`read_label_image`).
        path: Its file, named in errors.
        num_classes: Number of classes, background included (2 to 256).

    Returns:
        uint8 ``H x W`` labels.
    """
    if not 2 <= num_classes <= 256:
        raise ValueError(f"num_classes must lie in 2..256 for label maps, got {num_classes}")
    if mask.ndim == 3 and mask.shape[-1] == 3 and (mask == mask[..., :1]).all():
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ImageReadError(
            f"{path}: label map has {mask.shape[-1]} channels; expected one channel of class "
            "indices. Save it as a single-channel (grayscale, or palette) PNG whose pixel "
            f"values are the classes 0..{num_classes - 1}, not as colours.",
            path,
        )
    if mask.dtype.kind not in "biu":
        raise ImageReadError(
            f"{path}: label map is stored as {mask.dtype} (not integers). Save the class "
            f"indices 0..{num_classes - 1} as an integer image (e.g. a uint8 PNG).",
            path,
        )
    values = np.unique(mask)
    if values.size and (values[0] < 0 or values[-1] >= num_classes):
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise ImageReadError(
            f"{path}: label map holds values {shown}, but num_classes={num_classes} allows "
            f"0..{num_classes - 1} (one per class name, background 0). Give class_names one "
            "name per label value, or relabel the mask"
            + (" (a 0/255 mask is binary: use one class name)." if values[-1] == 255 else "."),
            path,
        )
    return mask.astype(np.uint8)
