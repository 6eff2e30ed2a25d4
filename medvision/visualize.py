"""Drawing masks over images for people to look at: display conversion and overlays."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medvision.data.io import normalize_intensity, to_channels

_PRED_COLOR = np.array([255, 64, 64], dtype=np.float32)


_TRUTH_COLOR = np.array([64, 255, 64], dtype=np.uint8)


def to_display(image: np.ndarray) -> np.ndarray:
    """Any stored image (``H x W [x C]``, any dtype) as uint8 RGB ``H x W x 3`` for viewing."""
    channels = 3 if image.ndim == 3 and image.shape[-1] >= 3 else 1
    scaled = normalize_intensity(to_channels(image, channels))
    return (np.repeat(scaled, 3 // channels, axis=-1) * 255).round().astype(np.uint8)


def overlay(
    image_rgb: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None, alpha: float = 0.4
) -> np.ndarray:
    """Tint predicted pixels red and outline the true mask in green; uint8 ``H x W x 3``."""
    out = image_rgb.astype(np.float32)
    out[pred] = (1 - alpha) * out[pred] + alpha * _PRED_COLOR
    out = out.round().astype(np.uint8)
    if truth is not None:
        out[truth & ~ndimage.binary_erosion(truth)] = _TRUTH_COLOR
    return out
