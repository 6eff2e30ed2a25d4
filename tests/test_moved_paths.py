"""Class and module paths of earlier releases keep working (YAML configs, notebooks)."""

from __future__ import annotations

import importlib

import pytest

from medvision.cli import MedVisionCLI
from medvision.utils.imports import import_object
from medvision.utils.moved import MOVED

OLD_CLASS_PATHS = {
    "medvision.callbacks.ValidationOverlays": "medvision.training.overlays.ValidationOverlays",
    "medvision.callbacks.EpochTimer": "medvision.training.timing.EpochTimer",
    "medvision.callbacks.PredictionWriter": "medvision.apply.prediction.PredictionWriter",
    "medvision.callbacks.ClassificationTestReport": (
        "medvision.evaluation.classification_report.ClassificationTestReport"
    ),
    "medvision.loggers.WandbLogger": "medvision.training.loggers.WandbLogger",
    "medvision.loggers.CSVLogger": "medvision.training.loggers.CSVLogger",
    "medvision.checkpointing.LastCheckpoint": "medvision.training.checkpointing.LastCheckpoint",
    "medvision.checkpointing.load_checkpoint": "medvision.utils.checkpoints.load_checkpoint",
    "medvision.inference.load_model": "medvision.apply.inference.load_model",
    "medvision.preprocessing.Preprocessing": "medvision.models.record.Preprocessing",
    "medvision.data.VolumeSliceDataModule": "medvision.data.volumes.VolumeSliceDataModule",
}


@pytest.mark.parametrize(("old", "new"), sorted(OLD_CLASS_PATHS.items()))
def test_an_old_class_path_names_the_same_object(old, new):
    assert import_object(old) is import_object(new)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_module_path_imports(old):
    module = importlib.import_module(old)
    assert dir(module)


def test_an_unknown_name_of_a_merged_module_is_an_attribute_error():
    callbacks = importlib.import_module("medvision.callbacks")
    with pytest.raises(AttributeError, match="NoSuchCallback"):
        callbacks.NoSuchCallback  # noqa: B018


def test_a_config_with_old_class_paths_builds(tmp_path):
    cli = MedVisionCLI(
        args=[
            "--config",
            "configs/quickstart.yaml",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger",
            "medvision.loggers.CSVLogger",
            "--trainer.callbacks+=medvision.callbacks.EpochTimer",
            "--data.data_dir",
            str(tmp_path / "data"),
        ],
        run=False,
    )
    assert any(type(c).__name__ == "EpochTimer" for c in cli.trainer.callbacks)
    assert type(cli.trainer.logger).__module__ == "medvision.training.loggers"
