import numpy as np
import pytest
import tifffile
import torch

from medvision.data import LungCTDataModule, SyntheticLungCTDataModule
from medvision.data.splits import split_indices
from medvision.data.synthetic import write_lung_ct


def make_dm(data_dir, **kwargs):
    kwargs = {"image_size": 64, "num_workers": 0, "batch_size": 4, **kwargs}
    return LungCTDataModule(data_dir, **kwargs)


def test_samples_are_dicts_of_the_documented_shapes(lung_dir):
    dm = make_dm(lung_dir, image_size=(48, 80), augmentation="none")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 48, 80) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 1, 48, 80)
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    assert batch["original_size"].tolist()[0] == [64, 64]
    assert batch["path"][0].endswith(".tif") and "2d_images" in batch["path"][0]


def test_three_channel_mode_for_rgb_encoders(lung_dir):
    dm = make_dm(lung_dir, in_channels=3)
    dm.setup("fit")
    assert dm.datasets["train"][0]["image"].shape == (3, 64, 64)
    assert dm.in_channels == 3 and dm.num_classes == 1


@pytest.mark.parametrize(("dtype", "mask_max"), [("uint16", 255), ("int16", 1), ("float32", 1)])
def test_any_tiff_dtype_loads_and_matches_uint8(tmp_path, dtype, mask_max):
    write_lung_ct(tmp_path / "u8", num_slices=3, seed=5)
    write_lung_ct(tmp_path / dtype, num_slices=3, seed=5, dtype=dtype, mask_max=mask_max)
    a, b = (
        make_dm(tmp_path / d, augmentation="none", val_fraction=0, test_fraction=0)
        for d in ("u8", dtype)
    )
    a.setup("fit"), b.setup("fit")
    sa, sb = a.datasets["train"][0], b.datasets["train"][0]
    torch.testing.assert_close(sa["mask"], sb["mask"])
    torch.testing.assert_close(sa["image"], sb["image"], atol=2 / 255, rtol=0)


def test_split_is_seeded_disjoint_and_complete():
    a = split_indices(100, 0.1, 0.2, seed=3)
    assert {k: len(v) for k, v in a.items()} == {"train": 70, "val": 10, "test": 20}
    assert len(np.unique(np.concatenate(list(a.values())))) == 100
    b = split_indices(100, 0.1, 0.2, seed=3)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (split_indices(100, 0.1, 0.2, seed=4)["test"] == a["test"]).all()


def test_kfold_folds_partition_the_non_test_items_and_keep_test_fixed():
    folds = [split_indices(50, test_fraction=0.2, seed=1, num_folds=4, fold=k) for k in range(4)]
    vals = np.concatenate([f["val"] for f in folds])
    assert len(vals) == 40 and len(np.unique(vals)) == 40
    assert all((f["test"] == folds[0]["test"]).all() for f in folds)
    for f in folds:
        assert not set(f["val"]) & set(f["train"]) and len(f["train"]) == 30


def test_kfold_in_the_datamodule(lung_dir):
    seen = set()
    for fold in range(3):
        dm = make_dm(lung_dir, num_folds=3, fold=fold, test_fraction=0.2)
        dm.setup("fit")
        seen |= set(dm.datasets["val"].image_paths)
    assert len(seen) == 16  # 20 slices minus the 4 test slices, each validated exactly once


def test_bad_fold_is_rejected():
    with pytest.raises(ValueError, match="fold"):
        split_indices(10, num_folds=3, fold=3)


def test_augmentation_moves_image_and_mask_together(lung_dir):
    dm = make_dm(lung_dir, augmentation="elastic")
    dm.setup("fit")
    for i in range(8):
        sample = dm.datasets["train"][i % 4]
        image, mask = sample["image"][0], sample["mask"][0] > 0.5
        # lungs are dark (about 0.1) in the phantom; the body around them is bright (0.55)
        assert image[mask].mean() < 0.3 < image[~mask & (image > 0.3)].mean()


def test_each_worker_draws_its_own_augmentations(lung_dir):
    dm = make_dm(lung_dir, augmentation="basic", num_workers=2, batch_size=1)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    dataset.image_paths = dataset.image_paths[:1] * 8  # one slice, eight draws
    dataset.mask_paths = dataset.mask_paths[:1] * 8
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2)
    images = [b["image"] for b in loader]
    # workers 0 and 1 alternate batches; with a shared RNG, draws 2k and 2k+1 would be identical
    # (one pair alone can match by chance: no flip and no affine, about 5%)
    assert any(not torch.equal(images[k], images[k + 1]) for k in range(0, 8, 2))


def test_synthetic_datamodule_writes_once_and_is_deterministic(tmp_path):
    dm = SyntheticLungCTDataModule(
        tmp_path / "syn", num_slices=6, slice_size=32, image_size=32, num_workers=0
    )
    dm.prepare_data()
    first = tifffile.imread(tmp_path / "syn/2d_images/ID_0003_Z_0021.tif")
    again = write_lung_ct(tmp_path / "other", num_slices=6, size=32, seed=42)
    np.testing.assert_array_equal(first, tifffile.imread(again[3]))
    (tmp_path / "syn/2d_images/ID_0003_Z_0021.tif").write_bytes(b"kept")
    dm.prepare_data()  # does not overwrite what is there
    assert (tmp_path / "syn/2d_images/ID_0003_Z_0021.tif").read_bytes() == b"kept"


# --- bad input: every error names the file or folder and says what to do --------------------


def test_missing_data_dir_points_to_the_layout_and_the_quickstart(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*2d_images.*quickstart.yaml"):
        make_dm(tmp_path / "nowhere").setup("fit")


def test_empty_image_folder(tmp_path):
    (tmp_path / "2d_images").mkdir()
    (tmp_path / "2d_masks").mkdir()
    with pytest.raises(FileNotFoundError, match="2d_images holds no .tif"):
        make_dm(tmp_path).setup("fit")


def test_missing_mask_partner_is_named(lung_dir):
    (lung_dir / "2d_masks/ID_0004_Z_0028.tif").unlink()
    with pytest.raises(ValueError, match=r"ID_0004_Z_0028.tif: no mask .*Add the mask"):
        make_dm(lung_dir).setup("fit")


def test_mask_without_image_is_named(lung_dir):
    (lung_dir / "2d_images/ID_0004_Z_0028.tif").unlink()
    with pytest.raises(ValueError, match=r"2d_masks/ID_0004_Z_0028.tif: no image"):
        make_dm(lung_dir).setup("fit")


def test_truncated_tiff_is_named_before_training(lung_dir):
    path = lung_dir / "2d_images/ID_0002_Z_0014.tif"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(
        ValueError, match=r"1 bad image/mask pairs:\n.*ID_0002_Z_0014.tif.*truncated"
    ):
        make_dm(lung_dir).setup("fit")


def test_mask_of_another_size_is_named(lung_dir):
    tifffile.imwrite(lung_dir / "2d_masks/ID_0001_Z_0007.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(
        ValueError, match=r"ID_0001_Z_0007.tif: mask is 32x32 but its image .* 64x64"
    ):
        make_dm(lung_dir).setup("fit")


def test_all_problems_are_reported_together(lung_dir):
    for name in ("ID_0001_Z_0007.tif", "ID_0002_Z_0014.tif"):
        (lung_dir / "2d_masks" / name).write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="2 bad image/mask pairs") as err:
        make_dm(lung_dir).setup("fit")
    assert "ID_0001_Z_0007" in str(err.value) and "ID_0002_Z_0014" in str(err.value)


def test_predict_without_predict_dir_says_which_flag(lung_dir):
    with pytest.raises(ValueError, match="--data.predict_dir"):
        make_dm(lung_dir).setup("predict")


def test_predict_folder_of_mixed_images_needs_no_data_dir(tmp_path, lung_dir):
    from PIL import Image

    folder = tmp_path / "incoming"
    folder.mkdir()
    Image.fromarray(np.zeros((50, 70, 3), np.uint8)).save(folder / "a.png")
    tifffile.imwrite(folder / "b.tif", np.zeros((90, 40), np.uint16))
    dm = make_dm(tmp_path / "does_not_exist", predict_dir=folder)
    dm.setup("predict")
    sizes = [s["original_size"].tolist() for s in dm.datasets["predict"]]
    assert sizes == [[50, 70], [90, 40]]
    assert all(s["image"].shape == (1, 64, 64) for s in dm.datasets["predict"])


@pytest.mark.realdata
def test_real_lung_slices_load(real_lung_dir):
    dm = make_dm(real_lung_dir, augmentation="basic")
    dm.setup("fit")
    assert sum(len(d) for d in dm.datasets.values()) == len(
        list((real_lung_dir / "2d_images").iterdir())
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["mask"].mean() > 0.05  # real lung masks cover a good part of the slice


def test_augmentation_follows_torch_seed_without_workers(lung_dir):
    def first_draws(seed):
        torch.manual_seed(seed)
        dm = make_dm(lung_dir, augmentation="elastic", num_workers=0, batch_size=1)
        dm.setup("fit")
        return torch.stack([dm.datasets["train"][0]["image"] for _ in range(3)])

    torch.testing.assert_close(first_draws(7), first_draws(7))
    assert not torch.equal(first_draws(7), first_draws(8))
