"""Segmentation and classification metrics as torchmetrics objects.

For segmentation, Dice and IoU are computed per image and averaged over images (the usual
convention in medical image segmentation); an image where both prediction and truth are empty
scores 1. Pixel accuracy is pooled over all pixels. Multi-class label maps
(:func:`multiclass_segmentation_metrics`) are scored per class the same way (a class absent
from both an image's prediction and its truth scores 1 there), and ``dice``/``iou`` are the
mean over the foreground classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MultilabelAUROC,
    MultilabelF1Score,
    MultilabelPrecisionRecallCurve,
)


def binarize(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Foreground where the probability exceeds ``threshold`` (the rule used everywhere here).

    Args:
        probs: Probabilities in [0, 1], any shape.
        threshold: A pixel is foreground where its probability is strictly above it.

    Returns:
        Boolean tensor of ``probs``' shape.
    """
    return probs > threshold


def overlap_scores(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU of boolean masks ``N x ... `` (all dims after the first reduced).

    Both empty counts as a perfect match (1.0).

    Args:
        pred: Predicted masks ``N x ...`` (anything non-zero is foreground).
        target: True masks of the same shape.

    Returns:
        ``(dice, iou)``: float32 ``N`` each, in [0, 1].
    """
    pred, target = pred.flatten(1).bool(), target.flatten(1).bool()
    intersection = (pred & target).sum(1).float()
    total = pred.sum(1).float() + target.sum(1).float()
    union = total - intersection
    empty = total == 0
    dice = torch.where(empty, 1.0, 2 * intersection / total.clamp(min=1))
    iou = torch.where(empty, 1.0, intersection / union.clamp(min=1))
    return dice, iou


class PerImageOverlap(Metric):
    """Mean over images of the Dice or IoU score at ``threshold``.

    ``update(probs, target)``: probabilities in [0, 1] and 0/1 targets, both ``N x 1 x H x W``.
    The ISIC 2018 challenge's "thresholded Jaccard" is ``kind="iou", floor=0.65``.

    Args:
        kind: ``dice`` or ``iou``.
        threshold: Probability above which a pixel is foreground.
        floor: An image scoring below it counts as 0; None: scores as they are.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        kind: Literal["dice", "iou"] = "dice",
        threshold: float = 0.5,
        floor: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if kind not in ("dice", "iou"):
            raise ValueError(f"kind must be 'dice' or 'iou', got {kind!r}")
        self.kind, self.threshold, self.floor = kind, threshold, floor
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        dice, iou = overlap_scores(binarize(probs, self.threshold), target > 0.5)
        scores = dice if self.kind == "dice" else iou
        if self.floor is not None:
            scores = torch.where(scores < self.floor, 0.0, scores)
        self.score_sum += scores.double().sum()
        self.num_images += scores.numel()

    def compute(self) -> torch.Tensor:
        return (self.score_sum / self.num_images.clamp(min=1)).float()


def segmentation_metrics(
    threshold: float = 0.5, jaccard_floor: float | None = None, validate_args: bool = True
) -> MetricCollection:
    """``dice``, ``iou`` (per image) and ``pixel_accuracy`` for binary masks at ``threshold``.

    With ``jaccard_floor`` also ``thresholded_iou``: IoU with per-image scores below the floor
    counted as 0 (0.65 in the ISIC 2018 lesion segmentation challenge).

    Compute groups are off: Dice and IoU share state names, and torchmetrics would merge them
    into one (reporting IoU = Dice) whenever their states happen to agree after the first batch.

    Args:
        threshold: probability above which a pixel is foreground.
        jaccard_floor: per-image IoU below which an image scores 0 in ``thresholded_iou``
            (``None``: no such metric).
        validate_args: let torchmetrics check that targets are 0/1 at every update. The check
            reads a result back from the device (waiting for a GPU), so the training metrics
            turn it off; updates are then free of host reads.

    Returns:
        The metrics, to ``clone(prefix=...)`` per stage.
    """
    metrics = {
        "dice": PerImageOverlap("dice", threshold),
        "iou": PerImageOverlap("iou", threshold),
        "pixel_accuracy": BinaryAccuracy(threshold=threshold, validate_args=validate_args),
    }
    if jaccard_floor is not None:
        metrics["thresholded_iou"] = PerImageOverlap("iou", threshold, floor=jaccard_floor)
    return MetricCollection(metrics, compute_groups=False)


class LabelOverlap(Metric):
    """Mean over images of the Dice or IoU of label maps, averaged over ``classes``.

    ``update(preds, target)``: int label maps ``N x H x W`` (the argmax of the network's
    output, and the truth). Per image and per class ``c`` of ``classes``, the score of the
    masks ``preds == c`` and ``target == c`` (:func:`overlap_scores`: both empty scores 1);
    the image's score is their mean over ``classes``, and :meth:`compute` the mean over
    images. With one class it is that class's per-image Dice (IoU).

    torchmetrics' ``DiceScore``/``MeanIoU`` give NaN or -1 for a class absent from both, so
    this keeps the binary metric's convention instead.

    Args:
        kind: ``dice`` or ``iou``.
        classes: The class indices averaged over (e.g. ``range(1, K)``: the foreground).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, kind: Literal["dice", "iou"], classes: Sequence[int], **kwargs) -> None:
        super().__init__(**kwargs)
        if kind not in ("dice", "iou"):
            raise ValueError(f"kind must be 'dice' or 'iou', got {kind!r}")
        if not len(classes):
            raise ValueError("classes must name at least one class index")
        self.kind = kind
        self.register_buffer("classes", torch.as_tensor(list(classes)), persistent=False)
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        scores = class_overlap_scores(preds, target, self.classes)[0 if self.kind == "dice" else 1]
        self.score_sum += scores.mean(1).double().sum()
        self.num_images += scores.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.score_sum / self.num_images.clamp(min=1)).float()


def class_overlap_scores(
    preds: torch.Tensor, target: torch.Tensor, classes: Sequence[int] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-class Dice and IoU of label maps (see :func:`overlap_scores`).

    Args:
        preds: Int label maps ``N x H x W``.
        target: Int label maps ``N x H x W``.
        classes: The ``C`` class indices to score.

    Returns:
        ``(dice, iou)``, each float ``N x C``.
    """
    classes = torch.as_tensor(classes, device=preds.device).view(1, -1, 1, 1)
    pred_masks = preds.unsqueeze(1) == classes  # N x C x H x W
    true_masks = target.unsqueeze(1) == classes
    dice, iou = overlap_scores(pred_masks.flatten(0, 1), true_masks.flatten(0, 1))
    return dice.view(len(preds), -1), iou.view(len(preds), -1)


def multiclass_segmentation_metrics(
    class_names: Sequence[str], include_background: bool = False, validate_args: bool = True
) -> tuple[MetricCollection, MetricCollection]:
    """Metrics of multi-class label maps: headline scores and per-class scores.

    ``update(preds, target)`` takes int label maps ``N x H x W`` (argmax predictions, truth)
    with values ``0..K-1``, class 0 the background.

    Args:
        class_names: One name per class, background first (``K >= 2``).
        include_background: Score the background class too (MONAI's ``include_background``):
            in the means and with its own per-class entries. Default: foreground only.
        validate_args: Let torchmetrics check the labels' range at every update (a read
            from the device; the training metrics turn it off).

    Returns:
        ``(headline, per_class)``: ``dice`` and ``iou`` (means over the scored classes of
        the per-image scores) and ``pixel_accuracy`` (pooled over all pixels, all classes);
        and ``dice/<class>``, ``iou/<class>`` for each scored class. Clone each with a stage
        ``prefix``.
    """
    num_classes = len(class_names)
    if num_classes < 2:
        raise ValueError(f"multi-class metrics need 2 or more class_names, got {class_names}")
    scored = list(range(0 if include_background else 1, num_classes))
    headline = {
        "dice": LabelOverlap("dice", scored),
        "iou": LabelOverlap("iou", scored),
        "pixel_accuracy": MulticlassAccuracy(
            num_classes,
            average="micro",
            multidim_average="global",
            validate_args=validate_args,
        ),
    }
    per_class = {}
    for index in scored:
        for kind in ("dice", "iou"):
            per_class[f"{kind}/{class_names[index]}"] = LabelOverlap(kind, [index])
    return (
        MetricCollection(headline, compute_groups=False),
        MetricCollection(per_class, compute_groups=False),
    )


def classification_metrics(num_classes: int) -> MetricCollection:
    """Single-label classification metrics for probabilities ``N x num_classes`` and labels ``N``.

    Scalars: ``accuracy``, ``balanced_accuracy`` (mean per-class recall), ``f1`` (macro) and
    ``auroc`` (one-vs-rest, macro). Vectors of length ``num_classes``: ``precision``, ``recall``
    and ``f1_per_class``. And the ``confusion_matrix`` (rows: true class, columns: predicted).

    Args:
        num_classes: Number of classes (2 or more).

    Returns:
        The metrics, to ``clone(prefix=...)`` per stage.
    """
    kwargs = {"num_classes": num_classes}
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(average="micro", **kwargs),
            "balanced_accuracy": MulticlassAccuracy(average="macro", **kwargs),
            "f1": MulticlassF1Score(average="macro", **kwargs),
            "auroc": MulticlassAUROC(average="macro", **kwargs),
            "precision": MulticlassPrecision(average=None, **kwargs),
            "recall": MulticlassRecall(average=None, **kwargs),
            "f1_per_class": MulticlassF1Score(average=None, **kwargs),
            "confusion_matrix": MulticlassConfusionMatrix(**kwargs),
        }
    )


def loggable_scalars(values: dict[str, torch.Tensor], class_names: list[str]) -> dict:
    """Flatten computed metrics for ``log_dict``: per-class vectors become ``<key>/<class>``.

    The confusion matrix and PR curve are left out (written as files, or used for thresholds).

    Args:
        values: What a ``MetricCollection`` computed: name -> scalar, or vector with one
            value per class.
        class_names: The names of the vectors' entries, in order.

    Returns:
        Name -> scalar tensor.
    """
    scalars = {}
    for key, value in values.items():
        if key.endswith(("confusion_matrix", "pr_curve")):
            continue
        if value.ndim == 0:
            scalars[key] = value
        else:
            scalars.update({f"{key}/{name}": v for name, v in zip(class_names, value, strict=True)})
    return scalars


#: Target value marking an unknown (uncertain, blank) label; such entries are left out.
IGNORE_LABEL = -1


def multilabel_metrics(num_labels: int, threshold_bins: int = 101) -> MetricCollection:
    """Multi-label metrics for probabilities ``N x num_labels`` and 0/1 targets (-1 = unknown).

    ``auroc`` (mean over labels) and ``auroc_per_label``; ``f1`` (macro) and ``f1_per_label``
    at 0.5; and ``pr_curve``, from which :func:`best_f1_thresholds` picks each label's
    F1-maximizing threshold.

    Args:
        num_labels: Number of labels ``K``.
        threshold_bins: Number of evenly spaced thresholds in [0, 1] the PR curve is binned
            at.

    Returns:
        The metrics, to ``clone(prefix=...)`` per stage.
    """
    kwargs = {"num_labels": num_labels, "ignore_index": IGNORE_LABEL}
    return MetricCollection(
        {
            "auroc": MultilabelAUROC(average="macro", **kwargs),
            "auroc_per_label": MultilabelAUROC(average=None, **kwargs),
            "f1": MultilabelF1Score(average="macro", **kwargs),
            "f1_per_label": MultilabelF1Score(average=None, **kwargs),
            "pr_curve": MultilabelPrecisionRecallCurve(thresholds=threshold_bins, **kwargs),
        }
    )


def best_f1_thresholds(
    pr_curve: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per label, the threshold with the highest F1 on a binned PR curve, and that F1.

    Ties go to the lowest threshold.

    Args:
        pr_curve: ``(precision, recall, thresholds)`` as ``MultilabelPrecisionRecallCurve``
            computes them (``K x (T + 1)``, ``K x (T + 1)``, ``T``).

    Returns:
        ``(thresholds, f1)``: float32 ``K`` each.
    """
    precision, recall, thresholds = (t.float() for t in pr_curve)
    precision, recall = precision[:, :-1], recall[:, :-1]  # drop the appended (1, 0) point
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    f1 = f1.nan_to_num(0.0)  # no predicted positives at the top thresholds: precision is NaN
    best = f1.argmax(dim=1)
    return thresholds[best], f1.gather(1, best[:, None])[:, 0]
