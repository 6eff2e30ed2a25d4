"""The CLI driven in-process: fit, test and predict on synthetic data."""

import logging
import shutil

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from medvision.cli import MedVisionCLI, main
from medvision.data.synthetic import lung_phantom
from medvision.models import SegmentationModule
from medvision.utils.files import read_csv

from .conftest import CONFIGS, chest_run_args, unet_run_args


def test_help_and_print_config(capsys):
    with pytest.raises(SystemExit) as exit_help:
        main(["fit", "--help"])
    assert exit_help.value.code == 0 and "--data.help" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_print:
        main(["fit", "--config", str(CONFIGS / "unet_lung.yaml"), "--print_config"])
    printed = capsys.readouterr().out
    assert exit_print.value.code == 0
    assert "medvision.models.SegmentationModule" in printed and "LungCTDataModule" in printed


def test_unknown_config_key_is_one_clear_line(capsys, monkeypatch):
    monkeypatch.delenv("MEDVISION_DEBUG")  # as users run it
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
    checkpoints = sorted(tmp_path.glob("version_0/checkpoints/*.ckpt"))
    assert [c.name for c in checkpoints] == ["best.ckpt", "last.ckpt"]
    metrics = (tmp_path / "version_0/metrics.csv").read_text()
    assert "val/dice" in metrics and "train/loss_epoch" in metrics
    assert sorted(p.name for p in (tmp_path / "version_0/overlays").iterdir()) == [
        "val_epoch000.png",
        "val_epoch001.png",
    ]

    model = SegmentationModule.load_from_checkpoint(checkpoints[0])  # as in a notebook
    assert model.hparams.arch == "Unet" and model.hparams.loss == "bce_dice"

    main(["test", *fit_args, f"--ckpt_path={checkpoints[0]}"])
    assert "test/dice" in (tmp_path / "version_0/test/metrics.csv").read_text()

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


def test_last_checkpoint_follows_every_epoch_to_resume_from(tmp_path, lung_dir):
    # the best checkpoint by the smallest epoch stays at epoch 0
    args = unet_run_args(
        tmp_path,
        lung_dir,
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=1",
        "--checkpoint.monitor=epoch",
        "--checkpoint.mode=min",
    )
    main(["fit", *args])
    folder = tmp_path / "version_0/checkpoints"
    assert torch.load(folder / "best.ckpt", weights_only=False)["epoch"] == 0
    assert torch.load(folder / "last.ckpt", weights_only=False)["epoch"] == 1


def test_predict_writes_into_a_new_folder_under_default_root_dir(tmp_path, lung_dir):
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
    [run] = (tmp_path / "predictions").iterdir()  # a new folder per run, named by its time
    assert len(list((run / "masks").glob("*.png"))) == 20
    assert len(read_csv(run / "metrics.csv")) == 20

    # the checkpoint's hyperparameters win over --model.*; the writer's threshold does not
    main(
        [
            "predict",
            *unet_run_args(tmp_path, lung_dir),
            f"--ckpt_path={checkpoint}",
            f"--data.init_args.predict_dir={lung_dir}",
            f"--prediction_writer.output_dir={tmp_path / 'at_zero'}",
            "--prediction_writer.threshold=0.0",  # every sigmoid output is above 0
        ]
    )
    for mask in (tmp_path / "at_zero/masks").glob("*.png"):
        assert np.array(Image.open(mask)).min() == 255


def test_class_names_are_linked_from_the_folders(tmp_path, chest_dir):
    cli = MedVisionCLI(args=chest_run_args(tmp_path, chest_dir), run=False)
    assert cli.model.class_names == ["COVID19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS"]
    assert cli.model.hparams.num_classes == 4 and cli.model.hparams.in_channels == 1


def test_classifier_fit_test_predict_in_process(tmp_path, chest_dir, caplog):
    # hyperparameters travel in the checkpoint: test and predict reuse them
    fit_args = chest_run_args(
        tmp_path,
        chest_dir,
        "--trainer.max_epochs=2",
        "--model.init_args.highlight_classes=[TUBERCULOSIS]",
    )
    main(["fit", *fit_args])
    best = tmp_path / "version_0/checkpoints/best.ckpt"
    metrics = (tmp_path / "version_0/metrics.csv").read_text()
    assert "val/f1" in metrics and "val/recall/TUBERCULOSIS" in metrics and "val/auroc" in metrics

    with caplog.at_level(logging.INFO, logger="medvision"):
        main(["test", *fit_args, f"--ckpt_path={best}"])
    assert "class         precision  recall     f1  support" in caplog.text
    assert "TUBERCULOSIS: recall" in caplog.text
    run = tmp_path / "version_0/test"
    per_class = read_csv(run / "test_per_class.csv")
    assert [r["class"] for r in per_class] == ["COVID19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS"]
    assert [int(r["support"]) for r in per_class] == [2, 4, 3, 1]  # the test/ folder
    confusion = read_csv(run / "test_confusion_matrix.csv")
    assert (
        sum(int(v) for row in confusion for k, v in row.items() if k != "true \\ predicted") == 10
    )
    assert Image.open(run / "test_confusion_matrix.png").mode == "RGB"

    main(
        [
            "predict",
            *fit_args,
            f"--ckpt_path={best}",
            f"--data.init_args.predict_dir={chest_dir / 'test'}",
        ]
    )
    [run] = (tmp_path / "version_0/predictions").iterdir()  # in the checkpoint's run
    rows = read_csv(run / "predictions.csv")
    assert len(rows) == 10
    assert list(rows[0]) == [
        "file",
        "pred",
        "label",
        "prob_COVID19",
        "prob_NORMAL",
        "prob_PNEUMONIA",
        "prob_TUBERCULOSIS",
    ]
    for row in rows:
        probs = [
            float(row[f"prob_{name}"])
            for name in ("COVID19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS")
        ]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert (
            row["pred"] == ["COVID19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS"][int(np.argmax(probs))]
        )
        assert row["label"] in row["file"].upper()

    loose = tmp_path / "loose"
    loose.mkdir()
    for path in sorted((chest_dir / "val" / "NORMAL").iterdir()):
        shutil.copy(path, loose / path.name)
    out = tmp_path / "loose_predictions"
    main(
        [
            "predict",
            *fit_args,
            f"--ckpt_path={best}",
            f"--data.init_args.predict_dir={loose}",
            f"--prediction_writer.output_dir={out}",
        ]
    )
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 4 and "label" not in rows[0]
    assert not (out / "masks").exists()

    # on another machine: no training folders, the classes given by name
    elsewhere = chest_run_args(tmp_path, tmp_path / "not_here", "--data.init_args.class_names")
    classes = "[COVID19,NORMAL,PNEUMONIA,TUBERCULOSIS]"
    main(
        [
            "predict",
            *elsewhere,
            classes,
            f"--ckpt_path={best}",
            f"--data.init_args.predict_dir={loose}",
        ]
    )
    # classes in another order would silently mislabel every prediction: refused
    with pytest.raises(ValueError, match="trained on classes.*COVID19.*NORMAL"):
        main(
            [
                "predict",
                *elsewhere,
                "[NORMAL,COVID19,PNEUMONIA,TUBERCULOSIS]",
                f"--ckpt_path={best}",
                f"--data.init_args.predict_dir={loose}",
            ]
        )
