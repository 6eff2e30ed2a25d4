"""Every loss of medvision, by short name or class path, behind one :func:`build_loss`.

Segmentation losses take raw logits. Binary (``num_classes == 1``): logits and a 0/1 float
target of the same shape, ``N x 1 x H x W``. Multi-class (``num_classes >= 2``): logits
``N x K x H x W`` and an int64 label map ``N x H x W`` (values ``0..K-1``, 0 = background).
Dice and focal are segmentation-models-pytorch's in its ``binary`` or ``multiclass`` mode, and
the U-Net paper's border-weighted cross-entropy is here because no library ships it.
Classification losses take logits ``N x K``: cross-entropy with class weights and label
smoothing (single-label), and binary cross-entropy over the known labels only (multi-label,
with a ``known`` mask). The weights that counter class imbalance
(:func:`balanced_class_weights`, :func:`positive_weights`) and the feature GAN's
:func:`adversarial_loss` live here too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss
from torch import nn

from medvision.utils.imports import import_object

#: Short names of the binary segmentation losses (``SegmentationModule``'s ``loss``).
SEGMENTATION_LOSSES = ("bce", "dice", "bce_dice", "focal", "unet_weighted_bce")
#: Short names of the multi-class segmentation losses (``num_classes >= 2``).
MULTICLASS_SEGMENTATION_LOSSES = ("cross_entropy", "dice", "dice_ce", "focal")
#: The binary losses that have no multi-class form, and the multi-class loss to use instead.
_BINARY_ONLY = {"bce": "cross_entropy", "bce_dice": "dice_ce", "unet_weighted_bce": "dice_ce"}
#: Short names of the classification losses (``ClassificationModule`` picks one).
CLASSIFICATION_LOSSES = ("cross_entropy", "masked_bce")


def unet_weight_map(
    mask: np.ndarray, w0: float = 10.0, sigma: float = 5.0, class_balance: bool = True
) -> np.ndarray:
    """The U-Net paper's pixel weights ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / 2 sigma^2)``.

    Objects are the connected foreground components; ``d1``/``d2`` are the distances to the
    nearest and second-nearest object. The border term is applied to background pixels, where
    it marks the thin gaps between touching objects (e.g. the two lungs); with fewer than two
    objects it is zero. ``w_c`` balances the classes: ``0.5 / frequency`` of the pixel's
    class, so it averages 1 over the image (all ones when ``class_balance`` is off or a class
    is absent).

    Args:
        mask: ``H x W`` with 0 background and non-zero foreground.
        w0: Weight of the border term.
        sigma: Width of the border term, in pixels.
        class_balance: Add the class-balancing ``w_c``; off: ``w_c`` is 1.

    Returns:
        float32 ``H x W`` weights.
    """
    foreground = mask > 0
    weights = np.ones(mask.shape, dtype=np.float32)
    fraction = foreground.mean()
    if class_balance and 0 < fraction < 1:
        weights[foreground] = 0.5 / fraction
        weights[~foreground] = 0.5 / (1 - fraction)
    labels, num_objects = ndimage.label(foreground)
    if num_objects >= 2:
        distances = np.stack(
            [ndimage.distance_transform_edt(labels != i) for i in range(1, num_objects + 1)]
        )
        distances.partition(1, axis=0)
        gap = distances[0] + distances[1]
        border = w0 * np.exp(-(gap**2) / (2 * sigma**2))
        weights += np.where(foreground, 0.0, border).astype(np.float32)
    return weights


class UNetWeightedBCELoss(nn.Module):
    """Binary cross-entropy weighted per pixel by :func:`unet_weight_map` (Ronneberger et al. 2015).

    The paper's two-class softmax cross-entropy equals sigmoid BCE on a single logit. The weight
    map is computed from each target mask on the CPU (it depends on connected components and
    distance transforms) and the loss is ``mean(w * bce)`` over all pixels.

    Shape: logits and target ``N x 1 x H x W``; target 0/1.

    Args:
        w0: Weight of the border term (see :func:`unet_weight_map`).
        sigma: Width of the border term, in pixels.
        class_balance: Balance foreground and background pixels in the weight map.
    """

    def __init__(self, w0: float = 10.0, sigma: float = 5.0, class_balance: bool = True) -> None:
        super().__init__()
        self.w0, self.sigma, self.class_balance = w0, sigma, class_balance

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weights = self.weight_map(target).to(logits.device, logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (weights * bce).mean()

    @torch.no_grad()
    def weight_map(self, target: torch.Tensor) -> torch.Tensor:
        masks = target.detach().cpu().numpy().reshape(-1, *target.shape[-2:])
        maps = [unet_weight_map(m, self.w0, self.sigma, self.class_balance) for m in masks]
        return torch.from_numpy(np.stack(maps)).reshape(target.shape)


class _WeightedSum(nn.Module):
    """``sum(weight * loss(logits, target))`` over named ``(weight, loss)`` terms."""

    def __init__(self, **terms: tuple[float, nn.Module]) -> None:
        super().__init__()
        self.weights = {name: weight for name, (weight, _) in terms.items()}
        self.terms = nn.ModuleDict({name: loss for name, (_, loss) in terms.items()})

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.weights[name] * loss(logits, target) for name, loss in self.terms.items())


class BCEDiceLoss(_WeightedSum):
    """``bce_weight * BCE + dice_weight * soft Dice loss`` on logits; shapes ``N x 1 x H x W``.

    The soft Dice loss is smp's ``DiceLoss(mode="binary")``; the target is 0/1 float.

    Args:
        bce_weight: Weight of the binary cross-entropy term.
        dice_weight: Weight of the Dice term.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__(
            bce=(bce_weight, nn.BCEWithLogitsLoss()),
            dice=(dice_weight, DiceLoss(mode="binary", from_logits=True)),
        )


class DiceCELoss(_WeightedSum):
    """``dice_weight * soft Dice loss + ce_weight * cross-entropy`` for label maps.

    The multi-class counterpart of :class:`BCEDiceLoss`: smp's ``DiceLoss(mode="multiclass")``
    (``1 - Dice`` of the softmax per class, averaged over classes; a class absent from the
    batch's target adds 0) plus ``torch.nn.functional.cross_entropy``.

    Args:
        dice_weight: Weight of the Dice term.
        ce_weight: Weight of the cross-entropy term.

    Shape: logits ``N x K x H x W``; target int64 ``N x H x W`` with values ``0..K-1``.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__(
            dice=(dice_weight, DiceLoss(mode="multiclass", from_logits=True)),
            ce=(ce_weight, nn.CrossEntropyLoss()),
        )


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy of logits ``N x K`` against class indices ``N``, with class weights.

    Also per pixel: logits ``N x K x H x W`` against a label map ``N x H x W``.

    Args:
        num_classes: ``K``.
        label_smoothing: Share of the target mass spread over all classes, in ``[0, 1)``.

    ``weight`` (a ``K`` float tensor, or None for equal weights) is a buffer that can be set
    after construction, e.g. from the training set's class counts at ``setup``.
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits, target, weight=self.weight, label_smoothing=self.label_smoothing
        )


class MaskedBCEWithLogits(nn.Module):
    """Binary cross-entropy of logits ``N x K`` against 0/1 labels, over the known labels only.

    The loss is the sum over known entries divided by their count (unknown ones, e.g.
    uncertain CheXpert labels, contribute nothing). ``pos_weight`` (a ``K`` tensor or None) is
    a buffer, settable after construction: each label's positives weigh that much more.

    Args:
        num_classes: ``K``, the number of labels.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("pos_weight", None, persistent=False)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor | None = None
    ) -> torch.Tensor:
        losses = F.binary_cross_entropy_with_logits(
            logits, target, pos_weight=self.pos_weight, reduction="none"
        )
        if known is None:
            return losses.mean()
        return (losses * known).sum() / known.sum().clamp(min=1)


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """``n / (k * n_c)`` per class (scikit-learn's "balanced"): rare classes weigh more.

    Args:
        counts: Training images per class, in class order; every class must be present.
    """
    counts_tensor = torch.as_tensor(list(counts), dtype=torch.float32)
    if (counts_tensor <= 0).any():
        raise ValueError(f"class_weights: auto needs every class in the training set: {counts}")
    return counts_tensor.sum() / (len(counts_tensor) * counts_tensor)


def positive_weights(positives: Sequence[int], known: Sequence[int]) -> torch.Tensor:
    """BCE ``pos_weight`` per label: negatives / positives among the images where it is known.

    Args:
        positives: Training images positive for each label.
        known: Training images whose label is known (not ignored), per label.
    """
    positives_t = torch.as_tensor(list(positives), dtype=torch.float32)
    known_t = torch.as_tensor(list(known), dtype=torch.float32)
    if (positives_t <= 0).any():
        raise ValueError(f"class_weights: auto needs a positive of every label: {positives}")
    return (known_t - positives_t) / positives_t


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Binary cross-entropy of discriminator logits against all-real or all-fake targets.

    Args:
        logits: The discriminator's logits, any shape.
        real: Whether the target is "real" (1) or "fake" (0).
    """
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def build_loss(
    loss: str | nn.Module, num_classes: int = 1, label_smoothing: float = 0.0
) -> nn.Module:
    """A loss from its short name or class path, or ``loss`` itself if it is a module.

    Args:
        loss: A name from :data:`SEGMENTATION_LOSSES` (binary),
            :data:`MULTICLASS_SEGMENTATION_LOSSES` or :data:`CLASSIFICATION_LOSSES`, the
            import path of an ``nn.Module`` class built without arguments
            (``torch.nn.BCEWithLogitsLoss``), or a module. ``dice`` is smp's soft Dice
            (``1 - 2|P*T| / (|P| + |T|)`` over the batch; sigmoid probabilities when binary,
            softmax per class averaged over classes when multi-class); ``focal`` smp's focal
            loss (gamma 2); ``cross_entropy`` softmax cross-entropy; ``dice_ce`` their sum
            (:class:`DiceCELoss`).
        num_classes: Classes (or labels) of a classification loss; for ``dice`` and
            ``focal`` it picks smp's mode: ``binary`` for 1, ``multiclass`` for 2 or more.
        label_smoothing: Of ``cross_entropy``.

    Raises:
        ValueError: an unknown name (the names listed), or a binary-only loss (``bce``,
            ``bce_dice``, ``unet_weighted_bce``) with ``num_classes >= 2`` (the multi-class
            loss to use instead named).
    """
    if isinstance(loss, nn.Module):
        return loss
    mode = "multiclass" if num_classes >= 2 else "binary"
    if mode == "multiclass" and loss in _BINARY_ONLY:
        raise ValueError(
            f"loss {loss!r} is for binary masks (num_classes 1), but num_classes={num_classes}: "
            f"use {_BINARY_ONLY[loss]!r} (multi-class losses: "
            f"{', '.join(MULTICLASS_SEGMENTATION_LOSSES)})."
        )
    named = {
        "bce": nn.BCEWithLogitsLoss,
        "dice": lambda: DiceLoss(mode=mode, from_logits=True),
        "bce_dice": BCEDiceLoss,
        "dice_ce": DiceCELoss,
        "focal": lambda: FocalLoss(mode=mode),
        "unet_weighted_bce": UNetWeightedBCELoss,
        "cross_entropy": lambda: WeightedCrossEntropy(num_classes, label_smoothing),
        "masked_bce": lambda: MaskedBCEWithLogits(num_classes),
    }
    if loss in named:
        return named[loss]()
    if "." in loss:
        return _loss_from_class_path(loss)
    names = SEGMENTATION_LOSSES if mode == "binary" else MULTICLASS_SEGMENTATION_LOSSES
    raise ValueError(
        f"unknown loss {loss!r}: use one of {', '.join(names)} or give the class "
        "path of an nn.Module (e.g. torch.nn.BCEWithLogitsLoss)"
    )


def _loss_from_class_path(class_path: str) -> nn.Module:
    loss_class = import_object(class_path)
    if not (isinstance(loss_class, type) and issubclass(loss_class, nn.Module)):
        raise ValueError(f"loss {class_path!r} is not an nn.Module class")
    return loss_class()
