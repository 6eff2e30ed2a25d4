"""Deterministic synthetic data written in the real datasets' on-disk layouts.

The files go through exactly the loading code that real data does, so tests and the quickstart
exercise TIFF decoding, pairing, resizing and normalization, not a shortcut around them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

from medvision.utils.files import write_csv

log = logging.getLogger(__name__)

#: Stored intensity range per dtype: (value of air, value of bone). int16/float32 are in HU.
_DTYPE_RANGE = {
    "uint8": (0.0, 255.0),
    "uint16": (0.0, 4095.0),
    "int16": (-1024.0, 1500.0),
    "float32": (-1024.0, 1500.0),
}


def lung_phantom(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One CT-like axial slice and its lung mask.

    Args:
        size: Side of the square slice, in pixels.
        rng: The random generator; body outline, lung size, position, tilt and vessels vary
            with it.

    Returns:
        ``(image, mask)``: ``image`` float32 ``size x size`` in [0, 1] (air 0, soft tissue
        about 0.55, bone about 0.95), ``mask`` uint8 ``size x size`` with 1 inside the lungs.
    """
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j].astype(np.float32)
    jitter = rng.uniform(-1, 1, size=8).astype(np.float32)

    body = _ellipse(xx, yy, 0.0, 0.05, 0.86 + 0.06 * jitter[0], 0.66 + 0.06 * jitter[1], 0.0)
    image = np.where(body, 0.55, 0.02).astype(np.float32)
    image[body & ~_ellipse(xx, yy, 0.0, 0.05, 0.80, 0.60, 0.0)] = 0.42  # subcutaneous fat

    mask = np.zeros((size, size), dtype=bool)
    for side in (-1.0, 1.0):
        cx = side * (0.37 + 0.04 * jitter[2])
        cy = -0.02 + 0.05 * jitter[3]
        lung = _ellipse(
            xx,
            yy,
            cx,
            cy,
            0.25 + 0.04 * jitter[4],
            0.44 + 0.05 * jitter[5],
            side * (0.15 + 0.1 * jitter[6]),
        )
        heart_notch = _ellipse(xx, yy, cx - side * 0.22, cy + 0.2, 0.16, 0.2, 0.0)
        mask |= lung & ~heart_notch
    image[mask] = 0.1

    rows, cols = np.mgrid[:size, :size]
    lung_pixels = np.argwhere(mask)
    for _ in range(int(rng.integers(4, 10))):  # vessels: bright dots inside the lungs
        row, col = lung_pixels[rng.integers(len(lung_pixels))]
        radius = rng.uniform(0.01, 0.025) * size
        image[(rows - row) ** 2 + (cols - col) ** 2 < radius**2] = 0.4
    image[_ellipse(xx, yy, 0.0, 0.52, 0.11, 0.1, 0.0)] = 0.95  # vertebra

    image = ndimage.gaussian_filter(image, sigma=size / 256)
    image += rng.normal(0.0, 0.02, size=image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0), mask.astype(np.uint8)


def _ellipse(xx, yy, cx, cy, ax, ay, angle):
    cos, sin = np.cos(angle), np.sin(angle)
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0


def write_lung_ct(
    root: str | Path,
    num_slices: int = 40,
    size: int = 64,
    seed: int = 0,
    dtype: str = "uint8",
    mask_max: int = 255,
) -> list[Path]:
    """Write ``num_slices`` phantom slices in the Kaggle "finding-lungs-in-ct-data" layout.

    Creates ``root/2d_images/ID_<i>_Z_<z>.tif`` and the mask of the same name in
    ``root/2d_masks/``. Slice ``i`` depends only on ``(seed, i)``.

    Args:
        root: The dataset folder (made if missing).
        num_slices: How many image and mask pairs to write.
        size: Side of the square slices, in pixels.
        seed: Seed of the phantoms.
        dtype: How intensities are stored: ``uint8`` (0-255), ``uint16`` (12-bit, 0-4095),
            ``int16`` or ``float32`` (Hounsfield units, -1024 to 1500).
        mask_max: The masks' foreground value (255 or 1); masks are uint8.

    Returns:
        The image paths.
    """
    if dtype not in _DTYPE_RANGE:
        raise ValueError(f"dtype must be one of {sorted(_DTYPE_RANGE)}, got {dtype!r}")
    root = Path(root)
    (root / "2d_images").mkdir(parents=True, exist_ok=True)
    (root / "2d_masks").mkdir(parents=True, exist_ok=True)
    low, high = _DTYPE_RANGE[dtype]
    paths = []
    for index in range(num_slices):
        image, mask = lung_phantom(size, np.random.default_rng([seed, index]))
        stored = (low + image * (high - low)).astype(dtype)
        name = f"ID_{index:04d}_Z_{index * 7 % 200:04d}.tif"
        tifffile.imwrite(root / "2d_images" / name, stored)
        tifffile.imwrite(root / "2d_masks" / name, (mask * mask_max).astype(np.uint8))
        paths.append(root / "2d_images" / name)
    log.info(
        "Wrote %d synthetic lung CT slices (%dx%d, %s) to %s", num_slices, size, size, dtype, root
    )
    return paths


#: The four classes of the chest X-ray study, as folder names.
CHEST_XRAY_CLASSES = ("COVID19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS")

#: Images per split and class at ``scale=1``: deliberately imbalanced, TUBERCULOSIS rarest.
CHEST_XRAY_COUNTS = {
    "train": {"COVID19": 12, "NORMAL": 40, "PNEUMONIA": 32, "TUBERCULOSIS": 8},
    "val": {"COVID19": 3, "NORMAL": 8, "PNEUMONIA": 6, "TUBERCULOSIS": 2},
    "test": {"COVID19": 3, "NORMAL": 8, "PNEUMONIA": 6, "TUBERCULOSIS": 2},
}

#: How each file is stored, in turn: (suffix, PIL mode of the written file).
_XRAY_FORMATS = (("png", "L"), ("png", "I;16"), ("jpg", "RGB"), ("png", "RGBA"))


def chest_xray_phantom(
    height: int, width: int, finding: str, rng: np.random.Generator
) -> np.ndarray:
    """One frontal chest radiograph-like image, float32 ``height x width`` in [0, 1].

    Dark lung fields inside a bright body, with spine, heart shadow and ribs.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        finding: What tells the classes apart: ``NORMAL`` nothing; ``PNEUMONIA`` one large
            dense opacity low in one lung; ``COVID19`` several faint opacities along the outer
            edges of both lungs; ``TUBERCULOSIS`` small bright nodules and a ring-shaped cavity
            in the upper lungs. Others raise ``ValueError``.
        rng: The random generator of the anatomy's jitter and the findings' placement.
    """
    if finding not in CHEST_XRAY_CLASSES:
        raise ValueError(f"finding must be one of {CHEST_XRAY_CLASSES}, got {finding!r}")
    yy, xx = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j].astype(np.float32)
    jitter = rng.uniform(-1, 1, size=6).astype(np.float32)
    image = np.where(_ellipse(xx, yy, 0, 0.1, 0.95, 1.05, 0), 0.7, 0.05).astype(np.float32)
    lungs = []
    for side in (-1.0, 1.0):
        cx, cy = side * (0.42 + 0.04 * jitter[0]), -0.05 + 0.05 * jitter[1]
        lung = _ellipse(xx, yy, cx, cy, 0.3 + 0.03 * jitter[2], 0.62 + 0.05 * jitter[3], 0)
        image[lung] = 0.22
        lungs.append((cx, cy))
    image[_ellipse(xx, yy, 0.12, 0.3, 0.28 + 0.03 * jitter[4], 0.3, 0.3)] = 0.6  # heart
    image[np.abs(xx) < 0.07] = 0.85  # spine
    for rib in np.linspace(-0.6, 0.5, 6):  # ribs: faint bright arcs
        image[np.abs(yy - rib - 0.15 * xx**2) < 0.025] += 0.12

    def blob(cx, cy, sigma, amplitude):
        return amplitude * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))

    if finding == "PNEUMONIA":
        cx, cy = lungs[int(rng.integers(2))]
        image += blob(cx + rng.uniform(-0.1, 0.1), cy + rng.uniform(0.1, 0.35), 0.14, 0.45)
    elif finding == "COVID19":
        for cx, cy in lungs:
            for _ in range(int(rng.integers(2, 4))):
                outer = cx + np.sign(cx) * rng.uniform(0.1, 0.22)
                image += blob(outer, cy + rng.uniform(-0.1, 0.45), 0.07, 0.28)
    elif finding == "TUBERCULOSIS":
        cx, cy = lungs[int(rng.integers(2))]
        for _ in range(int(rng.integers(2, 5))):
            image += blob(cx + rng.uniform(-0.15, 0.15), cy - rng.uniform(0.2, 0.45), 0.03, 0.5)
        ring = np.hypot(xx - cx, yy - (cy - 0.3))
        image[np.abs(ring - 0.08) < 0.025] += 0.4
    image = ndimage.gaussian_filter(image, sigma=max(height, width) / 200)
    image += rng.normal(0.0, 0.03, size=image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def write_chest_xray(
    root: str | Path, scale: float = 1.0, size: int = 64, seed: int = 0
) -> dict[str, dict[str, int]]:
    """Write synthetic chest X-rays in the Kaggle ImageFolder layout ``root/<split>/<CLASS>/``.

    Files rotate through 8-bit grayscale PNG, 16-bit PNG, RGB JPEG and RGBA PNG, as in real
    collections. Image ``i`` of a class and split depends only on ``(seed, split, class, i)``.

    Args:
        root: The dataset folder (made if missing).
        scale: Multiplies :data:`CHEST_XRAY_COUNTS` per split and class (at least one each).
        size: Nominal side in pixels; images are 90-130% of it wide and 90-120% high.
        seed: Seed of the images.

    Returns:
        The counts written, ``{split: {class: count}}``.
    """
    root = Path(root)
    written: dict[str, dict[str, int]] = {}
    for split_index, (split, counts) in enumerate(CHEST_XRAY_COUNTS.items()):
        written[split] = {}
        for class_index, finding in enumerate(CHEST_XRAY_CLASSES):
            folder = root / split / finding
            folder.mkdir(parents=True, exist_ok=True)
            count = max(1, round(counts[finding] * scale))
            for i in range(count):
                rng = np.random.default_rng([seed, split_index, class_index, i])
                height = int(size * rng.uniform(0.9, 1.2))
                width = int(size * rng.uniform(0.9, 1.3))
                image = chest_xray_phantom(height, width, finding, rng)
                suffix, mode = _XRAY_FORMATS[i % len(_XRAY_FORMATS)]
                _save_xray(folder / f"{finding.lower()}_{i:04d}.{suffix}", image, mode)
            written[split][finding] = count
    log.info("Wrote synthetic chest X-rays to %s: %s", root, written)
    return written


def _save_xray(path: Path, image: np.ndarray, mode: str) -> None:
    if mode == "I;16":
        Image.fromarray((image * 65535).round().astype(np.uint16)).save(path)
        return
    gray = (image * 255).round().astype(np.uint8)
    if mode == "L":
        Image.fromarray(gray).save(path)
    elif mode == "RGB":
        Image.fromarray(np.repeat(gray[..., None], 3, axis=-1)).save(path, quality=92)
    else:  # RGBA, fully opaque
        rgba = np.concatenate(
            [np.repeat(gray[..., None], 3, axis=-1), np.full_like(gray, 255)[..., None]], -1
        )
        Image.fromarray(rgba).save(path)


#: Diagnoses of the synthetic HAM10000 lesions, in turn: imbalanced like the real set (nv most).
_HAM_DX_CYCLE = (
    "nv",
    "nv",
    "nv",
    "mel",
    "nv",
    "bkl",
    "nv",
    "bcc",
    "nv",
    "mel",
    "akiec",
    "nv",
    "bkl",
    "vasc",
    "nv",
    "df",
)
_HAM_DX_COLOR = {  # lesion RGB on skin, so the diagnoses are learnable
    "nv": (110, 70, 50),
    "mel": (40, 25, 30),
    "bkl": (150, 110, 70),
    "bcc": (190, 120, 130),
    "akiec": (200, 90, 80),
    "vasc": (170, 30, 60),
    "df": (120, 90, 90),
}


def write_ham10000(
    root: str | Path, num_lesions: int = 24, size: tuple[int, int] = (48, 64), seed: int = 0
) -> list[dict]:
    """Write synthetic dermoscopy images in the HAM10000 layout; returns the metadata rows.

    ``root/images/ISIC_<id>.jpg`` (RGB), the lesion mask
    ``root/masks/ISIC_<id>_segmentation.png`` (0/255) and ``root/HAM10000_metadata.csv``.
    Lesion ``i`` has 1-3 images (so lesion ids repeat, as in the real set) and the diagnosis
    ``_HAM_DX_CYCLE[i % 16]``; each image shows an elliptic lesion of the diagnosis' colour
    at a random place, size and tilt on skin. Depends only on ``(seed, lesion, image)``.

    Args:
        root: The dataset folder (made if missing).
        num_lesions: How many lesions to write (about twice as many images).
        size: ``(height, width)`` of every image, in pixels.
        seed: Seed of the images.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    height, width = size
    yy, xx = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j].astype(np.float32)
    rows, image_number = [], 24306
    for lesion in range(num_lesions):
        dx = _HAM_DX_CYCLE[lesion % len(_HAM_DX_CYCLE)]
        for shot in range(int(np.random.default_rng([seed, lesion]).integers(1, 4))):
            rng = np.random.default_rng([seed, lesion, shot])
            centre, axes = rng.uniform(-0.3, 0.3, 2), rng.uniform(0.25, 0.55, 2)
            mask = _ellipse(xx, yy, *centre, *axes, rng.uniform(0, np.pi))
            skin = np.array([225, 180, 160], np.float32) + rng.normal(0, 8, 3)
            image = np.broadcast_to(skin, (height, width, 3)).copy()
            image[mask] = np.array(_HAM_DX_COLOR[dx], np.float32) + rng.normal(0, 6, 3)
            image = ndimage.gaussian_filter(image, sigma=(1, 1, 0))
            image += rng.normal(0, 6, image.shape)
            image_id = f"ISIC_{image_number:07d}"
            image_number += 1
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                root / "images" / f"{image_id}.jpg", quality=92
            )
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                root / "masks" / f"{image_id}_segmentation.png"
            )
            rows.append(
                {
                    "lesion_id": f"HAM_{lesion:07d}",
                    "image_id": image_id,
                    "dx": dx,
                    "dx_type": "histo",
                    "age": "50.0",
                    "sex": "female",
                    "localization": "back",
                }
            )
    write_csv(root / "HAM10000_metadata.csv", rows)
    log.info("Wrote %d synthetic HAM10000 images of %d lesions to %s", len(rows), num_lesions, root)
    return rows


def write_nih_chestxray14(
    root: str | Path, num_patients: int = 20, size: int = 48, seed: int = 0
) -> list[dict]:
    """Write synthetic X-rays in the NIH ChestX-ray14 layout; returns the CSV rows.

    ``root/images/<patient:08d>_<follow-up:03d>.png`` (8-bit gray) and
    ``root/Data_Entry_2017.csv``. Patient ``i`` has 1-3 images; each image's ``Finding Labels``
    is ``No Finding`` or one to three findings joined by ``|`` (pneumonia-like images show a
    dense opacity). Depends only on ``(seed, patient, image)``.

    Args:
        root: The dataset folder (made if missing).
        num_patients: How many patients to write (about twice as many images).
        size: Side of the square images, in pixels.
        seed: Seed of the images and findings.
    """
    from medvision.data.nih_chestxray14 import NIHChestXray14DataModule

    findings = NIHChestXray14DataModule.findings
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for patient in range(1, num_patients + 1):
        for follow_up in range(int(np.random.default_rng([seed, patient]).integers(1, 4))):
            rng = np.random.default_rng([seed, patient, follow_up])
            chosen = []
            if rng.random() < 0.6:
                chosen = sorted(rng.choice(findings, size=int(rng.integers(1, 4)), replace=False))
            look = "PNEUMONIA" if {"Pneumonia", "Consolidation"} & set(chosen) else "NORMAL"
            image = chest_xray_phantom(size, size, look, rng)
            name = f"{patient:08d}_{follow_up:03d}.png"
            Image.fromarray((image * 255).round().astype(np.uint8)).save(root / "images" / name)
            rows.append(
                {
                    "Image Index": name,
                    "Finding Labels": "|".join(chosen) or "No Finding",
                    "Follow-up #": follow_up,
                    "Patient ID": patient,
                    "Patient Age": 50,
                    "Patient Gender": "F",
                    "View Position": "PA",
                }
            )
    write_csv(root / "Data_Entry_2017.csv", rows)
    return rows


def write_chexpert(root: str | Path, num_patients: int = 16, size: int = 48, seed: int = 0) -> Path:
    """Write a synthetic CheXpert "small" release under ``root``; returns its folder.

    ``root/CheXpert-v1.0-small/{train,valid}.csv`` and the JPEGs they name
    (``train/patient00001/study1/view1_frontal.jpg``, some lateral views too). The last quarter
    of the patients form ``valid.csv``. Each observation cell is 1, 0, -1 or blank at random.
    Depends only on ``(seed, patient, view)``.

    Args:
        root: Where the release folder ``CheXpert-v1.0-small`` is made.
        num_patients: How many patients to write, two views each.
        size: Side of the square images, in pixels.
        seed: Seed of the images and labels.
    """
    from medvision.data.chexpert import CheXpertDataModule

    release = Path(root) / "CheXpert-v1.0-small"
    fields = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CheXpertDataModule.observations]
    tables: dict[str, list[dict]] = {"train": [], "valid": []}
    for patient in range(1, num_patients + 1):
        split = "valid" if patient > num_patients * 3 // 4 else "train"
        for view in (1, 2):
            rng = np.random.default_rng([seed, patient, view])
            frontal = view == 1 or rng.random() < 0.5
            name = f"view{view}_{'frontal' if frontal else 'lateral'}.jpg"
            relative = f"{split}/patient{patient:05d}/study1/{name}"
            (release / relative).parent.mkdir(parents=True, exist_ok=True)
            image = chest_xray_phantom(size, size, "NORMAL", rng)
            Image.fromarray((image * 255).round().astype(np.uint8)).save(
                release / relative, quality=92
            )
            row = {
                "Path": f"CheXpert-v1.0-small/{relative}",
                "Sex": "Female",
                "Age": 60,
                "Frontal/Lateral": "Frontal" if frontal else "Lateral",
                "AP/PA": "AP",
            }
            row.update(
                {
                    name: rng.choice(["1.0", "0.0", "-1.0", ""])
                    for name in CheXpertDataModule.observations
                }
            )
            tables[split].append(row)
    for split, rows in tables.items():
        write_csv(release / f"{split}.csv", rows, fields)
    return release
