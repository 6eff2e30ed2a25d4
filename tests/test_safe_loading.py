"""Checkpoints and weight files load with weights_only: a file smuggling in code is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from medvision.cli import main
from medvision.models.classification import read_classifier_checkpoint
from medvision.models.weights import load_pretrained_weights
from medvision.training.checkpointing import AtomicCheckpointIO
from medvision.utils.checkpoints import UnsafeCheckpointError, load_checkpoint

from .conftest import unet_run_args


class Payload:
    """Unpickling this calls ``os.system``: what a tampered checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def tampered(tmp_path) -> tuple[Path, Path]:
    """A checkpoint-shaped file with a pickle payload, and the file the payload would create."""
    marker = tmp_path / "payload_ran"
    path = tmp_path / "tampered.ckpt"
    torch.save(
        {"state_dict": {"net.weight": torch.zeros(2)}, "epoch": 0, "hook": Payload(marker)},
        path,
    )
    return path, marker


def test_the_crafted_payload_is_live(tampered):
    path, marker = tampered
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.exists()


@pytest.mark.parametrize(
    "loader",
    [
        load_checkpoint,
        lambda p: AtomicCheckpointIO().load_checkpoint(p),
        read_classifier_checkpoint,
        lambda p: load_pretrained_weights(nn.Linear(2, 2), p),
    ],
    ids=["load_checkpoint", "checkpoint_io", "classifier_checkpoint", "pretrained_weights"],
)
def test_tampered_checkpoint_is_refused(tampered, loader):
    path, marker = tampered
    with pytest.raises(UnsafeCheckpointError, match="refused to load") as error:
        loader(path)
    assert str(path) in str(error.value)
    assert "os.system" in str(error.value) or "posix.system" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("subcommand", ["test", "predict"])
def test_cli_refuses_a_tampered_checkpoint(tmp_path, lung_dir, tampered, subcommand):
    path, marker = tampered
    with pytest.raises(UnsafeCheckpointError, match="refused to load") as error:
        main([subcommand, *unet_run_args(tmp_path, lung_dir), f"--ckpt_path={path}"])
    assert str(path) in str(error.value)
    assert not marker.exists()


def test_truncated_checkpoint_is_named(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match="truncated") as error:
        load_checkpoint(truncated)
    assert str(truncated) in str(error.value)


def test_plain_checkpoints_still_load(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save(
        {"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"names": ("a", "b")}}, path
    )
    assert load_checkpoint(path)["hyper_parameters"]["names"] == ("a", "b")
