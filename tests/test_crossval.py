"""``medvision-cv``: k folds of a config, each a normal run, summarized as mean ± std."""

from __future__ import annotations

import json
import logging
import re
import statistics
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from medvision.cli.crossval import (
    cross_validate,
    logger_args,
    main,
    parse_fit_config,
)
from medvision.data import (
    ChestXrayDataModule,
    CheXpertDataModule,
    NIHChestXray14DataModule,
)
from medvision.utils.files import read_csv

from .conftest import CONFIGS, chest_run_args, config_run_args, unet_cv_args


def logged_test_metrics(log_dir) -> dict[str, float]:
    """The ``test/*`` values the fold's CSV logger recorded (not what medvision-cv computed)."""
    rows = [r for r in read_csv(log_dir / "metrics.csv") if r.get("test/dice")]
    assert len(rows) == 1, f"expected one test row in {log_dir}/metrics.csv"
    return {k: float(v) for k, v in rows[0].items() if k.startswith("test/") and v}


@pytest.mark.slow
def test_each_fold_is_a_run_and_the_summary_matches_them(unet_cv):
    output = unet_cv["output"]
    per_fold = []
    for fold in range(2):
        log_dir = output / f"fold_{fold}" / "version_0"
        assert (log_dir / "checkpoints" / "best.ckpt").is_file()
        config = yaml.safe_load((log_dir / "config.yaml").read_text())
        assert config["data"]["init_args"]["num_folds"] == 2
        assert config["data"]["init_args"]["fold"] == fold
        assert config["trainer"]["default_root_dir"] == str(output / f"fold_{fold}")
        result = json.loads((output / f"fold_{fold}" / "fold_result.json").read_text())
        assert result["checkpoint"] == "version_0/checkpoints/best.ckpt"
        per_fold.append(logged_test_metrics(log_dir))
    assert per_fold[0] != per_fold[1]  # different training folds give different models

    summary = {r["metric"]: r for r in read_csv(output / "cv_summary.csv")}
    assert set(summary) == set(per_fold[0]) >= {"test/dice", "test/iou", "test/loss"}
    for metric, row in summary.items():
        values = [fold[metric] for fold in per_fold]
        assert float(row["mean"]) == pytest.approx(statistics.mean(values), rel=1e-6)
        assert float(row["std"]) == pytest.approx(statistics.stdev(values), rel=1e-6)
        assert [float(row["fold_0"]), float(row["fold_1"])] == pytest.approx(values, rel=1e-6)

    dice = summary["test/dice"]
    expected = f"| test/dice | {float(dice['mean']):.4f} ± {float(dice['std']):.4f} |"
    assert expected in (output / "cv_summary.md").read_text()


@pytest.mark.slow
def test_finished_folds_are_skipped_on_a_rerun(unet_cv, capsys, caplog):
    output = unet_cv["output"]
    before = sorted(p for p in output.rglob("*") if p.is_file())
    with caplog.at_level(logging.INFO, logger="medvision.cli.crossval"):
        main(["--folds", "2", "--output", str(output), *unet_cv["args"]])
    assert "Fold 0/2 already done" in caplog.text and "Fold 1/2 already done" in caplog.text
    assert not (output / "fold_0" / "version_1").exists()
    assert sorted(p for p in output.rglob("*") if p.is_file()) == before
    printed = capsys.readouterr().out
    dice = {r["metric"]: r for r in read_csv(output / "cv_summary.csv")}["test/dice"]
    assert f"{float(dice['mean']):.4f} ± {float(dice['std']):.4f}" in printed
    with pytest.raises(ValueError, match="2-fold run, not 3 folds"):
        main(["--folds", "3", "--output", str(output), *unet_cv["args"]])


def test_datamodule_without_folds_is_named(tmp_path, chest_dir):
    # every datamodule with a split now takes folds; the predict-only one has no split to cut
    config = tmp_path / "predict_only.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "class_path": "medvision.models.ClassificationModule",
                    "init_args": {"model_name": "cnn5", "pretrained": False},
                },
                "data": {
                    "class_path": "medvision.data.ImageFolderPredictDataModule",
                    "init_args": {"class_names": ["a", "b"]},
                },
            }
        )
    )
    with pytest.raises(
        ValueError, match="ImageFolderPredictDataModule has no num_folds / fold argument"
    ):
        cross_validate(["--config", str(config)], folds=2, output=tmp_path / "cv")
    with pytest.raises(ValueError, match="at least 2"):
        cross_validate(chest_run_args(tmp_path, chest_dir), folds=1)


def test_wandb_runs_are_grouped_by_experiment(tmp_path, lung_dir):
    fit_args = unet_cv_args(tmp_path, lung_dir, "--config", str(CONFIGS / "logger/wandb.yaml"))
    config = parse_fit_config(fit_args)
    overrides = logger_args(config, 1, "unet_lung")
    logger = parse_fit_config([*fit_args, *overrides]).trainer.logger
    assert logger.class_path == "medvision.training.loggers.WandbLogger"
    assert logger.init_args.group == "unet_lung"
    assert logger.init_args.name == "fold_1"
    # save_dir: the CLI points every logger at the fold's run folder (tests/test_walkthrough.py)
    assert logger.init_args.project == "medvision"  # the rest of the config is kept


# --- folds of the chest X-ray folders, NIH ChestX-ray14 and CheXpert ---------------------------


def split_files(datamodule) -> dict[str, list[str]]:
    """Each split's image files, sorted, after ``setup``."""
    datamodule.setup("fit")
    return {k: sorted(str(p) for p in v.image_paths) for k, v in datamodule.datasets.items()}


def nih_patient(path: str) -> str:
    return Path(path).name.split("_")[0]


def chexpert_patient(path: str) -> str:
    return re.search(r"patient\d+", path).group(0)


#: datamodule, its data fixture, what keeps images together in a fold (None: each image alone)
FOLD_CASES = {
    "chest_xray": (ChestXrayDataModule, "chest_dir", None),
    "nih": (NIHChestXray14DataModule, "nih_dir", nih_patient),
    "chexpert": (CheXpertDataModule, "chexpert_dir", chexpert_patient),
}


@pytest.mark.parametrize("name", FOLD_CASES)
def test_folds_partition_what_is_not_the_test_set(name, request):
    datamodule, fixture, group_of = FOLD_CASES[name]
    data_dir = request.getfixturevalue(fixture)
    options = {"image_size": 16, "num_workers": 0, "check_images": False}
    plain = split_files(datamodule(data_dir, **options))
    pool = set(plain["train"]) | set(plain["val"])
    folds = [split_files(datamodule(data_dir, num_folds=3, fold=f, **options)) for f in range(3)]
    for split in folds:
        assert split["test"] == plain["test"]  # the test set is the same, with or without folds
        assert set(split["train"]) | set(split["val"]) == pool
        assert not set(split["train"]) & set(split["val"])
    validation = [set(split["val"]) for split in folds]
    assert sum(map(len, validation)) == len(pool) and set().union(*validation) == pool
    if group_of is not None:  # a patient's images stay in one fold, never in the test set too
        patients = [{group_of(p) for p in v} for v in validation]
        assert sum(map(len, patients)) == len(set().union(*patients))
        assert not set().union(*patients) & {group_of(p) for p in plain["test"]}


def test_chest_xray_folds_are_stratified_over_train_and_val_folders(chest_dir):
    options = {"image_size": 16, "num_workers": 0, "check_images": False, "num_folds": 3}
    folds = [split_files(ChestXrayDataModule(chest_dir, fold=f, **options)) for f in range(3)]
    counts = [Counter(Path(p).parent.name for p in split["val"]) for split in folds]
    for name in ("COVID19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS"):
        per_fold = [count[name] for count in counts]
        assert max(per_fold) - min(per_fold) <= 1, (name, per_fold)  # each class dealt evenly
    from_val_folder = [p for split in folds for p in split["val"] if "/val/" in p]
    assert len(from_val_folder) == 10  # the val/ folder's 2 + 4 + 3 + 1 images join the folds
    assert any("/val/" in p for p in folds[0]["train"])  # ...and train in the other folds


def test_nih_folds_keep_the_official_test_list(nih_dir):
    names = [r["Image Index"] for r in read_csv(nih_dir / "Data_Entry_2017.csv")]
    official = sorted(n for n in names if n.startswith(("00000001", "00000002")))
    (nih_dir / "test_list.txt").write_text("\n".join(official) + "\n")
    (nih_dir / "train_val_list.txt").write_text("\n".join(set(names) - set(official)))
    options = {"image_size": 16, "num_workers": 0, "check_images": False, "num_folds": 2}
    folds = [split_files(NIHChestXray14DataModule(nih_dir, fold=f, **options)) for f in (0, 1)]
    for split in folds:
        assert [Path(p).name for p in split["test"]] == official
    assert set(folds[0]["val"]) == set(folds[1]["train"])  # two folds: each trains on the other
    assert {nih_patient(p) for p in folds[0]["val"]}.isdisjoint(map(nih_patient, folds[1]["val"]))


@pytest.mark.slow
def test_cross_validation_of_chexpert(tmp_path, chexpert_dir):
    args = config_run_args(
        "densenet121_chexpert.yaml",
        tmp_path / "runs",
        chexpert_dir,
        "--model.init_args.model_name=cnn5",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.num_sanity_val_steps=0",
        image_size=32,
        batch_size=8,
    )
    output = tmp_path / "cv"
    rows = cross_validate(args, folds=2, output=output)
    tested, validated = [], []
    for fold in (0, 1):
        result = json.loads((output / f"fold_{fold}" / "fold_result.json").read_text())
        log_dir = output / f"fold_{fold}" / result["log_dir"]
        config = yaml.safe_load((log_dir / "config.yaml").read_text())
        assert (config["data"]["init_args"]["num_folds"], config["data"]["init_args"]["fold"]) == (
            2,
            fold,
        )
        tested.append([r["image"] for r in read_csv(log_dir / "test_per_image.csv")])
        checkpoint = torch.load(log_dir / "checkpoints" / "last.ckpt", weights_only=False)
        validated.append(set(checkpoint["CheXpertDataModule"]["validation_files"]))
    assert tested[0] == tested[1] and len(tested[0]) == 8  # valid.csv's frontal images
    assert validated[0] and validated[1] and not validated[0] & validated[1]
    assert {r["metric"] for r in rows} >= {"test/auroc", "test/loss"}
