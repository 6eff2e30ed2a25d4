"""NaN or infinite losses and gradients stop a run with the step, files and checkpoint named."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medvision.callbacks import NonFiniteError, NonFiniteGuard
from medvision.checkpointing import LastCheckpoint
from medvision.cli import MedVisionCLI

from .conftest import unet_run_args

BAD_STEP = 3  # 0-based global step whose loss or gradient is made non-finite


class Files(Dataset):
    """Eight samples ``{"image": 1-vector, "path": "img_<i>.png"}``."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        return {"image": torch.full((1,), float(index)), "path": f"img_{index}.png"}


class BreaksAtOneStep(L.LightningModule):
    """A linear model whose loss (``fault="loss"``) or gradient (``"gradient"``) is NaN at
    ``BAD_STEP``."""

    def __init__(self, fault: str) -> None:
        super().__init__()
        self.fault = fault
        self.layer = nn.Linear(1, 1)
        self.weights_at_bad_step: torch.Tensor | None = None

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch["image"]).pow(2).mean()
        if self.global_step == BAD_STEP:
            self.weights_at_bad_step = self.layer.weight.detach().clone()
            if self.fault == "loss":
                loss = loss * math.nan
            else:  # d sqrt(x)/dx is infinite at 0: a finite loss with NaN gradients
                loss = loss + (self.layer.weight * 0).sqrt().sum()
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.global_step == BAD_STEP + 1 and self.weights_at_bad_step is not None:
            self.weights_after_bad_step = self.layer.weight.detach().clone()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, weight_decay=0.1)


def fit(tmp_path, fault: str, guard: NonFiniteGuard) -> BreaksAtOneStep:
    model = BreaksAtOneStep(fault)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[guard, LastCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=2)],
    )
    trainer.fit(model, DataLoader(Files(), batch_size=2))
    return model


@pytest.mark.parametrize(
    "fault, what", [("loss", "the loss is nan"), ("gradient", "a gradient is NaN or infinite")]
)
def test_non_finite_step_stops_the_run_naming_step_files_and_checkpoint(tmp_path, fault, what):
    with pytest.raises(NonFiniteError) as error:
        fit(tmp_path, fault, NonFiniteGuard())
    message = str(error.value)
    assert what in message
    assert f"step {BAD_STEP}" in message and "batch 3" in message
    assert "img_6.png, img_7.png" in message  # batch 3 of an unshuffled loader, batch size 2
    assert f"{tmp_path / 'checkpoints' / 'last.ckpt'}" in message  # saved at step 2


@pytest.mark.parametrize("fault", ["loss", "gradient"])
def test_skipped_step_leaves_the_weights_alone(tmp_path, fault):
    guard = NonFiniteGuard(max_skipped=1)
    model = fit(tmp_path, fault, guard)
    assert guard.skipped == 1
    assert torch.equal(model.weights_after_bad_step, model.weights_at_bad_step)
    assert torch.isfinite(model.layer.weight).all()


def test_one_skip_too_many_stops(tmp_path):
    guard = NonFiniteGuard(max_skipped=1)
    guard.skipped = 1  # as if one step had been skipped already
    with pytest.raises(NonFiniteError, match="max_skipped"):
        fit(tmp_path, "loss", guard)


def test_cli_guards_every_run(tmp_path, lung_dir):
    cli = MedVisionCLI(args=unet_run_args(tmp_path, lung_dir), run=False)
    assert sum(isinstance(c, NonFiniteGuard) for c in cli.trainer.callbacks) == 1
