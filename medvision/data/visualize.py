"""Drawing masks over images for people to look at: display conversion, overlays, enlarging
small images and laying panels out with titles."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
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


#: The longer side, in pixels, that small images are enlarged to (at least) for viewing.
DISPLAY_SIZE = 256
#: Title font size, and the white space around panels, in pixels.
TITLE_SIZE = 14
GAP = 6


def display_scale(height: int, width: int, size: int = DISPLAY_SIZE) -> int:
    """The whole factor that brings an image's longer side to at least ``size`` pixels.

    Args:
        height: The image's height in pixels.
        width: Its width.
        size: The wanted longer side; larger images get 1.
    """
    return max(1, math.ceil(size / max(height, width)))


def enlarge(array: np.ndarray, factor: int, smooth: bool = False) -> np.ndarray:
    """``array`` ``factor`` times taller and wider.

    Args:
        array: ``H x W`` or ``H x W x C``; uint8 when ``smooth``.
        factor: Whole number >= 1.
        smooth: Bilinear (display images); False: nearest neighbour, each pixel a
            ``factor x factor`` block (masks and label maps keep their values and edges).

    Returns:
        ``factor*H x factor*W [x C]``, of ``array``'s dtype.
    """
    if factor == 1:
        return array
    if smooth:
        height, width = array.shape[:2]
        size = (width * factor, height * factor)
        return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR))
    return array.repeat(factor, axis=0).repeat(factor, axis=1)


def titled_grid(
    rows: Sequence[Sequence[np.ndarray]], titles: Sequence[Sequence[str]], header: str = ""
) -> np.ndarray:
    """Panels in rows on white, each with its title above it, and a header line on top.

    Args:
        rows: uint8 ``H x W x 3`` panels, row by row (the panels of a row share their height).
        titles: One title per panel, in the same layout; a title wider than its panel is
            shortened from the left (``…name.png``).
        header: A line above everything (what the figure shows); empty: none.

    Returns:
        uint8 RGB ``H x W x 3``.
    """
    font = _font()
    line = title_height()
    top = line + GAP if header else GAP
    width = GAP + max(sum(p.shape[1] + GAP for p in row) for row in rows)
    height = top + sum(line + row[0].shape[0] + GAP for row in rows)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if header:
        draw.text((GAP, GAP), _fit(draw, header, width - 2 * GAP, font), fill="black", font=font)
    y = top
    for row, names in zip(rows, titles, strict=True):
        x = GAP
        for panel, title in zip(row, names, strict=True):
            text = _fit(draw, title, panel.shape[1], font)
            draw.text((x, y), text, fill="black", font=font)
            canvas.paste(Image.fromarray(panel), (x, y + line))
            x += panel.shape[1] + GAP
        y += line + row[0].shape[0] + GAP
    return np.asarray(canvas)


def title_height() -> int:
    """Pixels from the top of a title line to the panel below it (the font's ascent and
    descent, then :data:`GAP`)."""
    ascent, descent = _font().getmetrics()
    return ascent + descent + GAP


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=TITLE_SIZE)
    except TypeError:  # Pillow < 10.1 has one bitmap font of one size (about 11 px)
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """``text``, shortened from the left (``…name``) until it is at most ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text
