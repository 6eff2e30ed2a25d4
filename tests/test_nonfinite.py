"""NaN or infinite losses and gradients stop a run with the step, files and checkpoint named."""

from __future__ import annotations

import logging
import math
import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medvision.cli import MedVisionCLI
from medvision.training import NonFiniteError, NonFiniteGuard
from medvision.training.checkpointing import LastCheckpoint

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

    def __init__(self, fault: str, bad_step: int = BAD_STEP) -> None:
        super().__init__()
        self.fault = fault
        self.bad_step = bad_step
        self.layer = nn.Linear(1, 1)
        self.weights_at_bad_step: torch.Tensor | None = None

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch["image"]).pow(2).mean()
        if self.global_step == self.bad_step:
            self.weights_at_bad_step = self.layer.weight.detach().clone()
            if self.fault == "loss":
                loss = loss * math.nan
            else:  # d sqrt(x)/dx is infinite at 0: a finite loss with NaN gradients
                loss = loss + (self.layer.weight * 0).sqrt().sum()
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.global_step == self.bad_step + 1 and self.weights_at_bad_step is not None:
            self.weights_after_bad_step = self.layer.weight.detach().clone()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, weight_decay=0.1)


def fit(
    tmp_path,
    fault: str,
    guard: NonFiniteGuard,
    model: BreaksAtOneStep | None = None,
    save_every: int = 2,
    **trainer_args,
) -> BreaksAtOneStep:
    """Two epochs of 4 steps (batches of 2 of :class:`Files`), saving ``last.ckpt`` every
    ``save_every`` steps (0: never)."""
    model = model or BreaksAtOneStep(fault)
    last = LastCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=save_every)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[guard, last],
        **trainer_args,
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


def test_check_is_read_every_log_every_n_steps_and_names_the_first_bad_step(tmp_path):
    """A NaN loss at step 4 (epoch 1, batch 0) with log_every_n_steps 3: read after step 5."""
    guard = NonFiniteGuard()
    with pytest.raises(NonFiniteError) as error:
        fit(tmp_path, "loss", guard, BreaksAtOneStep("loss", bad_step=4), 0, log_every_n_steps=3)
    message = str(error.value)
    assert guard._checks.every == 3
    assert "the loss is nan at epoch 1, step 4, batch 0 (files: img_0.png, img_1.png)" in message
    assert "Found after step 5" in message
    assert f"last good checkpoint is {tmp_path / 'checkpoints' / 'last.ckpt'}" in message  # epoch 0


def test_check_every_n_steps_overrides_the_logging_interval(tmp_path):
    guard = NonFiniteGuard(check_every_n_steps=2)
    with pytest.raises(NonFiniteError, match="Found after step 5"):
        fit(tmp_path, "loss", guard, BreaksAtOneStep("loss", bad_step=4), 0, log_every_n_steps=50)
    assert guard._checks.every == 2


@pytest.mark.parametrize("fault", ["loss", "gradient"])
def test_no_checkpoint_is_saved_after_a_bad_step(tmp_path, fault):
    """Saving every step with the check read every 50: the save after the bad step 3 reads it
    first and refuses, so last.ckpt stays the one of step 3, with finite weights."""
    with pytest.raises(NonFiniteError) as error:
        fit(tmp_path, fault, NonFiniteGuard(), save_every=1)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"step {BAD_STEP}, batch 3" in str(error.value) and str(last) in str(error.value)
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == BAD_STEP
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


class StoppedAfterABadStep(BreaksAtOneStep):
    """NaN loss at step 2, then SIGTERM (as a cluster preempting the job) at step 3."""

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.global_step == self.bad_step + 1:
            raise SIGTERMException()
        return super().training_step(batch, batch_idx)


def test_stop_signal_after_an_unchecked_bad_step_saves_nothing(tmp_path, caplog):
    model = StoppedAfterABadStep("loss", bad_step=2)
    with caplog.at_level(logging.ERROR), pytest.raises(SIGTERMException) as stopped:
        fit(tmp_path, "loss", NonFiniteGuard(), model, save_every=0)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert "the loss is nan at epoch 0, step 2" in caplog.text
    if sys.version_info >= (3, 11):  # the stop's traceback says it too
        assert "non-finite training step" in stopped.value.__notes__[0]
    assert "Not saving last on SIGTERMException" in caplog.text


def test_max_skipped_needs_the_check_at_every_step():
    with pytest.raises(ValueError, match="check_every_n_steps unset or set it to 1"):
        NonFiniteGuard(max_skipped=2, check_every_n_steps=10)
    assert NonFiniteGuard(max_skipped=2).every_step
    assert not NonFiniteGuard().every_step
