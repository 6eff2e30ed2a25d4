"""The commands: ``medvision`` (fit, validate, test, predict, export), ``medvision-cv``,
``medvision-report``. The only layer, with ``pipelines``, that joins data and models.

- :mod:`~medvision.cli.commands`: :class:`MedVisionCLI` (LightningCLI) and :func:`main`.
- :mod:`~medvision.cli.runs`: run folders, loggers and checkpoints of a command.
- :mod:`~medvision.cli.predict`: ``medvision predict`` from a checkpoint's own record.
- :mod:`~medvision.cli.console`: log lines, less noise, one-line errors.
- :mod:`~medvision.cli.crossval`: ``medvision-cv`` (folds, seeds), its study's layout and
  summary in :mod:`~medvision.cli.cv_summary`; :mod:`~medvision.cli.compare`:
  ``medvision-report``; :mod:`~medvision.cli.tune`: ``medvision tune`` (Optuna).

Names load on first use: ``from medvision.cli import MedVisionCLI, main``.
"""

from medvision.utils.imports import lazy_attributes

_WHERE = {"MedVisionCLI": "commands", "main": "commands"}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
