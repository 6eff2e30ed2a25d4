"""``medvision`` commands run as child processes, what their runs write, and data to run on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from .machine import REPO

#: the ``medvision`` command of this interpreter, run from the repository root
MEDVISION = [sys.executable, "-m", "medvision.cli"]


def run_logged(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run ``cmd`` from the repository root, its output into ``log``; stop if it fails.

    Args:
        cmd: the command (e.g. ``[*MEDVISION, "fit", ...]``).
        log: the file for its stdout and stderr, which starts with the command line.
        env: the environment (default: this process's).

    Returns:
        Its wall time in seconds.

    Raises:
        SystemExit: with the log's tail when the command exits non-zero.
    """
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        handle.write(" ".join(cmd) + "\n\n")
        handle.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        sys.exit(f"{' '.join(cmd[:4])} failed (exit {proc.returncode}), see {log}:\n{tail}")
    return wall


def medvision(*args: str, log: Path) -> float:
    """``medvision <args>`` (this interpreter's, from the checkout); returns its wall time.

    Args:
        *args: the command and its options (``fit``, ``--config``, ...).
        log: the file for its output (see :func:`run_logged`).
    """
    return run_logged([*MEDVISION, *args], log)


def epoch_seconds(path: Path) -> list[float]:
    """Wall seconds of each epoch, from the JSON that ``medvision.training.EpochTimer`` wrote.

    Args:
        path: its ``output`` file.
    """
    return [epoch["wall_s"] for epoch in json.loads(Path(path).read_text())]


def read_csv_rows(path: Path) -> list[dict]:
    """The rows of a CSV file that a run wrote (``metrics.csv``, ``test_per_class.csv``, ...).

    Args:
        path: the file.

    Returns:
        One dict per row, keyed by the header; empty cells are ``""``.

    Raises:
        SystemExit: naming ``path`` when it does not exist (the run did not finish).
    """
    from medvision.utils.files import read_csv

    if not Path(path).is_file():
        sys.exit(f"{path} is missing: the run did not finish (see its .log beside it)")
    return read_csv(path)


def logged(rows: list[dict], key: str) -> list[dict]:
    """The rows of a CSV logger's ``metrics.csv`` that hold a value of ``key``.

    Args:
        rows: the rows (see :func:`read_csv_rows`).
        key: a logged metric, e.g. ``val/iou``.
    """
    return [row for row in rows if row.get(key) not in ("", None)]


def best_row(rows: list[dict], key: str, mode: str = "max") -> dict:
    """The row of ``metrics.csv`` rows with the highest (``max``) or lowest (``min``) ``key``.

    Args:
        rows: a CSV logger's rows (see :func:`read_csv_rows`).
        key: a logged metric, e.g. ``val/iou``.
        mode: ``max`` or ``min``.

    Returns:
        The row (string values).

    Raises:
        ValueError: when no row holds ``key``.
    """
    found = logged(rows, key)
    if not found:
        raise ValueError(f"no {key} in the fit's metrics.csv")
    pick = max if mode == "max" else min
    return pick(found, key=lambda row: float(row[key]))


def linked_lung_copies(source: Path, out: Path, num_slices: int) -> Path:
    """A Kaggle-layout lung folder of ``num_slices`` symlinks cycling over ``source``'s pairs.

    Link ``k`` of pair ``name`` is ``c<k>_<name>`` in ``out/2d_images`` and ``out/2d_masks``,
    so a few real or synthetic slices make a set of any size without copying pixels.

    Args:
        source: a folder with ``2d_images/`` and ``2d_masks/`` of the same file names.
        out: the new folder (created).
        num_slices: how many pairs to link.

    Returns:
        ``out``.
    """
    names = sorted(p.name for p in (source / "2d_images").iterdir())
    if not names:
        sys.exit(f"{source / '2d_images'} holds no slices")
    for sub in ("2d_images", "2d_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for index in range(num_slices):
            name = names[index % len(names)]
            link = out / sub / f"c{index // len(names):04d}_{name}"
            link.symlink_to((source / sub / name).resolve())
    return out


def synthetic_lung(out: Path, num_slices: int, size: int, distinct: int) -> Path:
    """``num_slices`` synthetic slices in the Kaggle layout: ``distinct`` phantoms, linked over.

    Args:
        out: the folder to write into (``distinct/`` and ``linked/`` under it).
        num_slices: the slices of the set.
        size: the stored slices' side in pixels.
        distinct: the phantoms written (:func:`medvision.data.synthetic.write_lung_ct`).

    Returns:
        The linked folder.
    """
    from medvision.data.synthetic import write_lung_ct

    write_lung_ct(out / "distinct", num_slices=min(distinct, num_slices), size=size, seed=0)
    return linked_lung_copies(out / "distinct", out / "linked", num_slices)


class Fit(NamedTuple):
    """What a finished ``medvision fit`` left in its folder.

    Args:
        folder: the fit's ``default_root_dir`` (the run is ``folder/version_0``).
        best: its ``best.ckpt``.
        fit_s: the process's wall time in seconds (start-up included).
        epoch_s: each epoch's wall time (training, validation, checkpoints), from ``EpochTimer``.
    """

    folder: Path
    best: Path
    fit_s: float
    epoch_s: list[float]

    @property
    def metrics(self) -> list[dict]:
        """The rows of the fit's ``metrics.csv`` (test runs on its checkpoint add a ``test/``)."""
        return read_csv_rows(self.folder / "version_0/metrics.csv")


def fit(folder: Path, *args: str) -> Fit:
    """``medvision fit <args>`` into ``folder`` (run folder, logger, ``fit.log``), its epochs timed.

    Args:
        folder: the fit's root folder (created; replaced when it exists).
        *args: ``--config`` and the overrides of the run.

    Returns:
        The finished fit.

    Raises:
        SystemExit: when the fit fails or leaves no ``best.ckpt``.
    """
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    times = folder / "epoch_times.json"
    wall = medvision(
        "fit",
        *args,
        f"--trainer.default_root_dir={folder}",
        f"--trainer.logger.init_args.save_dir={folder}",
        "--trainer.callbacks+=medvision.training.EpochTimer",
        f"--trainer.callbacks.output={times}",
        log=folder / "fit.log",
    )
    return finished_fit(folder, wall)


def finished_fit(folder: Path, fit_s: float) -> Fit:
    """The :class:`Fit` of a fit that :func:`fit` ran into ``folder`` before.

    Args:
        folder: its root folder.
        fit_s: its wall time, when known (NaN otherwise).
    """
    best = folder / "version_0/checkpoints/best.ckpt"
    if not best.is_file():
        sys.exit(f"no {best} after fit; see {folder / 'fit.log'}")
    return Fit(folder, best, fit_s, epoch_seconds(folder / "epoch_times.json"))
