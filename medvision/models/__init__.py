"""LightningModules, one module per task; plain networks live in ``medvision.models.nets``."""

from medvision.models.classification import ClassificationModule
from medvision.models.rebalancing import FeatureGANRebalancer, FeatureHeadClassifier
from medvision.models.segmentation import SegmentationModule

__all__ = [
    "ClassificationModule",
    "FeatureGANRebalancer",
    "FeatureHeadClassifier",
    "SegmentationModule",
]
