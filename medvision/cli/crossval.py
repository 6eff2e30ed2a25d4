"""``medvision-cv``: k-fold cross-validation of any ``medvision fit`` configuration.

    medvision-cv --folds 5 --config configs/unet_lung.yaml --data.init_args.data_dir DIR

Fold ``i`` (0-based) is a normal ``medvision fit`` run, in this process, with
``--data.init_args.num_folds K --data.init_args.fold i`` added to the given arguments; its
``default_root_dir`` is ``<output>/fold_<i>``, so it trains in its own run folder
``<output>/fold_<i>/version_0`` (checkpoints, config, logs; W&B runs get
``group=<experiment name>`` and ``name=fold_<i>``).
After training, the fold's trainer tests the best checkpoint of its monitored
``ModelCheckpoint`` on the datamodule's test split (the same images for every fold), and the
``test/*`` metrics go to the fold's logger and to ``<output>/fold_<i>/fold_result.json``.

At the end, every test metric's mean, sample standard deviation (n - 1) and per-fold values are
printed and written to ``<output>/cv_summary.csv`` and ``<output>/cv_summary.md``. A fold whose
``fold_result.json`` exists is not run again, so an interrupted study resumes where it stopped.
The datamodule must take ``num_folds`` and ``fold`` arguments (``LungCTDataModule``,
``SyntheticLungCTDataModule`` and ``HAM10000DataModule`` do).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import statistics
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger

from medvision.cli import MedVisionCLI
from medvision.utils.files import write_csv, write_text
from medvision.utils.imports import import_object

log = logging.getLogger(__name__)

#: Written in each fold's folder once the fold is trained and tested; its presence skips the fold.
FOLD_RESULT = "fold_result.json"
SUMMARY_CSV = "cv_summary.csv"
SUMMARY_MD = "cv_summary.md"


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
    fold's arguments instead.
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


def check_fold_support(config: Namespace) -> None:
    """Raise if the configured datamodule cannot select a fold (no ``num_folds``/``fold``).

    Also refuses a checkpoint callback with a fixed ``dirpath``, which every fold would share.

    Args:
        config: The parsed ``fit`` config (see :func:`parse_fit_config`).
    """
    data = config.get("data")
    if data is None:
        raise ValueError("no datamodule configured: give --config with a data section")
    init_args = data.get("init_args") or Namespace()
    missing = [key for key in ("num_folds", "fold") if key not in init_args]
    if missing:
        raise ValueError(
            f"{data.class_path} has no {' / '.join(missing)} argument: cross-validation needs a "
            "datamodule that selects one of k folds as its validation set (LungCTDataModule, "
            "SyntheticLungCTDataModule, HAM10000DataModule). Use one of those, or run "
            "medvision fit with a fixed split instead."
        )
    callbacks = config.trainer.get("callbacks") or []
    for callback in [callbacks] if isinstance(callbacks, Namespace) else callbacks:
        if (callback.get("init_args") or {}).get("dirpath"):
            raise ValueError(
                f"{callback.class_path} has a fixed dirpath ({callback.init_args.dirpath}): every "
                "fold would write its checkpoints there. Remove dirpath so that each fold keeps "
                "its checkpoints in its own run folder."
            )


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


def logger_args(config: Namespace, fold: int, group: str) -> list[str]:
    """``--trainer.logger`` for one fold's W&B loggers: ``group`` and ``name=fold_<i>``.

    Every logger already writes into the fold's own run folder (the CLI points it there);
    only W&B runs need their group and name. Returns no argument when there is no W&B logger.

    Args:
        config: The parsed ``fit`` config.
        fold: The fold's number.
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
    for spec in wandb_specs:
        spec.setdefault("init_args", {}).update(group=group, name=f"fold_{fold}")
    value = specs[0] if isinstance(loggers, Namespace) else specs
    return [f"--trainer.logger={json.dumps(value)}"]


def best_checkpoint(trainer: Trainer) -> str:
    """The best checkpoint of the first monitored ``ModelCheckpoint``; else the last, warned.

    Args:
        trainer: The fold's trainer after ``fit``.

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
        "the fold's run saved no checkpoint to test: keep a ModelCheckpoint in "
        "trainer.callbacks (with a monitor, e.g. val/dice) and do not use fast_dev_run."
    )


def run_fold(
    fit_args: Sequence[str], config: Namespace, fold: int, folds: int, output: Path, group: str
) -> dict:
    """Train and test fold ``fold`` of ``folds`` in ``output/fold_<fold>``; its result dict.

    An existing ``fold_result.json`` of the same number of folds is returned without running;
    one of another number of folds raises ``ValueError``.

    Args:
        fit_args: The ``medvision fit`` arguments shared by every fold.
        config: Their parsed config (for the loggers, see :func:`logger_args`).
        fold: The fold to run, 0-based.
        folds: The number of folds.
        output: The study's folder.
        group: The experiment's name (the W&B group).

    Returns:
        ``{"fold", "num_folds", "checkpoint", "log_dir", "metrics"}``, paths relative to the
        fold's folder and ``metrics`` the ``test/*`` values.
    """
    fold_dir = output / f"fold_{fold}"
    result_path = fold_dir / FOLD_RESULT
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        if result.get("num_folds") != folds:
            raise ValueError(
                f"{result_path} is from a {result.get('num_folds')}-fold run, not {folds} folds. "
                "Give another --output, or delete the old fold folders."
            )
        log.info("Fold %d/%d already done (%s): skipped", fold, folds, result_path)
        return result
    log.info("Fold %d/%d: training in %s", fold, folds, fold_dir)
    args = [
        "fit",
        *fit_args,
        f"--data.init_args.num_folds={folds}",
        f"--data.init_args.fold={fold}",
        f"--trainer.default_root_dir={fold_dir}",
        *logger_args(config, fold, group),
    ]
    with _in_process_cli():
        cli = MedVisionCLI(args=args, save_config_kwargs={"overwrite": True})
    trainer = cli.trainer
    if trainer.interrupted:
        raise KeyboardInterrupt(f"fold {fold} was interrupted; run the same command to resume")
    checkpoint = best_checkpoint(trainer)
    tested = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint)
    cli.end_logger_runs()
    metrics = {k: float(v) for k, v in tested[0].items() if k.startswith("test/")}
    if not metrics:
        raise RuntimeError(f"fold {fold}: the model logged no test/* metrics")
    result = {  # paths relative to the fold's folder, so that the study can be moved
        "fold": fold,
        "num_folds": folds,
        "checkpoint": os.path.relpath(Path(checkpoint).resolve(), fold_dir.resolve()),
        "log_dir": os.path.relpath(Path(trainer.log_dir).resolve(), fold_dir.resolve()),
        "metrics": metrics,
    }
    write_text(result_path, json.dumps(result, indent=1))
    return result


def summarize(fold_metrics: Sequence[dict[str, float]]) -> list[dict]:
    """Per metric (sorted): ``mean``, sample ``std`` (n - 1) and ``fold_<i>`` values.

    A metric missing from a fold counts as NaN there, which makes its mean and std NaN.

    Args:
        fold_metrics: Each fold's ``{metric: value}``, in fold order (at least two).

    Returns:
        One row per metric: ``{"metric", "mean", "std", "fold_0", ...}``.
    """
    keys = sorted(set().union(*fold_metrics))
    rows = []
    for key in keys:
        values = [metrics.get(key, math.nan) for metrics in fold_metrics]
        row = {"metric": key, "mean": statistics.fmean(values), "std": statistics.stdev(values)}
        row.update({f"fold_{i}": value for i, value in enumerate(values)})
        rows.append(row)
    return rows


def format_summary(rows: Sequence[dict], markdown: bool = False) -> str:
    """The summary rows as a table: metric | mean ± std | one column per fold.

    Args:
        rows: The rows of :func:`summarize`.
        markdown: A Markdown table instead of space-aligned plain text.
    """
    folds = [key for key in rows[0] if key.startswith("fold_")]
    header = ["metric", "mean ± std", *folds]
    body = [
        [r["metric"], f"{r['mean']:.4f} ± {r['std']:.4f}", *(f"{r[f]:.4f}" for f in folds)]
        for r in rows
    ]
    if markdown:
        lines = [header, ["---"] * len(header), *body]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *body]
    )


def write_summary(output: Path, rows: Sequence[dict], name: str) -> tuple[Path, Path]:
    """Write ``cv_summary.csv`` (full precision) and ``cv_summary.md`` atomically.

    Args:
        output: The study's folder.
        rows: The rows of :func:`summarize`.
        name: The experiment's name, the Markdown page's title.

    Returns:
        The paths of the CSV and Markdown files.
    """
    csv_path, md_path = output / SUMMARY_CSV, output / SUMMARY_MD
    write_csv(csv_path, list(rows))
    folds = sum(key.startswith("fold_") for key in rows[0])
    text = (
        f"# {name}: {folds}-fold cross-validation\n\n"
        "Test metrics of each fold's best checkpoint on the same test split; std is the sample "
        "standard deviation (n - 1).\n\n" + format_summary(rows, markdown=True) + "\n"
    )
    write_text(md_path, text)
    return csv_path, md_path


def cross_validate(
    fit_args: Sequence[str], folds: int, output: str | Path | None = None, name: str | None = None
) -> list[dict]:
    """Run (or resume) ``folds``-fold cross-validation of ``medvision fit <fit_args>``.

    Args:
        fit_args: The ``medvision fit`` arguments; the datamodule must take ``num_folds`` and
            ``fold``.
        folds: The number of folds, at least 2.
        output: The study's folder; None: ``<trainer.default_root_dir>/cv``.
        name: The experiment's name, the W&B group; None: the first config file's stem.

    Returns:
        The rows of :func:`summarize`, also written to ``<output>/cv_summary.csv`` and ``.md``.
    """
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    config = parse_fit_config(fit_args)
    check_fold_support(config)
    root = config.trainer.get("default_root_dir") or "."
    output = Path(output) if output is not None else Path(root) / "cv"
    name = name or experiment_name(fit_args, output)
    results = [run_fold(fit_args, config, fold, folds, output, name) for fold in range(folds)]
    rows = summarize([result["metrics"] for result in results])
    csv_path, _ = write_summary(output, rows, name)
    log.info("Cross-validation summary written to %s (and .md)", csv_path)
    return rows


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``medvision-cv``: ``--folds K [--output DIR] [--name N]`` + fit arguments.

    Every argument this command does not know is passed to ``medvision fit`` unchanged.

    Args:
        args: The command line without the program name; None: ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(
        prog="medvision-cv",
        allow_abbrev=False,
        description="k-fold cross-validation: one `medvision fit` + test per fold, then the "
        "mean ± std of every test metric. Other arguments go to `medvision fit`.",
        epilog="example: medvision-cv --folds 5 --config configs/unet_lung.yaml "
        "--data.init_args.data_dir DIR",
    )
    parser.add_argument("--folds", type=int, required=True, help="number of folds (>= 2)")
    parser.add_argument(
        "--output",
        type=Path,
        help="folder for fold_<i>/ and cv_summary.* (default: <trainer.default_root_dir>/cv)",
    )
    parser.add_argument("--name", help="experiment name, the W&B group (default: config stem)")
    options, fit_args = parser.parse_known_args(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = cross_validate(fit_args, options.folds, options.output, options.name)
    print(f"\n{options.folds}-fold cross-validation, test metrics (std: n - 1):")
    print(format_summary(rows))


if __name__ == "__main__":
    main()
