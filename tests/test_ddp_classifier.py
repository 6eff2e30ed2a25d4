"""Under DDP, temperature scaling and the test report see every image once (issue 21)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch

from medvision.data.predict_folder import predict_dataset
from medvision.evaluation.calibration import fit_temperature
from medvision.evaluation.classification_report import classification_arrays
from medvision.models.classification import load_classifier
from tests.conftest import REPO, chest_run_args, subprocess_env

DDP = ["--trainer.strategy=ddp", "--trainer.devices=2"]


def run_cli(*args: str) -> None:
    env = subprocess_env()
    result = subprocess.run(
        [sys.executable, "-m", "medvision.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_ddp_calibration_and_test_report_gather_every_image(tmp_path, chest_dir):
    quick = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    quick += ["--trainer.num_sanity_val_steps=0", "--model.init_args.calibrate=true"]
    run_cli("fit", *chest_run_args(tmp_path, chest_dir, *DDP, *quick))
    run = tmp_path / "version_0"
    checkpoint = run / "checkpoints" / "best.ckpt"
    calibration = json.loads((run / "calibration.json").read_text())["best.ckpt"]
    assert calibration["num_images"] == 10  # the val/ folder, 5 images per process, gathered

    # the same temperature as one process fits on the whole validation split
    model = load_classifier(checkpoint).eval()
    files = sorted((chest_dir / "val").rglob("*.*"))
    data = predict_dataset("classification", files, (32, 32), 1, None)
    images = torch.stack([data[i]["image"] for i in range(len(files))])
    labels = torch.tensor(
        [sorted(p.name for p in (chest_dir / "val").iterdir()).index(f.parent.name) for f in files]
    )
    with torch.no_grad():
        logits = model.logits({"image": images})
    assert fit_temperature(logits, labels) == pytest.approx(calibration["temperature"], rel=1e-3)
    assert float(model.temperature) == pytest.approx(calibration["temperature"])

    run_cli("test", "--config", str(run / "config.yaml"), f"--ckpt_path={checkpoint}", *DDP)
    with open(run / "test" / "test_per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["image"] for r in rows) == sorted(
        str(p) for p in (chest_dir / "test").rglob("*.*")
    )
    probs, target, _ = classification_arrays(rows)
    with torch.no_grad():
        tests = predict_dataset("classification", [r["image"] for r in rows], (32, 32), 1, None)
        expected = model.probabilities(
            model.logits({"image": torch.stack([t["image"] for t in tests])})
        )
    torch.testing.assert_close(probs, expected, atol=2e-6, rtol=0)
