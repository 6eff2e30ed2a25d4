"""``medvision.data.__all__`` is the registry of datamodules: every one is in it, and loads.

The CLI resolves short names (``--data LungCTDataModule``) among the names of this table, and
``class_path: medvision.data.X`` imports through it; a datamodule left out of it cannot be
named either way (``medvision.data.VolumeSliceDataModule`` once raised AttributeError).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import medvision.data
from medvision.data.datamodule import MedVisionDataModule


def datamodules_defined_in_data() -> dict[str, type]:
    """Every public class of ``medvision/data/*.py`` that can be set up: a subclass of
    :class:`MedVisionDataModule` with its own splits or predict dataset (or inheriting them)."""
    found = {}
    for info in pkgutil.iter_modules(medvision.data.__path__):
        module = importlib.import_module(f"medvision.data.{info.name}")
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
                and issubclass(obj, MedVisionDataModule)
                and (
                    obj._setup_splits is not MedVisionDataModule._setup_splits
                    or obj._predict_dataset is not MedVisionDataModule._predict_dataset
                )
            ):
                found[name] = obj
    return found


def test_the_scan_finds_the_datamodules_of_every_kind():
    found = datamodules_defined_in_data()
    assert {"LungCTDataModule", "VolumeSliceDataModule", "SyntheticVolumeSliceDataModule"} <= set(
        found
    )
    assert "ImageFolderPredictDataModule" in found  # predict only
    assert "MedVisionDataModule" not in found  # the base, nothing to set up


def test_every_datamodule_is_in_the_registry_and_loads_from_it():
    found = datamodules_defined_in_data()
    missing = sorted(set(found) - set(medvision.data.__all__))
    assert not missing, (
        f"add these to medvision.data's entry in medvision/utils/registry.py: {missing}"
    )
    assert all(getattr(medvision.data, name) is cls for name, cls in found.items())


def test_every_registered_name_is_a_datamodule_defined_in_data():
    assert sorted(medvision.data.__all__) == sorted(datamodules_defined_in_data())
