"""The in-memory sample cache: the same samples as decoding every time, and a memory limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medvision.data import HAM10000DataModule, LungCTDataModule
from medvision.data.datasets import CachedSegmentationDataset
from tests.conftest import fast_trainer_args, unet_run_args

# float16 keeps [0, 1] intensities to within half a step of 2**-11
FLOAT16_TOLERANCE = 2.5e-4


def _datamodule(lung_dir, cache: bool, augmentation: str = "none", **kwargs) -> LungCTDataModule:
    datamodule = LungCTDataModule(
        lung_dir,
        image_size=48,  # the slices are 64 px: the cache holds them resized
        augmentation=augmentation,
        cache=cache,
        num_workers=0,
        **kwargs,
    )
    datamodule.setup("fit")
    return datamodule


def _samples(dataset, seed: int = 0) -> list[dict]:
    torch.manual_seed(seed)  # the augmentation stream is seeded from torch.initial_seed()
    return [dataset[i] for i in range(len(dataset))]


def _assert_same(cached: list[dict], plain: list[dict], shape=(1, 48, 48)) -> None:
    assert len(cached) == len(plain)
    for ours, theirs in zip(cached, plain, strict=True):
        assert ours["path"] == theirs["path"] and ours["mask_path"] == theirs["mask_path"]
        assert torch.equal(ours["original_size"], theirs["original_size"])
        assert ours["image"].dtype == theirs["image"].dtype == torch.float32
        assert ours["image"].shape == theirs["image"].shape == shape
        assert ours["mask"].shape == theirs["mask"].shape == (1, *shape[1:])
        torch.testing.assert_close(ours["image"], theirs["image"], atol=FLOAT16_TOLERANCE, rtol=0)
        assert torch.equal(ours["mask"], theirs["mask"])


@pytest.mark.parametrize("stage", ["train", "val", "test"])
def test_cached_samples_equal_uncached_without_augmentation(lung_dir, stage):
    cached = _datamodule(lung_dir, cache=True).datasets[stage]
    plain = _datamodule(lung_dir, cache=False).datasets[stage]
    assert isinstance(cached, CachedSegmentationDataset)
    assert cached.images.dtype == np.float16 and cached.masks.dtype == np.uint8
    _assert_same(_samples(cached), _samples(plain))


def test_an_empty_split_is_cached_as_empty(lung_dir):
    datamodule = _datamodule(lung_dir, cache=True, test_fraction=0.0)
    assert len(datamodule.datasets["train"]) > 0
    empty = [name for name, data in datamodule.datasets.items() if len(data) == 0]
    assert empty and all(len(datamodule.datasets[name].images) == 0 for name in empty)


@pytest.mark.parametrize("augmentation", ["basic", "elastic"])
def test_cached_samples_equal_uncached_with_the_same_seeded_augmentation(lung_dir, augmentation):
    cached = _datamodule(lung_dir, cache=True, augmentation=augmentation).datasets["train"]
    plain = _datamodule(lung_dir, cache=False, augmentation=augmentation).datasets["train"]
    augmented = _samples(cached, seed=3)
    _assert_same(augmented, _samples(plain, seed=3))
    unaugmented = _samples(_datamodule(lung_dir, cache=True).datasets["train"])
    changed = [
        not torch.equal(a["mask"], b["mask"]) for a, b in zip(augmented, unaugmented, strict=True)
    ]
    assert any(changed)  # the cache really augments, it does not replay the resized sample


def test_cached_loader_with_worker_processes_gives_every_sample(lung_dir):
    datamodule = _datamodule(lung_dir, cache=True, batch_size=4)
    datamodule.num_workers = 2
    plain = {s["path"]: s for s in _samples(_datamodule(lung_dir, cache=False).datasets["val"])}
    seen = []
    for batch in datamodule.val_dataloader():
        for path, image, mask in zip(batch["path"], batch["image"], batch["mask"], strict=True):
            seen.append(path)
            torch.testing.assert_close(image, plain[path]["image"], atol=FLOAT16_TOLERANCE, rtol=0)
            assert torch.equal(mask, plain[path]["mask"])
    assert sorted(seen) == sorted(plain)


def test_cache_above_the_limit_is_refused_with_the_option_to_raise(lung_dir):
    # 20 slices at 48x48: 20 * 48 * 48 * 3 bytes = 138 kB
    with pytest.raises(ValueError, match=r"0\.00 GB.*cache_limit_gb=0\.0001.*cache: false"):
        _datamodule(lung_dir, cache=True, cache_limit_gb=1e-4)
    datamodule = _datamodule(lung_dir, cache=True, cache_limit_gb=2e-4)
    assert sum(d.nbytes() for d in datamodule.datasets.values()) == 20 * 48 * 48 * 3


def test_fit_from_the_cli_with_the_cache(lung_dir, tmp_path):
    from medvision.cli import main

    main(
        [
            "fit",
            *unet_run_args(tmp_path, lung_dir, *fast_trainer_args(tmp_path)),
            "--data.init_args.cache=true",
        ]
    )


# --- HAM10000 lesion segmentation: 48x64 images cached at a non-square 40x56 ---------------------


def _ham(ham_dir, cache: bool, augmentation: str = "none", **kwargs) -> HAM10000DataModule:
    datamodule = HAM10000DataModule(
        ham_dir,
        task="segmentation",
        image_size=[40, 56],  # height x width, from 48x64 files
        augmentation=augmentation,
        cache=cache,
        num_workers=0,
        **kwargs,
    )
    datamodule.setup("fit")
    return datamodule


@pytest.mark.parametrize("augmentation", ["none", "basic"])
def test_ham_cached_samples_equal_uncached_ones(ham_dir, augmentation):
    first = sorted((ham_dir / "masks").iterdir())[0]
    Image.open(first).resize((32, 24), Image.NEAREST).save(first)  # resized to its image
    cached = _ham(ham_dir, cache=True, augmentation=augmentation)
    plain = _ham(ham_dir, cache=False, augmentation=augmentation)
    assert str(first) in {str(p) for d in cached.datasets.values() for p in d.mask_paths}
    for stage in ("train", "val", "test"):
        assert isinstance(cached.datasets[stage], CachedSegmentationDataset)
        assert cached.datasets[stage].images.shape[1:] == (40, 56, 3)
        ours, theirs = _samples(cached.datasets[stage], 3), _samples(plain.datasets[stage], 3)
        _assert_same(ours, theirs, shape=(3, 40, 56))


def test_ham_cache_takes_seven_bytes_a_pixel(ham_dir):
    datamodule = _ham(ham_dir, cache=True)
    count = sum(len(d) for d in datamodule.datasets.values())
    assert sum(d.nbytes() for d in datamodule.datasets.values()) == count * 40 * 56 * 7


def test_ham_cache_is_for_segmentation_only(ham_dir):
    with pytest.raises(ValueError, match="task: segmentation.*cache: false"):
        HAM10000DataModule(ham_dir, task="classification", cache=True)


def test_ham_cache_above_the_limit_is_refused(ham_dir):
    with pytest.raises(ValueError, match=r"cache_limit_gb=1e-06.*cache: false"):
        _ham(ham_dir, cache=True, cache_limit_gb=1e-6)
