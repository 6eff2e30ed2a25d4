"""Shared fixtures: synthetic data in the real layouts, and the real-data folder when present."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from medvision.data.synthetic import (
    write_chest_xray,
    write_chexpert,
    write_ham10000,
    write_lung_ct,
    write_nih_chestxray14,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"


#: a small 2D lung U-Net (resnet18 encoder, 3 stages): untrained checkpoints need no fit
SMALL_UNET_ARCH = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}


def lung_record(**changes):
    """The preprocessing record of a small binary lung U-Net at 32 px (``SMALL_UNET_ARCH``);
    ``changes`` replace its fields."""
    from medvision.models.record import Preprocessing

    fields = dict(
        task="segmentation",
        image_size=(32, 32),
        in_channels=1,
        intensity_window=None,
        class_names=("lung",),
        network={
            "class_path": "medvision.models.SegmentationModule",
            "init_args": {
                "arch": "Unet",
                "encoder_name": "resnet18",
                "arch_kwargs": SMALL_UNET_ARCH,
            },
        },
        mask_threshold=0.5,
    )
    return Preprocessing(**{**fields, **changes})


def record_checkpoint(path: Path, module, record) -> Path:
    """A checkpoint of ``module``'s (untrained) weights with ``record``, as fit writes them."""
    import torch

    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "medvision": {"preprocessing": record.to_dict()},
            "pytorch-lightning_version": "2.6.0",
        },
        path,
    )
    return path


def cnn5_checkpoint(path: Path) -> Path:
    """An untrained two-class (``a``, ``b``) CNN5 classifier's checkpoint at 32 px, with its
    record, as fit writes them."""
    from medvision.models import ClassificationModule
    from medvision.models.record import FORMAT_VERSION, Preprocessing

    module = ClassificationModule("cnn5", in_channels=1, num_classes=2, class_names=["a", "b"])
    fields = {"task": "classification", "image_size": [32, 32], "in_channels": 1}
    fields |= {"intensity_window": None, "version": FORMAT_VERSION}
    record = Preprocessing.from_dict({**fields, **module.describe_output()})
    return record_checkpoint(path, module, record)


def pytest_configure(config):
    """Torch computes on one thread in the test processes and the processes they start (DDP
    workers, subprocesses), unless ``OMP_NUM_THREADS`` says otherwise: the tests' networks are
    small, and a second thread costs more CPU time than it saves (with ``pytest -n 2`` each
    worker already has a core of its own)."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_xdist_auto_num_workers(config) -> int:
    """How many test processes ``-n auto`` (pyproject.toml's addopts) starts: one per usable
    core, at most 4 (each repeats the session fixtures, and the largest test files bound the
    time anyway)."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, min(4, len(usable) if usable else os.cpu_count() or 1))


@pytest.fixture
def lung_dir(tmp_path: Path) -> Path:
    """A Kaggle-layout lung CT folder with 20 synthetic 64x64 uint8 slices."""
    root = tmp_path / "lung_ct"
    write_lung_ct(root, num_slices=20, size=64, seed=0)
    return root


@pytest.fixture
def chest_dir(tmp_path: Path) -> Path:
    """A chest X-ray ImageFolder (train/val/test x 4 imbalanced classes, mixed files, ~48 px)."""
    root = tmp_path / "chest_xray"
    write_chest_xray(root, scale=0.5, size=48, seed=0)
    return root


@pytest.fixture
def ham_dir(tmp_path: Path) -> Path:
    """A HAM10000-layout folder: 32 synthetic lesions (1-3 images each, 48x64), masks, CSV."""
    root = tmp_path / "ham10000"
    write_ham10000(root, num_lesions=32, size=(48, 64), seed=0)
    return root


@pytest.fixture
def nih_dir(tmp_path: Path) -> Path:
    """An NIH ChestX-ray14 layout: 24 synthetic patients (1-3 images each, 48 px) and the CSV."""
    root = tmp_path / "nih"
    write_nih_chestxray14(root, num_patients=24, size=48, seed=0)
    return root


@pytest.fixture
def chexpert_dir(tmp_path: Path) -> Path:
    """A CheXpert "small" release folder: 24 synthetic patients, train.csv and valid.csv."""
    return write_chexpert(tmp_path, num_patients=24, size=48, seed=0)


def shared_dataset(name: str, required: str) -> Path:
    """``../shared/data/<name>`` if it holds ``required``; otherwise the test is skipped."""
    path = SHARED_DATA / name
    if not (path / required).exists():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture
def real_chest_dir() -> Path:
    """``../shared/data/chest_xray`` (real X-rays, train/ and val/); skips when absent."""
    return shared_dataset("chest_xray", "train")


@pytest.fixture
def real_lung_dir() -> Path:
    """``../shared/data/lung_ct`` (the real Kaggle slices); skips the test when absent."""
    return shared_dataset("lung_ct", "2d_images")


def fast_trainer_args(root: Path) -> list[str]:
    """CLI overrides that make any config run one CPU batch quietly inside ``root``."""
    return [
        "--trainer.fast_dev_run=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=4",
    ]


def config_run_args(
    config: str,
    root: Path,
    data_dir: Path,
    *extra: str,
    image_size: int | str = 64,
    batch_size: int = 4,
) -> list[str]:
    """``configs/<config>`` on ``data_dir``, small and quiet on the CPU, writing inside ``root``."""
    return [
        "--config",
        str(CONFIGS / config),
        f"--data.init_args.data_dir={data_dir}",
        f"--data.init_args.image_size={image_size}",
        "--data.init_args.num_workers=0",
        f"--data.init_args.batch_size={batch_size}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        *extra,
    ]


def unet_run_args(root: Path, data_dir: Path, *extra: str) -> list[str]:
    """``configs/unet_lung.yaml`` made small (64x64, resnet18, batch 4) and quiet, on the CPU."""
    return config_run_args(
        "unet_lung.yaml", root, data_dir, "--model.init_args.encoder_name=resnet18", *extra
    )


def chest_run_args(root: Path, data_dir: Path, *extra: str) -> list[str]:
    """``configs/cnn5_chestxray.yaml`` made small (32x32, batch 8) and quiet, on the CPU."""
    return config_run_args(
        "cnn5_chestxray.yaml", root, data_dir, *extra, image_size=32, batch_size=8
    )


def train_extractor(config: str, root: Path, data_dir: Path, *extra: str, **kwargs) -> Path:
    """Step 1 of the rebalancing study, in one batch: ``configs/<config>`` fit on ``data_dir``.

    Returns the best checkpoint; its run's data settings are ``config_run_args``'s.
    """
    from medvision.cli import main

    limits = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1"]
    main(["fit", *config_run_args(config, root, data_dir, *limits, *extra, **kwargs)])
    return root / "version_0/checkpoints/best.ckpt"


@dataclass(frozen=True)
class TrainedCheckpoint:
    """A checkpoint fitted once per session, with the synthetic data it was fitted on.

    Both are shared by the tests that ask for them: read them, never write into their folders
    (copy the checkpoint with :func:`copy_checkpoint` to write beside it, e.g. feature caches).
    """

    data_dir: Path
    checkpoint: Path


def copy_checkpoint(checkpoint: Path, folder: Path) -> Path:
    """``checkpoint`` copied into ``folder`` (made if absent), for a test that writes beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(checkpoint, folder / checkpoint.name))


@pytest.fixture(scope="session")
def chest_extractor(tmp_path_factory) -> TrainedCheckpoint:
    """Step 1 of the rebalancing study, fitted once per session: ``configs/cnn5_chestxray.yaml``
    for one batch on the ``chest_dir`` X-rays (written anew, read-only here) at 32 px."""
    base = tmp_path_factory.mktemp("chest_extractor")
    data_dir = base / "chest_xray"
    write_chest_xray(data_dir, scale=0.5, size=48, seed=0)
    checkpoint = train_extractor(
        "cnn5_chestxray.yaml", base / "extractor", data_dir, image_size=EXTRACTOR_IMAGE_SIZE
    )
    return TrainedCheckpoint(data_dir, checkpoint)


#: the image size of :func:`chest_extractor`'s data: cnn5's feature maps are then 4 x 4
EXTRACTOR_IMAGE_SIZE = 32


def rebalance_run_args(
    config: str,
    root: Path,
    data_dir: Path,
    extractor: Path,
    *extra: str,
    image_size: int | str = 64,
    batch_size: int = 8,
) -> list[str]:
    """A ``configs/rebalance_*.yaml`` run on ``extractor``'s data, small and quiet on the CPU."""
    inner = "--data.init_args.data.init_args"
    return [
        "--config",
        str(CONFIGS / config),
        *extra,
        f"--data.init_args.classifier_checkpoint={extractor}",
        f"{inner}.data_dir={data_dir}",
        f"{inner}.image_size={image_size}",
        f"{inner}.num_workers=0",
        f"--data.init_args.batch_size={batch_size}",
        "--data.init_args.num_workers=0",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
    ]


def unet_cv_args(root: Path, data_dir: Path, *extra: str) -> list[str]:
    """Fit arguments for a quick cross-validation: the small U-Net, 2 training batches, 1 val.

    A test split of 20% (4 of 20 synthetic slices) leaves enough images for a comparison figure.
    """
    quick = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0",
    ]
    split = ["--data.init_args.test_fraction=0.2"]
    return unet_run_args(root, data_dir, *quick, *split, *extra)


@pytest.fixture(scope="session")
def unet_cv(tmp_path_factory) -> dict:
    """A finished 2-fold ``medvision-cv`` of :func:`unet_cv_args` (run once per session).

    Keys: ``output`` (the CV folder), ``data_dir`` (20 synthetic 64x64 slices), ``args``.
    """
    from medvision.cli.crossval import main as cv_main

    base = tmp_path_factory.mktemp("unet_cv")
    data_dir = base / "lung_ct"
    write_lung_ct(data_dir, num_slices=20, size=64, seed=0)
    args = unet_cv_args(base / "runs", data_dir)
    output = base / "cv"
    cv_main(["--folds", "2", "--output", str(output), *args])
    return {"output": output, "data_dir": data_dir, "args": args}


def load_benchmark(script: Path):
    """The benchmark script as a module (imported, not run), with ``sys.path`` left as it was.

    While it loads, the script's folder is first on ``sys.path``, as when it is run as
    ``python benchmarks/<script>.py``, so that its ``from harness import ...`` works.
    """
    saved = list(sys.path)
    sys.path.insert(0, str(script.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch):
    """Each test starts without what an earlier in-process run left in the environment
    (distributed settings, the run folder of a DDP fit, the seed of its seed_everything), and
    ``medvision`` commands raise their errors (as with ``--debug``), so a test can match the
    exception; tests/test_workflow.py checks the one-line form users see."""
    for variable in DISTRIBUTED_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # an earlier run's seed_everything
    monkeypatch.setenv("MEDVISION_DEBUG", "1")


def prediction_folder(root: Path) -> Path:
    """The newest ``predictions/<date-time>`` folder under ``root`` (a run's, or root's own)."""
    folders = [
        p for p in root.rglob("predictions/*") if p.is_dir() and p.parent.name == "predictions"
    ]
    return max(folders, key=lambda p: p.stat().st_mtime)


#: What an earlier in-process run may leave in the environment that would join a subprocess's
#: DDP processes to the wrong group (or make it wait for ranks that never come).
DISTRIBUTED_VARIABLES = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
    "MEDVISION_RUN_DIR",
)


def subprocess_env() -> dict[str, str]:
    """The environment for a ``python -m medvision.cli`` subprocess: this checkout first on the
    path, one thread per process, and no distributed settings inherited from earlier runs."""
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: on a shared 2-core machine small networks run many
    times faster than on two (the second thread mostly waits); restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
