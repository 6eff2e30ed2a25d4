"""What a segmenter's output becomes: masks or label maps, and their per-image scores.

Conventions (see ``docs/models.md``): ``num_classes == 1`` is binary segmentation, one
sigmoid channel, foreground where its probability is above a threshold; ``num_classes >= 2``
is multi-class, softmax over ``num_classes`` channels, each pixel the class of its highest
probability (argmax), class 0 the background.

Per-image scores (:func:`image_scores`) are those of ``medvision test``'s
``test_per_image.csv`` and ``medvision predict``'s ``metrics.csv``: Dice and IoU
(:func:`medvision.evaluation.metrics.overlap_scores`), HD95 and normalized surface Dice
(:mod:`medvision.evaluation.surface_metrics`, with MONAI; empty masks defined there). For label
maps each
scored class gets its own ``<metric>/<class>`` and the plain ``dice``, ``iou``, ``hd95``,
``surface_dice`` are the means over the scored classes (the foreground classes, or all with
``include_background``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medvision.evaluation.metrics import overlap_scores
from medvision.evaluation.surface_metrics import INSTALL_HINT, hd95_batch, surface_dice_batch

#: The overlap scores, always computed.
OVERLAP_METRICS = ("dice", "iou")
#: The boundary scores, computed when MONAI is installed.
SURFACE_METRICS = ("hd95", "surface_dice")


def labels_from_probabilities(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Predicted masks or label maps ``N x H x W`` from probabilities ``N x C x H x W``.

    Args:
        probs: Sigmoid probabilities ``N x 1 x H x W`` (binary), or softmax probabilities
            ``N x K x H x W`` with ``K >= 2`` (multi-class).
        threshold: Binary: foreground where the probability is above it. Unused for K >= 2.

    Returns:
        bool ``N x H x W`` (binary), or int64 ``N x H x W`` class indices (argmax).
    """
    if probs.ndim != 4:
        raise ValueError(f"expected probabilities N x C x H x W, got {tuple(probs.shape)}")
    if probs.shape[1] == 1:
        return probs[:, 0] > threshold
    return probs.argmax(dim=1)


def labels_at_size(probs: torch.Tensor, size: tuple[int, int], threshold: float) -> np.ndarray:
    """One image's prediction at its original size: probabilities resized, then decided.

    Probabilities are resized bilinearly (``align_corners=False``), then thresholded (one
    channel) or their argmax taken (several), as the preprocessing record says.

    Args:
        probs: ``C x h x w`` probabilities at the network's size (C = 1 or K).
        size: ``(height, width)`` of the original image.
        threshold: Binary threshold (unused for K >= 2).

    Returns:
        bool ``height x width`` (binary) or uint8 class indices ``height x width``.
    """
    resized = F.interpolate(probs[None].float(), size=size, mode="bilinear", align_corners=False)
    labels = labels_from_probabilities(resized, threshold)[0].cpu().numpy()
    return labels if labels.dtype == bool else labels.astype(np.uint8)


def scored_classes(num_classes: int, include_background: bool = False) -> list[int]:
    """The class indices scored: ``[1]`` for binary masks; label maps ``1..K-1`` (or ``0..``).

    Args:
        num_classes: 1 (binary) or ``K >= 2``.
        include_background: Score class 0 of a label map too.
    """
    if num_classes == 1:
        return [1]
    return list(range(0 if include_background else 1, num_classes))


def score_columns(
    class_names: Sequence[str], include_background: bool = False, surface: bool = True
) -> list[str]:
    """The score columns of :func:`image_scores`, in order.

    Args:
        class_names: One name (binary) or one per class, background first.
        include_background: As in :func:`image_scores`.
        surface: Whether HD95 and surface Dice are included.

    Returns:
        ``dice, iou[, hd95, surface_dice]`` then, for label maps, ``<metric>/<class>`` for
        each of those metrics and each scored class.
    """
    metrics = [*OVERLAP_METRICS, *(SURFACE_METRICS if surface else ())]
    if len(class_names) == 1:
        return metrics
    classes = scored_classes(len(class_names), include_background)
    return metrics + [f"{metric}/{class_names[c]}" for metric in metrics for c in classes]


def image_scores(
    pred,
    truth,
    class_names: Sequence[str],
    include_background: bool = False,
    tolerance: float = 1.0,
    spacing: Sequence[float] | None = None,
    surface: bool = True,
) -> dict[str, float]:
    """Dice, IoU, HD95 and surface Dice of one image's prediction against its truth.

    Args:
        pred: ``H x W`` prediction (numpy or torch): a mask (non-zero = foreground) when
            ``class_names`` has one name, else class indices.
        truth: ``H x W`` truth of the same kind.
        class_names: One name (binary) or one per class, background first.
        include_background: Label maps: score class 0 as well (in the means too).
        tolerance: Surface Dice tolerance, in pixels (mm with ``spacing``).
        spacing: ``(row, col)`` pixel size in mm, or None for pixels.
        surface: Compute HD95 and surface Dice (they need MONAI:
            ``pip install "medvision-lightning[trust]"``).

    Returns:
        The :func:`score_columns` as floats: the mean over the scored classes under the plain
        names, and each class's value under ``<metric>/<class>`` for label maps.
    """
    pred, truth = _as_tensor(pred), _as_tensor(truth)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and truth must be two H x W maps of one shape, got {tuple(pred.shape)} and "
            f"{tuple(truth.shape)}"
        )
    binary = len(class_names) == 1
    classes = scored_classes(len(class_names), include_background)
    if binary:
        preds, truths = (pred != 0)[None], (truth != 0)[None]
    else:
        index = torch.tensor(classes).view(-1, 1, 1)
        preds, truths = pred[None] == index, truth[None] == index
    dice, iou = overlap_scores(preds, truths)
    values = {"dice": dice.double().numpy(), "iou": iou.double().numpy()}
    if surface:
        values["hd95"] = hd95_batch(preds, truths, spacing)
        values["surface_dice"] = surface_dice_batch(preds, truths, tolerance, spacing)
    scores = {metric: float(np.mean(per_class)) for metric, per_class in values.items()}
    if not binary:
        for metric, per_class in values.items():
            for c, value in zip(classes, per_class, strict=True):
                scores[f"{metric}/{class_names[c]}"] = float(value)
    return {
        column: scores[column] for column in score_columns(class_names, include_background, surface)
    }


def surface_metrics_available() -> bool:
    """Whether MONAI, which HD95 and surface Dice need, can be imported."""
    try:
        import monai.metrics  # noqa: F401
    except ImportError:
        return False
    return True


#: Said once when HD95 and surface Dice are left out for want of MONAI.
SURFACE_MISSING = (
    f"HD95 and surface Dice are left out: they need MONAI, which is not installed. {INSTALL_HINT}"
)


def _as_tensor(values) -> torch.Tensor:
    if torch.is_tensor(values):
        return values.detach().cpu()
    return torch.from_numpy(np.ascontiguousarray(values))
