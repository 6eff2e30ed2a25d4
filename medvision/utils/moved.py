"""The module paths of earlier releases, still importable: YAML and notebooks keep working.

Before the house had its layers, ``medvision.callbacks``, ``medvision.loggers``,
``medvision.inference`` and others were modules of their own; configs name classes through
them (``class_path: medvision.callbacks.ValidationOverlays``, ``medvision.loggers.WandbLogger``).
:func:`install` (run by ``import medvision``) lets ``import`` find each old path: one that
moved whole is the new module itself; one whose names went to several places
(``medvision.callbacks``) is a module that looks each name up in those places.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

#: Old module path -> where its names live now (looked up in this order).
MOVED: dict[str, tuple[str, ...]] = {
    "medvision.bootstrap": ("medvision.evaluation.bootstrap", "medvision.evaluation.statistics"),
    "medvision.calibration": ("medvision.evaluation.calibration",),
    "medvision.callbacks": ("medvision.training", "medvision.apply", "medvision.evaluation"),
    "medvision.callbacks.calibration": ("medvision.training.calibration",),
    "medvision.callbacks.explanations": ("medvision.apply.explanations",),
    "medvision.callbacks.guards": ("medvision.training.guards",),
    "medvision.callbacks.overlays": ("medvision.training.overlays",),
    "medvision.callbacks.prediction": ("medvision.apply.prediction",),
    "medvision.callbacks.prediction_output": ("medvision.apply.prediction_output",),
    "medvision.callbacks.progress": ("medvision.training.progress",),
    "medvision.callbacks.run_config": ("medvision.training.run_config",),
    "medvision.callbacks.segmentation_report": ("medvision.evaluation.segmentation_report",),
    "medvision.callbacks.test_report": ("medvision.evaluation.classification_report",),
    "medvision.callbacks.timing": ("medvision.training.timing",),
    "medvision.callbacks.volumes": ("medvision.apply.volume_writer",),
    "medvision.checkpoint_config": ("medvision.cli.predict",),
    "medvision.checkpointing": ("medvision.training.checkpointing", "medvision.utils.checkpoints"),
    "medvision.cli_runs": ("medvision.cli.runs",),
    "medvision.compare": ("medvision.cli.compare",),
    "medvision.console": ("medvision.cli.console",),
    "medvision.crossval": ("medvision.cli.crossval",),
    "medvision.explain": ("medvision.apply.explain",),
    "medvision.export": ("medvision.apply.export",),
    "medvision.files": ("medvision.utils.files",),
    "medvision.imports": ("medvision.utils.imports",),
    "medvision.inference": ("medvision.apply.inference",),
    "medvision.label_maps": ("medvision.evaluation.label_maps",),
    "medvision.loggers": ("medvision.training.loggers",),
    "medvision.losses": ("medvision.models.losses",),
    "medvision.metrics": ("medvision.evaluation.metrics",),
    "medvision.preprocessing": ("medvision.models.record",),
    "medvision.provenance": ("medvision.utils.provenance",),
    "medvision.reports": ("medvision.evaluation.reports",),
    "medvision.runs": ("medvision.utils.runs",),
    "medvision.steps": ("medvision.utils.steps",),
    "medvision.surface_metrics": ("medvision.evaluation.surface_metrics",),
    "medvision.tta": ("medvision.apply.tta",),
    "medvision.visualize": ("medvision.data.visualize",),
}


class _MergedModule(types.ModuleType):
    """An old module whose names now live in several modules: each looked up on first use."""

    def __init__(self, name: str, places: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved: its names are in {', '.join(places)}.")
        self._places = places

    def __getattr__(self, name: str):
        for place in self._places:
            module = importlib.import_module(place)
            if name in getattr(module, "__all__", ()) or name in vars(module):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        names = set()
        for place in self._places:
            module = importlib.import_module(place)
            names.update(getattr(module, "__all__", None) or vars(module))
        return sorted(names)


class _MovedLoader(importlib.abc.Loader):
    def create_module(self, spec):
        places = MOVED[spec.name]
        if len(places) == 1:
            return importlib.import_module(places[0])
        return _MergedModule(spec.name, places)

    def exec_module(self, module) -> None:
        """Nothing to run: the module is the new one (or looks names up there)."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedLoader())


def install() -> None:
    """Let ``import`` find the old module paths of :data:`MOVED` (once per process)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
