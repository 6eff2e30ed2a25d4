"""A new user's everyday workflow, start to end, on synthetic data (issue 18).

fit into a chosen root -> a second fit -> both again with W&B (offline) -> test the best
checkpoint -> predict twice on two folders -> medvision-report on two runs. Everything stays
under the root, each run in its own folder, and nothing of one run lands in another's.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import pytest

from medvision.cli import main
from medvision.cli.compare import main as report_main

from .conftest import CONFIGS, unet_run_args

QUICK = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=1",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
    "--data.init_args.test_fraction=0.2",
]
WANDB = ["--config", str(CONFIGS / "logger/wandb.yaml")]


def tree(root: Path) -> set[str]:
    """Files under ``root`` (relative paths), W&B's own files and folder contents left out."""
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and "wandb" not in path.relative_to(root).parts
    }


def summary_checkpoint(caplog) -> Path:
    """The best checkpoint named by the summary block that ``fit`` ended with."""
    summaries = [r.getMessage() for r in caplog.records if "fit finished" in r.getMessage()]
    match = re.search(r"best checkpoint: (\S+)", summaries[-1])
    return Path(match.group(1))


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    for variable in ("WANDB_API_KEY", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login: W&B goes offline
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))


@pytest.mark.slow
def test_walkthrough(tmp_path, lung_dir, offline_wandb, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder either
    root = tmp_path / "A"
    fit = ["fit", *unet_run_args(root, lung_dir, *QUICK)]

    # 1. two fits, then two more with W&B: one folder each, numbered in order
    main(fit)
    best = summary_checkpoint(caplog)
    assert best == root / "version_0/checkpoints/best.ckpt" and best.is_file()
    main(fit)
    main([*fit, *WANDB])
    main([*fit, *WANDB])
    assert sorted(p.name for p in root.iterdir()) == [f"version_{i}" for i in range(4)]
    for run in (root / f"version_{i}" for i in range(4)):
        assert {"config.yaml", "run_info.json", "checkpoints/best.ckpt"} <= tree(run), run
    for run in (root / "version_2", root / "version_3"):  # W&B's files in the run's own folder
        records = list(run.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(records) == 1, run
        assert b"LungCTDataModule" in records[0].read_bytes()  # each run carries its config
    assert "metrics.csv" in tree(root / "version_0")

    # 2. test the best checkpoint: its results go into that run's test/ folder, no new version
    main(["test", *unet_run_args(root, lung_dir, *QUICK), f"--ckpt_path={best}"])
    assert "test/dice" in (root / "version_0/test/metrics.csv").read_text()
    assert sorted(p.name for p in root.iterdir()) == [f"version_{i}" for i in range(4)]

    # 3. predict twice, on two folders: two prediction folders in the run, kept apart
    first, second = tmp_path / "incoming1", tmp_path / "incoming2"
    first.mkdir(), second.mkdir()
    images = sorted((lung_dir / "2d_images").iterdir())
    for image in images[:2]:
        shutil.copy(image, first)
    shutil.copy(images[2], second)
    for folder in (first, second):
        predict = ["predict", *unet_run_args(root, lung_dir), f"--ckpt_path={best}"]
        main([*predict, f"--data.init_args.predict_dir={folder}"])
    outputs = sorted((root / "version_0/predictions").iterdir())
    assert len(outputs) == 2
    masks = [sorted(p.name for p in (out / "masks").iterdir()) for out in outputs]
    assert masks == [[f"{p.stem}.png" for p in images[:2]], [f"{images[2].stem}.png"]]
    assert sorted(p.name for p in root.iterdir()) == [f"version_{i}" for i in range(4)]

    # 4. a report on two runs, written where it is asked to go
    report_main([str(root / "version_0"), str(root / "version_2"), "--output", "report"])
    assert {"report.md", "comparison.png"} <= set(os.listdir(tmp_path / "report"))
    left = set(os.listdir(tmp_path)) - {"home", "wandb_config"}  # W&B's settings, if any
    assert left == {"A", "incoming1", "incoming2", "lung_ct", "report"}
