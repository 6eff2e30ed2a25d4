"""HAM10000DataModule on a tiny synthetic layout: tasks, label maps, lesion-grouped splits."""

import csv
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from medvision.cli import MedVisionCLI, main
from medvision.data import HAM10000DataModule
from medvision.data.splits import grouped_split_indices

from .conftest import config_run_args

SEED_STUDY_MAP = {
    "mel": "MEL",
    "nv": "NV",
    "bkl": "OTHER",
    "bcc": "OTHER",
    "akiec": "OTHER",
    "vasc": "OTHER",
    "df": "OTHER",
}


def make_dm(data_dir, **kwargs) -> HAM10000DataModule:
    kwargs = {"image_size": [48, 64], "num_workers": 0, "batch_size": 4, **kwargs}
    return HAM10000DataModule(data_dir, **kwargs)


def metadata(ham_dir) -> list[dict]:
    with open(ham_dir / "HAM10000_metadata.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def write_metadata(ham_dir, rows) -> None:
    with open(ham_dir / "HAM10000_metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def lesions_of(dm, split) -> set:
    image_to_lesion = {r["image_id"]: r["lesion_id"] for r in metadata(dm.data_dir)}
    return {image_to_lesion[p.stem] for p in dm.datasets[split].image_paths}


def test_the_layout_has_repeated_lesions(ham_dir):
    counts = Counter(r["lesion_id"] for r in metadata(ham_dir))
    assert max(counts.values()) > 1  # so grouping matters


@pytest.mark.parametrize("num_folds", [None, 3])
def test_no_lesion_appears_in_two_splits_for_any_fold(ham_dir, num_folds):
    tests = []
    for fold in range(num_folds or 1):
        dm = make_dm(ham_dir, num_folds=num_folds, fold=fold, test_fraction=0.2)
        dm.setup("fit")
        train, val, test = (lesions_of(dm, s) for s in ("train", "val", "test"))
        assert not train & val and not train & test and not val & test
        assert train and val and test
        tests.append(test)
    assert all(t == tests[0] for t in tests)  # one test set for every fold


def test_folds_partition_the_non_test_lesions(ham_dir):
    vals = []
    for fold in range(3):
        dm = make_dm(ham_dir, num_folds=3, fold=fold, test_fraction=0.2)
        dm.setup("fit")
        vals.append(lesions_of(dm, "val"))
        rest = lesions_of(dm, "train") | lesions_of(dm, "val")
    assert set().union(*vals) == rest and sum(map(len, vals)) == len(rest)


def test_grouped_split_is_stratified_by_label():
    groups = [f"g{i // 2}" for i in range(400)]  # 200 groups of 2
    labels = [0 if i < 300 else 1 for i in range(400)]  # 150 groups of class 0, 50 of class 1
    split = grouped_split_indices(groups, labels, val_fraction=0.1, test_fraction=0.2, seed=0)
    test_labels = Counter(np.asarray(labels)[split["test"]].tolist())
    assert test_labels == {0: 60, 1: 20}  # 20% of each class's groups, 2 images each


def test_classification_with_the_seven_diagnoses(ham_dir):
    dm = make_dm(ham_dir, task="classification")
    assert dm.class_names == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert dm.num_classes == 7 and dm.in_channels == 3
    dm.setup("fit")
    sample = dm.datasets["train"][0]
    assert sample["image"].shape == (3, 48, 64) and sample["label"].dtype == torch.int64
    dx = {r["image_id"]: r["dx"] for r in metadata(ham_dir)}
    stem = sample["path"].rsplit("/", 1)[-1][:-4]
    assert dm.class_names[sample["label"]] == dx[stem]


def test_label_map_merges_into_the_seed_studys_three_classes(ham_dir):
    dm = make_dm(ham_dir, task="classification", label_map=SEED_STUDY_MAP)
    assert dm.class_names == ["MEL", "NV", "OTHER"]
    dm.setup("fit")
    assert set(dm.class_counts) == {"MEL", "NV", "OTHER"} and dm.class_counts["NV"] > 0


def test_segmentation_samples_keep_image_and_mask_aligned(ham_dir):
    dm = make_dm(ham_dir, task="segmentation", augmentation="none")
    assert dm.class_names == ["lesion"] and dm.num_classes == 1
    dm.setup("fit")
    sample = dm.datasets["train"][0]
    assert sample["image"].shape == (3, 48, 64) and sample["mask"].shape == (1, 48, 64)
    # the synthetic lesion is darker than the skin around it
    image, mask = sample["image"].mean(0), sample["mask"][0].bool()
    assert image[mask].mean() < image[~mask].mean() - 0.1


def test_a_mask_of_another_size_is_resized_and_counted(ham_dir, caplog):
    row = metadata(ham_dir)[0]
    path = ham_dir / "masks" / f"{row['image_id']}_segmentation.png"
    small = Image.open(path).resize((32, 24), Image.NEAREST)
    small.save(path)
    dm = make_dm(ham_dir, task="segmentation")
    dm.setup("fit")
    assert "1 masks differ in size" in caplog.text and str(path) in caplog.text
    split = next(s for s in dm.datasets.values() if str(path) in map(str, s.mask_paths))
    index = list(map(str, split.mask_paths)).index(str(path))
    assert split[index]["mask"].shape == (1, 48, 64)


# --- bad input: every error names the row or file -------------------------------------------


def test_metadata_row_without_its_image_is_named(ham_dir):
    row = metadata(ham_dir)[3]
    (ham_dir / "images" / f"{row['image_id']}.jpg").unlink()
    with pytest.raises(ValueError, match=f"no image for .* row {row['image_id']}"):
        make_dm(ham_dir).setup("fit")


def test_unknown_dx_names_the_line(ham_dir):
    rows = metadata(ham_dir)
    rows[4]["dx"] = "melanoma"
    write_metadata(ham_dir, rows)
    with pytest.raises(ValueError, match=r"(?s)line 6 .*unknown dx 'melanoma'.*akiec, bcc"):
        make_dm(ham_dir).setup("fit")


def test_missing_mask_is_named_for_segmentation_only(ham_dir):
    row = metadata(ham_dir)[2]
    mask = ham_dir / "masks" / f"{row['image_id']}_segmentation.png"
    mask.unlink()
    with pytest.raises(ValueError, match=f"{mask}: missing, for image {row['image_id']}"):
        make_dm(ham_dir, task="segmentation").setup("fit")
    make_dm(ham_dir, task="classification").setup("fit")  # masks are not needed there


def test_corrupt_jpeg_is_named(ham_dir):
    row = metadata(ham_dir)[5]
    path = ham_dir / "images" / f"{row['image_id']}.jpg"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="bad metadata rows or files") as error:
        make_dm(ham_dir).setup("fit")
    assert str(path) in str(error.value)


def test_label_map_must_place_every_diagnosis(ham_dir):
    partial = {k: v for k, v in SEED_STUDY_MAP.items() if k != "df"}
    with pytest.raises(ValueError, match=r"label_map does not say where dx \['df'\] go"):
        make_dm(ham_dir, task="classification", label_map=partial).setup("fit")
    with pytest.raises(ValueError, match="unknown dx codes"):
        make_dm(ham_dir, label_map={"melanoma": "MEL"})


def test_missing_metadata_points_to_the_layout(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="HAM10000_metadata.csv is missing.*layout"):
        make_dm(tmp_path).setup("fit")


def test_predict_scores_at_the_images_own_size_even_with_a_smaller_mask(ham_dir, tmp_path):
    row = metadata(ham_dir)[0]
    mask = ham_dir / "masks" / f"{row['image_id']}_segmentation.png"
    Image.open(mask).resize((32, 24), Image.NEAREST).save(mask)
    args = config_run_args(
        "unet_ham10000.yaml",
        tmp_path,
        ham_dir,
        "--model.init_args.encoder_name=resnet18",
        image_size="[32,64]",
    )
    checkpoint = tmp_path / "init.ckpt"
    model = MedVisionCLI(args=args, run=False).model
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": "2.6.0"}, checkpoint)
    out = f"--prediction_writer.output_dir={tmp_path / 'predictions'}"
    main(
        [
            "predict",
            *args,
            f"--ckpt_path={checkpoint}",
            f"--data.init_args.predict_dir={ham_dir}",
            out,
        ]
    )
    predicted = np.array(Image.open(tmp_path / "predictions/masks" / f"{row['image_id']}.png"))
    assert predicted.shape == (48, 64)  # the image's size, not the model's 32x64
    with open((tmp_path / "predictions") / "metrics.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(metadata(ham_dir))
