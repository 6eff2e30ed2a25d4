"""DDP evaluation counts every sample once: a 2-process CPU fit scores like one process does."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from medvision.data import LungCTDataModule
from tests.conftest import REPO, subprocess_env, unet_run_args

# 20 slices: test 2, val 5 (odd, so a padding sampler would repeat one), train 13
SPLIT = ["--data.init_args.val_fraction=0.25", "--data.init_args.test_fraction=0.1"]


class _FakeTrainer:
    """What the datamodule reads from its trainer to build loaders for one DDP process."""

    def __init__(self, world_size: int, global_rank: int) -> None:
        self.world_size, self.global_rank = world_size, global_rank


def _loader_indices(datamodule: LungCTDataModule, stage: str, rank: int) -> list[str]:
    datamodule.trainer = _FakeTrainer(world_size=2, global_rank=rank)
    loader = getattr(datamodule, f"{stage}_dataloader")()
    assert isinstance(loader.sampler, DistributedSampler)  # Lightning leaves it as it is
    return [path for batch in loader for path in batch["path"]]


@pytest.mark.parametrize("stage", ["val", "test"])
def test_evaluation_loaders_give_each_sample_to_exactly_one_of_two_processes(lung_dir, stage):
    datamodule = LungCTDataModule(
        lung_dir, image_size=32, val_fraction=0.25, test_fraction=0.15, batch_size=2, num_workers=0
    )
    datamodule.setup("fit")
    expected = sorted(str(p) for p in datamodule.datasets[stage].image_paths)
    assert len(expected) % 2 == 1  # odd: padding to equal shares would repeat one
    shares = [_loader_indices(datamodule, stage, rank) for rank in (0, 1)]
    assert sorted(shares[0] + shares[1]) == expected
    assert abs(len(shares[0]) - len(shares[1])) == 1


def test_single_process_evaluation_loaders_use_no_distributed_sampler(lung_dir):
    datamodule = LungCTDataModule(lung_dir, image_size=32, num_workers=0)
    datamodule.setup("fit")
    assert not isinstance(datamodule.val_dataloader().sampler, DistributedSampler)
    datamodule.trainer = _FakeTrainer(world_size=1, global_rank=0)
    assert not isinstance(datamodule.test_dataloader().sampler, DistributedSampler)


def _last_val_row(metrics_csv: Path) -> dict[str, str]:
    with metrics_csv.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/dice")]
    assert rows, f"no val/dice in {metrics_csv}"
    return rows[-1]


def _ddp_fit(root: Path, data_dir: Path) -> Path:
    """Fit the small U-Net for one short epoch on two gloo CPU processes; the checkpoint."""
    args = unet_run_args(
        root,
        data_dir,
        *SPLIT,
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.num_sanity_val_steps=0",
    )
    # an earlier in-process run in this pytest process may leave its (still bound) port here
    env = subprocess_env()
    result = subprocess.run(
        [sys.executable, "-m", "medvision.cli", "fit", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return root / "version_0/checkpoints/best.ckpt"


@pytest.mark.slow
def test_ddp_validation_equals_single_process_validation_of_the_checkpoint(lung_dir, tmp_path):
    from medvision.cli import MedVisionCLI

    checkpoint = _ddp_fit(tmp_path / "ddp", lung_dir)
    ddp = _last_val_row(tmp_path / "ddp/version_0/metrics.csv")
    assert (tmp_path / "ddp/version_0/run_info.json").is_file()  # rank 0 wrote it

    args = unet_run_args(tmp_path / "single", lung_dir, *SPLIT, f"--ckpt_path={checkpoint}")
    cli = MedVisionCLI(args=["validate", *args])
    single = cli.trainer.callback_metrics
    assert len(cli.datamodule.datasets["val"]) == 5
    for key in ("val/dice", "val/iou", "val/pixel_accuracy"):
        assert float(ddp[key]) == pytest.approx(float(single[key]), abs=1e-6), key
    # val/loss is not compared: it is a batch-size-weighted mean of per-batch losses, and the
    # Dice term of bce_dice pools each batch, which DDP forms differently (3 + 2 slices here
    # against 4 + 1), so it differs by design (see MedVisionModule.log_loss)
    assert torch.isfinite(single["val/loss"])
