"""Batched (GPU-side) augmentation of cached segmentation samples, and its datamodule hook."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import cv2
import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from albumentations.augmentations.geometric import functional as album_geometric

import medvision.models
from medvision.data import HAM10000DataModule, LungCTDataModule
from medvision.data.transforms import BatchSegmentationAugmentation, affine_theta
from tests.conftest import fast_trainer_args, unet_run_args


def _blobs(count: int = 6, height: int = 40, width: int = 56, seed: int = 0) -> torch.Tensor:
    """``count x 1 x H x W`` float masks of 0/1: one random ellipse each, off-centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    masks = []
    for _ in range(count):
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.2, 0.5) * width
        ry, rx = rng.uniform(0.15, 0.3) * height, rng.uniform(0.15, 0.3) * width
        masks.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))


def _boundary(masks: torch.Tensor) -> torch.Tensor:
    """Pixels with both 0 and 1 in their 3x3 neighbourhood."""
    grown = F.max_pool2d(masks, 3, stride=1, padding=1)
    shrunk = -F.max_pool2d(-masks, 3, stride=1, padding=1)
    return grown != shrunk


# --- the batched augmentation ------------------------------------------------------------------


def test_none_is_the_identity():
    images, masks = torch.rand(3, 2, 8, 12), _blobs(3, 8, 12)
    out_images, out_masks = BatchSegmentationAugmentation("none")(images, masks)
    assert torch.equal(out_images, images) and torch.equal(out_masks, masks)


@pytest.mark.parametrize(
    ("flips", "dims"),
    [
        ({"horizontal_flip": 1.0}, [-1]),
        ({"horizontal_flip": 0.0, "vertical_flip": 1.0}, [-2]),
        ({"horizontal_flip": 1.0, "vertical_flip": 1.0}, [-2, -1]),
    ],
)
def test_flips_are_exact(flips, dims):
    images, masks = torch.rand(4, 3, 10, 14), _blobs(4, 10, 14)
    augment = BatchSegmentationAugmentation("basic", affine=0.0, **flips)
    out_images, out_masks = augment(images, masks)
    assert torch.equal(out_images, images.flip(dims)) and torch.equal(out_masks, masks.flip(dims))


def test_basic_flips_about_half_the_samples_horizontally_and_none_vertically():
    images = torch.rand(200, 1, 6, 8)
    out, _ = BatchSegmentationAugmentation("basic", affine=0.0)(images, _blobs(200, 6, 8))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # one or the other, exactly
    assert 70 < sum(flipped) < 130


def test_image_and_mask_stay_aligned_on_a_non_square_batch():
    masks = _blobs(8, 40, 56)
    images = masks.repeat(1, 3, 1, 1)  # intensity = mask, in every channel
    augment = BatchSegmentationAugmentation("basic", seed=1, affine=1.0)
    out_images, out_masks = augment(images, masks)
    assert not torch.equal(out_masks, masks)  # it moved them
    disagree = ((out_images > 0.5).float() != out_masks).any(1, keepdim=True)
    assert not (disagree & ~_boundary(out_masks)).any()  # only on the lesion's edge
    assert disagree.float().mean() < 0.01


def test_output_keeps_shapes_dtypes_and_binary_masks():
    images, masks = torch.rand(5, 3, 20, 28), _blobs(5, 20, 28)
    out_images, out_masks = BatchSegmentationAugmentation("basic", affine=1.0)(images, masks)
    assert out_images.shape == images.shape and out_images.dtype == torch.float32
    assert out_masks.shape == masks.shape and out_masks.dtype == torch.float32
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    assert out_images.min() >= 0 and out_images.max() <= 1
    assert out_masks.sum() > 0 and (out_images == 0).any()  # zeros moved in from outside


def test_the_affine_map_matches_albumentations_on_a_non_square_image():
    height, width = 48, 80
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = (np.sin(xx / 7) * np.cos(yy / 5) + 1) / 2
    angle, scale_x, scale_y, shift_x, shift_y = 12.0, 1.08, 0.93, 0.05, -0.04
    matrix = album_geometric.create_affine_transformation_matrix(
        {"x": shift_x * width, "y": shift_y * height},
        {"x": 0.0, "y": 0.0},
        {"x": scale_x, "y": scale_y},
        angle,
        album_geometric.center((height, width)),
    )
    expected = cv2.warpAffine(
        image, matrix[:2], (width, height), flags=cv2.INTER_LINEAR, borderValue=0
    )
    params = [torch.tensor([v]) for v in (angle, scale_x, scale_y, shift_x, shift_y)]
    grid = F.affine_grid(affine_theta(*params, height, width), [1, 1, height, width], False)
    ours = F.grid_sample(torch.from_numpy(image)[None, None], grid, align_corners=False)
    np.testing.assert_allclose(ours[0, 0].numpy(), expected, atol=1e-4)


def test_a_seed_repeats_its_draws_without_touching_the_global_rng():
    images, masks = torch.rand(6, 1, 16, 16), _blobs(6, 16, 16)
    global_state = torch.get_rng_state()
    first = BatchSegmentationAugmentation("basic", seed=5)(images, masks)
    assert torch.equal(torch.get_rng_state(), global_state)
    again = BatchSegmentationAugmentation("basic", seed=5)
    assert all(map(torch.equal, again(images, masks), first))
    assert not torch.equal(again(images, masks)[0], first[0])  # the stream goes on
    again.reseed()
    assert all(map(torch.equal, again(images, masks), first))
    other = BatchSegmentationAugmentation("basic", seed=6)(images, masks)
    assert not torch.equal(other[0], first[0])


def test_elastic_is_refused_as_cpu_only():
    with pytest.raises(ValueError, match="elastic.*CPU only"):
        BatchSegmentationAugmentation("elastic")


def test_mismatched_batches_are_refused():
    augment = BatchSegmentationAugmentation("basic")
    with pytest.raises(ValueError, match="differ in batch size"):
        augment(torch.rand(2, 1, 8, 8), torch.zeros(3, 1, 8, 8))
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        augment(torch.rand(2, 1, 8, 8), torch.zeros(2, 8, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_batch_gets_the_same_draws_as_on_the_cpu():
    masks = _blobs(6, 24, 32)
    images = torch.rand(6, 3, 24, 32)
    on_cpu = BatchSegmentationAugmentation("basic", seed=2)(images, masks)
    on_gpu = BatchSegmentationAugmentation("basic", seed=2)(images.cuda(), masks.cuda())
    assert on_gpu[0].is_cuda and on_gpu[1].is_cuda
    torch.testing.assert_close(on_gpu[0].cpu(), on_cpu[0], atol=1e-4, rtol=0)
    assert (on_gpu[1].cpu() != on_cpu[1]).float().mean() < 0.001  # nearest ties may differ


# --- the datamodules ---------------------------------------------------------------------------


def _lung(lung_dir, **kwargs) -> LungCTDataModule:
    kwargs = {"image_size": 48, "num_workers": 0, "batch_size": 4, **kwargs}
    return LungCTDataModule(lung_dir, **kwargs)


def _ham(ham_dir, **kwargs) -> HAM10000DataModule:
    kwargs = {"image_size": [40, 56], "num_workers": 0, "batch_size": 4, **kwargs}
    return HAM10000DataModule(ham_dir, task="segmentation", **kwargs)


@pytest.mark.parametrize("make", [_lung, _ham])
def test_gpu_augmentation_needs_the_cache(make, tmp_path):
    with pytest.raises(ValueError, match="gpu_augmentation: true .*needs cache: true"):
        make(tmp_path, gpu_augmentation=True)


@pytest.mark.parametrize("make", [_lung, _ham])
def test_gpu_augmentation_refuses_the_elastic_preset(make, tmp_path):
    with pytest.raises(ValueError, match="elastic runs on the CPU only.*none or basic"):
        make(tmp_path, cache=True, gpu_augmentation=True, augmentation="elastic")


def test_the_train_loader_leaves_augmentation_to_the_device(lung_dir):
    deferred = _lung(lung_dir, cache=True, gpu_augmentation=True, augmentation="basic")
    plain = _lung(lung_dir, cache=True, augmentation="none")
    for datamodule in (deferred, plain):
        datamodule.setup("fit")
    ours = next(iter(deferred.train_dataloader()))
    reference = {s["path"]: s for s in plain.datasets["train"]}  # shuffled: match by path
    for path, image, mask in zip(ours["path"], ours["image"], ours["mask"], strict=True):
        assert torch.equal(image, reference[path]["image"])
        assert torch.equal(mask, reference[path]["mask"])


def _batch(dataset, size: int = 4) -> dict:
    return torch.utils.data.default_collate([dataset[i] for i in range(size)])


@pytest.mark.parametrize("make", [_lung, _ham])
def test_the_hook_augments_training_batches_only(make, lung_dir, ham_dir):
    datamodule = make(lung_dir if make is _lung else ham_dir, cache=True, gpu_augmentation=True)
    datamodule.setup("fit")
    batch = _batch(datamodule.datasets["train"])
    datamodule.trainer = SimpleNamespace(training=False)
    assert datamodule.on_after_batch_transfer(batch, 0) is batch
    datamodule.trainer = SimpleNamespace(training=True)
    augmented = datamodule.on_after_batch_transfer(batch, 0)
    assert augmented["path"] == batch["path"]
    assert augmented["image"].shape == batch["image"].shape
    assert not torch.equal(augmented["mask"], batch["mask"])  # seed 42 moves some of these four


class _BatchRecorder(L.LightningModule):
    """Keeps every training and validation batch it is given; learns nothing useful."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches: dict[str, list[dict]] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.batches["train"].append(batch)
        return (self.weight * batch["image"].mean()).sum()

    def validation_step(self, batch, batch_idx):
        self.batches["val"].append(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_augments_training_batches_and_validates_on_unaugmented_ones(lung_dir):
    datamodule = _lung(lung_dir, cache=True, gpu_augmentation=True)
    recorder = _BatchRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(recorder, datamodule=datamodule)
    cached = {}
    for stage in ("train", "val"):
        cached |= {s["path"]: s for s in datamodule.datasets[stage]}
    moved = []
    for batch in recorder.batches["train"]:
        for path, mask in zip(batch["path"], batch["mask"], strict=True):
            moved.append(not torch.equal(mask, cached[path]["mask"]))
    assert len(moved) == 8 and any(moved)
    (val_batch,) = recorder.batches["val"]
    for index, path in enumerate(val_batch["path"]):
        assert torch.equal(val_batch["image"][index], cached[path]["image"])
        assert torch.equal(val_batch["mask"][index], cached[path]["mask"])


def test_no_lightning_module_overrides_the_datamodule_hook():
    # Lightning calls only one on_after_batch_transfer: the datamodule's must stay the one
    modules = [
        obj
        for _, obj in inspect.getmembers(medvision.models, inspect.isclass)
        if issubclass(obj, L.LightningModule)
    ]
    assert modules
    for module in modules:
        assert module.on_after_batch_transfer is L.LightningModule.on_after_batch_transfer, module


def test_fit_from_the_cli_with_gpu_augmentation(lung_dir, tmp_path, monkeypatch):
    from medvision.cli import main

    calls = []
    forward = BatchSegmentationAugmentation.forward

    def counted(self, images, masks):
        calls.append(images.shape[0])
        return forward(self, images, masks)

    monkeypatch.setattr(BatchSegmentationAugmentation, "forward", counted)
    main(
        [
            "fit",
            *unet_run_args(tmp_path, lung_dir, *fast_trainer_args(tmp_path)),
            "--data.init_args.cache=true",
            "--data.init_args.gpu_augmentation=true",
        ]
    )
    assert calls == [4]  # fast_dev_run: one training batch of 4; the validation batch is not
