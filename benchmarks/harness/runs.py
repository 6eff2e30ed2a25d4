"""``medvision`` commands in child processes, what their run folders hold, data to run on.

A fit's run folder holds ``metrics.csv``, ``epoch_times.json`` (from the
``medvision.training.EpochTimer`` that :func:`fit` adds) and ``checkpoints/best.ckpt``;
``medvision test`` on that checkpoint writes ``test/`` into it: ``metrics.csv``,
``test_summary.csv`` (headline metrics with 95% bootstrap intervals), ``test_per_class.csv``
(or ``test_per_label.csv``) and ``test_per_image.csv``. Benchmarks read those, not recompute.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from .machine import REPO

MEDVISION = [sys.executable, "-m", "medvision.cli"]  # this interpreter's, from the checkout


def overrides(config, epochs: int | None = None, **groups) -> list[str]:
    """``--config CONFIG``, then ``--<group>.<key>=<value>`` for each key of each group given
    as a dict (``data`` and ``model`` under ``init_args``; None left out; lists as ``[a,b]``;
    booleans as ``true``/``false``) and ``--<name>=<value>`` for each other value; ``epochs``:
    ``max_epochs`` and the configs' cosine ``T_max`` to match. No progress bar: a benchmark's
    runs log to files.
    """

    def text(value) -> str:
        if isinstance(value, list | tuple):
            return "[" + ",".join(map(str, value)) + "]"
        return str(value).lower() if isinstance(value, bool) else str(value)

    out = ["--config", str(config)]
    for group, values in groups.items():
        prefix = f"--{group}.init_args." if group in ("data", "model") else f"--{group}."
        if not isinstance(values, dict):
            out.append(f"--{group}={text(values)}")
            continue
        out += [f"{prefix}{key}={text(v)}" for key, v in values.items() if v is not None]
    if epochs is not None:
        schedule = "--model.init_args.lr_scheduler.init_args.T_max"
        out += [f"--trainer.max_epochs={epochs}", f"{schedule}={epochs}"]
    return [*out, "--trainer.enable_progress_bar=false"]


def run_logged(cmd: list[str], log: Path, poll: Callable | None = None) -> float:
    """Run ``cmd`` from the repository root, its output into ``log`` (after the command line),
    calling ``poll()`` every second meanwhile; its wall time. Stops with the log's tail when it
    fails."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        handle.write(" ".join(cmd) + "\n\n")
        handle.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
        while True:
            try:
                proc.wait(timeout=1)  # returns at once when it ends: no added wall time
                break
            except subprocess.TimeoutExpired:
                if poll is not None:
                    poll()
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        sys.exit(f"{' '.join(cmd[:4])} failed (exit {proc.returncode}), see {log}:\n{tail}")
    if poll is not None:
        poll()  # what ended in the last second
    return wall


def medvision(*args: str, log: Path) -> float:
    """``medvision <args>`` with its output into ``log``; its wall time in seconds."""
    return run_logged([*MEDVISION, *args], log)


def read_csv_rows(path: Path) -> list[dict]:
    """The rows of a CSV file a run wrote (empty cells: ``""``); stops when it is missing."""
    from medvision.utils.files import read_csv

    if not Path(path).is_file():
        sys.exit(f"{path} is missing: the run did not finish (see its .log beside it)")
    return read_csv(path)


def logged(rows: list[dict], key: str) -> list[dict]:
    """The rows of a ``metrics.csv`` that hold a value of ``key``."""
    return [row for row in rows if row.get(key) not in ("", None)]


def best_row(rows: list[dict], key: str, mode: str = "max") -> dict:
    """The first row of a ``metrics.csv`` with the highest (``max``) or lowest ``key``: the
    epoch ModelCheckpoint keeps when it monitors ``key``. ValueError when none holds it."""
    found = logged(rows, key)
    if not found:
        raise ValueError(f"no {key} in the fit's metrics.csv")
    return (max if mode == "max" else min)(found, key=lambda row: float(row[key]))


def test_metrics(rows: list[dict]) -> dict[str, float]:
    """What a test logged in its ``metrics.csv`` rows, without the ``test/`` prefix."""
    return {
        key[len("test/") :]: float(value)
        for row in rows
        for key, value in row.items()
        if key.startswith("test/") and value not in ("", None)
    }


class Tested(NamedTuple):
    """What ``medvision test`` wrote into ``folder`` (a run's ``test/``) in ``test_s`` s."""

    folder: Path
    test_s: float = math.nan

    @property
    def metrics(self) -> dict[str, float]:
        """Its logged metrics (see :func:`test_metrics`)."""
        return test_metrics(read_csv_rows(self.folder / "metrics.csv"))

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """``test_summary.csv``: metric -> ``value``, ``ci_low``, ``ci_high`` (its 95% bootstrap
        interval over the test images), ``n``."""
        rows = read_csv_rows(self.folder / "test_summary.csv")
        return {r["metric"]: {k: float(v) for k, v in r.items() if k != "metric"} for r in rows}

    @property
    def per_class(self) -> list[dict]:
        """``test_per_class.csv``: ``class``, ``precision``, ``recall``, ``f1``, ``support``."""
        return read_csv_rows(self.folder / "test_per_class.csv")


class Fit(NamedTuple):
    """A finished ``medvision fit`` into ``folder`` (its run: ``folder/version_0``), its
    process's wall time ``fit_s`` and the 1-minute load average at each epoch's end."""

    folder: Path
    fit_s: float = math.nan
    load_avg: tuple = ()

    @property
    def run(self) -> Path:
        return self.folder / "version_0"

    @property
    def best(self) -> Path:
        return self.run / "checkpoints/best.ckpt"

    @property
    def metrics(self) -> list[dict]:
        """The rows of the fit's ``metrics.csv``."""
        return read_csv_rows(self.run / "metrics.csv")

    @property
    def epoch_s(self) -> list[float]:
        """Each epoch's wall time (training, validation, checkpoints), from ``EpochTimer``."""
        epochs = json.loads((self.run / "epoch_times.json").read_text())
        return [epoch["wall_s"] for epoch in epochs]

    def test(self, *args: str) -> Tested:
        """``medvision test <args> --ckpt_path best.ckpt``, into the run's ``test/``."""
        seconds = medvision("test", *args, f"--ckpt_path={self.best}", log=self.folder / "test.log")
        return Tested(self.run / "test", seconds)


def fit(folder: Path, *args: str) -> Fit:
    """``medvision fit <args>`` into ``folder`` (replaced; ``fit.log`` there), its epochs timed
    by ``EpochTimer``. Stops when it fails or leaves no ``best.ckpt``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    loads, times = [], folder / "version_0/epoch_times.json"

    def at_epoch_end() -> None:  # EpochTimer rewrites its file after each epoch
        done = len(json.loads(times.read_text())) if times.is_file() else 0
        loads.extend([os.getloadavg()[0]] * (done - len(loads)))

    root = [f"--trainer.default_root_dir={folder}", f"--trainer.logger.init_args.save_dir={folder}"]
    timer = "--trainer.callbacks+=medvision.training.EpochTimer"
    wall = run_logged([*MEDVISION, "fit", *args, *root, timer], folder / "fit.log", at_epoch_end)
    return finished_fit(folder, wall, tuple(loads))


def finished_fit(folder: Path, fit_s: float = math.nan, load_avg: tuple = ()) -> Fit:
    """The :class:`Fit` of a fit run into ``folder`` before; stops when it left no best.ckpt."""
    found = Fit(folder, fit_s, load_avg)
    if not found.best.is_file():
        sys.exit(f"no {found.best} after fit; see {folder / 'fit.log'}")
    return found


def saved_result(path: Path, make: Callable[[], dict], reuse: bool) -> dict:
    """``path``'s JSON when ``reuse`` and it exists, else ``make()``, written there."""
    if reuse and path.is_file():
        return json.loads(path.read_text())
    result = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str))
    return result


def linked_lung_copies(source: Path, out: Path, num_slices: int) -> Path:
    """``out``: a Kaggle-layout lung folder of ``num_slices`` symlinks cycling over the pairs of
    ``source`` (link ``k`` of ``name`` is ``c<k>_<name>``): any size, no pixels copied."""
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


def synthetic_lung(out: Path, num_slices: int, size: int, distinct: int) -> tuple[Path, str]:
    """``num_slices`` synthetic slices stored at ``size`` px in the Kaggle layout: ``distinct``
    phantoms (``write_lung_ct``) in ``out/distinct``, linked over in ``out/linked``; that
    folder and its description."""
    from medvision.data.synthetic import write_lung_ct

    write_lung_ct(out / "distinct", num_slices=min(distinct, num_slices), size=size, seed=0)
    folder = linked_lung_copies(out / "distinct", out / "linked", num_slices)
    return folder, (
        f"synthetic lung CT, {num_slices} slices stored at {size}x{size} uint8 TIFF ({distinct} "
        "distinct, linked over)"
    )
