"""Multi-class phantoms: a disc and a ring on a noisy background, written as PNG label maps.

For the multi-class quickstart (``configs/quickstart_multiclass.yaml``) and tests: the files
go through :class:`~medvision.data.segmentation_folder.SegmentationFolderDataModule`, the
same loading code as real images with label maps. Not real data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from medvision.data.segmentation_folder import SegmentationFolderDataModule

log = logging.getLogger(__name__)

#: The phantoms' classes, label value = position: 0 background, 1 disc, 2 ring.
PHANTOM_CLASSES = ("background", "disc", "ring")
#: Mean intensity of each class in [0, 1]: the structures differ in brightness and shape.
_INTENSITY = (0.15, 0.8, 0.5)


def disc_and_ring_phantom(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image with a bright disc and a ring of middle brightness, and its label map.

    Args:
        size: Side of the square image, in pixels.
        rng: Draws the radii, the ring's thickness, the places (never overlapping), the
            shading and the noise.

    Returns:
        ``(image, labels)``: ``image`` float32 ``size x size`` in [0, 1] (background about
        0.15, disc 0.8, ring 0.5; blurred edges, a smooth shading and Gaussian noise),
        ``labels`` uint8 ``size x size`` with 0 background, 1 disc, 2 ring
        (:data:`PHANTOM_CLASSES`).
    """
    rows, cols = np.mgrid[:size, :size].astype(np.float32)
    disc_radius = rng.uniform(0.1, 0.17) * size
    ring_outer = rng.uniform(0.15, 0.22) * size
    ring_inner = ring_outer - rng.uniform(0.07, 0.1) * size
    while True:  # centres far enough apart for the shapes not to touch
        disc_centre = rng.uniform(disc_radius + 1, size - disc_radius - 1, 2)
        ring_centre = rng.uniform(ring_outer + 1, size - ring_outer - 1, 2)
        if np.hypot(*(disc_centre - ring_centre)) > disc_radius + ring_outer + 2:
            break
    disc = np.hypot(rows - disc_centre[0], cols - disc_centre[1]) <= disc_radius
    distance = np.hypot(rows - ring_centre[0], cols - ring_centre[1])
    ring = (distance <= ring_outer) & (distance >= ring_inner)
    labels = np.zeros((size, size), np.uint8)
    labels[disc], labels[ring] = 1, 2
    image = np.asarray(_INTENSITY, np.float32)[labels]
    shading = rng.uniform(-0.05, 0.05) * (rows + cols) / size
    image = ndimage.gaussian_filter(image + shading, sigma=0.7)
    image += rng.normal(0.0, 0.04, size=image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0), labels


def write_label_maps(
    root: str | Path,
    num_images: int = 60,
    size: int = 64,
    seed: int = 0,
    image_dirname: str = "images",
    mask_dirname: str = "masks",
) -> list[Path]:
    """Write disc-and-ring phantoms as ``root/images/img_<i>.png`` and ``root/masks/img_<i>.png``.

    Images are 8-bit grayscale PNGs; masks 8-bit label maps whose pixel values are the class
    indices of :data:`PHANTOM_CLASSES`, every fourth one saved as a palette PNG (indices shown
    in colour, as annotation tools often write them). Image ``i`` depends only on
    ``(seed, i)``.

    Args:
        root: The data folder (created).
        num_images: Image/mask pairs to write.
        size: Side of the square images, in pixels.
        seed: The phantoms depend only on it and their index.
        image_dirname: The images' folder in ``root``.
        mask_dirname: The masks' folder in ``root``.

    Returns:
        The image paths.
    """
    root = Path(root)
    images, masks = root / image_dirname, root / mask_dirname
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(num_images):
        image, labels = disc_and_ring_phantom(size, np.random.default_rng([seed, index]))
        name = f"img_{index:04d}.png"
        Image.fromarray((image * 255).round().astype(np.uint8)).save(images / name)
        mask = Image.fromarray(labels)
        if index % 4 == 3:
            mask = mask.convert("P")
            mask.putpalette([0, 0, 0, 214, 39, 40, 44, 160, 44])
        mask.save(masks / name)
        paths.append(images / name)
    log.info("Wrote %d synthetic disc-and-ring label maps (%d px) to %s", num_images, size, root)
    return paths


class SyntheticMultiClassDataModule(SegmentationFolderDataModule):
    """:class:`SegmentationFolderDataModule` on disc-and-ring phantoms it writes if absent.

    ``num_images`` phantoms of ``phantom_size`` pixels (:func:`write_label_maps`) in
    ``data_dir``; an existing ``data_dir/images`` is used as it is, never overwritten. The
    classes are :data:`PHANTOM_CLASSES` (background, disc, ring).

    Args:
        class_names: The phantoms' classes (leave the default).
        num_images: Phantoms to write.
        phantom_size: Their side in pixels.
        *args: :class:`SegmentationFolderDataModule`'s arguments.
        **kwargs: Likewise.
    """

    def __init__(
        self,
        *args,
        class_names: Sequence[str] = PHANTOM_CLASSES,
        num_images: int = 60,
        phantom_size: int = 64,
        **kwargs,
    ) -> None:
        super().__init__(*args, class_names=class_names, **kwargs)
        self.num_images = num_images
        self.phantom_size = phantom_size

    def prepare_data(self) -> None:
        if (self.data_dir / self.image_dirname).is_dir():
            log.info("Using the synthetic label maps already in %s", self.data_dir)
            return
        log.info(
            "Writing %d synthetic label maps to %s (not real data)", self.num_images, self.data_dir
        )
        write_label_maps(
            self.data_dir,
            self.num_images,
            self.phantom_size,
            self.seed,
            self.image_dirname,
            self.mask_dirname,
        )


__all__ = [
    "PHANTOM_CLASSES",
    "SyntheticMultiClassDataModule",
    "disc_and_ring_phantom",
    "write_label_maps",
]
