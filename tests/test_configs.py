"""Every YAML in configs/ parses and runs one batch on synthetic data."""

import os
import shutil
from pathlib import Path

import pytest

from medvision.cli import main

from .conftest import (
    CONFIGS,
    EXTRACTOR_IMAGE_SIZE,
    copy_checkpoint,
    fast_trainer_args,
    rebalance_run_args,
    train_extractor,
)

EXPERIMENTS = sorted(p.name for p in CONFIGS.glob("*.yaml"))
# fragments compose onto an experiment; each one is run composed onto unet_lung.yaml
FRAGMENTS = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("*/*.yaml"))
ENGINE_FRAGMENTS = [f for f in FRAGMENTS if f.split("/")[0] in ("data", "trainer")]


def test_every_yaml_is_covered():
    assert set(EXPERIMENTS) >= {
        "unet_lung.yaml",
        "fcn_lung.yaml",
        "quickstart.yaml",
        "cnn5_chestxray.yaml",
        "resnet18_chestxray.yaml",
        "resnet18_chestxray_aug.yaml",
        "quickstart_chestxray.yaml",
        "unet_ham10000.yaml",
        "resnet50_ham10000.yaml",
        "resnet50_ham10000_7class.yaml",
        "resnet50_ham10000_lesion_crop.yaml",
        "resnet50_nih.yaml",
        "densenet121_chexpert.yaml",
        "extractor_chexpert6.yaml",
        "rebalance_chestxray.yaml",
        "rebalance_ham10000.yaml",
    }
    assert set(FRAGMENTS) >= {
        "data/lung_ct.yaml",
        "data/chest_xray.yaml",
        "trainer/gpu_amp.yaml",
        "trainer/gpu_amp_fp16.yaml",
        "trainer/ddp.yaml",
        "logger/wandb.yaml",
        "rebalancing/class_weighted.yaml",
        "rebalancing/weighted_sampler.yaml",
        "rebalancing/feature_gan.yaml",
    }
    # each fragment is run by one of the tests below
    arms = {f for f in FRAGMENTS if f.startswith("rebalancing/")}
    # search files of medvision tune: tests/test_tune.py checks each against its config
    searches = {f for f in FRAGMENTS if f.startswith("search/")}
    assert set(FRAGMENTS) == set(ENGINE_FRAGMENTS) | arms | searches | {"logger/wandb.yaml"}


def data_dir_for(name: str, request, tmp_path: Path) -> Path:
    """Where a config reads its data: fresh synthetic data in the layout it expects."""
    if name.startswith("quickstart"):
        return tmp_path / "synthetic"  # the quickstarts write their own
    fixtures = {
        "chest": "chest_dir",
        "ham10000": "ham_dir",
        "nih": "nih_dir",
        "chexpert": "chexpert_dir",
    }
    for key, fixture in fixtures.items():
        if key in name:
            return request.getfixturevalue(fixture)
    return request.getfixturevalue("lung_dir")


def lesion_masks_from_truth(ham_dir: Path, folder: Path) -> list[str]:
    """Stand-in for a segmenter's output: the true masks, named as medvision predict names them."""
    folder.mkdir()
    for mask in (ham_dir / "masks").glob("*_segmentation.png"):
        shutil.copy(mask, folder / mask.name.replace("_segmentation", ""))
    return [f"--data.init_args.lesion_mask_dir={folder}", "--data.init_args.lesion_segmenter=null"]


#: the classification config whose run is the extractor of each rebalancing base config
EXTRACTOR_CONFIGS = {
    "rebalance_chestxray.yaml": ("cnn5_chestxray.yaml", "chest_dir"),
    "rebalance_ham10000.yaml": ("resnet50_ham10000_7class.yaml", "ham_dir"),
}


def rebalance_one_batch_args(name: str, tmp_path: Path, request, *extra: str) -> list[str]:
    """A rebalancing config on a one-batch extractor of its data, in fast_dev_run mode.

    The chest X-ray extractor is the session's (``chest_extractor``: cnn5, 32 px), copied here
    for its feature caches; the HAM10000 one, a ResNet-18, is fitted here.
    """
    if name == "rebalance_chestxray.yaml":
        shared = request.getfixturevalue("chest_extractor")
        data_dir, size = shared.data_dir, EXTRACTOR_IMAGE_SIZE
        extractor = copy_checkpoint(shared.checkpoint, tmp_path / "extractor")
    else:
        config, fixture = EXTRACTOR_CONFIGS[name]
        data_dir, size = request.getfixturevalue(fixture), 64
        extractor = train_extractor(
            config, tmp_path / "extractor", data_dir, "--model.init_args.model_name=resnet18"
        )
    return rebalance_run_args(
        name, tmp_path, data_dir, extractor, *extra, "--trainer.fast_dev_run=1", image_size=size
    )


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_one_batch(name, tmp_path, request, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if name in EXTRACTOR_CONFIGS:
        main(["fit", *rebalance_one_batch_args(name, tmp_path, request)])
        return
    data_dir = data_dir_for(name, request, tmp_path)
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / name),
            f"--data.init_args.data_dir={data_dir}",
            "--data.init_args.image_size=64",
            *fast_trainer_args(tmp_path),
            *(lesion_masks_from_truth(data_dir, tmp_path / "lesions") if "lesion" in name else []),
        ]
    )
    if name == "quickstart.yaml":  # generated its own data
        assert len(list((data_dir / "2d_images").glob("*.tif"))) == 120
    if name == "quickstart_chestxray.yaml":
        assert sorted(p.name for p in (data_dir / "train").iterdir()) == [
            "COVID19",
            "NORMAL",
            "PNEUMONIA",
            "TUBERCULOSIS",
        ]


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("fragment", [f for f in FRAGMENTS if f.startswith("rebalancing/")])
def test_rebalancing_arm_composes_and_runs_one_batch(fragment, tmp_path, request):
    arm = ["--config", str(CONFIGS / fragment)]
    main(["fit", *rebalance_one_batch_args("rebalance_chestxray.yaml", tmp_path, request, *arm)])


@pytest.mark.parametrize("fragment", ENGINE_FRAGMENTS)
def test_fragment_composes_and_runs_one_batch(fragment, tmp_path, request):
    # data/*.yaml hold one group (class_path + init_args): given as --data FILE
    flag = "--data" if fragment.startswith("data/") else "--config"
    chest = "chest" in fragment
    base = (
        ["--config", str(CONFIGS / "cnn5_chestxray.yaml")]
        if chest
        else [
            "--config",
            str(CONFIGS / "unet_lung.yaml"),
            "--model.init_args.encoder_name=resnet18",
        ]
    )
    data_dir = request.getfixturevalue("chest_dir" if chest else "lung_dir")
    args = [
        "fit",
        *base,
        flag,
        str(CONFIGS / fragment),
        f"--data.init_args.data_dir={data_dir}",
        "--data.init_args.image_size=64",
        *fast_trainer_args(tmp_path),
    ]
    if _has_gpu():
        args.remove("--trainer.accelerator=cpu")
    else:
        # gpu_amp.yaml's bf16-mixed runs with CPU autocast; ddp.yaml runs as one gloo process,
        # where SyncBatchNorm (GPU only) must be off
        args += ["--trainer.sync_batchnorm=false"] if fragment == "trainer/ddp.yaml" else []
    main(args)


def test_wandb_fragment_writes_an_offline_run_without_a_key(
    tmp_path, lung_dir, monkeypatch, caplog
):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    wandb_dir = tmp_path / "version_0"  # the run's own folder holds W&B's files
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "unet_lung.yaml"),
            "--config",
            str(CONFIGS / "logger/wandb.yaml"),
            f"--data.init_args.data_dir={lung_dir}",
            "--data.init_args.image_size=64",
            "--data.init_args.num_workers=0",
            "--model.init_args.encoder_name=resnet18",
            "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    runs = list(wandb_dir.glob("wandb/offline-run-*"))
    assert len(runs) == 1, os.listdir(wandb_dir)
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"LungCTDataModule" in record and b"bce_dice" in record  # the full resolved config
    assert list(runs[0].glob("files/media/images/val/overlays_*.png"))  # validation overlays
    assert f"wandb sync {runs[0]}" in caplog.text  # the user is told how to upload it
