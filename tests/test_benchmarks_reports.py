"""The classification benchmarks' tables read what ``medvision test`` wrote (no training here)."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from .conftest import REPO, load_benchmark


def test_chest_xray_table_shows_the_summary_interval():
    chest = load_benchmark(REPO / "benchmarks" / "chest_xray_classification.py")
    test = {"accuracy": 0.76, "balanced_accuracy": 0.71, "f1": 0.7351, "auroc": 0.911}
    test |= {"recall/COVID19": 0.571, "recall/NORMAL": 0.74, "f1_low": 0.551, "f1_high": 0.8449}
    result = {
        "arm": "resnet18",
        "config": "configs/resnet18_chestxray.yaml",
        "test": test,
        "best": {"epoch": 7, "val_f1": 0.792},
        "epochs_run": 15,
        "epoch_s": 106.5,
        "load_avg": 3.8,
        "split": {"train": 619, "val": 155, "test": 110},
        "code": "commit abc",
    }
    args = Namespace(data_dir="/d", image_size=128, epochs=15, batch_size=32, seed=42, set=[])
    text = chest.report([result], args)
    row = next(line for line in text.splitlines() if line.startswith("| ResNet-18"))
    assert row == (
        "| ResNet-18 (resnet18_chestxray.yaml) | 0.7600 | 0.7100 | 0.7351 (0.55-0.84) | 0.9110 "
        "| 0.571 | 0.740 | 0.7920 (7) | 15 | 106.5 | 3.8 |"
    )
    assert "test set: the val/ folder (110 images)" in text
    assert "Highest test macro-F1: ResNet-18, 0.7351 (below the 0.82 target)." in text


def test_nih_counts_test_positives_from_the_per_image_file(tmp_path: Path):
    nih = load_benchmark(REPO / "benchmarks" / "nih_chestxray14.py")
    test = tmp_path / "test"
    test.mkdir()
    header = "label,auroc,f1_at_0.5,threshold,f1_at_threshold\n"
    (test / "test_per_label.csv").write_text(header + "A,0.8,0.5,0.3,0.6\nB,0.5,0.0,0.1,0.0\n")
    images = "image,label/A,label/B,prob/A,prob/B\n"
    images += "x.png,1,0,0.9,0.1\ny.png,1,,0.8,0.2\nz.png,0.0,0,0.1,0.3\n"
    (test / "test_per_image.csv").write_text(images)
    fit_metrics = [{"epoch": "0", "val/auroc": "0.6"}, {"epoch": "1", "val/auroc": "0.7"}]
    args = Namespace(data_dir="/d", model="resnet18", image_size=64, epochs=2, batch_size=4, seed=1)
    text = nih.report(nih.Tested(test), fit_metrics, args)
    assert "| A | 2 | 0.800 | 0.500 | 0.30 | 0.600 |" in text
    assert "| B | 0 | n/a | 0.000 | 0.10 | 0.000 |" in text  # no positive: AUROC undefined
    assert "best validation mean AUROC 0.7000 at epoch 1" in text
    assert "| **mean over the 1 labels with test positives** | | **0.800** | | | |" in text
