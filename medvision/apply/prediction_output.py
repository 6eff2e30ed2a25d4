"""Where ``predict`` writes, and the list of input files it could not use (``failed.csv``)."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from medvision.data.screening import BadFile
from medvision.utils.files import write_csv
from medvision.utils.runs import checkpoint_run_folder, new_folder

log = logging.getLogger(__name__)


class FolderPredictionWriter(BasePredictionWriter):
    """A batch-wise prediction writer that writes each predict run into a folder of its own.

    The folder (:attr:`root`) is chosen at the start of predict by :func:`prediction_folder`
    (on every DDP process, which share rank 0's choice); a writer driven by another one
    (:class:`~medvision.apply.PredictionWriter` hands its folder to its task writers) gets
    it set from outside.

    Args:
        output_dir: The folder to write into (missing or empty); None: a new
            ``predictions/<date-time>`` folder of the checkpoint's run.
    """

    def __init__(self, output_dir: str | Path | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.root: Path | None = None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.root = prediction_folder(self.output_dir, trainer)

    def folder(self, trainer: Trainer) -> Path:
        """This predict run's folder (chosen now if the run did not start through Lightning)."""
        if self.root is None:
            self.root = prediction_folder(self.output_dir, trainer)
        return self.root


def prediction_folder(output_dir: Path | None, trainer: Trainer) -> Path:
    """The folder a predict run writes into, never one an earlier run wrote into.

    ``output_dir`` when given (it must be missing or empty). Otherwise a new
    ``predictions/<YYYYmmdd-HHMMSS>`` folder in the checkpoint's run folder (the folder that
    holds its ``checkpoints/``) or, for a checkpoint elsewhere or none, in
    ``trainer.default_root_dir``. The folder is made when the first file is written, so a
    run that fails before leaves nothing behind. Under DDP every process gets rank 0's choice.

    Args:
        output_dir: The folder asked for, or None.
        trainer: The predicting trainer (its ``ckpt_path`` and ``default_root_dir``).

    Raises:
        ValueError: when ``output_dir`` holds files already.
    """
    choice, problem = None, None
    if trainer.is_global_zero:
        try:
            choice = str(_new_prediction_folder(output_dir, trainer))
        except ValueError as error:
            problem = str(error)
    choice, problem = trainer.strategy.broadcast((choice, problem))
    if problem is not None:
        raise ValueError(problem)
    return Path(choice)


def _new_prediction_folder(output_dir: Path | None, trainer: Trainer) -> Path:
    if output_dir is not None:
        output_dir = Path(output_dir)
        if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
            raise ValueError(
                f"output folder {output_dir} is not empty: predict never mixes its results with "
                "an earlier run's. Give a new or empty folder (--output DIR), or leave it out "
                "for a new predictions/<timestamp> folder in the checkpoint's run folder."
            )
        return output_dir
    checkpoint_run = checkpoint_run_folder(trainer.ckpt_path) if trainer.ckpt_path else None
    base = checkpoint_run or Path(trainer.default_root_dir)
    return new_folder(base / "predictions")


def report_failures(trainer: Trainer, root: Path, own: list[BadFile]) -> list[BadFile]:
    """The datamodule's ``predict_failures`` plus ``own``, written to ``root/failed.csv``.

    Without failures a ``failed.csv`` left by an earlier run in ``root`` is removed, so the
    folder never lists files that this run predicted. Under DDP each process writes its own
    ``failed.rank<N>.csv``.

    Args:
        trainer: The predicting trainer (its datamodule's ``predict_failures``, its rank).
        root: The prediction folder (see :func:`prediction_folder`).
        own: The failures the caller found itself (files the writer could not write).

    Returns:
        Every failure, the datamodule's first.
    """
    failures = [*getattr(trainer.datamodule, "predict_failures", ()), *own]
    name = "failed.csv" if trainer.world_size == 1 else f"failed.rank{trainer.global_rank}.csv"
    if not failures:
        (root / name).unlink(missing_ok=True)
        return []
    rows = [{"file": f.path, "problem": f.problem} for f in failures]
    write_csv(root / name, rows, ["file", "problem"])
    log.warning("%d input files were not predicted; listed in %s", len(failures), root / name)
    return failures
