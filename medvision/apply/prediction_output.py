"""Where ``predict`` writes, what it names each output, what turns probabilities into results,
and the list of input files it could not use (``failed.csv``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from medvision.data.dicom import INSTANCE_UIDS, instance_uids
from medvision.data.dicom_series import is_dicom_file
from medvision.data.screening import BadFile, output_name
from medvision.models.record import Preprocessing
from medvision.utils.files import write_csv
from medvision.utils.runs import checkpoint_run_folder, new_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOutputs:
    """What turns a model's probabilities into files: its classes and decision thresholds.

    Read from the preprocessing record (``medvision predict``), or from the model itself when
    a writer runs in a plain ``trainer.predict`` (:meth:`from_module`).

    Args:
        class_names: The classes in output order (one name for a binary segmenter).
        mask_threshold: Binary segmentation: foreground above it.
        multilabel: Classification with independent labels.
        thresholds: Multi-label: one decision threshold per label.
        include_background: Segmentation metrics: score the background class too.
        surface_tolerance: Surface Dice tolerance of ``metrics.csv`` (pixels, or mm).
    """

    class_names: tuple[str, ...]
    mask_threshold: float | None = None
    multilabel: bool = False
    thresholds: tuple[float, ...] | None = None
    include_background: bool = False
    surface_tolerance: float = 1.0

    @classmethod
    def from_record(cls, record: Preprocessing) -> ModelOutputs:
        """The outputs a :class:`~medvision.models.record.Preprocessing` record states.

        Args:
            record: The record of the model that predicts.
        """
        init = dict(record.network.get("init_args", {}))
        return cls(
            record.class_names,
            record.mask_threshold,
            record.multilabel,
            record.thresholds,
            bool(init.get("include_background", False)),
            float(init.get("surface_tolerance", 1.0)),
        )

    @classmethod
    def from_module(cls, module: LightningModule) -> ModelOutputs:
        """The outputs of a module's own attributes (``threshold``, ``class_names``,
        ``multilabel``, ``thresholds``, ``include_background``, ``surface_tolerance``).

        Args:
            module: The predicting LightningModule.
        """
        thresholds = getattr(module, "thresholds", None)
        return cls(
            tuple(str(name) for name in getattr(module, "class_names", None) or ()),
            getattr(module, "threshold", None),
            bool(getattr(module, "multilabel", False)),
            None if thresholds is None else tuple(float(t) for t in thresholds),
            bool(getattr(module, "include_background", False)),
            float(getattr(module, "surface_tolerance", 1.0)),
        )


class FolderPredictionWriter(BasePredictionWriter):
    """A batch-wise prediction writer that writes each predict run into a folder of its own.

    The folder (:attr:`root`) is chosen at the start of predict by :func:`prediction_folder`
    (on every DDP process, which share rank 0's choice); a writer driven by another one
    (:class:`~medvision.apply.PredictionWriter` hands its folder to its task writer) gets
    it set from outside. Each input's outputs are named by :meth:`name`: its path under the
    datamodule's ``predict_root`` (the folder a predict datamodule found its inputs in, at any
    depth) without the suffix, so subfolders are mirrored (``masks/<patient>/<stem>.png``);
    a datamodule without one (which refuses inputs of one stem) names them by stem.

    Args:
        output_dir: The folder to write into (missing or empty); None: a new
            ``predictions/<date-time>`` folder of the checkpoint's run.

    Attributes:
        checkpoint: The checkpoint that predicts (names the default folder); None: the
            trainer's ``ckpt_path``.
        outputs: The model's :class:`ModelOutputs`; None: read from the module at the start.
    """

    def __init__(self, output_dir: str | Path | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.root: Path | None = None
        self.checkpoint: Path | None = None
        self.outputs: ModelOutputs | None = None
        self._inputs_root: Path | None = None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.root = prediction_folder(self.output_dir, trainer, self.checkpoint)
        self.start(trainer, pl_module)

    def start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """What the outputs need before the first batch: the model's outputs and the inputs'
        folder (also called by a writer that drives this one).

        Args:
            trainer: The predicting trainer (its datamodule's ``predict_root``).
            pl_module: The predicting module (its outputs, when none were given).
        """
        if self.outputs is None:
            self.outputs = ModelOutputs.from_module(pl_module)
        root = getattr(trainer.datamodule, "predict_root", None)
        self._inputs_root = None if root is None else Path(root)

    def folder(self, trainer: Trainer) -> Path:
        """This predict run's folder (chosen now if the run did not start through Lightning)."""
        if self.root is None:
            self.root = prediction_folder(self.output_dir, trainer, self.checkpoint)
        return self.root

    def name(self, path: str | Path) -> str:
        """The name of an input's outputs (see :func:`~medvision.data.screening.output_name`).

        Args:
            path: The input file (or DICOM series folder).
        """
        return output_name(path, self._inputs_root)


def prediction_folder(
    output_dir: Path | None, trainer: Trainer, checkpoint: str | Path | None = None
) -> Path:
    """The folder a predict run writes into, never one an earlier run wrote into.

    ``output_dir`` when given (it must be missing or empty). Otherwise a new
    ``predictions/<YYYYmmdd-HHMMSS>`` folder in the checkpoint's run folder (the folder that
    holds its ``checkpoints/``) or, for a checkpoint elsewhere or none, in
    ``trainer.default_root_dir``. The folder is made when the first file is written, so a
    run that fails before leaves nothing behind. Under DDP every process gets rank 0's choice.

    Args:
        output_dir: The folder asked for, or None.
        trainer: The predicting trainer (its ``default_root_dir``, and ``ckpt_path`` when no
            checkpoint is given).
        checkpoint: The checkpoint that predicts.

    Raises:
        ValueError: when ``output_dir`` holds files already.
    """
    choice, problem = None, None
    if trainer.is_global_zero:
        try:
            choice = str(_new_prediction_folder(output_dir, trainer, checkpoint))
        except ValueError as error:
            problem = str(error)
    choice, problem = trainer.strategy.broadcast((choice, problem))
    if problem is not None:
        raise ValueError(problem)
    return Path(choice)


def check_output_folder(output_dir: str | Path) -> Path:
    """``output_dir`` if a predict run may write into it: missing, or an empty folder.

    Args:
        output_dir: The folder asked for (``--output``).

    Raises:
        ValueError: naming the folder and the fix when it holds files (or is a file).
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ValueError(
            f"output folder {output_dir} is not empty: predict never mixes its results with "
            "an earlier run's. Give a new or empty folder (--output DIR), or leave it out "
            "for a new predictions/<timestamp> folder in the checkpoint's run folder."
        )
    return output_dir


def _new_prediction_folder(
    output_dir: Path | None, trainer: Trainer, checkpoint: str | Path | None
) -> Path:
    if output_dir is not None:
        return check_output_folder(output_dir)
    checkpoint = checkpoint or trainer.ckpt_path
    checkpoint_run = checkpoint_run_folder(checkpoint) if checkpoint else None
    base = checkpoint_run or Path(trainer.default_root_dir)
    return new_folder(base / "predictions")


def with_dicom_uids(rows: list[dict], key: str = "file") -> tuple[list[dict], list[str]]:
    """CSV rows with the DICOM inputs' Study, Series and SOP Instance UIDs beside ``key``.

    Rows of other files get empty UIDs; without any DICOM input the rows are returned as they
    are. The UIDs are read from the headers (:func:`medvision.data.dicom.instance_uids`).

    Args:
        rows: One dict per input, its file under ``key``.
        key: The column holding the input file.

    Returns:
        ``(rows, columns)``: the rows, and the columns in order (the UIDs after ``key``).
    """
    found = [instance_uids(row[key]) if is_dicom_file(Path(row[key])) else None for row in rows]
    columns = list(rows[0]) if rows else []
    if not any(found):
        return rows, columns
    at = columns.index(key) + 1
    columns[at:at] = list(INSTANCE_UIDS)
    empty = dict.fromkeys(INSTANCE_UIDS, "")
    return [{**row, **(uids or empty)} for row, uids in zip(rows, found, strict=True)], columns


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
