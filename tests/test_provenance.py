"""Every run folder says what made it: config, package versions, hardware, git commit."""

from __future__ import annotations

import json
import subprocess

import torch
import yaml

from medvision.cli import main
from medvision.utils.provenance import git_revision, package_versions

from .conftest import REPO, unet_run_args


def test_run_folder_holds_config_versions_and_commit(tmp_path, lung_dir):
    args = unet_run_args(tmp_path, lung_dir, "--trainer.max_epochs=1")
    main(["fit", *args, "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"])
    run = tmp_path / "version_0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["seed_everything"] == 42
    assert config["data"]["init_args"]["data_dir"] == str(lung_dir)
    info = json.loads((run / "run_info.json").read_text())
    assert info["packages"]["torch"] == torch.__version__
    assert info["packages"]["lightning"] is not None
    assert info["hardware"]["cpu_count"] >= 1
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    if head:  # a git checkout, as in CI
        assert info["git"]["commit"] == head
    hparams = (run / "hparams.yaml").read_text()  # what the loggers got (W&B's config)
    assert "run_info:" in hparams and f"torch: {torch.__version__}" in hparams


def test_versions_of_missing_packages_are_none():
    assert package_versions(("torch", "no-such-distribution")) == {
        "torch": torch.__version__,
        "no-such-distribution": None,
    }


def test_git_revision_outside_a_checkout_is_none(tmp_path):
    assert git_revision(tmp_path) is None
