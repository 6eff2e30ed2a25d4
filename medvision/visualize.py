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
