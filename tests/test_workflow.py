"""The everyday path around a run (issue 18): one test per problem a new user hit.

The whole path, fit to report, is tests/test_walkthrough.py; here each problem on its own.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
import warnings
from pathlib import Path

import pytest
from lightning.pytorch.utilities import rank_zero_info
from PIL import ImageFont
from tqdm import tqdm

from medvision.cli import MedVisionCLI, main
from medvision.cli.compare.figure import fit_title
from medvision.cli.console import quiet_lightning, setup_logging

from .conftest import CONFIGS, chest_run_args, unet_run_args

QUICK = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=1",
    "--trainer.num_sanity_val_steps=0",
]


# 4. readable output -------------------------------------------------------------------------
def test_log_lines_start_on_their_own_line_beside_a_progress_bar(capsys):
    setup_logging()
    with tqdm(total=3, file=sys.stderr, mininterval=0) as bar:
        bar.update(1)
        logging.getLogger("medvision.example").info("a log line")
        bar.update(1)
    lines = re.split(r"[\r\n]", capsys.readouterr().err)
    assert [line for line in lines if "a log line" in line] == [
        "INFO medvision.example: a log line"
    ]


def test_known_lightning_noise_is_filtered(capsys):
    setup_logging()
    quiet_lightning()
    rank_zero_info("💡 Tip: For seamless cloud logging ... try installing litlogger")
    rank_zero_info("GPU available: False, used: False")
    with warnings.catch_warnings(record=True) as caught:
        quiet_lightning()  # filters installed inside the recording context too
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", stacklevel=1)
        warnings.warn("The dirpath has changed from 'a' to 'b', therefore ...", stacklevel=1)
    err = capsys.readouterr().err
    assert "litlogger" not in err and "GPU available" in err
    assert caught == []


def test_fit_ends_with_a_summary_naming_the_best_checkpoint(tmp_path, lung_dir, caplog):
    caplog.set_level(logging.INFO)
    main(["fit", *unet_run_args(tmp_path, lung_dir, *QUICK, "--trainer.limit_val_batches=1")])
    summary = next(r.getMessage() for r in caplog.records if "fit finished" in r.getMessage())
    best = tmp_path / "version_0/checkpoints/best.ckpt"
    assert f"best checkpoint: {best} (val/dice = " in summary and best.is_file()
    assert f"last checkpoint: {tmp_path / 'version_0/checkpoints/last.ckpt'}" in summary
    assert f"medvision test --config {tmp_path / 'version_0/config.yaml'}" in summary
    # 9. files the run wrote are readable as the umask allows (not 0600)
    mask = os.umask(0o022)
    os.umask(mask)
    for written in (best, tmp_path / "version_0/run_info.json"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~mask, written


@pytest.fixture
def as_users_run_it(monkeypatch):
    """Errors as users see them: one line and exit status 2, not the traceback."""
    monkeypatch.delenv("MEDVISION_DEBUG")


# 5. test splits ------------------------------------------------------------------------------
def test_test_without_a_test_split_says_which_splits_exist(
    tmp_path, chest_dir, caplog, as_users_run_it
):
    for folder in (chest_dir / "test").iterdir():
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    (chest_dir / "test").rmdir()
    with pytest.raises(SystemExit) as stopped:
        main(["test", *chest_run_args(tmp_path, chest_dir)])
    assert stopped.value.code == 2
    error = caplog.records[-2].getMessage()
    assert "has no test images (its splits: train" in error and "test_split val" in error


def test_testing_on_the_images_that_chose_the_checkpoint_warns(tmp_path, chest_dir, caplog):
    main(["fit", *chest_run_args(tmp_path, chest_dir, *QUICK)])
    best = tmp_path / "version_0/checkpoints/best.ckpt"
    caplog.clear()
    main(["test", *chest_run_args(tmp_path, chest_dir), f"--ckpt_path={best}"])
    assert "chose this checkpoint" not in caplog.text  # test/ is new to the model
    main(
        [
            "test",
            *chest_run_args(tmp_path, chest_dir, "--data.init_args.test_split=val"),
            f"--ckpt_path={best}",
        ]
    )
    assert re.search(r"(\d+) of the \1 test images were validation images", caplog.text)


# 6. limit_*_batches 1 ------------------------------------------------------------------------
def test_a_limit_of_one_is_one_batch(tmp_path, lung_dir):
    args = unet_run_args(tmp_path, lung_dir, "--trainer.limit_val_batches", "1")
    cli = MedVisionCLI(args=args, run=False)
    assert cli.trainer.limit_val_batches == 1 and isinstance(cli.trainer.limit_val_batches, int)
    assert cli.trainer.limit_train_batches == 1.0  # unset: every batch, as before


# 7. help and errors --------------------------------------------------------------------------
def test_main_help_describes_medvision_with_examples(capsys):
    with pytest.raises(SystemExit) as shown:
        main(["--help"])
    out = capsys.readouterr().out
    assert shown.value.code == 0
    assert "medvision fit --config configs/quickstart.yaml" in out
    assert "medvision-cv" in out and "medvision-report" in out
    assert "Lightning Trainer command line tool" not in out


@pytest.mark.parametrize(
    ("option", "name", "shows"),
    [
        ("--model.help", "SegmentationModule", "--model.encoder_name"),
        ("--model.help", "ClassificationModule", "--model.model_name"),
        ("--data.help", "LungCTDataModule", "--data.image_size"),
    ],
)
def test_class_help_takes_short_names(capsys, option, name, shows):
    with pytest.raises(SystemExit) as shown:
        main(["fit", option, name])
    assert shown.value.code == 0 and shows in capsys.readouterr().out


def test_prediction_writer_options_belong_to_predict_only(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--prediction_writer" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "--prediction_writer.output_dir" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("typo", "says"),
    [
        ("--model.init_args.arch=Unett", "unknown arch 'Unett' (model.init_args.arch)"),
        ("--model.init_args.archh=Unet", "Option 'archh' is not accepted by SegmentationModule"),
        ("--trainer.max_epochs=two", "--trainer.max_epochs: 'two' is not a valid int."),
    ],
)
def test_a_config_error_is_its_one_useful_line(
    tmp_path, lung_dir, caplog, typo, says, as_users_run_it
):
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *unet_run_args(tmp_path, lung_dir, typo)])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert stopped.value.code == 2 and len(errors) == 2
    assert says in errors[0] and "Namespace(" not in errors[0]
    assert "\n" not in errors[0]


def test_debug_shows_the_traceback(tmp_path, lung_dir, as_users_run_it):
    with pytest.raises(ValueError, match="unknown arch 'Unett'"):
        main(["fit", *unet_run_args(tmp_path, lung_dir, "--model.init_args.arch=Unett"), "--debug"])


# 10. the report figure's column titles -------------------------------------------------------
def test_long_run_names_fit_their_column():
    font = ImageFont.load_default(size=13)
    name = "/home/someone/experiments/runs/unet_lung/version_12"
    shown = fit_title(name, 120, font)
    assert font.getlength(shown) <= 120 and shown.startswith("…") and shown.endswith("version_12")
    assert fit_title("U-Net", 120, font) == "U-Net"


def test_configs_share_checkpoints_and_logger_through_the_cli():
    for config in CONFIGS.glob("*.yaml"):
        text = config.read_text()
        assert "ModelCheckpoint" not in text and "LastCheckpoint" not in text, config
        assert "CSVLogger" not in text, config
    assert Path(CONFIGS / "logger/wandb.yaml").read_text().count("save_dir") == 0
