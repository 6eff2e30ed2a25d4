"""Datasets and LightningDataModules, one module per dataset layout.

Names load on first use, so ``import medvision.data.io`` stays light.
"""

from medvision.utils.imports import lazy_attributes

_WHERE = {
    "CheXpertDataModule": "chexpert",
    "DicomSegDataModule": "dicom_cases",
    "ChestXrayDataModule": "chest_xray",
    "HAM10000DataModule": "ham10000",
    "ImageFolderPredictDataModule": "predict_folder",
    "LungCTDataModule": "lung_ct",
    "NIHChestXray14DataModule": "nih_chestxray14",
    "SegmentationFolderDataModule": "segmentation_folder",
    "SyntheticChestXrayDataModule": "chest_xray",
    "SyntheticLungCTDataModule": "lung_ct",
    "SyntheticDicomChestXrayDataModule": "synthetic_volumes",
    "SyntheticDicomSegDataModule": "synthetic_dicom",
    "SyntheticMultiClassDataModule": "synthetic_label_maps",
    "SyntheticVolumeSliceDataModule": "synthetic_volumes",
    "VolumeSliceDataModule": "volumes",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
