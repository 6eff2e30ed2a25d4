"""LightningModules, one module per task; plain networks live in ``medvision.models.nets``.

Names load on first use, so ``import medvision.models.nets`` loads neither Lightning nor any
task module. ``class_path: medvision.models.SegmentationModule`` in YAML works as usual.
"""

from medvision.utils.imports import lazy_attributes

_WHERE = {
    "ClassificationModule": "classification",
    "FeatureGANRebalancer": "rebalancing",
    "FeatureHeadClassifier": "rebalancing",
    "SegmentationModule": "segmentation",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
