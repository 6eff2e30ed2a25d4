"""The one registry of medvision's public names: what each package exports, and from where.

``class_path: medvision.data.LungCTDataModule`` in YAML, ``--data LungCTDataModule`` on the
command line and ``from medvision.training import EpochTimer`` in Python all go through this
table: each package ``__init__`` exports its entry lazily (:func:`exports`: a name's module is
imported on first use, so ``import medvision.data.io`` stays light), and the CLI resolves short
class names among exactly these classes. A new public class gets its line here.

Each package's entry is one text block, a line per module: ``module: Name Name ...``.
"""

from __future__ import annotations

import importlib

REGISTRY = {
    "medvision.data": """
        chest_xray: ChestXrayDataModule SyntheticChestXrayDataModule
        chexpert: CheXpertDataModule
        dicom_cases: DicomSegDataModule
        ham10000: HAM10000DataModule
        lung_ct: LungCTDataModule SyntheticLungCTDataModule
        nih_chestxray14: NIHChestXray14DataModule
        predict_folder: ImageFolderPredictDataModule
        segmentation_folder: SegmentationFolderDataModule
        synthetic_dicom: SyntheticDicomSegDataModule
        synthetic_label_maps: SyntheticMultiClassDataModule
        synthetic_volumes: SyntheticDicomChestXrayDataModule SyntheticVolumeSliceDataModule
        volumes: VolumeSliceDataModule
    """,
    "medvision.models": """
        classification: ClassificationModule
        rebalancing: FeatureGANRebalancer FeatureHeadClassifier
        segmentation: SegmentationModule
    """,
    "medvision.evaluation": """
        classification_report: ClassificationTestReport
        segmentation_report: SegmentationTestReport
    """,
    "medvision.training": """
        calibration: TemperatureCalibration
        checkpointing: AtomicCheckpointIO LastCheckpoint
        curves: LearningCurves
        guards: NonFiniteError NonFiniteGuard
        loggers: CSVLogger WandbLogger
        overlays: ValidationOverlays
        progress: MedVisionProgressBar
        run_config: LoggedSaveConfigCallback
        timing: EpochTimer
    """,
    "medvision.apply": """
        inference: Predictor load_model
        prediction: ClassificationPredictionWriter PredictionWriter SegmentationPredictionWriter
        volume_inference: VolumeResult
        volume_writer: VolumePredictionWriter
    """,
    "medvision.pipelines": """
        features: FeatureDataModule
        segment_then_classify: HAM10000LesionCropDataModule predict_lesion_masks
    """,
    "medvision.cli": """
        commands: MedVisionCLI
        entry: main
    """,
}


def exported(package: str) -> dict[str, str]:
    """Each name ``package`` exports -> the submodule (relative to it) that defines the name.

    Args:
        package: A package of :data:`REGISTRY` (``medvision.data``).
    """
    where = {}
    for line in REGISTRY[package].strip().splitlines():
        module, _, names = line.partition(":")
        where.update(dict.fromkeys(names.split(), module.strip()))
    return where


def exports(package: str):
    """``__getattr__``, ``__dir__`` and ``__all__`` of a package whose names load on first use.

    Args:
        package: The package's ``__name__`` (its entry in :data:`REGISTRY`).
    """
    where = exported(package)

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__, sorted(where)
