"""Loggers: Weights & Biases that never blocks on a login prompt, a CSV logger that resumes,
and :class:`DeferredLoggers`, which starts a trainer's loggers only once its data is set up."""

from __future__ import annotations

import csv
import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

log = logging.getLogger(__name__)


def wandb_api_key_configured() -> bool:
    """True when W&B can authenticate without asking: ``WANDB_API_KEY`` or a netrc entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger``, offline when no API key is configured.

    Offline runs are written under ``save_dir`` and the command to upload them is logged at
    the end. Further keyword arguments go to Lightning's ``WandbLogger`` (and ``wandb.init``).
    ``save_dir`` is made when the W&B run starts, not when the logger is built.

    Args:
        project: The W&B project.
        save_dir: Folder for W&B's local files (made if missing).
        name: The run's display name; null: W&B picks one.
        group: The W&B group (e.g. the folds of one cross-validation).
        offline: True: log offline; False: online; null: online with ``WANDB_API_KEY`` or a
            ``wandb login`` netrc entry, offline otherwise (also when ``WANDB_MODE=offline``).
        log_model: Upload checkpoints as W&B artifacts: False, True (at the end) or ``all``
            (as they are saved), as in Lightning.
    """

    def __init__(
        self,
        project: str = "medvision",
        save_dir: str = "runs",
        name: str | None = None,
        group: str | None = None,
        offline: bool | None = None,
        log_model: bool | str = False,
        **kwargs,
    ) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_configured()
            if offline:
                log.warning(
                    "W&B: no API key configured (WANDB_API_KEY or `wandb login`): "
                    "logging offline under %s",
                    save_dir,
                )
        super().__init__(
            project=project,
            save_dir=save_dir,
            name=name,
            group=group,
            offline=offline,
            log_model=log_model,
            **kwargs,
        )
        self._is_offline = offline

    @property
    def experiment(self):
        """The W&B run, started (and ``save_dir`` made) on first use."""
        if self._experiment is None and self.save_dir is not None:
            Path(self.save_dir).mkdir(parents=True, exist_ok=True)  # wandb.init's dir
        return super().experiment

    def end_run(self) -> None:
        """Finish this logger's W&B run, so that the next run in this process starts its own.

        Lightning leaves the run open after ``fit`` (a ``test`` in the same process would log
        into it); ``medvision`` commands are one run each and end it when they are done. W&B
        writes a finished run's files in its service process, after ``finish`` returns; when no
        other W&B run is active here, the service is shut down too (``wandb.teardown``), so
        that the run's files are complete when the command returns (a later run starts it
        again).
        """
        if self._experiment is not None:
            self._experiment.finish()
            self._experiment = None
            import wandb

            if wandb.run is None:
                wandb.teardown()

    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._is_offline and self._experiment is not None:
            run_dir = Path(self._experiment.dir).parent
            log.warning(
                "W&B offline run saved in %s; upload it with: wandb sync %s", run_dir, run_dir
            )


class CSVLogger(_LightningCSVLogger):
    """Lightning's ``CSVLogger`` (``<save_dir>/<name>/version_<n>/metrics.csv``) that resumes.

    Lightning's deletes ``metrics.csv`` when a run logs into an existing version folder, as
    ``medvision fit ... --ckpt_path last`` does to continue a stopped run in place. This one
    keeps the earlier rows up to the resumed run's first logged step and appends after them;
    the rows a killed run logged after its last checkpoint are dropped, since the resumed run
    does those steps again.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(log_dir=self.log_dir)
        return self._experiment


class _ResumingWriter(ExperimentWriter):
    """An ``ExperimentWriter`` that merges the rows already in ``metrics.csv`` into its first
    save."""

    def _check_log_dir_exists(self) -> None:
        self._earlier_rows: list[dict] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self._earlier_rows = list(csv.DictReader(file))

    def save(self) -> None:
        if self._earlier_rows is not None and self.metrics:
            first_step = min(row["step"] for row in self.metrics)
            kept = [row for row in self._earlier_rows if float(row["step"]) < first_step]
            self.metrics = [*kept, *self.metrics]
            self._earlier_rows = None
            self._fs.rm_file(self.metrics_file_path)  # rewritten whole, with every column
            log.info(
                "Kept %d rows of %s logged before step %d",
                len(kept),
                self.metrics_file_path,
                first_step,
            )
        super().save()


class DeferredLoggers(Callback):
    """Gives a trainer its loggers only once the datamodule's ``setup`` has succeeded.

    Lightning starts every logger's experiment before it sets up the data (a CSV logger makes
    its folder, W&B starts its run; Lightning PR #17818), so a wrong ``data_dir`` or a bad
    file, found in ``setup``, would leave an empty run folder behind and take its number
    (Lightning issue #15655 asks for such folders to be removed; there is no hook for it).
    The loggers wait here instead and start in this callback's ``setup`` (which Lightning
    calls after the datamodule's), W&B first as Lightning does. Attach it with :meth:`attach`
    after the trainer is built; it goes first among the callbacks, so theirs see the loggers.

    Args:
        loggers: The trainer's loggers.
    """

    def __init__(self, loggers: list) -> None:
        self.loggers = list(loggers)

    @classmethod
    def attach(cls, trainer: Trainer) -> None:
        """Take ``trainer``'s loggers until its ``setup`` (nothing happens without loggers).

        Args:
            trainer: A trainer not yet fitted, tested or validated.
        """
        if not trainer.loggers:
            return
        trainer.callbacks.insert(0, cls(trainer.loggers))
        trainer.loggers = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        trainer.loggers = self.loggers
        # as Lightning's own setup: W&B before the others, so TensorBoard files sync to it
        wandb_first = sorted(self.loggers, key=lambda lg: not isinstance(lg, _LightningWandbLogger))
        for logger in wandb_first:
            _ = logger.experiment
