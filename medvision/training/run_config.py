"""The run's record: the resolved config and run info, saved in the run folder and logged."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from medvision.utils.files import write_text
from medvision.utils.provenance import run_info


class LoggedSaveConfigCallback(SaveConfigCallback):
    """Saves what makes a run repeatable in its folder, and sends it to every logger.

    Beside Lightning's ``config.yaml`` (the resolved config, seed included) it writes
    ``run_info.json``: package versions, hardware, the medvision git commit and the command
    line (:func:`medvision.utils.provenance.run_info`). Loggers (W&B included) get the config with
    the run info under ``run_info``.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # trainer.log_dir is a broadcast under DDP: every process asks here, not rank 0 alone
        # in save_config (which Lightning calls on rank 0 only)
        self._log_dir = trainer.log_dir
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = json.loads(self.parser.dump(self.config, skip_none=False, format="json"))
        info = run_info()
        if self._log_dir is not None:
            path = Path(self._log_dir) / "run_info.json"
            write_text(path, json.dumps(info, indent=1))
        for logger in trainer.loggers:
            logger.log_hyperparams({**config, "run_info": info})
