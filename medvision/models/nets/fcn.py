"""FCN-8s decoder on any segmentation-models-pytorch encoder.

smp has no FCN. This one follows Long et al. (2015), FCN-8s: the deepest features pass through
an ``fc6/fc7``-like convolution block, then 1x1 *score* layers turn the stride-32, stride-16 and
stride-8 features into class scores, which are upsampled by 2 and **summed** (not concatenated,
as a U-Net does) before a final upsampling to the input size. Upsampling is bilinear
interpolation, which is what the paper's fixed-bilinear-initialised deconvolutions start as.
With the same ``encoder_name`` as an smp ``Unet``, "FCN vs U-Net" compares decoders only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationModel
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn


def _upsample_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class FCNDecoder(nn.Module):
    """Score layers with skip sums over the last three encoder stages.

    Expects the list of encoder features ``[input, stride 2, ..., stride 32]`` (smp's encoder
    output, at least 4 entries) and returns class scores ``N x classes x H x W`` at the size of
    ``features[0]`` (the input).

    Args:
        encoder_channels: Channels of each encoder output, smp's ``encoder.out_channels``; at
            least 4 entries (stride-8 features), else ``ValueError``.
        classes: Output channels (class scores).
        head_channels: Width of the ``fc6/fc7``-like block on the deepest features.
        dropout: ``Dropout2d`` probability in that block.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        classes: int = 1,
        head_channels: int = 512,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if len(encoder_channels) < 4:
            raise ValueError("FCN-8s needs an encoder of depth >= 3 (stride-8 features)")
        c8, c16, c32 = encoder_channels[-3:]
        self.head = nn.Sequential(  # the fully connected layers fc6/fc7, as convolutions
            nn.Conv2d(c32, head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(head_channels, head_channels, 1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.score32 = nn.Conv2d(head_channels, classes, 1)
        self.score16 = nn.Conv2d(c16, classes, 1)
        self.score8 = nn.Conv2d(c8, classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        image, f8, f16, f32 = features[0], features[-3], features[-2], features[-1]
        score = self.score32(self.head(f32))
        score = _upsample_to(score, f16) + self.score16(f16)
        score = _upsample_to(score, f8) + self.score8(f8)
        return _upsample_to(score, image)


class FCN(SegmentationModel):
    """FCN-8s on an smp encoder; same constructor arguments as ``smp.Unet``.

    Input ``N x in_channels x H x W`` (any H, W: no divisibility constraint), output logits
    ``N x classes x H x W``.

    Args:
        encoder_name: An smp encoder, e.g. ``resnet34``.
        encoder_depth: Encoder stages used, 3 to 5.
        encoder_weights: Pretrained encoder weights to download (``imagenet``); None: random.
        in_channels: Input channels.
        classes: Output channels (class scores).
        head_channels: Width of the ``fc6/fc7``-like block on the deepest features.
        dropout: ``Dropout2d`` probability in that block.
    """

    requires_divisible_input_shape = False

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | None = "imagenet",
        in_channels: int = 3,
        classes: int = 1,
        head_channels: int = 512,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.encoder = get_encoder(
            encoder_name, in_channels=in_channels, depth=encoder_depth, weights=encoder_weights
        )
        self.decoder = FCNDecoder(self.encoder.out_channels, classes, head_channels, dropout)
        self.segmentation_head = nn.Identity()
        self.classification_head = None
        self.name = f"fcn-{encoder_name}"
        self.initialize()
