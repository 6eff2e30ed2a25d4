"""Lightning callbacks, one concept per module; every name is importable from here.

- :mod:`~medvision.callbacks.prediction`: what ``predict`` writes (masks, overlays, CSV).
- :mod:`~medvision.callbacks.overlays`: validation overlays of a segmenter.
- :mod:`~medvision.callbacks.test_report`: a classifier's per-class report at the end of ``test``.
- :mod:`~medvision.callbacks.guards`: stop at a NaN/inf loss or gradient.
- :mod:`~medvision.callbacks.progress`: a progress bar that does not wait for the GPU each step.
- :mod:`~medvision.callbacks.timing`: epoch wall and CPU times.
- :mod:`~medvision.callbacks.run_config`: the run's config and run info, saved and logged.

Names are loaded on first use, so ``import medvision.callbacks.guards`` stays light.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "ClassificationPredictionWriter": "prediction",
    "PredictionWriter": "prediction",
    "SegmentationPredictionWriter": "prediction",
    "ValidationOverlays": "overlays",
    "ClassificationTestReport": "test_report",
    "NonFiniteError": "guards",
    "NonFiniteGuard": "guards",
    "MedVisionProgressBar": "progress",
    "EpochTimer": "timing",
    "LoggedSaveConfigCallback": "run_config",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return __all__
