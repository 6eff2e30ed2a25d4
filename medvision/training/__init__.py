"""The callbacks and loggers of a fit: checkpoints, guards, progress, overlays, calibration.

- :mod:`~medvision.training.checkpointing`: atomic checkpoints and ``last.ckpt`` for resuming.
- :mod:`~medvision.training.guards`: stop at a NaN/inf loss or gradient.
- :mod:`~medvision.training.progress`: a progress bar that does not wait for the GPU each step.
- :mod:`~medvision.training.timing`: epoch wall and CPU times.
- :mod:`~medvision.training.curves`: the learning curves (loss, monitored metric) of a fit.
- :mod:`~medvision.training.overlays`: validation overlays of a segmenter.
- :mod:`~medvision.training.calibration`: temperature scaling of a classifier after ``fit``.
- :mod:`~medvision.training.run_config`: the run's config and run info, saved and logged.
- :mod:`~medvision.training.loggers`: W&B that never prompts, a CSV logger that resumes.

Names load on first use, so ``import medvision.training.guards`` stays light.
"""

from medvision.utils.registry import exports

__getattr__, __dir__, __all__ = exports(__name__)
