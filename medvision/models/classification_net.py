"""Building a classifier's network: timm's model and its input statistics."""

from __future__ import annotations

import timm
import torch
from torch import nn

import medvision.models.nets  # noqa: F401  (registers cnn5 and vgg_leaky with timm)
from medvision.models.weights import explain_download_failure


def create_classification_net(
    model_name: str, pretrained: bool, in_channels: int, num_classes: int, **kwargs
) -> nn.Module:
    """``timm.create_model`` with a clear error when pretrained weights cannot be fetched.

    Args:
        model_name: A timm model name, or ``cnn5`` / ``vgg_leaky``.
        pretrained: Load timm's hub weights (online).
        in_channels: Input channels.
        num_classes: Output logits.
        **kwargs: More ``timm.create_model`` arguments.

    Returns:
        The network, mapping ``N x in_channels x H x W`` to ``N x num_classes`` logits.
    """
    if not timm.is_model(model_name):
        raise ValueError(
            f"unknown model_name {model_name!r}: use a timm model name (timm.list_models()), "
            "'cnn5' or 'vgg_leaky'."
        )
    with explain_download_failure(
        f"the pretrained weights of {model_name!r}",
        "Set pretrained: false, or give a local file as pretrained_weights.",
    ):
        return timm.create_model(
            model_name,
            pretrained=pretrained,
            num_classes=num_classes,
            in_chans=in_channels,
            **kwargs,
        )


def input_stats(net: nn.Module, in_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's expected input mean/std (timm data config), as ``1 x C x 1 x 1`` tensors.

    For one input channel, the mean of the RGB values.

    Args:
        net: A timm network.
        in_channels: The input's channels.
    """
    config = timm.data.resolve_model_data_config(net)
    mean = torch.tensor(config["mean"], dtype=torch.float32)
    std = torch.tensor(config["std"], dtype=torch.float32)
    if in_channels != len(mean):
        mean, std = mean.mean().repeat(in_channels), std.mean().repeat(in_channels)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
