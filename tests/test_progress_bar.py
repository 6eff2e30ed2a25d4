"""The CLI's progress bar: progress every log_every_n_steps batches, the loss only where logged."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import nn
from torch.utils.data import DataLoader

from medvision.cli import MedVisionCLI
from medvision.training import MedVisionProgressBar

from .conftest import unet_run_args


class LossIsBatchIndex(L.LightningModule):
    """Logs ``train/loss`` = the batch index, per step and epoch, off the progress bar (as
    medvision's modules do)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch).sum() * 0 + batch_idx
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class RecordingBar(MedVisionProgressBar):
    """Records (global step, loss shown) each time a training batch sets the bar's metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[tuple[int, float | None]] = []
        self.counts: list[int] = []
        self._in_batch = False

    def on_train_batch_end(self, trainer, *args) -> None:
        self._in_batch = True
        super().on_train_batch_end(trainer, *args)
        self._in_batch = False
        self.counts.append(self.train_progress_bar.n)

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        if self._in_batch:
            self.shown.append((trainer.global_step, items.get("train/loss_step")))
        return items


def test_bar_shows_the_loss_at_the_logging_steps_only(tmp_path):
    bar = RecordingBar()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        log_every_n_steps=2,
        callbacks=[bar],
    )
    trainer.fit(LossIsBatchIndex(), DataLoader(torch.ones(3, 1), batch_size=1))  # 3 steps/epoch
    assert bar.refresh_rate == 2
    # steps 1-3 in epoch 0, 4-6 in epoch 1; shown after steps 2 (batch 1), 4 (batch 0), 6 (batch 2)
    assert bar.shown == [(2, 1.0), (4, 0.0), (6, 2.0)]
    # the counter moves every 2 batches and at an epoch's last batch
    assert bar.counts == [0, 2, 3, 0, 2, 3]


def test_cli_uses_the_medvision_bar_unless_the_config_names_another(tmp_path, lung_dir):
    def bar(*extra: str):
        args = unet_run_args(tmp_path, lung_dir, *extra)
        return MedVisionCLI(args=args, run=False).trainer.progress_bar_callback

    assert bar() is None  # the tests' --trainer.enable_progress_bar=false
    assert type(bar("--trainer.enable_progress_bar=true")) is MedVisionProgressBar
    named = bar(
        "--trainer.enable_progress_bar=true",
        "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar",
    )
    assert type(named) is TQDMProgressBar
