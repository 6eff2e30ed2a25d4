"""The feature-space GAN of the rebalancing study: class-conditional generator and discriminator.

Both work on a classifier's feature maps (``C x h x w``, e.g. ``512 x 10 x 10`` for the study's
VGG-style extractor at 160x160, ``512 x 4 x 4`` for a ResNet at 128x128), not on images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _halvings(size: int, most: int) -> int:
    """How many times ``size`` halves evenly, at most ``most``: 10 -> 1, 8 -> 3 (or ``most``)."""
    count = 0
    while count < most and size % 2 == 0 and size > 1:
        size //= 2
        count += 1
    return count


def _block(in_ch: int, out_ch: int, up: bool) -> list[nn.Module]:
    conv = (
        nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False)
        if up
        else nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
    )
    return [conv, nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2, inplace=True)]


class FeatureGenerator(nn.Module):
    """Noise and a class index to a feature map: ``(N x noise_dim, N) -> N x C x h x w``.

    The class enters as a learned embedding concatenated to the noise. A linear layer makes a
    ``width x h/2^k x w/2^k`` map, ``k`` transposed convolutions (4x4, stride 2) double it back
    to ``h x w`` (``k`` up to 2, as far as ``h`` and ``w`` halve evenly: 10x10 starts at 5x5
    like the study's generator), and 3x3 convolutions refine it. BatchNorm and LeakyReLU
    throughout.

    Args:
        num_classes: Number of classes (rows of the class embedding).
        feature_shape: ``(C, h, w)`` of the feature maps to generate.
        noise_dim: Length of the noise vector (the study used 100).
        width: Channels of the generator's hidden maps.
        embedding_dim: Length of the learned class embedding.
        output: The last layer: ``tanh`` (outputs in [-1, 1], for features scaled to that
            range) or ``linear``; others raise ``ValueError``.
    """

    def __init__(
        self,
        num_classes: int,
        feature_shape: Sequence[int],
        noise_dim: int = 100,
        width: int = 256,
        embedding_dim: int = 32,
        output: str = "tanh",
    ) -> None:
        super().__init__()
        if output not in ("tanh", "linear"):
            raise ValueError(f"output must be 'tanh' or 'linear', got {output!r}")
        channels, height, width_px = (int(v) for v in feature_shape)
        ups = min(_halvings(height, 2), _halvings(width_px, 2))
        self.start = (width, height >> ups, width_px >> ups)
        self.num_classes, self.noise_dim = num_classes, noise_dim
        self.feature_shape = (channels, height, width_px)
        self.embed = nn.Embedding(num_classes, embedding_dim)
        self.project = nn.Sequential(
            nn.Linear(noise_dim + embedding_dim, width * self.start[1] * self.start[2], bias=False),
            nn.BatchNorm1d(width * self.start[1] * self.start[2]),
            nn.LeakyReLU(0.2, inplace=True),
        )
        layers: list[nn.Module] = []
        for _ in range(ups):
            layers += _block(width, width, up=True)
        layers += _block(width, width, up=False)
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        if output == "tanh":
            layers.append(nn.Tanh())
        self.body = nn.Sequential(*layers)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        code = torch.cat([noise, self.embed(labels)], dim=1)
        return self.body(self.project(code).view(-1, *self.start))

    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None):
        """Feature maps for ``labels`` from fresh standard-normal noise.

        Args:
            labels: ``N`` int64 class indices; the noise is drawn on their device.
            generator: Random generator of the noise (on that device); None: the global one.

        Returns:
            ``N x C x h x w`` generated feature maps.
        """
        noise = torch.randn(len(labels), self.noise_dim, generator=generator, device=labels.device)
        return self(noise, labels)


class FeatureDiscriminator(nn.Module):
    """Real/fake logit for feature maps: ``N x C x h x w -> N``.

    3x3 convolutions (the second one strided when the map is at least 4 pixels across), global
    average pooling and a linear layer, with spectral normalization on every weight to keep
    the adversarial game stable, LeakyReLU between, and dropout before the output.

    Args:
        feature_shape: ``(C, h, w)`` of the feature maps judged.
        width: Channels of the first convolution (the second has twice as many).
        dropout: Dropout probability before the output layer.
    """

    def __init__(self, feature_shape: Sequence[int], width: int = 256, dropout: float = 0.3):
        super().__init__()
        channels, height, width_px = (int(v) for v in feature_shape)
        stride = 2 if min(height, width_px) >= 4 else 1
        self.body = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, width, 3, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(width, width * 2, 3, stride=stride, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            spectral_norm(nn.Linear(width * 2, 1)),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features).squeeze(1)
