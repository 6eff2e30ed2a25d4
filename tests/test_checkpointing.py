"""Checkpoints are written whole or not at all, and the CLI's trainers write them that way."""

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medvision.cli import MedVisionCLI
from medvision.training.checkpointing import AtomicCheckpointIO, use_atomic_checkpoints

from .conftest import unet_run_args


def test_saved_checkpoint_loads_back(tmp_path):
    path = tmp_path / "checkpoints/last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 3, "w": torch.arange(4.0)}, path)
    loaded = TorchCheckpointIO().load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["w"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1}, path)
    with pytest.raises(AttributeError, match="pickle"):  # serialization fails midway
        io.save_checkpoint({"epoch": 2, "weights": torch.ones(1000), "bad": lambda: 0}, path)
    assert io.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left


def test_a_user_checkpoint_io_is_kept():
    class MyIO(TorchCheckpointIO):
        pass

    trainer = Trainer(plugins=[MyIO()], logger=False, enable_progress_bar=False)
    use_atomic_checkpoints(trainer)
    assert type(trainer.strategy.checkpoint_io) is MyIO


def test_cli_trainer_writes_checkpoints_atomically(tmp_path, lung_dir):
    cli = MedVisionCLI(args=unet_run_args(tmp_path, lung_dir), run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
