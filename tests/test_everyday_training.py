"""What an everyday fit writes: a best.ckpt of weights and record, a last.ckpt that resumes
exactly, a cosine schedule that follows the run's length, learning curves and readable
validation overlays (issue 24)."""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from PIL import Image

import medvision
from medvision.cli import MedVisionCLI, main
from medvision.data.visualize import (
    DISPLAY_SIZE,
    GAP,
    TITLE_SIZE,
    enlarge,
    overlay,
    title_height,
    to_display,
)
from medvision.pipelines.segment_then_classify import predict_lesion_masks
from medvision.training.curves import LearningCurves
from medvision.training.overlays import ValidationOverlays, image_title
from medvision.utils.checkpoints import load_checkpoint
from medvision.utils.files import read_csv

from .conftest import config_run_args, unet_run_args

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = ["--trainer.limit_train_batches=1", "--trainer.num_sanity_val_steps=0"]


def tensor_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def test_best_checkpoint_holds_weights_and_record_last_the_optimizer(tmp_path, lung_dir):
    main(["fit", *unet_run_args(tmp_path, lung_dir, "--trainer.max_epochs=1", *SHORT)])
    folder = tmp_path / "version_0/checkpoints"
    best, last = load_checkpoint(folder / "best.ckpt"), load_checkpoint(folder / "last.ckpt")
    weights = tensor_bytes(best["state_dict"])
    assert (folder / "best.ckpt").stat().st_size <= 1.2 * weights  # was 3x with AdamW's state
    assert "optimizer_states" not in best and "callbacks" not in best
    assert best["medvision"]["preprocessing"]["task"] == "segmentation"
    assert best["hyper_parameters"]["encoder_name"] == "resnet18"  # load_from_checkpoint
    assert len(last["optimizer_states"]) == 1 and last["lr_schedulers"]
    assert (folder / "last.ckpt").stat().st_size > 2.5 * weights  # AdamW's two moments

    # its readers: one epoch, so best and last hold the same weights and must predict alike
    slices = sorted((lung_dir / "2d_images").glob("*.tif"))[:2]
    from_best = medvision.load_model(folder / "best.ckpt").predict(slices)
    from_last = medvision.load_model(folder / "last.ckpt").predict(slices)
    for a, b in zip(from_best, from_last, strict=True):
        np.testing.assert_array_equal(a.probabilities, b.probabilities)
    exported = tmp_path / "unet.pt"
    main(
        [
            "export",
            f"--ckpt_path={folder / 'best.ckpt'}",
            "--format=torchscript",
            f"--output={exported}",
        ]
    )
    assert exported.is_file()  # checked against PyTorch at export
    masks = tmp_path / "lesion_masks"  # the lesion_segmenter option's reader
    assert predict_lesion_masks(folder / "best.ckpt", slices, masks) == 2
    assert len(list(masks.glob("*.png"))) == 2


class StateAtTrainStart(Callback):
    """Keeps the optimizer's, scheduler's and module's state as training (re)starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.scheduler = copy.deepcopy(trainer.lr_scheduler_configs[0].scheduler.state_dict())
        self.weights = copy.deepcopy(pl_module.state_dict())
        self.step, self.epoch = trainer.global_step, trainer.current_epoch


@pytest.mark.slow
def test_fit_resumes_exactly_from_last_checkpoint(tmp_path, lung_dir):
    args = unet_run_args(tmp_path, lung_dir, "--trainer.limit_train_batches=2")
    main(["fit", *args, "--trainer.max_epochs=1"])
    saved = load_checkpoint(tmp_path / "version_0/checkpoints/last.ckpt")

    marker = "--trainer.callbacks+=tests.test_everyday_training.StateAtTrainStart"
    cli = MedVisionCLI(args=["fit", *args, "--trainer.max_epochs=2", "--ckpt_path=last", marker])
    [resumed] = [c for c in cli.trainer.callbacks if isinstance(c, StateAtTrainStart)]
    assert (resumed.step, resumed.epoch) == (saved["global_step"], 1) == (2, 1)
    assert resumed.scheduler == saved["lr_schedulers"][0]  # T_max 1: the run it started in
    optimizer = saved["optimizer_states"][0]
    assert resumed.optimizer["param_groups"] == optimizer["param_groups"]
    assert resumed.optimizer["state"].keys() == optimizer["state"].keys()
    for key, moments in optimizer["state"].items():
        for name, value in moments.items():
            assert torch.equal(resumed.optimizer["state"][key][name], value), (key, name)
    for key, value in saved["state_dict"].items():
        assert torch.equal(resumed.weights[key], value), key
    assert load_checkpoint(tmp_path / "version_0/checkpoints/last.ckpt")["global_step"] == 4
    [curves] = [c for c in cli.trainer.callbacks if isinstance(c, LearningCurves)]
    assert [e["epoch"] for e in curves.epochs] == [0, 1]  # the first run's epoch came along


def test_fit_refuses_to_resume_from_the_weights_only_best_checkpoint(tmp_path, lung_dir):
    args = unet_run_args(tmp_path, lung_dir, *SHORT)
    main(["fit", *args, "--trainer.max_epochs=1"])
    best = tmp_path / "version_0/checkpoints/best.ckpt"
    with pytest.raises(ValueError, match="holds the weights only .* --ckpt_path last") as error:
        main(["fit", *args, "--trainer.max_epochs=2", f"--ckpt_path={best}"])
    assert str(error.value).startswith(f"{best}: ")


def test_cosine_schedule_follows_a_shortened_run(tmp_path, lung_dir, caplog):
    caplog.set_level(logging.WARNING, logger="medvision.models.base")
    main(["fit", *unet_run_args(tmp_path, lung_dir, "--trainer.max_epochs=2", *SHORT)])
    assert "CosineAnnealingLR: T_max 40 -> 2, to follow trainer.max_epochs" in caplog.text
    rows = read_csv(tmp_path / "version_0/metrics.csv")
    rates = [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")]
    # lr_e = 0.001 (1 + cos(pi e / T_max)) / 2; with T_max 40 epoch 1 would be 0.000998
    assert rates == pytest.approx([0.001, 0.0005], abs=1e-12)
    checkpoint = load_checkpoint(tmp_path / "version_0/checkpoints/last.ckpt")
    assert checkpoint["lr_schedulers"][0]["T_max"] == 2


def test_resumed_cosine_with_another_length_is_named(tmp_path, lung_dir, caplog):
    args = unet_run_args(tmp_path, lung_dir, *SHORT)
    main(["fit", *args, "--trainer.max_epochs=1"])
    caplog.clear()
    main(["fit", *args, "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert "resumed CosineAnnealingLR keeps its T_max 1" in caplog.text
    assert "trainer.max_epochs is 2" in caplog.text
    assert "T_max 40 -> 2" not in caplog.text  # the checkpoint's schedule, not the config's


def test_learning_curves_come_from_the_logged_values(tmp_path, lung_dir):
    args = unet_run_args(tmp_path / "csv", lung_dir, "--trainer.max_epochs=2", *SHORT)
    cli = MedVisionCLI(args=["fit", *args])
    [curves] = [c for c in cli.trainer.callbacks if isinstance(c, LearningCurves)]
    run = tmp_path / "csv/version_0"
    rows = read_csv(run / "metrics.csv")
    logged = {
        key: [float(r[column]) for r in rows if r.get(column)]
        for key, column in (
            ("train/loss", "train/loss_epoch"),
            ("val/loss", "val/loss"),
            ("val/dice", "val/dice"),
        )
    }
    assert [e["epoch"] for e in curves.epochs] == [0, 1]
    for key, values in logged.items():
        assert [e[key] for e in curves.epochs] == pytest.approx(values, rel=1e-6), key
    with Image.open(run / "learning_curves.png") as image:
        assert image.format == "PNG" and image.width >= 800
    assert not list(run.glob(".partial-*"))


def test_learning_curves_without_a_logger_and_readable_overlays(tmp_path, lung_dir):
    args = config_run_args(  # the quickstart: 64 px slices, ValidationOverlays, no LR monitor
        "quickstart.yaml",
        tmp_path,
        lung_dir,
        "--model.init_args.encoder_name=resnet18",
        "--trainer.max_epochs=1",
        "--trainer.logger=false",
        *SHORT,
    )
    cli = MedVisionCLI(args=["fit", *args])
    run = tmp_path / "version_0"
    assert not (run / "metrics.csv").exists()
    [curves] = [c for c in cli.trainer.callbacks if isinstance(c, LearningCurves)]
    [epoch] = curves.epochs
    assert {"train/loss", "val/loss", "val/dice"} <= epoch.keys()
    assert all(math.isfinite(v) for v in epoch.values())
    assert (run / "learning_curves.png").is_file()
    # the quickstart-size 64 px slices: panels enlarged 4 x to 256 px, titled, two rows
    overlays = np.array(Image.open(run / "overlays/val_epoch000.png"))
    line = title_height()
    assert overlays.shape == (line + GAP + 2 * (line + 256 + GAP), GAP + 3 * (256 + GAP), 3)


def test_overlay_panels_are_enlarged_pixel_for_pixel_and_titled():
    image = torch.rand(1, 32, 48)
    mask = torch.zeros(1, 32, 48)
    mask[0, 8:20, 10:30] = 1
    pred = torch.zeros(32, 48, dtype=torch.bool)
    pred[10:22, 12:32] = True
    paths = ["/data/2d_images/ID_0007_Z_0142.tif"]
    grid = ValidationOverlays._grid(image[None], mask[None], pred[None], paths, epoch=3)

    factor = math.ceil(DISPLAY_SIZE / 48)  # the longer side to at least 256 px: 6
    height, width = 32 * factor, 48 * factor
    line = title_height()
    top = line + GAP
    assert grid.shape == (top + line + height + GAP, GAP + 3 * (width + GAP), 3)
    rgb = enlarge(to_display(image.numpy().transpose(1, 2, 0)), factor, smooth=True)
    truth = enlarge(mask[0].numpy() > 0.5, factor)
    panel_top = top + line
    x = GAP + 2 * (width + GAP)  # the prediction panel: red tint, truth outlined in green
    expected = overlay(rgb, enlarge(pred.numpy(), factor), truth)
    np.testing.assert_array_equal(grid[panel_top : panel_top + height, x : x + width], expected)
    # masks enlarged by blocks: a pixel's tint covers factor x factor display pixels
    assert truth[8 * factor : 20 * factor, 10 * factor : 30 * factor].all()
    assert not truth[: 8 * factor].any()
    # dark text in the header line and above each panel, white elsewhere in those strips
    header, titles = grid[GAP : GAP + TITLE_SIZE], grid[top : top + TITLE_SIZE]
    assert (header.min(axis=2) < 100).any()
    for column in range(3):
        left = GAP + column * (width + GAP)
        assert (titles[:, left : left + width].min(axis=2) < 100).any(), column
    gaps = [GAP + width + column * (width + GAP) for column in range(2)]  # between panels
    assert all((grid[panel_top:, x : x + GAP] == 255).all() for x in gaps)
    assert image_title(paths, 0) == "ID_0007_Z_0142.tif"
    assert image_title(None, 2) == "image 2"
