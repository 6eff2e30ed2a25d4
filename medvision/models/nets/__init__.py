"""Plain ``nn.Module`` networks that the ecosystem (smp, timm) does not provide.

Importing this package registers the seed studies' classifiers with timm, so
``timm.create_model("cnn5")`` and ``timm.create_model("vgg_leaky")`` work like any timm name.
"""

from medvision.models.nets.cnn5 import CNN5
from medvision.models.nets.fcn import FCN, FCNDecoder
from medvision.models.nets.feature_head import FeatureHeadNet
from medvision.models.nets.vgg_leaky import VGGLeaky

__all__ = ["CNN5", "FCN", "FCNDecoder", "FeatureHeadNet", "VGGLeaky"]
