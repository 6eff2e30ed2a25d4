"""Datasets and LightningDataModules, one module per dataset layout.

Names load on first use, so ``import medvision.data.io`` stays light.
"""

from medvision.imports import lazy_attributes

_WHERE = {
    "CheXpertDataModule": "chexpert",
    "ChestXrayDataModule": "chest_xray",
    "HAM10000DataModule": "ham10000",
    "ImageFolderPredictDataModule": "predict_folder",
    "LungCTDataModule": "lung_ct",
    "NIHChestXray14DataModule": "nih_chestxray14",
    "SegmentationFolderDataModule": "segmentation_folder",
    "SyntheticChestXrayDataModule": "chest_xray",
    "SyntheticLungCTDataModule": "lung_ct",
    "SyntheticMultiClassDataModule": "synthetic_label_maps",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
