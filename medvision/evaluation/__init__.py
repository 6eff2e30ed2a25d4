"""How good a model is: metrics, surface distances, calibration, bootstrap intervals, test reports.

- :mod:`~medvision.evaluation.metrics`: torchmetrics collections per task and per-image overlap.
- :mod:`~medvision.evaluation.surface_metrics`: HD95 and surface Dice (MONAI).
- :mod:`~medvision.evaluation.label_maps`: label maps from probabilities and per-image scores.
- :mod:`~medvision.evaluation.calibration`: ECE, reliability diagrams, temperature fitting.
- :mod:`~medvision.evaluation.bootstrap`: confidence intervals by resampling test images
  (``scipy.stats.bootstrap``) of the statistics of :mod:`~medvision.evaluation.statistics`
  (means of per-image scores, a classifier's headline metrics).
- :mod:`~medvision.evaluation.summary`: the one test-report path of both tasks (per-image
  rows -> summary with intervals -> CSV, log, W&B); each task gives its per-image scorer in
  :mod:`~medvision.evaluation.classification_report` (with the per-class tables of
  :mod:`~medvision.evaluation.reports`) or :mod:`~medvision.evaluation.segmentation_report`.

Imports nothing of ``data``, ``models`` or any layer above; names load on first use.
"""

from medvision.utils.registry import exports

__getattr__, __dir__, __all__ = exports(__name__)
