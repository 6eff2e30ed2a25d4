"""The chest X-ray study's 5-layer CNN, registered with timm as ``cnn5``."""

from __future__ import annotations

from timm.models import register_model
from torch import nn

from medvision.models.nets.feature_head import FeatureHeadNet, entrypoint_kwargs


class CNN5(FeatureHeadNet):
    """Three conv-ReLU-maxpool blocks and two fully connected layers (the study's "5-layer CNN").

    Input ``N x in_chans x H x W`` (224x224 in the study; any size from 8x8 works), output
    logits ``N x num_classes``. Each block halves the size; the last map is average-pooled to
    7x7 (exactly 4x4 cells at 224 px) so that the first fully connected layer keeps
    ``channels[-1] * 49`` inputs at any image size.

    Args:
        num_classes: Output logits per image.
        in_chans: Input channels (timm's name for it).
        channels: 3x3 filters of each of the three conv blocks.
        hidden: Width of the hidden fully connected layer.
        drop_rate: Dropout probability before the last layer (timm's name).
    """

    def __init__(
        self,
        num_classes: int = 4,
        in_chans: int = 3,
        channels: tuple[int, int, int] = (32, 64, 128),
        hidden: int = 256,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for in_ch, out_ch in zip((in_chans, *channels[:-1]), channels, strict=True):
            blocks += [
                nn.Conv2d(in_ch, out_ch, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*blocks)
        self.num_classes = num_classes
        self.num_features = channels[-1]
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(7),
            nn.Flatten(),
            nn.Linear(channels[-1] * 49, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, num_classes),
        )


@register_model
def cnn5(pretrained: bool = False, **kwargs) -> CNN5:
    """``timm.create_model("cnn5", num_classes=..., in_chans=...)``; no pretrained weights exist.

    Args:
        pretrained: Must be False (True raises ``ValueError``).
        **kwargs: :class:`CNN5`'s arguments; timm's pretrained-config ones are dropped.
    """
    return CNN5(**entrypoint_kwargs("cnn5", pretrained, kwargs))
