"""LightningModules, one module per task; plain networks live in ``medvision.models.nets``.

Names load on first use, so ``import medvision.models.nets`` loads neither Lightning nor any
task module. ``class_path: medvision.models.SegmentationModule`` in YAML works as usual.
"""

from medvision.utils.registry import exports

__getattr__, __dir__, __all__ = exports(__name__)
