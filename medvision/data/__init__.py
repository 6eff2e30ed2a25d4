"""Datasets and LightningDataModules, one module per dataset layout."""

from medvision.data.lung_ct import LungCTDataModule, SyntheticLungCTDataModule

__all__ = ["LungCTDataModule", "SyntheticLungCTDataModule"]
