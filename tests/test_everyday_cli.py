"""The everyday path, second pass (issue 24): one test per thing a user tripped on.

Run folders only for runs that start, every config with logging off, ``medvision export`` like
the other commands, a new folder per ``test``, typos named, loggers by short name, ``next:``
hints that run as printed, and a ``medvision`` that answers ``--help`` without torch.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medvision.cli import MedVisionCLI, main
from medvision.cli.runs import option_for_a_test_split
from medvision.cli.usage import COMMANDS
from medvision.utils.files import read_csv

from .conftest import CONFIGS, REPO, chest_run_args, fast_trainer_args, subprocess_env
from .conftest import unet_run_args as lung_args
from .test_configs import (
    EXPERIMENTS,
    EXTRACTOR_CONFIGS,
    data_dir_for,
    lesion_masks_from_truth,
    rebalance_one_batch_args,
)

QUICK = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=1",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
]


@pytest.fixture
def as_users_run_it(monkeypatch):
    """Errors as users see them: one line and exit status 2, not the traceback."""
    monkeypatch.delenv("MEDVISION_DEBUG")


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B without a key or login: offline runs, nothing asked."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def remove_test_split(chest_dir: Path) -> None:
    shutil.rmtree(chest_dir / "test")


# 1. a run folder only for a run that starts -------------------------------------------------
@pytest.mark.parametrize("logger", [[], ["--config", str(CONFIGS / "logger/wandb.yaml")]])
def test_a_fit_that_cannot_read_its_data_leaves_no_run_folder(
    tmp_path, lung_dir, logger, wandb_offline
):
    runs = tmp_path / "runs"
    missing = tmp_path / "nonexistent"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["fit", *lung_args(runs, missing, *logger, *QUICK)])
    assert not runs.exists()  # neither runs/ nor runs/version_0/

    main(["fit", *lung_args(runs, lung_dir, *QUICK)])
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]  # the first real run
    best = runs / "version_0/checkpoints/best.ckpt"
    assert best.is_file()

    # nor does a test of its checkpoint on data that is not there
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["test", *lung_args(runs, missing, *logger), f"--ckpt_path={best}"])
    assert not list((runs / "version_0").glob("test*"))


# 2. logging off ------------------------------------------------------------------------------
@pytest.mark.slow  # one batch of every config
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_config_fits_with_logging_off(name, tmp_path, request, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    if name in EXTRACTOR_CONFIGS:
        args = [*rebalance_one_batch_args(name, tmp_path, request), "--trainer.logger=false"]
    else:
        data_dir = data_dir_for(name, request, tmp_path)
        lesions = "lesion" in name and lesion_masks_from_truth(data_dir, tmp_path / "lesions")
        args = [
            "--config",
            str(CONFIGS / name),
            f"--data.init_args.data_dir={data_dir}",
            "--data.init_args.image_size=64",
            *fast_trainer_args(tmp_path),
            *(lesions or []),
            "--trainer.logger=false",
        ]
    main(["fit", *args])
    if "LearningRateMonitor" in (CONFIGS / name).read_text():
        assert "the learning rate is not logged" in caplog.text


# 4. medvision export, and medvision --help -------------------------------------------------
def test_export_errors_are_one_line_with_status_2(tmp_path, caplog, as_users_run_it):
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(SystemExit) as stopped:
        main(["export", f"--ckpt_path={missing}", "--format=weights", f"--output={tmp_path}/w"])
    assert stopped.value.code == 2
    assert errors(caplog)[0] == f"checkpoint {missing} does not exist."
    taken = tmp_path / "model.pt"
    taken.write_text("an earlier export")
    caplog.clear()
    with pytest.raises(SystemExit) as stopped:
        main(["export", f"--ckpt_path={missing}", "--format=weights", f"--output={taken}"])
    assert stopped.value.code == 2 and len(errors(caplog)) == 2
    assert f"{taken} exists: remove it or give another --output." in errors(caplog)[0]
    caplog.clear()
    with pytest.raises(SystemExit) as stopped:
        main(["export", "--format=weights"])
    assert stopped.value.code == 2
    assert errors(caplog)[0] == "the following arguments are required: --ckpt_path, --output"


def test_export_format_list_is_the_exporters():
    from medvision.apply.export import FORMATS
    from medvision.cli.export import FORMATS as OFFERED

    assert OFFERED == FORMATS


def test_medvision_help_lists_every_command_in_full(capsys):
    with pytest.raises(SystemExit) as shown:
        main(["--help"])
    out = capsys.readouterr().out
    assert shown.value.code == 0
    assert "{fit,validate,test,predict,export,tune}" in out
    listed = " ".join(out.split())  # the descriptions, unwrapped
    for name, description in COMMANDS.items():
        assert f"{name} {description}" in listed
    assert "It's separated from fit to make sure you never run on your" not in out
    with pytest.raises(SystemExit) as shown:
        main(["export", "--help"])
    assert shown.value.code == 0
    assert "--format {onnx,torchscript,weights,bundle}" in capsys.readouterr().out


def test_an_unknown_command_names_the_closest(caplog, as_users_run_it):
    with pytest.raises(SystemExit) as stopped:
        main(["tset", "--config", "x.yaml"])
    assert stopped.value.code == 2
    assert "unknown command 'tset' (did you mean test?)" in errors(caplog)[0]


def test_medvision_and_its_help_import_no_torch():
    code = (
        "import sys, contextlib, io\n"
        "import medvision.cli\n"
        "light = 'torch' not in sys.modules\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    medvision.cli.main(['--help'])\n"
        "    medvision.cli.main(['--version'])\n"
        "print(light, 'torch' not in sys.modules, 'lightning' not in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True
    )
    assert done.stdout.split() == ["True", "True", "True"], done.stderr


def test_python_m_medvision_cli_is_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "medvision.cli", "--version"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0 and done.stdout.startswith("medvision "), done.stderr


# 6. a new folder per test --------------------------------------------------------------------
def test_each_test_of_a_checkpoint_gets_a_new_folder(tmp_path, chest_dir):
    main(["fit", *chest_run_args(tmp_path, chest_dir, *QUICK)])
    run = tmp_path / "version_0"
    best = run / "checkpoints/best.ckpt"
    main(["test", *chest_run_args(tmp_path, chest_dir), f"--ckpt_path={best}"])
    first = (run / "test/metrics.csv").read_text()
    main(["test", *chest_run_args(tmp_path, chest_dir), f"--ckpt_path={best}"])
    [second] = run.glob("test-*")  # test-<date-time>, beside the first
    assert (run / "test/metrics.csv").read_text() == first  # the first is kept as it was
    assert read_csv(second / "test_per_class.csv") == read_csv(run / "test/test_per_class.csv")
    main(["validate", *chest_run_args(tmp_path, chest_dir), f"--ckpt_path={best}"])
    main(["validate", *chest_run_args(tmp_path, chest_dir), f"--ckpt_path={best}"])
    assert (run / "validate/metrics.csv").is_file() and len(list(run.glob("validate-*"))) == 1


# 8. typos ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("typo", "says"),
    [
        (
            ["--trainer.max_epoch", "1"],  # argparse would take it for --trainer.max_epochs
            "unrecognized arguments: --trainer.max_epoch 1 (did you mean --trainer.max_epochs?)",
        ),
        (
            ["--trainer.max_epohcs=1"],
            "unrecognized arguments: --trainer.max_epohcs=1 (did you mean --trainer.max_epochs?)",
        ),
        (
            ["--checkpoint.monitr", "val/dice"],
            "(did you mean --checkpoint.monitor?)",
        ),
        (  # an option the datamodule passes on to MedVisionDataModule in **kwargs
            ["--data.init_args.batch_sise=4"],
            "is not accepted by LungCTDataModule (did you mean batch_size?)",
        ),
        (
            ["--model.init_args.encoder_nam=resnet18"],
            "Option 'encoder_nam' is not accepted by SegmentationModule (did you mean "
            "encoder_name?)",
        ),
    ],
)
def test_a_typo_names_the_option_meant(tmp_path, lung_dir, caplog, typo, says, as_users_run_it):
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *lung_args(tmp_path, lung_dir, *typo)])
    assert stopped.value.code == 2
    assert says in errors(caplog)[0]
    assert errors(caplog)[1] == "(medvision fit --help lists every option)"


def test_a_missing_config_file_is_named(tmp_path, caplog, as_users_run_it, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/unet_lung.yaml").write_text("model: {}\n")
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", "configs/unet_lugn.yaml"])
    assert stopped.value.code == 2
    configs = tmp_path / "configs"
    assert errors(caplog) == [  # one line, no hint about options
        f"--config {configs / 'unet_lugn.yaml'}: the file does not exist "
        f"(did you mean {configs / 'unet_lung.yaml'}?)."
    ]


# 9. loggers by short name; a W&B run keeps its metrics.csv ----------------------------------
@pytest.mark.parametrize("name", ["CSVLogger", "WandbLogger"])
def test_medvision_loggers_by_short_name(tmp_path, lung_dir, name, wandb_offline):
    cli = MedVisionCLI(args=lung_args(tmp_path, lung_dir, f"--trainer.logger={name}"), run=False)
    loggers = cli.config.trainer.logger
    classes = [e.class_path for e in (loggers if isinstance(loggers, list) else [loggers])]
    assert classes[0] == f"medvision.training.loggers.{name}"


def test_a_wandb_run_also_writes_metrics_csv(tmp_path, lung_dir, wandb_offline):
    wandb = ["--config", str(CONFIGS / "logger/wandb.yaml")]
    main(["fit", *lung_args(tmp_path, lung_dir, *wandb, *QUICK)])
    run = tmp_path / "version_0"
    assert "val/dice" in (run / "metrics.csv").read_text()
    [offline] = run.glob("wandb/offline-run-*")
    record = next(offline.glob("run-*.wandb")).read_bytes()
    assert b"LungCTDataModule" in record  # complete when the command returns
    config = yaml.safe_load((run / "config.yaml").read_text())
    wandb_logger, csv_logger = config["trainer"]["logger"]
    assert csv_logger["class_path"] == "medvision.training.loggers.CSVLogger"
    assert wandb_logger["init_args"]["name"] == f"{tmp_path.name}/version_0"  # after its folder


# 13. next: hints that run as printed -------------------------------------------------------
def next_commands(caplog) -> list[list[str]]:
    summary = next(r.getMessage() for r in caplog.records if "fit finished" in r.getMessage())
    lines = summary.split("  next:", 1)[1].splitlines()
    return [shlex.split(line) for line in lines if line.strip().startswith("medvision ")]


def test_the_printed_test_command_runs(tmp_path, chest_dir, caplog):
    caplog.set_level(logging.INFO)
    main(["fit", *chest_run_args(tmp_path, chest_dir, *QUICK)])
    test, predict = next_commands(caplog)
    assert test[:2] == ["medvision", "test"] and predict[:2] == ["medvision", "predict"]
    main(test[1:])
    assert "test/accuracy" in (tmp_path / "version_0/test/metrics.csv").read_text()


def test_without_a_test_split_fit_prints_the_test_that_runs(tmp_path, chest_dir, caplog):
    remove_test_split(chest_dir)
    caplog.set_level(logging.INFO)
    main(["fit", *chest_run_args(tmp_path, chest_dir, *QUICK)])
    assert "no test split: ChestXrayDataModule found no test images" in caplog.text
    test, _ = next_commands(caplog)
    assert test[-2:] == ["--data.init_args.test_split", "val"]
    main(test[1:])
    assert "test/accuracy" in (tmp_path / "version_0/test/metrics.csv").read_text()


def test_without_val_images_there_is_no_test_to_print(tmp_path, chest_dir):
    remove_test_split(chest_dir)
    cli = MedVisionCLI(args=chest_run_args(tmp_path, chest_dir), run=False)
    assert option_for_a_test_split(cli.datamodule) == "--data.init_args.test_split val"
    shutil.rmtree(chest_dir / "val")
    assert option_for_a_test_split(cli.datamodule) is None
