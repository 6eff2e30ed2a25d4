"""The commands: ``medvision`` (fit, validate, test, predict, export, tune), ``medvision-cv``,
``medvision-report``. The only layer, with ``pipelines``, that joins data and models.

- :mod:`~medvision.cli.entry`: :func:`main`, the ``medvision`` command's front door (help,
  version, the choice of command) without torch or Lightning.
- :mod:`~medvision.cli.commands`: :class:`MedVisionCLI` (LightningCLI): fit, validate, test,
  predict.
- :mod:`~medvision.cli.export`: ``medvision export``'s command line.
- :mod:`~medvision.cli.runs`: run folders, loggers and checkpoints of a command.
- :mod:`~medvision.cli.predict`: ``medvision predict`` from a checkpoint's own record.
- :mod:`~medvision.cli.console`: log lines, less noise, one-line errors.
- :mod:`~medvision.cli.crossval`: ``medvision-cv`` (folds, seeds), its study's layout and
  summary in :mod:`~medvision.cli.cv_summary`; :mod:`~medvision.cli.compare`:
  ``medvision-report``; :mod:`~medvision.cli.tune`: ``medvision tune`` (Optuna).

``import medvision.cli`` stays light (no torch); :class:`MedVisionCLI` loads on first use:
``from medvision.cli import MedVisionCLI, main``.
"""

from medvision.utils.registry import exports

__getattr__, __dir__, __all__ = exports(__name__)
