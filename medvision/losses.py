"""Segmentation losses for binary masks, by short name or as any ``nn.Module``.

All losses take raw logits and a target of the same shape, ``N x 1 x H x W``, target values
0/1 (float). Dice and focal losses are segmentation-models-pytorch's; the U-Net paper's
border-weighted cross-entropy is here because no library ships it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss
from torch import nn

LOSS_NAMES = ("bce", "dice", "bce_dice", "focal", "unet_weighted_bce")


def unet_weight_map(
    mask: np.ndarray, w0: float = 10.0, sigma: float = 5.0, class_balance: bool = True
) -> np.ndarray:
    """The U-Net paper's pixel weights ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / 2 sigma^2)``.

    ``mask`` is ``H x W`` with 0 background and non-zero foreground. Objects are the connected
    foreground components; ``d1``/``d2`` are the distances to the nearest and second-nearest
    object. The border term is applied to background pixels, where it marks the thin gaps
    between touching objects (e.g. the two lungs); with fewer than two objects it is zero.
    ``w_c`` balances the classes: ``0.5 / frequency`` of the pixel's class, so it averages 1
    over the image (all ones when ``class_balance`` is off or a class is absent).
    Returns float32 ``H x W``.
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


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * soft Dice loss`` on logits; shapes ``N x 1 x H x W``."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss()
        self.dice = DiceLoss(mode="binary", from_logits=True)
        self.bce_weight, self.dice_weight = bce_weight, dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.bce_weight * self.bce(logits, target) + self.dice_weight * self.dice(
            logits, target
        )


def build_loss(loss: str | nn.Module) -> nn.Module:
    """A loss from its short name (one of :data:`LOSS_NAMES`), or ``loss`` itself if a module.

    ``dice`` is smp's binary soft Dice (``1 - 2|P*T| / (|P| + |T|)`` over the batch, on sigmoid
    probabilities); ``focal`` is smp's binary focal loss (gamma 2).
    """
    if isinstance(loss, nn.Module):
        return loss
    if loss == "bce":
        return nn.BCEWithLogitsLoss()
    if loss == "dice":
        return DiceLoss(mode="binary", from_logits=True)
    if loss == "bce_dice":
        return BCEDiceLoss()
    if loss == "focal":
        return FocalLoss(mode="binary")
    if loss == "unet_weighted_bce":
        return UNetWeightedBCELoss()
    raise ValueError(
        f"unknown loss {loss!r}: use one of {', '.join(LOSS_NAMES)} or give a "
        "class_path to an nn.Module"
    )
