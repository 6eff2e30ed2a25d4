"""Lightning callbacks, one concept per module; every name is importable from here.

- :mod:`~medvision.callbacks.prediction`: what ``predict`` writes (masks, overlays, CSV);
  :mod:`~medvision.callbacks.volumes` for NIfTI volumes; :mod:`~medvision.callbacks.explanations`
  for a classifier's Grad-CAM heat maps (``--cam``).
- :mod:`~medvision.callbacks.overlays`: validation overlays of a segmenter.
- :mod:`~medvision.callbacks.test_report`: a classifier's per-class report at the end of ``test``.
- :mod:`~medvision.callbacks.calibration`: temperature scaling of a classifier after ``fit``.
- :mod:`~medvision.callbacks.segmentation_report`: a segmenter's per-image scores (Dice, IoU,
  HD95, surface Dice) and bootstrap intervals at the end of ``test``.
- :mod:`~medvision.callbacks.guards`: stop at a NaN/inf loss or gradient.
- :mod:`~medvision.callbacks.progress`: a progress bar that does not wait for the GPU each step.
- :mod:`~medvision.callbacks.timing`: epoch wall and CPU times.
- :mod:`~medvision.callbacks.run_config`: the run's config and run info, saved and logged.

Names load on first use, so ``import medvision.callbacks.guards`` stays light.
"""

from medvision.imports import lazy_attributes

_WHERE = {
    "ClassificationPredictionWriter": "prediction",
    "ClassificationTestReport": "test_report",
    "EpochTimer": "timing",
    "LoggedSaveConfigCallback": "run_config",
    "NonFiniteError": "guards",
    "NonFiniteGuard": "guards",
    "PredictionWriter": "prediction",
    "SegmentationPredictionWriter": "prediction",
    "TemperatureCalibration": "calibration",
    "SegmentationTestReport": "segmentation_report",
    "ValidationOverlays": "overlays",
    "VolumePredictionWriter": "volumes",
    "MedVisionProgressBar": "progress",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
