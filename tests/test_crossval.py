"""``medvision-cv``: k folds of a config, each a normal run, summarized as mean ± std."""

from __future__ import annotations

import json
import logging
import statistics

import pytest
import yaml

from medvision.cli.crossval import (
    cross_validate,
    logger_args,
    main,
    parse_fit_config,
)
from medvision.utils.files import read_csv

from .conftest import CONFIGS, chest_run_args, unet_cv_args


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
    with pytest.raises(ValueError, match="ChestXrayDataModule has no num_folds / fold argument"):
        cross_validate(chest_run_args(tmp_path, chest_dir), folds=2)
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
