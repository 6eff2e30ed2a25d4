"""The HAM10000 benchmarks: the classification one's parsing of test results and its table,
and the command lines of both."""

from __future__ import annotations

import pytest

from .conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def ham():
    return load_benchmark(REPO / "benchmarks" / "ham10000_classification.py")


@pytest.fixture(scope="module")
def ham_segmentation():
    return load_benchmark(REPO / "benchmarks" / "ham10000_segmentation.py")


#: what ``medvision test`` writes: the CSV logger's rows and ``test_per_class.csv``'s rows
METRIC_ROWS = [
    {"epoch": "0", "test/accuracy": "0.70", "test/balanced_accuracy": "0.45", "test/f1": ""},
    {"epoch": "0", "test/f1": "0.40", "test/auroc": "0.85", "test/recall/mel": "0.8"},
]
PER_CLASS = [
    {"class": "mel", "precision": "0.3", "recall": "0.8", "f1": "0.44", "support": "10"},
    {"class": "nv", "precision": "0.9", "recall": "0.6", "f1": "0.72", "support": "30"},
]


def test_test_scores_reads_logged_metrics_and_melanoma_row(ham):
    scores = ham.test_scores(METRIC_ROWS, PER_CLASS)
    assert scores["accuracy"] == pytest.approx(0.70)
    assert scores["balanced_accuracy"] == pytest.approx(0.45)
    assert scores["macro_f1"] == pytest.approx(0.40)
    assert scores["auroc"] == pytest.approx(0.85)
    assert scores["melanoma_recall"] == pytest.approx(0.8)
    assert scores["melanoma_f1"] == pytest.approx(0.44)
    assert (scores["melanoma_support"], scores["num_images"]) == (10, 40)


def test_test_scores_rejects_missing_metric_and_missing_melanoma(ham):
    with pytest.raises(ValueError, match="test/balanced_accuracy"):
        ham.test_scores([{"test/accuracy": "0.7", "test/f1": "0.4"}], PER_CLASS)
    with pytest.raises(ValueError, match="melanoma"):
        ham.test_scores(METRIC_ROWS, PER_CLASS[1:])


def test_best_validation_takes_lowest_val_loss(ham):
    rows = [
        {"epoch": "0", "val/loss": "1.2", "val/balanced_accuracy": "0.3"},
        {"epoch": "0", "val/loss": ""},
        {"epoch": "1", "val/loss": "0.9", "val/balanced_accuracy": "0.4"},
        {"epoch": "2", "val/loss": "1.0", "val/balanced_accuracy": "0.5"},
    ]
    assert ham.best_validation(rows) == {"epoch": 1, "loss": 0.9, "balanced_accuracy": 0.4}


def test_table_names_reductions_and_scores(ham):
    config = {"model_name": "resnet50", "image_size": [192, 256], "batch_size": 32, "epochs": 100}
    result = {
        "arm": "7class",
        "config": "configs/resnet50_ham10000_7class.yaml",
        "description": "7 dx classes",
        "overrides": [],
        "settings": {**config, "model_name": "resnet18", "image_size": [72, 96], "epochs": 2},
        "config_settings": config,
        "limit_train_batches": 40,
        "validation": {"epoch": 1, "loss": 0.9, "balanced_accuracy": 0.4},
        "test": ham.test_scores(METRIC_ROWS, PER_CLASS),
        "fit_s": 300.0,
    }
    text = ham.classification_table([result], "/data/ham10000", "CPU")
    first = text.splitlines()[0]
    assert "model resnet18 instead of resnet50" in first
    assert "image size 72x96 instead of 192x256" in first
    assert "max epochs 2 instead of 100" in first
    assert "40 training batches per epoch" in first
    assert "batch" not in first.replace("batches", "")  # batch 32 is the config's own
    row = next(line for line in text.splitlines() if line.startswith("| 7class"))
    assert "| 0.7000 | 0.4500 | 0.4000 | 0.8500 | 0.8000 (10 images) | 0.4400 |" in row


def test_parsers_take_each_benchmarks_own_options(ham, ham_segmentation):
    parser = ham.build_parser()
    assert parser.parse_args([]).arms == list(ham.ARMS)
    args = parser.parse_args(["--arms", "7class", "3class", "--image-size", "72", "96"])
    assert args.arms == ["7class", "3class"] and args.image_size == [72, 96]
    with pytest.raises(SystemExit):
        parser.parse_args(["--arms", "no_such_arm"])
    with pytest.raises(SystemExit):  # a segmentation option
        parser.parse_args(["--encoder", "resnet18"])
    segmentation = ham_segmentation.build_parser()
    args = segmentation.parse_args(["--encoder", "resnet18", "--limit-train-batches", "3"])
    assert (args.encoder, args.limit_train_batches, args.image_size) == ("resnet18", 3, [192, 256])
    with pytest.raises(SystemExit):
        segmentation.parse_args(["--arms", "7class"])


def test_recorded_command_names_the_script_and_one_arm(ham, monkeypatch):
    argv = ["x", "--epochs", "2", "--arms", "7class", "3class", "--out", "/o", "--write-docs"]
    monkeypatch.setattr("sys.argv", argv)
    assert ham.this_command(ham.SCRIPT, ham.PRINT_ONLY, arms=["3class"]) == (
        "python benchmarks/ham10000_classification.py --epochs 2 --out /o --arms 3class"
    )
