"""Datasets and LightningDataModules, one module per dataset layout."""

from medvision.data.chest_xray import ChestXrayDataModule, SyntheticChestXrayDataModule
from medvision.data.lung_ct import LungCTDataModule, SyntheticLungCTDataModule

__all__ = [
    "ChestXrayDataModule",
    "LungCTDataModule",
    "SyntheticChestXrayDataModule",
    "SyntheticLungCTDataModule",
]
