"""Epoch timing: wall and CPU seconds per training epoch, checkpoint saving included."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from medvision.utils.files import write_text
from medvision.utils.runs import run_folder


class EpochTimer(Callback):
    """Wall and CPU seconds of every training epoch, written to the run folder as JSON.

    An epoch is timed from its start to the next epoch's start (the last one to the end of
    training), so its time holds everything it costs: training, validation, logging and
    checkpoint saving. (Lightning runs checkpoint callbacks after all others at epoch end: a
    timer stopped in ``on_train_epoch_end`` would leave the saving out.) CPU time is this
    process's, all threads; loader workers are other processes and not counted. After each
    epoch ``epoch_times.json`` (``[{"epoch", "wall_s", "cpu_s"}, ...]``) is rewritten,
    atomically, in the run folder (see :func:`run_folder`).

    Args:
        output: Where to write the JSON instead of ``<run folder>/epoch_times.json``; None for
            the run folder.
    """

    def __init__(self, output: str | Path | None = None) -> None:
        self.output = None if output is None else Path(output)
        self.epochs: list[dict] = []
        self._start: tuple[int, float, float] | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close_epoch(trainer)
        self._start = (trainer.current_epoch, time.perf_counter(), time.process_time())

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close_epoch(trainer)

    def _close_epoch(self, trainer: Trainer) -> None:
        if self._start is None:
            return
        epoch, wall, cpu = self._start
        self._start = None
        self.epochs.append(
            {
                "epoch": epoch,
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
            }
        )
        if trainer.is_global_zero:
            path = self.output or run_folder(trainer) / "epoch_times.json"
            write_text(path, json.dumps(self.epochs, indent=1))
