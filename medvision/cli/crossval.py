"""``medvision-cv``: k-fold cross-validation, or repeats over seeds, of any ``medvision fit``.

    medvision-cv --folds 5 --config configs/unet_lung.yaml --data.init_args.data_dir DIR
    medvision-cv --seeds 3 --config configs/cnn5_chestxray.yaml --data.init_args.data_dir DIR
    medvision-cv --folds 5 --seeds 3 ...      (5 x 3 runs)

Each run of the study is a normal ``medvision fit``, in this process, of the given arguments
plus what makes it that run (:class:`~medvision.cli.cv_summary.StudyRun`): fold ``i`` of K adds
``--data.init_args.num_folds K --data.init_args.fold i``; seed ``s`` adds
``--seed_everything s`` (the model's initialization, the loader's order, the augmentation and
the datamodule's own streams; never the data split, which the datamodule's ``seed`` draws, so
every run is tested on the same test images). Its ``default_root_dir`` is
``<output>/<run>`` (``fold_<i>``, ``seed_<s>`` or ``fold_<i>_seed_<s>``), so it trains in its own
run folder ``<output>/<run>/version_0`` (checkpoints, config, logs; W&B runs get
``group=<experiment name>`` and ``name=<run>``). After training, the run's trainer tests the
best checkpoint of its monitored ``ModelCheckpoint`` on the datamodule's test split, and the
``test/*`` metrics go to the run's logger and to ``<output>/<run>/fold_result.json`` (the test
report's ``test_per_image.csv`` is in the run folder).

At the end, every test metric's mean, sample standard deviation (n - 1) and per-run values are
printed and written to ``<output>/cv_summary.csv`` and ``<output>/cv_summary.md`` (see
:mod:`medvision.cli.cv_summary`). A run whose ``fold_result.json`` exists is not run again, so
an interrupted study resumes where it stopped. Folds need a datamodule with ``num_folds`` and
``fold`` arguments (every medvision datamodule with a split has them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger

from medvision.cli import MedVisionCLI
from medvision.cli.cv_summary import (
    FOLD_RESULT,
    StudyRun,
    describe_study,
    format_summary,
    is_run_name,
    read_result,
    study_plan,
    summarize,
    write_summary,
)
from medvision.utils.files import write_text
from medvision.utils.imports import import_object

log = logging.getLogger(__name__)


class _ConfigParsed(Exception):
    """Carries the parsed ``fit`` configuration out of :class:`_ParseOnlyCLI`."""


class _ParseOnlyCLI(MedVisionCLI):
    """Parses arguments exactly as ``medvision fit`` does, then stops before building anything."""

    def before_instantiate_classes(self) -> None:
        raise _ConfigParsed(self.config["fit"])


@contextlib.contextmanager
def _in_process_cli() -> Iterator[None]:
    """Silence LightningCLI's warning that ``args`` and ``sys.argv`` are both given.

    ``medvision-cv``'s own command line is in ``sys.argv``; the CLI is deliberately given the
    run's arguments instead.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        yield


def parse_fit_config(fit_args: Sequence[str]) -> Namespace:
    """The resolved configuration ``medvision fit <fit_args>`` would run, with nothing built.

    Args:
        fit_args: The ``medvision fit`` arguments (``--config``, ``--data...``), without ``fit``.

    Returns:
        The parsed ``fit`` config (a jsonargparse ``Namespace``).
    """
    try:
        with _in_process_cli():
            _ParseOnlyCLI(args=["fit", *fit_args])
    except _ConfigParsed as parsed:
        return parsed.args[0]
    raise RuntimeError("medvision fit arguments were not parsed")  # unreachable


def check_study_support(config: Namespace, folds: int | None) -> None:
    """Raise if the configured study cannot run: no datamodule, folds asked of a datamodule
    without ``num_folds``/``fold``, or a checkpoint callback with a fixed ``dirpath`` (which
    every run would share).

    Args:
        config: The parsed ``fit`` config (see :func:`parse_fit_config`).
        folds: The number of folds asked for, or None (seeds only).
    """
    data = config.get("data")
    if data is None:
        raise ValueError("no datamodule configured: give --config with a data section")
    init_args = data.get("init_args") or Namespace()
    missing = [key for key in ("num_folds", "fold") if key not in init_args]
    if folds is not None and missing:
        raise ValueError(
            f"{data.class_path} has no {' / '.join(missing)} argument: cross-validation needs a "
            "datamodule that selects one of k folds as its validation set (LungCTDataModule, "
            "HAM10000DataModule, ChestXrayDataModule, NIHChestXray14DataModule, "
            "CheXpertDataModule, SegmentationFolderDataModule, VolumeSliceDataModule). Use one "
            "of those, or repeat its own split over seeds with --seeds instead of --folds."
        )
    callbacks = config.trainer.get("callbacks") or []
    for callback in [callbacks] if isinstance(callbacks, Namespace) else callbacks:
        if (callback.get("init_args") or {}).get("dirpath"):
            raise ValueError(
                f"{callback.class_path} has a fixed dirpath ({callback.init_args.dirpath}): every "
                "run would write its checkpoints there. Remove dirpath so that each run keeps "
                "its checkpoints in its own run folder."
            )


def seed_list(values: Sequence[int]) -> list[int]:
    """The seeds of ``--seeds``: one number N means seeds 0 to N - 1; several are the seeds.

    Args:
        values: The numbers given to ``--seeds``.

    Raises:
        ValueError: for no number, a count below 1, a seed outside [0, 2**32) (what
            ``seed_everything`` takes) or a repeated one.
    """
    values = list(values)
    if len(values) == 1:
        if values[0] < 1:
            raise ValueError(
                f"--seeds N runs seeds 0 to N - 1: N must be at least 1, got {values[0]}"
            )
        return list(range(values[0]))
    if not values or len(set(values)) != len(values) or not all(0 <= v < 2**32 for v in values):
        raise ValueError(
            "--seeds takes a count (--seeds 3: seeds 0, 1, 2) or distinct seeds in "
            f"[0, 2**32) (--seeds 7 11 13), got {values}"
        )
    return values


def experiment_name(fit_args: Sequence[str], output: Path) -> str:
    """The stem of the first ``--config`` file (``unet_lung``), else the output folder's name.

    Args:
        fit_args: The ``medvision fit`` arguments.
        output: The study's output folder.
    """
    for i, arg in enumerate(fit_args):
        if arg in ("--config", "-c") and i + 1 < len(fit_args):
            return Path(fit_args[i + 1]).stem
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1]).stem
    return output.resolve().name


def logger_args(config: Namespace, run: int | str, group: str) -> list[str]:
    """``--trainer.logger`` for one run's W&B loggers: ``group`` and the run's name.

    Every logger already writes into the run's own folder (the CLI points it there); only W&B
    runs need their group and name. Returns no argument when there is no W&B logger.

    Args:
        config: The parsed ``fit`` config.
        run: The run's name (``seed_1``, ``fold_0_seed_1``), or a fold's number (``fold_<i>``).
        group: The W&B group (the experiment's name).
    """
    loggers = config.trainer.get("logger")
    if loggers is None or isinstance(loggers, bool):
        return []
    entries = [loggers] if isinstance(loggers, Namespace) else list(loggers)
    specs = [entry.as_dict() for entry in entries]
    wandb_specs = [s for s in specs if issubclass(import_object(s["class_path"]), WandbLogger)]
    if not wandb_specs:
        return []
    name = f"fold_{run}" if isinstance(run, int) else run
    for spec in wandb_specs:
        spec.setdefault("init_args", {}).update(group=group, name=name)
    value = specs[0] if isinstance(loggers, Namespace) else specs
    return [f"--trainer.logger={json.dumps(value)}"]


def best_checkpoint(trainer: Trainer) -> str:
    """The best checkpoint of the first monitored ``ModelCheckpoint``; else the last, warned.

    Args:
        trainer: The run's trainer after ``fit``.

    Returns:
        The checkpoint's path. No checkpoint at all raises ``RuntimeError``.
    """
    callbacks = trainer.checkpoint_callbacks
    for callback in callbacks:
        if callback.monitor is not None and callback.best_model_path:
            return callback.best_model_path
    for callback in callbacks:
        path = callback.last_model_path or callback.best_model_path
        if path:
            log.warning(
                "No monitored best checkpoint (is a ModelCheckpoint given a monitor that is "
                "logged?): testing the last one, %s",
                path,
            )
            return path
    raise RuntimeError(
        "the run saved no checkpoint to test: keep a ModelCheckpoint in "
        "trainer.callbacks (with a monitor, e.g. val/dice) and do not use fast_dev_run."
    )


def _check_earlier_result(result: dict, run: StudyRun, path: Path) -> None:
    """Refuse a finished run's result that belongs to another study in the same folder."""
    if result.get("num_folds") != run.num_folds:

        def kind(folds: int | None) -> str:
            return "a run without folds" if folds is None else f"a {folds}-fold run"

        raise ValueError(
            f"{path} is from {kind(result.get('num_folds'))}, not "
            f"{f'{run.num_folds} folds' if run.num_folds else 'a study without folds'}. "
            "Give another --output, or delete the old run folders."
        )
    if result.get("seed") != run.seed:
        raise ValueError(
            f"{path} was run with seed {result.get('seed')}, not {run.seed}. Give another "
            "--output, or delete the old run folders."
        )


def check_no_other_study(output: Path, plan: Sequence[StudyRun]) -> None:
    """Refuse an ``output`` holding finished runs that are not in ``plan`` (another study's),
    which the new summary would silently leave out.

    Args:
        output: The study's folder.
        plan: The runs of the study (:func:`~medvision.cli.cv_summary.study_plan`).
    """
    if not output.is_dir():
        return
    names = {run.name for run in plan}
    others = sorted(
        folder.name
        for folder in output.iterdir()
        if is_run_name(folder.name) and folder.name not in names and read_result(folder)
    )
    if others:
        raise ValueError(
            f"{output} holds runs of another study ({', '.join(others)}): give another "
            "--output, or delete those run folders."
        )


def run_one(
    fit_args: Sequence[str], config: Namespace, run: StudyRun, output: Path, group: str
) -> dict:
    """Train and test one run of the study in ``output/<run name>``; its result dict.

    An existing ``fold_result.json`` of the same study is returned without running; one of
    another number of folds (or another seed) raises ``ValueError``.

    Args:
        fit_args: The ``medvision fit`` arguments shared by every run.
        config: Their parsed config (for the loggers, see :func:`logger_args`).
        run: The run (its fold and seed).
        output: The study's folder.
        group: The experiment's name (the W&B group).

    Returns:
        ``{"run", "fold", "num_folds", "seed", "checkpoint", "log_dir", "metrics"}``, paths
        relative to the run's folder and ``metrics`` the ``test/*`` values.
    """
    folder = output / run.name
    result = read_result(folder)
    if result is not None:
        _check_earlier_result(result, run, folder / FOLD_RESULT)
        log.info("%s already done (%s): skipped", run.label, folder / FOLD_RESULT)
        return result
    log.info("%s: training in %s", run.label, folder)
    args = [
        "fit",
        *fit_args,
        *run.fit_args(),
        f"--trainer.default_root_dir={folder}",
        *logger_args(config, run.name, group),
    ]
    with _in_process_cli():
        cli = MedVisionCLI(args=args, save_config_kwargs={"overwrite": True})
    trainer = cli.trainer
    if trainer.interrupted:
        raise KeyboardInterrupt(f"run {run.name} was interrupted; run the same command to resume")
    checkpoint = best_checkpoint(trainer)
    tested = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint)
    cli.end_logger_runs()
    metrics = {k: float(v) for k, v in tested[0].items() if k.startswith("test/")}
    if not metrics:
        raise RuntimeError(f"run {run.name}: the model logged no test/* metrics")
    result = {  # paths relative to the run's folder, so that the study can be moved
        "run": run.name,
        "fold": run.fold,
        "num_folds": run.num_folds,
        "seed": run.seed,
        "checkpoint": os.path.relpath(Path(checkpoint).resolve(), folder.resolve()),
        "log_dir": os.path.relpath(Path(trainer.log_dir).resolve(), folder.resolve()),
        "metrics": metrics,
    }
    write_text(folder / FOLD_RESULT, json.dumps(result, indent=1))
    return result


def cross_validate(
    fit_args: Sequence[str],
    folds: int | None = None,
    output: str | Path | None = None,
    name: str | None = None,
    seeds: Sequence[int] | None = None,
) -> list[dict]:
    """Run (or resume) a study of ``medvision fit <fit_args>``: folds, seeds, or both.

    Args:
        fit_args: The ``medvision fit`` arguments; with ``folds`` the datamodule must take
            ``num_folds`` and ``fold``.
        folds: The number of folds, at least 2; None: the datamodule's own split.
        output: The study's folder; None: ``<trainer.default_root_dir>/cv``.
        name: The experiment's name, the W&B group; None: the first config file's stem.
        seeds: The ``seed_everything`` of the runs (see :func:`seed_list`); None: the config's.

    Returns:
        The rows of :func:`~medvision.cli.cv_summary.summarize`, also written to
        ``<output>/cv_summary.csv`` and ``.md``.
    """
    if folds is not None and folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    plan = study_plan(folds, seeds)
    if len(plan) < 2:
        raise ValueError(
            "a study needs at least 2 runs for a standard deviation: give --folds K (K >= 2), "
            "--seeds N (N >= 2), or both"
        )
    config = parse_fit_config(fit_args)
    check_study_support(config, folds)
    root = config.trainer.get("default_root_dir") or "."
    output = Path(output) if output is not None else Path(root) / "cv"
    name = name or experiment_name(fit_args, output)
    check_no_other_study(output, plan)
    results = [run_one(fit_args, config, run, output, name) for run in plan]
    rows = summarize(results)
    csv_path, _ = write_summary(output, rows, name, describe_study(folds, seeds))
    log.info("Study summary written to %s (and .md)", csv_path)
    return rows


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``medvision-cv``: ``--folds K`` and/or ``--seeds N`` [``--output DIR``]
    [``--name N``] + fit arguments.

    Every argument this command does not know is passed to ``medvision fit`` unchanged.

    Args:
        args: The command line without the program name; None: ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(
        prog="medvision-cv",
        allow_abbrev=False,
        description="k-fold cross-validation and/or repeats over seeds: one `medvision fit` + "
        "test per run, then the mean ± std of every test metric. Other arguments go to "
        "`medvision fit`.",
        epilog="examples: medvision-cv --folds 5 --config configs/unet_lung.yaml "
        "--data.init_args.data_dir DIR; medvision-cv --seeds 3 --config "
        "configs/cnn5_chestxray.yaml --data.init_args.data_dir DIR",
    )
    parser.add_argument("--folds", type=int, help="number of folds (>= 2)")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="N",
        help="seed_everything of the runs: a count N (seeds 0 to N - 1) or several seeds",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="folder for the runs and cv_summary.* (default: <trainer.default_root_dir>/cv)",
    )
    parser.add_argument("--name", help="experiment name, the W&B group (default: config stem)")
    options, fit_args = parser.parse_known_args(args)
    if options.folds is None and options.seeds is None:
        parser.error("give --folds K, --seeds N, or both")
    try:
        seeds = None if options.seeds is None else seed_list(options.seeds)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = cross_validate(fit_args, options.folds, options.output, options.name, seeds)
    print(f"\n{describe_study(options.folds, seeds)}, test metrics (std: n - 1):")
    print(format_summary(rows))


if __name__ == "__main__":
    main()
