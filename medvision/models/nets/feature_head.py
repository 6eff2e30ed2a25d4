"""Classifiers split into ``features`` and ``head``, registered with timm by name."""

from __future__ import annotations

import torch
from torch import nn


class FeatureHeadNet(nn.Module):
    """A classifier that is ``head(features(x))``, with timm's ``forward_features/forward_head``.

    Subclasses set ``self.features`` (image -> feature map), ``self.head`` (feature map ->
    logits), ``num_classes`` and ``num_features`` (channels of the feature map). The split is
    where the GAN rebalancing study cuts a trained classifier.
    """

    features: nn.Module
    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def entrypoint_kwargs(name: str, pretrained: bool, kwargs: dict) -> dict:
    """Constructor arguments from what ``timm.create_model`` passes a registered entrypoint.

    Args:
        name: The model's registered name, for the error message.
        pretrained: timm's ``pretrained``; True raises ``ValueError`` (these networks have no
            published weights).
        kwargs: The entrypoint's keyword arguments; timm's pretrained-config ones
            (``pretrained_cfg``, ``pretrained_cfg_overlay``, ``cache_dir``) are removed in place.

    Returns:
        ``kwargs``, for the network's constructor.
    """
    if pretrained:
        raise ValueError(
            f"{name} has no pretrained weights; set pretrained: false, or give a checkpoint of "
            "your own as pretrained_weights."
        )
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return kwargs
