"""The GAN study's VGG-style extractor (LeakyReLU + BatchNorm), registered with timm."""

from __future__ import annotations

from timm.models import register_model
from torch import nn

from medvision.models.nets.feature_head import FeatureHeadNet, entrypoint_kwargs

#: Conv widths of the four stages that make the feature map; a max-pool follows each stage.
FEATURE_STAGES = ((64, 64), (128, 128), (128, 128, 256), (256, 256, 512))


def _conv(in_ch: int, out_ch: int, slope: float) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(slope, inplace=True),
    ]


def _linear(in_features: int, out_features: int, slope: float) -> list[nn.Module]:
    return [
        nn.Linear(in_features, out_features, bias=False),
        nn.BatchNorm1d(out_features),
        nn.LeakyReLU(slope, inplace=True),
    ]


class VGGLeaky(FeatureHeadNet):
    """VGG-style classifier split into ``features`` (image -> feature map) and ``head``.

    ``features``: four stages of 3x3 conv + BatchNorm + LeakyReLU, each ending in a 2x2 max-pool
    (widths :data:`FEATURE_STAGES`), so a ``N x in_chans x 160 x 160`` input becomes the study's
    ``N x 512 x 10 x 10`` feature map, the one its GAN learns to generate. ``head``: three more
    512-wide convs, a 2x2 pool to 5x5 (average-pooled to 5x5 at other sizes), then fully
    connected 4096 -> 512 -> ``num_classes`` (LeakyReLU + BatchNorm between). Input size must
    be a multiple of 32 pixels and at least 32.

    Args:
        num_classes: Output logits per image.
        in_chans: Input channels (timm's name for it).
        negative_slope: Slope of every LeakyReLU for negative inputs.
        drop_rate: Dropout probability after the 4096-wide layer (timm's name).
    """

    def __init__(
        self,
        num_classes: int = 6,
        in_chans: int = 3,
        negative_slope: float = 0.2,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = in_chans
        for widths in FEATURE_STAGES:
            for width in widths:
                layers += _conv(in_ch, width, negative_slope)
                in_ch = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.num_features = in_ch
        self.head = nn.Sequential(
            *_conv(512, 512, negative_slope),
            *_conv(512, 512, negative_slope),
            *_conv(512, 512, negative_slope),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(5),
            nn.Flatten(),
            *_linear(512 * 25, 4096, negative_slope),
            nn.Dropout(drop_rate),
            *_linear(4096, 512, negative_slope),
            nn.Linear(512, num_classes),
        )


@register_model
def vgg_leaky(pretrained: bool = False, **kwargs) -> VGGLeaky:
    """``timm.create_model("vgg_leaky", num_classes=..., in_chans=...)``; no pretrained weights.

    Args:
        pretrained: Must be False (True raises ``ValueError``).
        **kwargs: :class:`VGGLeaky`'s arguments; timm's pretrained-config ones are dropped.
    """
    return VGGLeaky(**entrypoint_kwargs("vgg_leaky", pretrained, kwargs))
