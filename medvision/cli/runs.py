"""How the CLI lays out a run: its folder, its loggers and checkpoints, and what it says at the end.

Functions on the parsed LightningCLI config (a jsonargparse ``Namespace``) and the built
trainer, called by :class:`~medvision.cli.MedVisionCLI`; the layout is described in
:mod:`medvision.utils.runs`.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from medvision.evaluation import ClassificationTestReport, SegmentationTestReport
from medvision.training.calibration import TemperatureCalibration
from medvision.training.checkpointing import LastCheckpoint
from medvision.utils.imports import import_object
from medvision.utils.runs import (
    checkpoint_run_folder,
    evaluation_folder,
    find_last_checkpoint,
    new_folder,
    next_run_folder,
    run_number,
)

log = logging.getLogger(__name__)

#: Set by rank 0 for the DDP processes it launches, so that all ranks share one run folder.
RUN_DIR_VARIABLE = "MEDVISION_RUN_DIR"
#: The logger of a config that names none (the CLI points it at the run folder).
DEFAULT_LOGGER = {
    "class_path": "medvision.training.loggers.CSVLogger",
    "init_args": {"save_dir": "runs"},
}
#: medvision's loggers by short name: ``--trainer.logger WandbLogger`` means these, not
#: Lightning's classes of the same names (which they extend).
LOGGERS = {name: f"medvision.training.loggers.{name}" for name in ("CSVLogger", "WandbLogger")}
#: The name a W&B logger inherits from the default CSV logger's settings when a config replaces
#: it (jsonargparse keeps the arguments both classes take): not a name anyone chose.
_CSV_NAME = inspect.signature(CSVLogger).parameters["name"].default
#: The options whose value may be a logger's short name.
LOGGER_OPTIONS = ("--trainer.logger", "--trainer.logger+", "--trainer.logger.class_path")
LIMIT_KEYS = (
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
)


@dataclass
class Runs:
    """Where this command writes, and whether a stopped ``fit`` is resumed in its own folder.

    Attributes:
        folder: The run folder; None: the command decides, as predict does.
        resumed: True when ``fit --ckpt_path last`` continues in the folder of ``last.ckpt``.
    """

    folder: Path | None
    resumed: bool = False


def runs_for(subcommand: str | None, config: Namespace, config_paths: list[str]) -> Runs:
    """Choose this command's folder and point the loggers there (``config`` is changed).

    ``fit`` (and ``run=False``): a new ``<default_root_dir>/version_<N>``, or with
    ``--ckpt_path last`` the folder of the newest ``last.ckpt``. ``test``/``validate``: a new
    folder in the checkpoint's run, ``test/`` (``validate/``) the first time and
    ``test-<date-time>/`` after (:func:`~medvision.utils.runs.evaluation_folder`), else a new
    ``test-<date-time>/`` under ``default_root_dir``. Under DDP the processes rank 0 starts
    take its folder (:data:`RUN_DIR_VARIABLE`). Nothing is made here: the folder appears when
    the command writes into it, after the datamodule's ``setup``. ``predict``: no logger; the
    prediction writer writes into a new
    ``predictions/<date-time>/`` folder of the checkpoint's run (see
    :func:`medvision.apply.prediction_output.prediction_folder`).

    Args:
        subcommand: ``fit``, ``validate``, ``test``, ``predict``, or None (``run=False``).
        config: The subcommand's parsed config.
        config_paths: The ``--config`` files, the first naming the default root.
    """
    trainer = config.trainer
    if trainer.get("default_root_dir") is None:
        stem = Path(config_paths[0]).stem if config_paths else "medvision"
        trainer.default_root_dir = str(Path("runs") / stem)
    root = Path(trainer.default_root_dir)
    checkpoint_run = checkpoint_run_folder(config.ckpt_path) if config.get("ckpt_path") else None
    if subcommand == "predict":  # the writer picks a new folder: see prediction_output
        trainer.logger = False
        return Runs(None)
    if subcommand in ("test", "validate"):
        folder = _inherited_folder()
        if folder is None:
            run = checkpoint_run
            folder = evaluation_folder(run, subcommand) if run else new_folder(root, subcommand)
            os.environ[RUN_DIR_VARIABLE] = str(folder)
        point_loggers(trainer, folder)
        return Runs(folder)
    runs = _fit_folder(config, root, launched_by_rank_zero=subcommand == "fit")
    point_loggers(trainer, runs.folder)
    return runs


def fit_run_in(config: Namespace, folder: Path) -> Runs:
    """A ``fit`` in a folder named by its caller (``medvision tune``'s ``trial_<k>``), not the
    next ``version_<N>``: ``default_root_dir`` becomes the folder's parent and the loggers point
    at the folder (``config`` is changed).

    Args:
        config: The ``fit`` command's parsed config.
        folder: The run's folder; every DDP process of the run must be given the same one.
    """
    config.trainer.default_root_dir = str(folder.parent)
    point_loggers(config.trainer, folder)
    return Runs(folder)


def _inherited_folder() -> Path | None:
    """The folder rank 0 chose, in a DDP process it started; else None."""
    inherited = os.environ.get(RUN_DIR_VARIABLE)
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(inherited)
    return None


def _fit_folder(config: Namespace, root: Path, launched_by_rank_zero: bool) -> Runs:
    inherited = _inherited_folder()
    if inherited is not None:
        return Runs(inherited, resumed=config.get("ckpt_path") == "last")
    runs = Runs(next_run_folder(root))
    if config.get("ckpt_path") == "last":
        checkpoint = find_last_checkpoint(root)
        if checkpoint is None:
            log.warning(
                "--ckpt_path last: no checkpoints/last*.ckpt under %s; starting anew.", root
            )
            config.ckpt_path = None
        else:
            config.ckpt_path = str(checkpoint)
            runs = Runs(checkpoint_run_folder(checkpoint) or runs.folder, resumed=True)
            log.info("Resuming from %s in %s", checkpoint, runs.folder)
    if launched_by_rank_zero:
        os.environ[RUN_DIR_VARIABLE] = str(runs.folder)
    return runs


def point_loggers(trainer: Namespace, folder: Path) -> None:
    """Make every configured logger write into ``folder`` (``trainer.logger`` is changed).

    CSV and TensorBoard loggers get ``save_dir``/``name``/``version`` that make their
    ``log_dir`` the folder; other loggers (W&B) get ``save_dir: folder``, and W&B a run name
    from the folder (``unet_lung/version_3``) unless the config names one. A config whose one
    logger is a W&B logger also gets medvision's CSV logger after it, so that every run folder
    holds its ``metrics.csv``; a config that lists its loggers gets exactly those.

    Args:
        trainer: The parsed ``trainer`` config.
        folder: The run's folder.
    """
    loggers = trainer.get("logger")
    if loggers in (None, False):
        return
    if loggers is True:
        loggers = trainer.logger = Namespace(class_path=LOGGERS["CSVLogger"])
    if not isinstance(loggers, list) and issubclass(import_object(loggers.class_path), WandbLogger):
        loggers = trainer.logger = [loggers, Namespace(class_path=LOGGERS["CSVLogger"])]
    for entry in loggers if isinstance(loggers, list) else [loggers]:
        logger_class = import_object(entry.class_path)
        init = entry.get("init_args") or Namespace()
        entry.init_args = init
        if issubclass(logger_class, CSVLogger | TensorBoardLogger):
            number = run_number(folder)  # version_3 -> 3, so the bar shows v_num=3
            init.save_dir, init.name = str(folder.parent), ""
            init.version = folder.name if number is None else number
        elif "save_dir" in inspect.signature(logger_class).parameters:
            init.save_dir = str(folder)
        if issubclass(logger_class, WandbLogger) and init.get("name") in (None, _CSV_NAME):
            init.name = f"{folder.parent.name}/{folder.name}"


def logger_class_paths(args: list[str]) -> list[str]:
    """``--trainer.logger WandbLogger`` (or ``CSVLogger``) as medvision's class path.

    Lightning's classes of the same names make the short name ambiguous to jsonargparse;
    on the medvision command line it names medvision's logger (:data:`LOGGERS`).

    Args:
        args: The command line (``["fit", "--trainer.logger", "WandbLogger", ...]``).

    Returns:
        The command line with each such short name replaced; other arguments unchanged.
    """
    rewritten = list(args)
    for index, arg in enumerate(rewritten):
        option, equals, value = arg.partition("=")
        if option not in LOGGER_OPTIONS:
            continue
        if equals and value in LOGGERS:
            rewritten[index] = f"{option}={LOGGERS[value]}"
        elif not equals and index + 1 < len(rewritten) and rewritten[index + 1] in LOGGERS:
            rewritten[index + 1] = LOGGERS[rewritten[index + 1]]
    return rewritten


def drop_learning_rate_monitors(trainer: Trainer) -> None:
    """Without a logger (``--trainer.logger false``), drop ``LearningRateMonitor`` callbacks,
    saying so once: there is nothing to log the learning rate to (Lightning would stop).

    Args:
        trainer: The built trainer (its ``callbacks`` list is changed).
    """
    if trainer.loggers:
        return
    kept = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
    if len(kept) < len(trainer.callbacks):
        trainer.callbacks[:] = kept
        log.info("No logger (trainer.logger: false): the learning rate is not logged.")


def point_checkpoints(trainer: Trainer, folder: Path | None) -> None:
    """Checkpoint callbacks without a ``dirpath`` save into ``<folder>/checkpoints``.

    Args:
        trainer: The built trainer.
        folder: The run's folder (None: leave Lightning's choice).
    """
    if folder is None:
        return
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
            callback.dirpath = str(folder / "checkpoints")


def one_batch_limits(trainer: Namespace) -> dict[str, int]:
    """``limit_*_batches: 1`` means one batch (Lightning reads a float 1.0 as 100%).

    jsonargparse turns ``--trainer.limit_val_batches 1`` into ``1.0``; on the medvision CLI a
    limit of 1 is one batch (leave a limit unset to use every batch).

    Args:
        trainer: The parsed ``trainer`` config.

    Returns:
        The trainer arguments to pass instead: ``{key: 1}`` for each limit equal to 1.
    """
    return {key: 1 for key in LIMIT_KEYS if trainer.get(key) == 1}


def requested_links(model_config) -> dict[str, object]:
    """Linked model arguments (``num_classes``, ``in_channels``) set to other than their default
    in the config or on the command line: the data decides them, so they must agree with it.

    Args:
        model_config: The parsed ``model`` config (``class_path`` and ``init_args``).
    """
    init = getattr(model_config, "init_args", None)
    class_path = getattr(model_config, "class_path", None)
    if init is None or class_path is None:
        return {}
    parameters = inspect.signature(import_object(class_path)).parameters
    return {
        name: init[name]
        for name in ("num_classes", "in_channels")
        if name in parameters
        and init.get(name) is not None
        and init[name] != parameters[name].default
    }


def check_linked_values(requested: dict[str, object], datamodule) -> None:
    """Refuse a linked value set in the config that disagrees with the datamodule's.

    Args:
        requested: What :func:`requested_links` found.
        datamodule: The built datamodule.
    """
    for name, value in requested.items():
        found = getattr(datamodule, name, value)
        if found != value:
            raise ValueError(
                f"model.init_args.{name}={value} disagrees with the data: "
                f"{type(datamodule).__name__} has {name}={found}. Drop the setting: the "
                f"CLI passes {name} from the datamodule to the model."
            )


def task_callbacks(model) -> list[Callback]:
    """The callbacks a model's task needs, which the CLI adds unless the config lists them.

    Segmenters get the per-image test report
    (:class:`~medvision.evaluation.SegmentationTestReport`), classifiers theirs
    (:class:`~medvision.evaluation.ClassificationTestReport`) and, with ``calibrate``,
    temperature scaling after fit (:class:`~medvision.training.TemperatureCalibration`).

    Args:
        model: The LightningModule (its ``task`` and ``calibrate``).
    """
    task = getattr(model, "task", "")
    if task == "segmentation":
        return [SegmentationTestReport()]
    if task == "classification":
        calibration = [TemperatureCalibration()] if getattr(model, "calibrate", False) else []
        return [ClassificationTestReport(), *calibration]
    return []


def add_missing_callbacks(trainer: Trainer, callbacks: list[Callback]) -> None:
    """Append each callback whose type the trainer does not have yet.

    Args:
        trainer: The built trainer (its ``callbacks`` list is changed).
        callbacks: The callbacks to add.
    """
    for callback in callbacks:
        if not any(isinstance(c, type(callback)) for c in trainer.callbacks):
            trainer.callbacks.append(callback)


def run_summary(trainer: Trainer, folder: Path) -> str:
    """The block ``fit`` ends with: best and last checkpoints, the run folder, what next.

    Each ``next:`` command runs as printed: without a test split the test command is the one
    that gives the data one (:func:`option_for_a_test_split`), or none is printed and the block says
    how to get one.

    Args:
        trainer: The trainer that has just fitted.
        folder: The run's folder.
    """
    best = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
    last = next((c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)), None)
    lines = [f"fit finished. Run folder: {folder}"]
    best_path = best.best_model_path if best is not None else ""
    if best_path:
        score = best.best_model_score
        shown = "not measured" if score is None else f"{float(score):.4f}"
        lines.append(f"  best checkpoint: {best_path} ({best.monitor} = {shown})")
    else:
        lines.append("  best checkpoint: none saved (is its monitor logged? see --checkpoint.*)")
    last_path = "" if last is None else last.best_model_path or last.last_model_path
    if last_path:
        lines.append(f"  last checkpoint: {last_path} (resume: medvision fit ... --ckpt_path last)")
    checkpoint = best_path or last_path
    if not checkpoint:
        return "\n".join([*lines, "  next: no checkpoint to test or apply (see --checkpoint.*)"])
    test = f"medvision test --config {folder / 'config.yaml'} --ckpt_path {checkpoint}"
    lines.append("  next:")
    datamodule = trainer.datamodule
    if has_test_split(datamodule):
        lines.append(f"    {test}")
    else:
        name = type(datamodule).__name__
        option = option_for_a_test_split(datamodule)
        if option is None:
            hint = getattr(datamodule, "test_split_hint", "")
            lines.append(f"    (no test split: {name} found no test images. {hint})".rstrip())
        else:
            lines.append(
                f"    (no test split: {name} found no test images. This tests on the validation"
                " images, which chose this checkpoint: an optimistic score.)"
            )
            lines.append(f"    {test} {option}")
    lines.append(f"    medvision predict --ckpt_path {checkpoint} --data.predict_dir DIR")
    return "\n".join(lines)


def has_test_split(datamodule) -> bool:
    """Whether a fitted datamodule has test images (one that keeps no ``datasets``: assumed).

    Args:
        datamodule: The datamodule after ``setup("fit")``.
    """
    datasets = getattr(datamodule, "datasets", None)
    if not isinstance(datasets, dict) or "train" not in datasets:
        return True
    return len(datasets.get("test") or ()) > 0


def option_for_a_test_split(datamodule) -> str | None:
    """The option that gives a datamodule without a test split one: ``--data.init_args.test_split
    val`` for a folder layout with ``train/`` and ``val/`` (the chest X-ray layout), which tests
    on ``val/``; None when there is no such option (a test split must come from the data).

    Args:
        datamodule: The datamodule after ``setup("fit")``.
    """
    data_dir = getattr(datamodule, "data_dir", None)
    if (
        getattr(datamodule, "test_split", None) in (None, "val")
        or "val" not in getattr(datamodule, "split_dirnames", ())
        or getattr(datamodule, "merge_val_into_train", False)  # val/ images were trained on
        or data_dir is None
        or not (Path(data_dir) / "val").is_dir()
    ):
        return None
    return "--data.init_args.test_split val"
