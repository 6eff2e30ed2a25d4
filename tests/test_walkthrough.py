"""A new user's everyday workflow, start to end, on synthetic data (issues 18 and 24).

a fit on a wrong folder (no run folder left) -> fit into a chosen root -> a second fit -> both
again with W&B (offline) -> test the best checkpoint twice -> predict twice on two folders, from
the checkpoint alone -> medvision-report on two runs. Everything stays under the root, each run
in its own folder, and nothing of one run lands in another's. A volume model is applied to NIfTI
volumes by the command its fit printed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

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
def test_walkthrough(tmp_path, lung_dir, offline_wandb, caplog, capsys, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder either
    monkeypatch.delenv("MEDVISION_DEBUG")  # errors as users see them: one line, status 2
    root = tmp_path / "A"
    fit = ["fit", *unet_run_args(root, lung_dir, *QUICK)]

    # 0. a fit that cannot read its data stops and uses up no run folder (issue 24, point 1)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *unet_run_args(root, tmp_path / "nonexistent", *QUICK)])
    assert stopped.value.code == 2 and not root.exists()

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
    # best.ckpt is weights and record; last.ckpt keeps the optimizer for resuming (point 5)
    checkpoint = torch.load(best, weights_only=True, mmap=True)
    weights = sum(t.numel() * t.element_size() for t in checkpoint["state_dict"].values())
    assert best.stat().st_size <= 1.2 * weights and not checkpoint.get("optimizer_states")
    assert "preprocessing" in checkpoint["medvision"]
    last = torch.load(root / "version_0/checkpoints/last.ckpt", weights_only=True, mmap=True)
    assert last["optimizer_states"]

    # 2. test the best checkpoint twice: each test a folder of its own in that run (point 6)
    test = ["test", *unet_run_args(root, lung_dir, *QUICK), f"--ckpt_path={best}"]
    main(test)
    first_test = (root / "version_0/test/metrics.csv").read_text()
    assert "test/dice" in first_test
    main(test)
    tests = sorted(p.name for p in (root / "version_0").iterdir() if p.name.startswith("test"))
    assert len(tests) == 2 and tests[0] == "test" and tests[1].startswith("test-"), tests
    assert (root / "version_0/test/metrics.csv").read_text() == first_test  # kept as it was
    assert sorted(p.name for p in root.iterdir()) == [f"version_{i}" for i in range(4)]

    # 3. predict twice, on two folders: two prediction folders in the run, kept apart
    first, second = tmp_path / "incoming1", tmp_path / "incoming2"
    first.mkdir(), second.mkdir()
    images = sorted((lung_dir / "2d_images").iterdir())
    for image in images[:2]:
        shutil.copy(image, first)
    shutil.copy(images[2], second)
    # an option that cannot work is refused at once, before any model is built (point 7)
    with pytest.raises(SystemExit) as refused:
        main(["predict", f"--ckpt_path={best}", f"--data.predict_dir={first}", "--tta=rot90"])
    assert refused.value.code == 2 and not (root / "version_0/predictions").exists()
    caplog.clear()
    capsys.readouterr()
    for folder in (first, second):  # from the checkpoint alone: no config, no training data
        main(["predict", f"--ckpt_path={best}", f"--data.predict_dir={folder}"])
    said = caplog.text + "".join(capsys.readouterr())
    assert "No seed found" not in said and "Be aware that when using `ckpt_path`" not in said
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


@pytest.mark.slow
def test_a_volume_model_applies_itself_by_the_command_its_fit_printed(tmp_path, caplog):
    """Issue 24, point 3: the "next: medvision predict" line of a NIfTI volume fit, run as
    printed, writes a label volume on each input's grid."""
    import nibabel as nib
    import numpy as np

    from medvision.data.synthetic_volumes import write_nifti_volumes

    caplog.set_level(logging.INFO)
    write_nifti_volumes(tmp_path / "volumes", 3, (24, 20, 6), seed=0)
    new = tmp_path / "new"
    new.mkdir()
    source = sorted((tmp_path / "volumes/images").glob("*.nii.gz"))[0]
    shutil.copy(source, new / "ct.nii.gz")
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart_volumes.yaml"),
            f"--data.init_args.data_dir={tmp_path / 'volumes'}",
            "--data.init_args.image_size=32",
            "--model.init_args.encoder_name=resnet18",
            f"--trainer.default_root_dir={tmp_path / 'runs'}",
            *QUICK[:4],
        ]
    )
    summary = next(r.getMessage() for r in caplog.records if "fit finished" in r.getMessage())
    printed = next(line.strip() for line in summary.splitlines() if "medvision predict" in line)
    args = printed.split()[1:]  # the line as printed, DIR filled in
    main([arg.replace("DIR", str(new)) for arg in args])
    written = sorted((tmp_path / "runs/version_0/predictions").glob("*/ct.nii.gz"))
    assert len(written) == 1
    original, labels = nib.load(new / "ct.nii.gz"), nib.load(written[0])
    assert labels.shape == original.shape
    np.testing.assert_allclose(labels.affine, original.affine)
    assert set(np.unique(np.asanyarray(labels.dataobj))) <= {0, 1}
