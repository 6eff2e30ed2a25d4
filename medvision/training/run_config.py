"""The run's record: the resolved config and run info, saved in the run folder and logged."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from medvision.data.description import describe_data
from medvision.utils.files import write_text
from medvision.utils.provenance import run_info

RUN_INFO = "run_info.json"


class LoggedSaveConfigCallback(SaveConfigCallback):
    """Saves what makes a run repeatable in its folder, and sends it to every logger.

    Beside Lightning's ``config.yaml`` (the resolved config, seed included) it writes
    ``run_info.json``: package versions, hardware, the medvision git commit and the command
    line (:func:`medvision.utils.provenance.run_info`), and ``data``: the datamodule's
    splits, their sizes and class counts and a fingerprint of their file list
    (:func:`medvision.data.description.describe_data`). At the end of ``fit`` it adds
    ``fit``: when it started, its duration, the epochs and steps trained and the training
    batches per epoch against those the data holds (fewer: a reduced, smoke run). Loggers (W&B
    included) get the config with the run info under ``run_info``.
    """

    _started: float | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # trainer.log_dir is a broadcast under DDP: every process asks here, not rank 0 alone
        # in save_config (which Lightning calls on rank 0 only)
        self._log_dir = trainer.log_dir
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = json.loads(self.parser.dump(self.config, skip_none=False, format="json"))
        info = run_info()
        data = describe_data(trainer.datamodule) if trainer.datamodule is not None else None
        if data is not None:
            info["data"] = data
        if self._log_dir is not None:
            write_text(Path(self._log_dir) / RUN_INFO, json.dumps(info, indent=1))
        for logger in trainer.loggers:
            logger.log_hyperparams({**config, "run_info": info})

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = time.time()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = None if self._log_dir is None else Path(self._log_dir) / RUN_INFO
        if not trainer.is_global_zero or self._started is None or path is None:
            return
        if not path.is_file():
            return
        info = json.loads(path.read_text())
        info["fit"] = fit_record(trainer, self._started)
        write_text(path, json.dumps(info, indent=1))


def fit_record(trainer: Trainer, started: float) -> dict:
    """What a finished fit did: ``started`` (UTC, ISO 8601), ``duration_s``, ``epochs`` and
    ``steps`` trained, ``max_epochs``, ``train_batches_per_epoch`` (as limited) and
    ``train_batches_available`` (the loader's length; None when unknown), ``fast_dev_run``.

    Args:
        trainer: The trainer at the end of ``fit``.
        started: ``time.time()`` when the fit started.
    """
    loader = trainer.train_dataloader
    try:
        available = len(loader) if loader is not None else None
    except TypeError:
        available = None
    batches = trainer.num_training_batches
    return {
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "max_epochs": trainer.max_epochs,
        "train_batches_per_epoch": None if batches == float("inf") else int(batches),
        "train_batches_available": available,
        "fast_dev_run": bool(trainer.fast_dev_run),
    }
