"""Boundary metrics of 2D binary masks: 95th-percentile Hausdorff distance and surface Dice.

Thin wrappers over MONAI (``monai.metrics.compute_hausdorff_distance`` with ``percentile=95``
and ``compute_surface_dice``), per image, with the boundary of a mask taken as its edge pixels
(pixels of the mask with a neighbour outside it). Distances are in pixels, or in mm when
``spacing = (row, col)`` gives the pixel size in mm; the surface Dice tolerance is in the
same unit.

- **HD95**: the larger of the two directed 95th percentiles of the distances from each
  boundary pixel of one mask to the nearest boundary pixel of the other. Lower is better.
- **NSD** (normalized surface Dice, Nikolov et al. 2021): the share of both boundaries lying
  within ``tolerance`` of the other boundary, in [0, 1]. Higher is better.

Empty masks. MONAI returns NaN for HD95 whenever a mask is empty and NaN for NSD when both
are; here every case is finite so that means over images work:

============================  =====================================  =====
case                          HD95                                   NSD
============================  =====================================  =====
both empty (true negative)    0                                      1
exactly one empty             the image diagonal (see below)         0
both non-empty                MONAI's value                          MONAI's value
============================  =====================================  =====

The image diagonal is ``sqrt((H * row_mm) ** 2 + (W * col_mm) ** 2)`` (``sqrt(H**2 + W**2)``
pixels without spacing): more than any distance between two pixels of the image, so a missed
or hallucinated structure scores worse than any non-empty prediction.

MONAI is an optional dependency: ``pip install "medvision-lightning[trust]"``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

INSTALL_HINT = 'pip install "medvision-lightning[trust]"'


def _monai_metrics():
    try:
        from monai import metrics
    except ImportError as exc:
        raise ImportError(
            f"Hausdorff distance and surface Dice need MONAI, which is not installed: "
            f"{INSTALL_HINT}"
        ) from exc
    return metrics


def _as_masks(masks, name: str) -> torch.Tensor:
    """Boolean ``N x H x W`` CPU tensor from ``H x W``, ``N x H x W`` or ``N x 1 x H x W``."""
    masks = torch.as_tensor(np.asarray(masks) if not torch.is_tensor(masks) else masks)
    masks = masks.detach().cpu()
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(
            f"{name} must be one H x W mask or a batch N x H x W (or N x 1 x H x W), got shape "
            f"{tuple(masks.shape)}"
        )
    if masks.dtype != torch.bool:
        if masks.is_floating_point() and not torch.isfinite(masks).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        if ((masks != 0) & (masks != 1)).any():
            raise ValueError(
                f"{name} must be binary (bool or 0/1), got values in [{masks.min()}, "
                f"{masks.max()}]; threshold probabilities first "
                "(medvision.evaluation.metrics.binarize)"
            )
    return masks.bool()


def _check_pair(pred, truth) -> tuple[torch.Tensor, torch.Tensor]:
    pred, truth = _as_masks(pred, "pred"), _as_masks(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(
            f"pred and truth must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(truth.shape)}"
        )
    return pred, truth


def _check_spacing(spacing: Sequence[float] | None) -> tuple[float, float] | None:
    if spacing is None:
        return None
    values = tuple(float(s) for s in spacing)
    if len(values) != 2 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(
            f"spacing must be the pixel size (row, col) in mm, two positive numbers, got "
            f"{spacing!r}"
        )
    return values


def image_diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """The diagonal of an image's extent: the HD95 given when exactly one mask is empty.

    Args:
        shape: ``(H, W)`` in pixels.
        spacing: Pixel size ``(row, col)`` in mm, or ``None`` for pixels.

    Returns:
        ``sqrt((H * row) ** 2 + (W * col) ** 2)``.
    """
    row, col = _check_spacing(spacing) or (1.0, 1.0)
    return math.hypot(shape[0] * row, shape[1] * col)


def _where_both(preds, truths, both_empty: float, one_empty: float, metric: str, **kwargs):
    """MONAI's ``metric`` on the ``N x H x W`` pairs where both masks have foreground, the given
    values where both or one is empty; ``N`` float64 values."""
    has_pred, has_truth = preds.flatten(1).any(1), truths.flatten(1).any(1)
    values = np.where(has_pred | has_truth, one_empty, both_empty).astype(np.float64)
    both = (has_pred & has_truth).numpy()
    if both.any():
        with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal call
            warnings.filterwarnings(
                "ignore", message=".*always_return_as_numpy", category=FutureWarning
            )
            scored = getattr(_monai_metrics(), metric)(
                preds[both][:, None].float(),
                truths[both][:, None].float(),
                include_background=True,
                **kwargs,
            )
        values[both] = scored[:, 0].double().numpy()
    return values


def hd95_batch(preds, truths, spacing: Sequence[float] | None = None) -> np.ndarray:
    """95th-percentile Hausdorff distance of each image's pair of binary masks.

    Args:
        preds: Predicted masks ``N x H x W`` or ``N x 1 x H x W`` (bool or 0/1; numpy or torch).
        truths: Reference masks of the same shape.
        spacing: Pixel size ``(row, col)`` in mm; ``None``: distances in pixels.

    Returns:
        Float64 array ``N``: HD95 per image (in mm with ``spacing``); 0 when both masks are
        empty, the image diagonal when exactly one is (see the module docstring).
    """
    preds, truths = _check_pair(preds, truths)
    spacing = _check_spacing(spacing)
    diagonal = image_diagonal(preds.shape[1:], spacing)
    return _where_both(
        preds, truths, 0.0, diagonal, "compute_hausdorff_distance", percentile=95, spacing=spacing
    )


def surface_dice_batch(
    preds, truths, tolerance: float = 1.0, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Normalized surface Dice of each image's pair of binary masks.

    Args:
        preds: Predicted masks ``N x H x W`` or ``N x 1 x H x W`` (bool or 0/1; numpy or torch).
        truths: Reference masks of the same shape.
        tolerance: Boundary deviation accepted as correct, in pixels (in mm with ``spacing``),
            at least 0.
        spacing: Pixel size ``(row, col)`` in mm; ``None``: pixels.

    Returns:
        Float64 array ``N`` in [0, 1]: NSD per image; 1 when both masks are empty, 0 when
        exactly one is (see the module docstring).
    """
    preds, truths = _check_pair(preds, truths)
    spacing = _check_spacing(spacing)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    return _where_both(
        preds,
        truths,
        1.0,
        0.0,
        "compute_surface_dice",
        class_thresholds=[float(tolerance)],
        spacing=spacing,
    )


def hd95(pred, truth, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance of one pair of 2D binary masks.

    Args:
        pred: Predicted mask ``H x W`` (bool or 0/1; numpy or torch).
        truth: Reference mask ``H x W``.
        spacing: Pixel size ``(row, col)`` in mm; ``None``: distance in pixels.

    Returns:
        HD95 (in mm with ``spacing``): 0 when both masks are empty, the image diagonal when
        exactly one is.
    """
    _check_single(pred, truth)
    return float(hd95_batch(pred, truth, spacing)[0])


def surface_dice(
    pred, truth, tolerance: float = 1.0, spacing: Sequence[float] | None = None
) -> float:
    """Normalized surface Dice of one pair of 2D binary masks.

    Args:
        pred: Predicted mask ``H x W`` (bool or 0/1; numpy or torch).
        truth: Reference mask ``H x W``.
        tolerance: Accepted boundary deviation in pixels (in mm with ``spacing``).
        spacing: Pixel size ``(row, col)`` in mm; ``None``: pixels.

    Returns:
        NSD in [0, 1]: 1 when both masks are empty, 0 when exactly one is.
    """
    _check_single(pred, truth)
    return float(surface_dice_batch(pred, truth, tolerance, spacing)[0])


def _check_single(pred, truth) -> None:
    for name, mask in (("pred", pred), ("truth", truth)):
        if np.ndim(mask) != 2:
            raise ValueError(
                f"{name} must be one H x W mask, got shape {tuple(np.shape(mask))}; use "
                "hd95_batch / surface_dice_batch for N x H x W batches"
            )
