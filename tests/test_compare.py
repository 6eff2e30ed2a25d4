"""``medvision-report``: CV folders, run folders and checkpoints in one report and figure."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
from PIL import Image

from medvision.cli import main as medvision
from medvision.cli.compare import HEADER_PX, main, resolve_run, split_data_overrides, write_report
from medvision.data import LungCTDataModule
from medvision.evaluation.bootstrap import bootstrap_ci
from medvision.evaluation.statistics import mean_statistic
from medvision.utils.files import read_csv

from .conftest import chest_run_args

QUICK = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
]


def table_row(report: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table row that starts with ``first_cell``."""
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in the report")


@pytest.mark.slow
def test_segmentation_report_of_a_cv_and_a_single_run(tmp_path, unet_cv):
    cv = unet_cv["output"]
    folds = [json.loads((cv / f"fold_{i}" / "fold_result.json").read_text()) for i in range(2)]
    single = cv / "fold_1" / folds[1]["log_dir"]  # a plain run folder, as `medvision fit` makes
    # what the fold's own trainer logged when medvision-cv tested it, for the report to match
    logged = [r for r in read_csv(single / "metrics.csv") if r.get("test/dice")][0]

    out = tmp_path / "report"
    main([str(cv), str(single), "--output", str(out), "--num-images", "3"])

    report = (out / "report.md").read_text()
    dice = [fold["metrics"]["test/dice"] for fold in folds]
    mean_std = f"{statistics.mean(dice):.4f} ± {statistics.stdev(dice):.4f}"
    # the pooled test set: each test slice's Dice averaged over the folds' models, bootstrapped
    per_image = [read_csv(cv / f"fold_{i}" / "version_0" / "test_per_image.csv") for i in (0, 1)]
    by_image = {row["image"]: float(row["dice"]) for row in per_image[1]}
    pooled = [(float(row["dice"]) + by_image[row["image"]]) / 2 for row in per_image[0]]
    _, low, high = bootstrap_ci(mean_statistic(pooled), len(pooled), 1000, 0.95, 0)
    # both are "Unet (resnet18)", so the runs are named by their paths
    assert table_row(report, "metric") == ["metric", f"{cv} (2 folds)", str(single)]
    single_dice = f"{float(logged['test/dice']):.4f}"
    cells = table_row(report, "test/dice")
    assert cells[:2] == ["test/dice", f"{mean_std} [{low:.4f}, {high:.4f}]"]
    assert len(pooled) == 4 and low < high
    # the single run, re-tested: its mean Dice with the bootstrap 95% interval of its test images
    value, low, high = (
        float(v) for v in re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", cells[2]).groups()
    )
    assert f"{value:.4f}" == single_dice and low <= value <= high
    assert table_row(report, str(cv))[2] == "Unet (resnet18)"
    assert "Per class" not in report  # segmenters have no per-class tables

    with Image.open(out / "comparison.png") as figure:
        # 64 px slices enlarged to 128 px tiles; 3 rows x (image, truth, 2 models)
        assert figure.size == (4 * 128, HEADER_PX + 3 * 128)
    data = LungCTDataModule(unet_cv["data_dir"], image_size=64, test_fraction=0.2)
    data.setup("test")
    test_split = {p.name for p in data.datasets["test"].image_paths}
    shown = report.split("Rows: test images of")[1].split("(")[1].split(")")[0].split(", ")
    assert len(test_split) == 4 and len(shown) == 3 and set(shown) <= test_split


@pytest.mark.slow
def test_classifier_report_has_per_class_tables_and_goes_to_wandb(tmp_path, chest_dir, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    medvision(["fit", *chest_run_args(tmp_path / "cnn", chest_dir), *QUICK])
    checkpoint = tmp_path / "cnn" / "version_0" / "checkpoints" / "best.ckpt"

    out = tmp_path / "report"
    write_report([checkpoint, checkpoint.parents[1]], out, ["A", "B"], num_images=3, wandb=True)

    report = (out / "report.md").read_text()
    expected = read_csv(out / "evaluation" / "run_0" / "test_per_class.csv")  # reports.py's table
    assert len(expected) == 4
    for row in expected:
        cells = table_row(report, row["class"])
        assert cells[1:4] == [f"{float(row[k]):.4f}" for k in ("precision", "recall", "f1")]
    assert report.count("| class | precision | recall | f1 |") == 2
    assert "## Per class: A" in report and "## Per class: B" in report
    assert table_row(report, "test/accuracy")[1] == table_row(report, "test/accuracy")[2]
    with Image.open(out / "comparison.png") as figure:
        assert figure.size == (4 * 128, HEADER_PX + 3 * 128)  # 32 px images -> 128 px tiles
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))


def test_bad_runs_are_named(tmp_path):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="best.ckpt does not exist"):
        resolve_run(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_run(tmp_path / "missing")
    (tmp_path / "empty" / "checkpoints" / "best.ckpt").touch()
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        resolve_run(tmp_path / "empty")
    with pytest.raises(ValueError, match="2 names for 1 runs"):
        write_report([tmp_path / "empty"], tmp_path / "out", ["a", "b"])


def test_data_overrides_are_split_from_the_other_arguments():
    args = ["run", "--data.init_args.data_dir", "/d", "--output", "o", "--data.x=1", "--names", "a"]
    rest, data = split_data_overrides(args)
    assert rest == ["run", "--output", "o", "--names", "a"]
    assert data == ["--data.init_args.data_dir", "/d", "--data.x=1"]
    assert Path(rest[0]).name == "run"
