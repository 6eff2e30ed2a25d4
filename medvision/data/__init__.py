"""Datasets and LightningDataModules, one module per dataset layout."""

from medvision.data.chest_xray import ChestXrayDataModule, SyntheticChestXrayDataModule
from medvision.data.chexpert import CheXpertDataModule
from medvision.data.ham10000 import HAM10000DataModule
from medvision.data.lung_ct import LungCTDataModule, SyntheticLungCTDataModule
from medvision.data.nih_chestxray14 import NIHChestXray14DataModule
from medvision.data.predict_folder import ImageFolderPredictDataModule

__all__ = [
    "CheXpertDataModule",
    "ChestXrayDataModule",
    "HAM10000DataModule",
    "ImageFolderPredictDataModule",
    "LungCTDataModule",
    "NIHChestXray14DataModule",
    "SyntheticChestXrayDataModule",
    "SyntheticLungCTDataModule",
]
