"""Focus a classifier on the lesion: crop to a mask's bounding box, or black out the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from medvision.data.datasets import resize_mask
from medvision.data.io import binarize_mask, read_image


class LesionFocus:
    """Crop an image to its lesion, or black out everything else, using a mask file per image.

    Called as ``focus(image, path)`` on an ``H x W x C`` float image before resizing; reads
    ``mask_dir/<stem>.png`` (any size; resized to the image by nearest neighbour). An empty
    mask leaves the image whole; :meth:`count_empty` counts them (the datamodule logs it).

    Args:
        mask_dir: Folder of binary lesion masks named ``<image stem>.png``.
        mode: ``crop``: the lesion's bounding box grown by ``margin`` on each side. ``mask``:
            pixels outside the lesion set to 0.
        margin: Growth of the box on each side, as a fraction of its height (rows) and width
            (columns); ``crop`` only.
    """

    def __init__(
        self, mask_dir: str | Path, mode: Literal["crop", "mask"] = "crop", margin: float = 0.1
    ) -> None:
        if mode not in ("crop", "mask"):
            raise ValueError(f"lesion_focus must be 'crop' or 'mask', got {mode!r}")
        self.mask_dir, self.mode, self.margin = Path(mask_dir), mode, margin

    def mask_path(self, image_path: Path) -> Path:
        """The mask file of an image: ``mask_dir/<stem>.png``.

        Args:
            image_path: The image file.
        """
        return self.mask_dir / f"{Path(image_path).stem}.png"

    def __call__(self, image: np.ndarray, path: str | Path) -> np.ndarray:
        mask_path = self.mask_path(Path(path))
        mask = binarize_mask(read_image(mask_path), mask_path)
        mask = resize_mask(mask, image.shape[:2])
        if not mask.any():
            return image
        if self.mode == "mask":
            return image * mask[..., None].astype(image.dtype)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        grow_r = int(round((rows[-1] - rows[0] + 1) * self.margin))
        grow_c = int(round((cols[-1] - cols[0] + 1) * self.margin))
        top, bottom = max(rows[0] - grow_r, 0), min(rows[-1] + 1 + grow_r, image.shape[0])
        left, right = max(cols[0] - grow_c, 0), min(cols[-1] + 1 + grow_c, image.shape[1])
        return image[top:bottom, left:right]

    def count_empty(self, image_paths: list[Path]) -> int:
        """How many of the images' masks hold no lesion (those images stay whole).

        Args:
            image_paths: The image files; each mask is read and binarized.
        """
        return sum(
            not binarize_mask(read_image(self.mask_path(p)), self.mask_path(p)).any()
            for p in image_paths
        )
