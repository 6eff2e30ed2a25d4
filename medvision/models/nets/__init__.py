"""Plain ``nn.Module`` networks that the ecosystem (smp, timm) does not provide."""

from medvision.models.nets.fcn import FCN, FCNDecoder

__all__ = ["FCN", "FCNDecoder"]
