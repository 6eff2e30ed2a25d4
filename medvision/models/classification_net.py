"""Building a classifier's network: timm's model, checked class names, input statistics."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

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


def check_class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """The class names as a list; ``'0'``, ``'1'``, ... (with a warning) when not given.

    Args:
        class_names: The names, or None.
        num_classes: How many there must be.
    """
    if class_names is None:
        warnings.warn(
            f"class_names not given: classes are reported as '0'..'{num_classes - 1}'. The CLI "
            "links them from the datamodule; pass class_names= when building the module by hand.",
            stacklevel=3,
        )
        return [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes}")
    return list(class_names)


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
