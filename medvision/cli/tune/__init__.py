"""``medvision tune``: hyperparameter search over any ``medvision fit`` with Optuna.

    medvision tune --config configs/unet_lung.yaml --search search.yaml --trials 30 \\
        [--timeout S] [--study NAME] [--storage URL] [--monitor val/dice --mode max] [fit options]

- :mod:`~medvision.cli.tune.search`: the search file (CLI keys to ranges), checked before
  the first trial.
- :mod:`~medvision.cli.tune.storage`: the study's storage (a journal file in
  ``runs/<study>/`` or a database), its lock, and trials orphaned by a killed process.
- :mod:`~medvision.cli.tune.trial`: one trial, an ordinary fit in ``runs/<study>/trial_<k>/``
  with Optuna's Lightning pruning callback.
- :mod:`~medvision.cli.tune.worker`: trials until the study has ``--trials`` finished ones.
- :mod:`~medvision.cli.tune.summary`: ``trials.csv``, ``best.yaml`` and Optuna's plots.
- :mod:`~medvision.cli.tune.command`: the command line.

Optuna is an optional dependency: ``pip install 'medvision-lightning[tune]'``.
"""

from medvision.cli.tune.command import main

__all__ = ["main"]
