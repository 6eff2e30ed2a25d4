"""The CLI driven in-process: fit, test and predict on synthetic data."""

import csv

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from medvision.cli import MedVisionCLI, main
from medvision.data.synthetic import lung_phantom
from medvision.models import SegmentationModule

from .conftest import CONFIGS, unet_run_args


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_help_and_print_config(capsys):
    with pytest.raises(SystemExit) as exit_help:
        main(["fit", "--help"])
    assert exit_help.value.code == 0 and "--data.help" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_print:
        main(["fit", "--config", str(CONFIGS / "unet_lung.yaml"), "--print_config"])
    printed = capsys.readouterr().out
    assert exit_print.value.code == 0
    assert "medvision.models.SegmentationModule" in printed and "LungCTDataModule" in printed


def test_unknown_config_key_is_one_clear_line(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / "unet_lung.yaml"), "--model.init_args.encoder=x"])
    assert "encoder" in capsys.readouterr().err


def test_datamodule_properties_are_linked_to_the_model(tmp_path, lung_dir):
    cli = MedVisionCLI(
        args=unet_run_args(tmp_path, lung_dir, "--data.init_args.in_channels=3"), run=False
    )
    assert cli.model.hparams.in_channels == 3 and cli.model.hparams.num_classes == 1
    assert cli.model.net.encoder.conv1.in_channels == 3


def test_fit_test_predict_in_process(tmp_path, lung_dir):
    fit_args = unet_run_args(
        tmp_path, lung_dir, "--trainer.max_epochs=2", "--trainer.limit_train_batches=2"
    )
    main(["fit", *fit_args])
    checkpoints = sorted(tmp_path.glob("logs/version_0/checkpoints/*.ckpt"))
    assert [c.name for c in checkpoints] == ["best.ckpt", "last.ckpt"]
    metrics = (tmp_path / "logs/version_0/metrics.csv").read_text()
    assert "val/dice" in metrics and "train/loss_epoch" in metrics
    assert sorted(p.name for p in (tmp_path / "logs/version_0/overlays").iterdir()) == [
        "val_epoch000.png",
        "val_epoch001.png",
    ]

    model = SegmentationModule.load_from_checkpoint(checkpoints[0])  # as in a notebook
    assert model.hparams.arch == "Unet" and model.hparams.loss == "bce_dice"

    main(["test", *fit_args, f"--ckpt_path={checkpoints[0]}"])
    assert "test/dice" in (tmp_path / "logs/version_1/metrics.csv").read_text()

    incoming = tmp_path / "incoming"
    (incoming / "images").mkdir(parents=True)
    (incoming / "masks").mkdir()
    image, mask = lung_phantom(96, np.random.default_rng(1))
    Image.fromarray((image[:, :80] * 255).astype(np.uint8)).save(incoming / "images/wide.png")
    Image.fromarray(mask[:, :80] * 255).save(incoming / "masks/wide.png")
    tifffile.imwrite(incoming / "images/hu.tif", (image * 2500 - 1024).astype(np.int16))
    tifffile.imwrite(incoming / "masks/hu.tif", mask)
    out = tmp_path / "predicted"
    main(
        [
            "predict",
            *fit_args,
            f"--ckpt_path={checkpoints[0]}",
            f"--data.init_args.predict_dir={incoming / 'images'}",
            f"--data.init_args.predict_mask_dir={incoming / 'masks'}",
            f"--prediction_writer.output_dir={out}",
        ]
    )
    wide = np.array(Image.open(out / "masks/wide.png"))
    assert wide.shape == (96, 80) and set(np.unique(wide)) <= {0, 255}  # original size, 0/255
    assert np.array(Image.open(out / "masks/hu.png")).shape == (96, 96)
    assert np.array(Image.open(out / "overlays/wide.png")).shape == (96, 80, 3)
    rows = read_csv(out / "metrics.csv")
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == ["hu.tif", "wide.png"]
    assert all(
        0 <= float(r["dice"]) <= 1 and 0 <= float(r["iou"]) <= float(r["dice"]) + 1e-9 for r in rows
    )
    assert not list(out.rglob(".*"))  # no temporary files left behind


def test_predict_writes_under_default_root_dir(tmp_path, lung_dir):
    cli = MedVisionCLI(args=unet_run_args(tmp_path, lung_dir), run=False)
    checkpoint = tmp_path / "init.ckpt"
    torch.save(
        {"state_dict": cli.model.state_dict(), "pytorch-lightning_version": "2.6.0"}, checkpoint
    )
    main(
        [
            "predict",
            *unet_run_args(tmp_path, lung_dir),
            f"--ckpt_path={checkpoint}",
            f"--data.init_args.predict_dir={lung_dir}",
        ]
    )  # a Kaggle-layout folder: masks found
    assert len(list((tmp_path / "predictions/masks").glob("*.png"))) == 20
    assert len(read_csv(tmp_path / "predictions/metrics.csv")) == 20
