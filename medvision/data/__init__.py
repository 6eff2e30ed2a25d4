"""Datasets and LightningDataModules, one module per dataset layout.

Names load on first use, so ``import medvision.data.io`` stays light.
"""

from medvision.utils.registry import exports

__getattr__, __dir__, __all__ = exports(__name__)
