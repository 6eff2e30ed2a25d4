"""ChestXrayDataModule on synthetic ImageFolder data: classes, splits, file kinds, errors."""

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medvision.data import ChestXrayDataModule, SyntheticChestXrayDataModule
from medvision.data.splits import stratified_split
from medvision.data.synthetic import CHEST_XRAY_CLASSES
from medvision.data.transforms import classification_transform


def make_dm(data_dir, **kwargs) -> ChestXrayDataModule:
    kwargs = {"image_size": 32, "num_workers": 0, "batch_size": 4, **kwargs}
    return ChestXrayDataModule(data_dir, **kwargs)


def test_classes_come_from_the_folders_sorted(chest_dir):
    dm = make_dm(chest_dir)
    assert dm.class_names == sorted(CHEST_XRAY_CLASSES)
    assert dm.num_classes == 4


def test_samples_are_dicts_at_image_size_for_every_stored_format(chest_dir):
    for channels in (1, 3):
        dm = make_dm(chest_dir, in_channels=channels, image_size=(32, 40))
        dm.setup("fit")
        dataset = dm.datasets["train"]
        # the generator rotates 8-bit gray, 16-bit, RGB jpg and RGBA png: the first four files
        for index in range(4):
            sample = dataset[index]
            assert sample["image"].shape == (channels, 32, 40)
            assert sample["image"].dtype == torch.float32
            assert sample["image"].min() >= 0.0 and sample["image"].max() <= 1.0
            assert sample["label"].dtype == torch.int64
        assert {Path(dataset[i]["path"]).suffix for i in range(4)} == {".png", ".jpg"}


def test_folder_splits_are_used_as_they_are(chest_dir):
    dm = make_dm(chest_dir)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 46, "val": 10, "test": 10}
    assert dm.class_counts == {"COVID19": 6, "NORMAL": 20, "PNEUMONIA": 16, "TUBERCULOSIS": 4}
    label = dm.datasets["val"][0]["label"]
    assert "/val/" in dm.datasets["val"][0]["path"]
    assert dm.class_names[label] in dm.datasets["val"][0]["path"]


def test_val_folder_as_test_set_and_validation_carved_from_train(chest_dir):
    dm = make_dm(chest_dir, test_split="val", val_fraction=0.25)
    dm.setup("fit")
    test_paths = dm.datasets["test"].image_paths
    assert all("/val/" in str(p) for p in test_paths) and len(test_paths) == 10
    val_paths = dm.datasets["val"].image_paths
    assert all("/train/" in str(p) for p in val_paths)
    assert not set(val_paths) & set(dm.datasets["train"].image_paths)
    # stratified: every class is in validation, in proportion
    assert Counter(dm.datasets["val"].labels) == {0: 2, 1: 5, 2: 4, 3: 1}
    assert sum(dm.class_counts.values()) == 46 - 12


def test_merge_val_into_train_resplits_stratified(chest_dir):
    dm = make_dm(chest_dir, merge_val_into_train=True, val_fraction=0.2)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) + len(val) == 56
    assert any("/val/" in str(p) for p in train.image_paths)
    assert set(val.labels) == {0, 1, 2, 3}
    assert len(dm.datasets["test"]) == 10


def test_class_counts_need_setup(chest_dir):
    with pytest.raises(RuntimeError, match="after setup"):
        make_dm(chest_dir).class_counts  # noqa: B018


def test_stratified_split_holds_out_every_class_in_proportion():
    labels = [0] * 50 + [1] * 30 + [2] * 2
    rest, held = stratified_split(labels, 0.2, seed=3)
    held_labels = Counter(np.asarray(labels)[held].tolist())
    assert held_labels == {0: 10, 1: 6, 2: 1}
    assert sorted(np.concatenate([rest, held]).tolist()) == list(range(82))
    again_rest, again_held = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(held, again_held)


def test_predict_dir_with_class_folders_keeps_the_truth(chest_dir):
    dm = make_dm(chest_dir, predict_dir=chest_dir / "test")
    dm.setup("predict")
    sample = dm.datasets["predict"][0]
    assert "label" in sample and len(dm.datasets["predict"]) == 10


def test_predict_dir_with_loose_images(chest_dir, tmp_path):
    loose = tmp_path / "loose"
    (loose / "nested").mkdir(parents=True)
    for i, path in enumerate(sorted((chest_dir / "test" / "NORMAL").iterdir())[:3]):
        shutil.copy(path, (loose if i else loose / "nested") / path.name)
    dm = make_dm(chest_dir, predict_dir=loose)
    dm.setup("predict")
    assert len(dm.datasets["predict"]) == 3
    assert "label" not in dm.datasets["predict"][0]


def test_synthetic_datamodule_knows_its_classes_before_prepare_data(tmp_path):
    dm = SyntheticChestXrayDataModule(tmp_path / "syn", scale=0.25, image_px=32, image_size=32)
    assert dm.class_names == sorted(CHEST_XRAY_CLASSES)  # wrote the folders on first use
    first = (tmp_path / "syn/train/NORMAL/normal_0000.png").read_bytes()
    dm.prepare_data()  # already there: kept as it is
    assert (tmp_path / "syn/train/NORMAL/normal_0000.png").read_bytes() == first


@pytest.mark.parametrize("augmentation", ["none", "basic", "strong"])
def test_classification_presets_give_the_target_size(augmentation):
    image = np.random.default_rng(0).random((50, 70, 1), dtype=np.float32)
    out = classification_transform((32, 48), augmentation)(image=image)["image"]
    assert out.shape == (32, 48, 1)


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="'none', 'basic' or 'strong'"):
        classification_transform(32, "elastic")


# --- bad input: every error names the file or folder and says what to do --------------------


def test_missing_data_dir_points_to_the_layout_and_the_quickstart(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*<CLASS>.*quickstart_chestxray.yaml"):
        make_dm(tmp_path / "nowhere").class_names  # noqa: B018


def test_unreadable_and_zero_byte_images_are_named_together(chest_dir):
    garbage = chest_dir / "train" / "NORMAL" / "garbage.png"
    garbage.write_bytes(b"this is not a png")
    empty = chest_dir / "val" / "COVID19" / "empty.jpg"
    empty.write_bytes(b"")
    truncated = chest_dir / "test" / "PNEUMONIA" / "pneumonia_0000.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ValueError, match="3 unreadable images") as error:
        make_dm(chest_dir).setup("fit")
    message = str(error.value)
    assert str(garbage) in message and str(truncated) in message
    assert f"{empty}: is empty (0 bytes)" in message


def test_empty_class_folder_is_named(chest_dir):
    for path in (chest_dir / "val" / "TUBERCULOSIS").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"val/TUBERCULOSIS: class folder holds no images"):
        make_dm(chest_dir).setup("fit")


def test_file_that_is_not_an_image_is_named(chest_dir):
    notes = chest_dir / "train" / "PNEUMONIA" / "notes.txt"
    notes.write_text("reader comments")
    (chest_dir / "train" / "PNEUMONIA" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored
    with pytest.raises(ValueError, match="files that are not images") as error:
        make_dm(chest_dir).setup("fit")
    assert str(notes) in str(error.value) and ".DS_Store" not in str(error.value)


def test_class_missing_from_a_split_is_named(chest_dir):
    shutil.rmtree(chest_dir / "test" / "COVID19")
    with pytest.raises(FileNotFoundError, match=r"test/COVID19: missing"):
        make_dm(chest_dir).class_names  # noqa: B018


def test_loose_file_in_a_split_folder_is_named(chest_dir):
    stray = chest_dir / "train" / "stray.png"
    Image.new("L", (8, 8)).save(stray)
    with pytest.raises(ValueError, match="outside a class folder") as error:
        make_dm(chest_dir).setup("fit")
    assert str(stray) in str(error.value)


def test_group_pattern_keeps_each_patient_out_of_validation_or_in_it_whole(chest_dir):
    for class_dir in (chest_dir / "train").iterdir():
        for k, path in enumerate(sorted(class_dir.iterdir())):
            path.rename(class_dir / f"P{k % 7:03d}_{path.name}")  # patients span classes
    dm = make_dm(chest_dir, test_split="val", val_fraction=0.25, group_pattern=r"^(P\d+)_")
    dm.setup("fit")

    def patients(split):
        return {p.name.split("_")[0] for p in dm.datasets[split].image_paths}

    assert patients("val") and patients("train") and not patients("val") & patients("train")
    ungrouped = make_dm(chest_dir, test_split="val", val_fraction=0.25)
    ungrouped.setup("fit")
    train = {p.name.split("_")[0] for p in ungrouped.datasets["train"].image_paths}
    val = {p.name.split("_")[0] for p in ungrouped.datasets["val"].image_paths}
    assert train & val  # what the pattern prevents
