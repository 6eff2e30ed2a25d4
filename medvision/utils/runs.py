"""Run folders: one folder per run, holding everything the run wrote, and finding them again.

``medvision fit`` trains in ``<root>/version_<N>/`` (``root`` is ``trainer.default_root_dir``,
``N`` the next free number) and everything of that run goes there::

    <root>/version_<N>/
        checkpoints/best.ckpt, last.ckpt
        config.yaml, run_info.json        the resolved config; versions, hardware, commit
        metrics.csv                       (CSV logger) or wandb/ (W&B's own files)
        overlays/, epoch_times.json, excluded_files.csv, ...
        test/, test-<date-time>/          each `medvision test` on its checkpoint (the first
                                          in test/; validate/ likewise)
        predictions/<date-time>/          each `medvision predict` on its checkpoint

No command writes into another's folder: a second ``test`` of a checkpoint gets a new
``test-<date-time>/`` beside the first (:func:`evaluation_folder`), as every ``predict`` gets
a new ``predictions/<date-time>/``; the newest is the one with the latest time.

:func:`run_folder` finds a trainer's run folder without a collective call, so callbacks on
one DDP rank can use it.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

_VERSION_FOLDER = re.compile(r"^version_(\d+)$")


def run_folder(trainer: Trainer) -> Path:
    """This run's own folder, the one that holds its ``config.yaml`` (and ``checkpoints/``).

    What ``trainer.log_dir`` is, without its broadcast (so one rank alone may ask): the CSV
    or TensorBoard logger's ``log_dir``, another logger's ``save_dir``, or
    ``default_root_dir`` without a logger. The CLI points all of them at the run folder.

    Args:
        trainer: The trainer of the run.
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    if isinstance(logger, CSVLogger | TensorBoardLogger):
        return Path(logger.log_dir)
    return Path(logger.save_dir or trainer.default_root_dir)


def next_run_folder(root: str | Path) -> Path:
    """``root/version_<N>`` for the smallest ``N`` above every existing ``version_*`` folder.

    Args:
        root: The experiment's folder (``trainer.default_root_dir``).
    """
    numbers = [run_number(path) for path in Path(root).glob("version_*") if path.is_dir()]
    numbers = [n for n in numbers if n is not None]
    return Path(root) / f"version_{max(numbers, default=-1) + 1}"


def run_number(folder: Path) -> int | None:
    """``N`` of a ``version_<N>`` folder, else None.

    Args:
        folder: A run folder.
    """
    match = _VERSION_FOLDER.match(Path(folder).name)
    return int(match.group(1)) if match else None


def new_folder(parent: Path, prefix: str = "") -> Path:
    """``parent/<prefix>-<date-time>`` (``-2``, ``-3``, ... when taken): a folder of its own.

    Args:
        parent: Where the folder goes.
        prefix: Its name's beginning (none: the date and time alone).
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{prefix}-{stamp}" if prefix else stamp
    folder, count = parent / name, 1
    while folder.exists():
        count += 1
        folder = parent / f"{name}-{count}"
    return folder


def evaluation_folder(run: str | Path, name: str) -> Path:
    """Where a ``test`` (``validate``) of a run's checkpoint writes: ``run/<name>`` the first
    time, then a new ``run/<name>-<date-time>`` (:func:`new_folder`), never one already there.

    Args:
        run: The run folder of the checkpoint.
        name: ``test`` or ``validate``.
    """
    folder = Path(run) / name
    return new_folder(Path(run), name) if folder.exists() else folder


def checkpoint_run_folder(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (the parent of its ``checkpoints/``), or None.

    Args:
        checkpoint: A checkpoint file.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name != "checkpoints":
        return None
    return checkpoint.parent.parent


def find_last_checkpoint(*roots: str | Path) -> Path | None:
    """The newest ``last*.ckpt`` in a ``checkpoints/`` folder anywhere under ``roots``, or None.

    Args:
        *roots: Folders to search (missing ones are skipped).
    """
    found = {
        path.resolve()
        for root in roots
        if root is not None and Path(root).is_dir()
        for path in Path(root).rglob("checkpoints/last*.ckpt")
        if path.is_file()
    }
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def run_version(checkpoint: Path) -> int | None:
    """``K`` when ``checkpoint`` lies in ``.../version_K/checkpoints/``, else None.

    Args:
        checkpoint: A checkpoint file.
    """
    return run_number(Path(checkpoint).parent.parent)


#: What a finished ``medvision test`` leaves in its folder (see medvision.evaluation.summary).
TEST_SUMMARY = "test_summary.csv"


def newest_test_folder(run: str | Path) -> Path | None:
    """The folder of a run's newest finished test: of its ``test*`` folders holding
    ``test_summary.csv``, the one whose summary was written last; None when there is none.

    Read test results through this, not a literal ``test/``: a run may be tested several
    times, each test in a folder of its own.

    Args:
        run: A run folder (``<root>/version_<N>``).
    """
    summaries = [
        folder / TEST_SUMMARY
        for folder in Path(run).glob("test*")
        if folder.is_dir() and (folder / TEST_SUMMARY).is_file()
    ]
    newest = max(summaries, key=lambda path: path.stat().st_mtime_ns, default=None)
    return None if newest is None else newest.parent
