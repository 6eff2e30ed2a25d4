"""Drawing masks over images for people to look at: display conversion and overlays."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medvision.data.io import normalize_intensity, to_channels

_PRED_COLOR = np.array([255, 64, 64], dtype=np.float32)


_TRUTH_COLOR = np.array([64, 255, 64], dtype=np.uint8)


def to_display(image: np.ndarray) -> np.ndarray:
    """Any stored image (``H x W [x C]``, any dtype) as uint8 RGB ``H x W x 3`` for viewing.

    Args:
        image: Raw intensities; min-max scaled to 0-255. Gray is repeated to three channels,
            a fourth (alpha) channel dropped.
    """
    channels = 3 if image.ndim == 3 and image.shape[-1] >= 3 else 1
    scaled = normalize_intensity(to_channels(image, channels))
    return (np.repeat(scaled, 3 // channels, axis=-1) * 255).round().astype(np.uint8)


def overlay(
    image_rgb: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None, alpha: float = 0.4
) -> np.ndarray:
    """Tint predicted pixels red and outline the true mask in green; uint8 ``H x W x 3``.

    Args:
        image_rgb: uint8 ``H x W x 3`` (see :func:`to_display`).
        pred: bool ``H x W``, the predicted mask.
        truth: bool ``H x W``, the true mask whose outline is drawn; None: no outline.
        alpha: Opacity of the red tint, in [0, 1].
    """
    out = image_rgb.astype(np.float32)
    out[pred] = (1 - alpha) * out[pred] + alpha * _PRED_COLOR
    out = out.round().astype(np.uint8)
    if truth is not None:
        out[truth & ~ndimage.binary_erosion(truth)] = _TRUTH_COLOR
    return out


#: Colours of classes 1, 2, ... in label-map overlays (class 0, the background, is not drawn);
#: after the tenth they repeat. Tableau's ten, which stay apart on gray images.
PALETTE = np.array(
    [
        [214, 39, 40],
        [44, 160, 44],
        [31, 119, 180],
        [255, 127, 14],
        [148, 103, 189],
        [23, 190, 207],
        [227, 119, 194],
        [188, 189, 34],
        [140, 86, 75],
        [127, 127, 127],
    ],
    dtype=np.uint8,
)


def class_color(label: int) -> np.ndarray:
    """The :data:`PALETTE` colour of a class; the palette repeats beyond its length.

    Args:
        label: Class index, 1 or more (0, the background, is not tinted).

    Returns:
        uint8 RGB, shape ``3``.
    """
    return PALETTE[(label - 1) % len(PALETTE)]


def label_overlay(
    image_rgb: np.ndarray, labels: np.ndarray, truth: np.ndarray | None = None, alpha: float = 0.45
) -> np.ndarray:
    """Tint each predicted class in its :data:`PALETTE` colour; outline the true classes.

    Args:
        image_rgb: uint8 ``H x W x 3`` (see :func:`to_display`).
        labels: Predicted class indices ``H x W`` (0 = background, left untinted).
        truth: True class indices ``H x W``, drawn as one-pixel outlines in the class's
            colour (brightened), or None.
        alpha: Tint strength in [0, 1].

    Returns:
        uint8 ``H x W x 3``.
    """
    out = image_rgb.astype(np.float32)
    for label in np.unique(labels):
        if label == 0:
            continue
        where = labels == label
        out[where] = (1 - alpha) * out[where] + alpha * class_color(int(label))
    out = out.round().astype(np.uint8)
    if truth is not None:
        for label in np.unique(truth):
            region = truth == label
            if label == 0:
                continue
            edge = region & ~ndimage.binary_erosion(region)
            out[edge] = np.minimum(class_color(int(label)).astype(np.int32) + 60, 255)
    return out
