"""NIfTI in and out, and the volume slice datamodule: orientation, splits by volume, errors."""

import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

nib = pytest.importorskip("nibabel")

from medvision.apply import VolumePredictionWriter  # noqa: E402
from medvision.data.io import ImageReadError  # noqa: E402
from medvision.data.nifti import (  # noqa: E402
    canonical_shape,
    check_same_geometry,
    load_volume,
    write_label_volume,
)
from medvision.data.synthetic_volumes import (  # noqa: E402
    SyntheticVolumeSliceDataModule,
    ct_phantom_hu,
    write_nifti_volumes,
)
from medvision.data.volumes import VolumeSliceDataModule  # noqa: E402

from .conftest import CONFIGS, fast_trainer_args  # noqa: E402

#: voxel (i, j, k) -> world: x = -2.5 k + 10, y = -0.8 i + 20, z = 0.7 j - 5. Axes permuted
#: and flipped: the canonical (RAS) array is the stored one transposed to (k, i, j), then
#: flipped along its first two axes.
PERMUTED = np.array([[0, 0, -2.5, 10], [-0.8, 0, 0, 20], [0, 0.7, 0, -5], [0, 0, 0, 1.0]])


def save(path: Path, data: np.ndarray, affine: np.ndarray = PERMUTED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def as_canonical(stored: np.ndarray) -> np.ndarray:
    """What PERMUTED's stored array looks like in RAS, worked out by hand (see PERMUTED)."""
    return stored.transpose(2, 0, 1)[::-1, ::-1, :]


def test_load_volume_reorients_to_ras(tmp_path):
    stored = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    volume, info = load_volume(save(tmp_path / "a.nii.gz", stored))
    np.testing.assert_array_equal(volume, as_canonical(stored))
    assert volume.dtype == np.int16 and info.shape == (6, 4, 5) == canonical_shape(info.path)
    assert info.original_shape == (4, 5, 6) and info.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert nib.aff2axcodes(info.affine) == ("R", "A", "S")
    np.testing.assert_allclose(info.original_affine, PERMUTED)


def test_label_volume_round_trips_onto_the_inputs_grid(tmp_path):
    hu, _ = ct_phantom_hu((10, 12, 6), np.random.default_rng(0))
    source = save(tmp_path / "ct.nii.gz", hu)
    header = nib.load(source).header
    header.set_qform(PERMUTED, code=1)  # like a scanner's file: both forms, codes 1 and 2
    header.set_sform(PERMUTED, code=2)
    nib.save(nib.Nifti1Image(hu, PERMUTED, header), source)
    volume, info = load_volume(source)
    labels = (volume > -300).astype(np.uint8)  # the body, in canonical orientation
    write_label_volume(tmp_path / "out/ct.nii.gz", labels, source)
    written = nib.load(tmp_path / "out/ct.nii.gz")
    assert written.shape == (10, 12, 6) and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, PERMUTED)
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 2
    # every voxel is back where it was in the input file
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), (hu > -300).astype(np.uint8))
    assert not list((tmp_path / "out").glob(".partial-*"))  # written atomically


def test_labels_of_the_wrong_shape_are_refused(tmp_path):
    source = save(tmp_path / "ct.nii", np.zeros((4, 5, 6), np.int16))
    with pytest.raises(ValueError, match=r"canonical shape \(4, 5, 6\) do not fit .*ct.nii"):
        write_label_volume(tmp_path / "out.nii.gz", np.zeros((4, 5, 6), np.uint8), source)


def test_a_4d_volume_is_refused(tmp_path):
    path = save(tmp_path / "bold.nii.gz", np.zeros((4, 4, 3, 2), np.float32), np.eye(4))
    with pytest.raises(ImageReadError, match=r"bold.nii.gz: is 4D \(shape \(4, 4, 3, 2\)\).*"):
        load_volume(path)
    with pytest.raises(ImageReadError, match="four_to_three"):
        canonical_shape(path)


def test_mask_of_another_shape_names_both_files_and_shapes(tmp_path):
    _, image = load_volume(save(tmp_path / "img.nii", np.zeros((4, 5, 6), np.int16)))
    _, mask = load_volume(save(tmp_path / "msk.nii", np.zeros((4, 5, 5), np.uint8)))
    with pytest.raises(
        ImageReadError,
        match=r"msk.nii: mask has shape \(4, 5, 5\) but its image .*img.nii has "
        r"shape \(4, 5, 6\)",
    ):
        check_same_geometry(image, mask)


def test_mask_of_another_affine_names_both_files_and_affines(tmp_path):
    shifted = PERMUTED.copy()
    shifted[0, 3] = 12.0
    _, image = load_volume(save(tmp_path / "img.nii", np.zeros((4, 5, 6), np.int16)))
    _, mask = load_volume(save(tmp_path / "msk.nii", np.zeros((4, 5, 6), np.uint8), shifted))
    with pytest.raises(ImageReadError) as error:
        check_same_geometry(image, mask)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'msk.nii'}: mask has affine [[")
    assert f"its image {tmp_path / 'img.nii'} has affine" in message
    assert "12." in message and "10." in message and "voxel grid" in message


# --- the slice datamodule ---------------------------------------------------------------------


@pytest.fixture
def volume_dir(tmp_path) -> Path:
    """6 synthetic CT volumes (32x32x8, flipped LPS-style affine) with masks."""
    write_nifti_volumes(tmp_path / "volumes", num_volumes=6, shape=(32, 32, 8), seed=0)
    return tmp_path / "volumes"


def make_dm(data_dir, **kwargs) -> VolumeSliceDataModule:
    kwargs = {"image_size": 32, "num_workers": 0, "batch_size": 4, **kwargs}
    return VolumeSliceDataModule(data_dir, **kwargs)


def volumes_of(dataset) -> set[str]:
    return {record["volume_path"] for record in dataset.slices.records}


@pytest.mark.parametrize("fold", [None, 0, 1])
def test_splits_are_by_volume(volume_dir, fold):
    folds = {} if fold is None else {"num_folds": 2, "fold": fold}
    dm = make_dm(volume_dir, val_fraction=0.2, test_fraction=0.2, **folds)
    dm.setup("fit")
    train, val, test = (volumes_of(dm.datasets[s]) for s in ("train", "val", "test"))
    assert train and val and test
    assert not (train & val or train & test or val & test)  # no volume on two sides
    assert len(train | val | test) == 6
    assert all(len(d) == 8 * len(volumes_of(d)) for d in dm.datasets.values())  # whole volumes


def test_samples_have_the_documented_keys_shapes_and_values(volume_dir):
    dm = make_dm(volume_dir, augmentation="none", intensity_window=(-1000, 400), in_channels=3)
    dm.setup("fit")
    sample = dm.datasets["train"][3]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (1, 32, 32) and set(sample["mask"].unique().tolist()) <= {0, 1}
    assert sample["original_size"].tolist() == [32, 32] and sample["slice_axis"] == 2
    assert sample["num_slices"] == 8 and sample["path"] == sample["volume_path"]
    # image_size is the slice size: the values are the windowed HU of the canonical slice
    volume, _ = load_volume(sample["volume_path"])
    expected = np.clip((volume[:, :, sample["slice_index"]] + 1000) / 1400, 0, 1)
    np.testing.assert_allclose(sample["image"][0].numpy(), expected, atol=1e-3)
    mask, _ = load_volume(sample["mask_path"])
    np.testing.assert_array_equal(sample["mask"][0].numpy(), mask[:, :, sample["slice_index"]])


def test_empty_slices_are_sampled_in_train_only_and_seeded(volume_dir):
    dm = make_dm(volume_dir, empty_slice_fraction=0.5)
    dm.setup("fit")
    for stage, dataset in dm.datasets.items():
        for volume in volumes_of(dataset):
            mask, _ = load_volume(volume.replace("images", "masks"))
            filled = set(np.flatnonzero(mask.any(axis=(0, 1))).tolist())
            kept = {r["slice_index"] for r in dataset.slices.records if r["volume_path"] == volume}
            if stage != "train":
                assert kept == set(range(8))
                continue
            empty = 8 - len(filled)
            assert filled <= kept and len(kept) == len(filled) + round(0.5 * empty)
    again = make_dm(volume_dir, empty_slice_fraction=0.5)
    again.setup("fit")
    assert again.datasets["train"].slices.records == dm.datasets["train"].slices.records


def test_decathlon_and_kaggle_layouts(tmp_path):
    write_nifti_volumes(
        tmp_path / "dec", 3, (16, 16, 4), image_dirname="imagesTr", mask_dirname="labelsTr"
    )
    (tmp_path / "dec/imagesTr/._vol_000.nii.gz").write_bytes(b"macOS resource fork")
    dm = make_dm(
        tmp_path / "dec",
        image_dirname="imagesTr",
        mask_dirname="labelsTr",
        image_size=16,
        val_fraction=0,
        test_fraction=0,
    )
    dm.setup("fit")
    assert len(volumes_of(dm.datasets["train"])) == 3
    write_nifti_volumes(
        tmp_path / "kaggle",
        3,
        (16, 16, 4),
        image_dirname="3d_images",
        mask_dirname="3d_images",
        image_prefix="IMG_",
        mask_prefix="MASK_",
    )
    dm = make_dm(
        tmp_path / "kaggle",
        image_dirname="3d_images",
        mask_dirname="3d_images",
        image_prefix="IMG_",
        mask_prefix="MASK_",
        image_size=16,
        val_fraction=0,
        test_fraction=0,
    )
    dm.setup("fit")
    assert {Path(v).name for v in volumes_of(dm.datasets["train"])} == {
        "IMG_vol_000.nii.gz",
        "IMG_vol_001.nii.gz",
        "IMG_vol_002.nii.gz",
    }
    with pytest.raises(ValueError, match="different prefixes"):
        make_dm(tmp_path / "kaggle", image_dirname="3d_images", mask_dirname="3d_images")


# --- bad input --------------------------------------------------------------------------------


def test_bad_volumes_are_reported_together_or_excluded(volume_dir):
    (volume_dir / "masks/vol_001.nii.gz").unlink()
    mask = nib.load(volume_dir / "masks/vol_002.nii.gz")
    save(volume_dir / "masks/vol_002.nii.gz", np.asanyarray(mask.dataobj) * 2, mask.affine)
    with pytest.raises(ValueError, match="2 bad volume pairs") as error:
        make_dm(volume_dir).setup("fit")
    message = str(error.value)
    assert "vol_001.nii.gz: no mask vol_001.nii[.gz]" in message
    assert "masks/vol_002.nii.gz: mask holds labels 0, 2; only binary masks" in message
    dm = make_dm(volume_dir, bad_files="exclude", val_fraction=0, test_fraction=0)
    dm.setup("fit")
    assert len(volumes_of(dm.datasets["train"])) == 4
    excluded = sorted(Path(b.path).parts[-2:] for b in dm.excluded_files)
    assert excluded == [("images", "vol_001.nii.gz"), ("masks", "vol_002.nii.gz")]


def test_mask_off_the_image_grid_and_4d_image_are_named(volume_dir):
    image = nib.load(volume_dir / "images/vol_000.nii.gz")
    save(volume_dir / "masks/vol_000.nii.gz", np.zeros((32, 32, 8), np.uint8), np.eye(4))
    save(volume_dir / "images/vol_001.nii.gz", np.zeros((32, 32, 8, 2), np.int16), image.affine)
    with pytest.raises(ValueError, match="2 bad volume pairs") as error:
        make_dm(volume_dir).setup("fit")
    assert "masks/vol_000.nii.gz: mask has affine" in str(error.value)
    assert "images/vol_001.nii.gz: is 4D" in str(error.value)


def test_memory_limit_is_checked_before_decoding(volume_dir):
    with pytest.raises(ValueError, match=r"48 slices .* above cache_limit_gb=1e-06"):
        make_dm(volume_dir, cache_limit_gb=1e-6).setup("fit")


def test_missing_folder_points_to_the_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagesTr.*quickstart_volumes.yaml"):
        make_dm(tmp_path / "nowhere").setup("fit")


# --- fit and predict --------------------------------------------------------------------------


class Echo(L.LightningModule):
    """Predicts its input: probabilities = the windowed image, so the mask is body, not air."""

    threshold = 0.5

    def predict_step(self, batch, batch_idx):
        out = {key: value for key, value in batch.items() if key != "image"}
        out["probs"] = batch["image"][:, :1]
        return out


def test_predicted_slices_land_back_on_the_inputs_voxels(tmp_path):
    hu, _ = ct_phantom_hu((20, 24, 6), np.random.default_rng(1))
    save(tmp_path / "in/ct.nii.gz", hu)  # permuted and flipped axes
    (tmp_path / "in/notes.txt").write_text("not a volume")
    size = canonical_shape(tmp_path / "in/ct.nii.gz")[:2]  # (6, 20): no resizing
    dm = make_dm(
        tmp_path / "unused",
        predict_dir=tmp_path / "in",
        image_size=size,
        intensity_window=(-1000, 400),
    )
    writer = VolumePredictionWriter(output_dir=str(tmp_path / "out"))
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[writer],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(Echo(), datamodule=dm, return_predictions=False)
    assert len(dm.datasets["predict"]) == 24  # every slice (canonical axis 2 is stored axis 1)
    written = nib.load(tmp_path / "out/ct.nii.gz")
    assert written.shape == hu.shape
    np.testing.assert_allclose(written.affine, PERMUTED)
    body = np.clip((hu + 1000) / 1400, 0, 1) > 0.5
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), body.astype(np.uint8))
    assert [Path(f.path).name for f in writer.failures] == ["notes.txt"]


def test_incomplete_volume_is_a_failure_not_a_file(tmp_path, volume_dir):
    dm = make_dm(volume_dir, predict_dir=volume_dir)  # the layout: images/ is read
    writer = VolumePredictionWriter(output_dir=str(tmp_path / "out"))
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[writer],
        limit_predict_batches=3,
        enable_progress_bar=False,
    )
    trainer.predict(Echo(), datamodule=dm, return_predictions=False)
    assert [p.name for p in writer.written] == ["vol_000.nii.gz"]  # 8 slices in 2 batches of 4
    assert [Path(f.path).name for f in writer.failures] == ["vol_001.nii.gz"]
    assert "only 4 of its 8 slices" in writer.failures[0].problem
    assert (tmp_path / "out/failed.csv").is_file()


@pytest.mark.slow  # a CLI fit, then predict with a U-Net: seconds
def test_fit_one_batch_through_the_cli_then_predict_volumes(tmp_path, volume_dir, monkeypatch):
    from medvision.cli import main
    from medvision.models import SegmentationModule

    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart_volumes.yaml"),
            f"--data.init_args.data_dir={volume_dir}",
            "--data.init_args.image_size=32",
            *fast_trainer_args(tmp_path),
        ]
    )
    assert not (tmp_path / "data").exists()  # used the given volumes
    model = SegmentationModule(encoder_name="resnet18", encoder_weights=None)
    (tmp_path / "new").mkdir()
    source = shutil.copy(volume_dir / "images/vol_004.nii.gz", tmp_path / "new/case.nii.gz")
    dm = make_dm(volume_dir, predict_dir=tmp_path / "new", intensity_window=(-1000, 400))
    writer = VolumePredictionWriter(output_dir=str(tmp_path / "predicted"))
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[writer],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(model, datamodule=dm, return_predictions=False)
    written, original = nib.load(tmp_path / "predicted/case.nii.gz"), nib.load(source)
    assert written.shape == original.shape == (32, 32, 8)
    np.testing.assert_allclose(written.affine, original.affine)
    assert set(np.unique(np.asanyarray(written.dataobj))) <= {0, 1}
    assert not writer.failures and [p.name for p in writer.written] == ["case.nii.gz"]


def test_synthetic_datamodule_writes_once(tmp_path):
    dm = SyntheticVolumeSliceDataModule(
        tmp_path / "syn", num_volumes=3, volume_shape=(16, 16, 4), image_size=16, num_workers=0
    )
    dm.prepare_data()
    first = (tmp_path / "syn/images/vol_001.nii.gz").read_bytes()
    dm.prepare_data()  # present: used as it is
    assert (tmp_path / "syn/images/vol_001.nii.gz").read_bytes() == first
    again = write_nifti_volumes(tmp_path / "other", 3, (16, 16, 4), seed=42)
    np.testing.assert_array_equal(
        np.asanyarray(nib.load(again[1][0]).dataobj),
        np.asanyarray(nib.load(tmp_path / "syn/images/vol_001.nii.gz").dataobj),
    )
