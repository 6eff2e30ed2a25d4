"""Interrupted runs lose nothing: last.ckpt on SIGTERM and every N steps, ``--ckpt_path last``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from medvision.cli import main
from medvision.training.checkpointing import LastCheckpoint
from medvision.utils.checkpoints import load_checkpoint
from medvision.utils.runs import find_last_checkpoint

from .conftest import REPO, unet_run_args

TRAIN_SLICES = 16  # lung_dir has 20 slices; unet_lung keeps 10% each for val and test
BATCH = 4
EPOCHS = 3
STEPS = EPOCHS * TRAIN_SLICES // BATCH


def lung_fit_args(root, lung_dir, *extra):
    return [
        "fit",
        *unet_run_args(root, lung_dir, f"--trainer.max_epochs={EPOCHS}", *extra),
        "--trainer.num_sanity_val_steps=0",
        "--model.init_args.lr_scheduler=null",
    ]


def wait_for(path, process, timeout=240.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out = process.stdout.read()
            pytest.fail(f"fit ended (status {process.returncode}) before {path.name}:\n{out}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {path.name} after {timeout} s")
        time.sleep(0.1)


@pytest.mark.slow
def test_fit_killed_mid_epoch_resumes_to_the_same_step_count(tmp_path, lung_dir):
    markers = tmp_path / "markers"
    callback = {
        "class_path": "tests.signal_helpers.StepMarker",
        "init_args": {"folder": str(markers)},
    }
    marker = f"--trainer.callbacks+={json.dumps(callback)}"
    args = lung_fit_args(tmp_path, lung_dir, marker)
    process = subprocess.Popen(
        [sys.executable, "-m", "medvision.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    stop_after = TRAIN_SLICES // BATCH + 2  # two batches into the second epoch
    wait_for(markers / f"step_{stop_after}", process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143, output
    assert "Stopped by SIGTERM" in output

    saved = load_checkpoint(tmp_path / "version_0/checkpoints/last.ckpt")
    assert saved["epoch"] == 1  # stopped inside the second epoch
    interrupted_at = saved["global_step"]
    assert stop_after <= interrupted_at < STEPS
    assert not list(tmp_path.rglob("*.tmp"))  # no partial checkpoint file

    main(lung_fit_args(tmp_path, lung_dir, "--ckpt_path=last"))

    resumed = load_checkpoint(tmp_path / "version_0/checkpoints/last.ckpt")
    assert resumed["global_step"] == STEPS
    assert resumed["epoch"] == EPOCHS - 1
    assert not (tmp_path / "version_1").exists()  # logged on in the same run folder
    with open(tmp_path / "version_0/metrics.csv") as file:
        rows = list(csv.DictReader(file))
    validated = {int(row["epoch"]) for row in rows if row.get("val/dice")}
    assert validated == set(range(EPOCHS))  # rows before and after the stop, in one file


def test_ckpt_path_last_without_a_checkpoint_starts_anew(tmp_path, lung_dir, caplog):
    args = unet_run_args(tmp_path, lung_dir, "--trainer.max_epochs=1")
    main(["fit", *args, "--trainer.limit_train_batches=1", "--ckpt_path=last"])
    assert "no checkpoints/last*.ckpt under" in caplog.text
    assert (tmp_path / "version_0/checkpoints/last.ckpt").is_file()


def test_last_checkpoint_saves_every_n_steps(tmp_path, lung_dir):
    from medvision.cli import MedVisionCLI

    cli = MedVisionCLI(args=unet_run_args(tmp_path, lung_dir, "--trainer.max_epochs=1"), run=False)
    last = next(c for c in cli.trainer.callbacks if isinstance(c, LastCheckpoint))
    last.step_interval = 2
    saved_steps = []
    original = last._save_checkpoint

    def record(trainer, filepath):
        saved_steps.append(trainer.global_step)
        original(trainer, filepath)

    last._save_checkpoint = record
    cli.trainer.fit(cli.model, cli.datamodule)
    assert saved_steps[:2] == [2, 4]  # every 2 steps; the epoch end (step 4) is not saved twice
    assert len(saved_steps) == 2
    assert torch.load(last.best_model_path, weights_only=True)["global_step"] == 4


def test_find_last_checkpoint_takes_the_newest(tmp_path):
    old = tmp_path / "version_0/checkpoints/last.ckpt"
    new = tmp_path / "version_1/checkpoints/last.ckpt"
    for path in (old, new):
        path.parent.mkdir(parents=True)
        torch.save({}, path)
    os.utime(old, (time.time() + 60, time.time() + 60))
    assert find_last_checkpoint(tmp_path) == old.resolve()
    assert find_last_checkpoint(tmp_path / "missing") is None
