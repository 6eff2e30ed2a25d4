"""CheXpertDataModule: uncertainty and blank policies, views, patient splits, 6-class subset."""

import csv

import numpy as np
import pytest

from medvision.data import CheXpertDataModule
from medvision.data.chexpert import patient_of

SIX = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "No Finding"]


def make_dm(release, **kwargs) -> CheXpertDataModule:
    kwargs = {"image_size": 32, "num_workers": 0, "batch_size": 4, **kwargs}
    return CheXpertDataModule(release, **kwargs)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def set_first_row(release, **cells):
    rows = read_rows(release / "train.csv")
    rows[0].update({"Frontal/Lateral": "Frontal", **cells})
    write_rows(release / "train.csv", rows)
    return release.parent / rows[0]["Path"]


def target_of(dm, image_path):
    for dataset in dm.datasets.values():
        if image_path in dataset.image_paths:
            sample = dataset[dataset.image_paths.index(image_path)]
            return sample["label"].tolist(), sample["label_mask"].tolist()
    raise AssertionError(f"{image_path} not in any split")


CELLS = {"Atelectasis": "-1.0", "Cardiomegaly": "", "Edema": "1.0", "Consolidation": "0.0"}
LABELS = ["Atelectasis", "Cardiomegaly", "Edema", "Consolidation"]


@pytest.mark.parametrize(
    ("uncertainty", "blank", "label", "mask"),
    [
        ("ones", "zeros", [1, 0, 1, 0], [1, 1, 1, 1]),
        ("zeros", "zeros", [0, 0, 1, 0], [1, 1, 1, 1]),
        ("ignore", "ignore", [0, 0, 1, 0], [0, 0, 1, 1]),
        ({"Atelectasis": "ones"}, "ignore", [1, 0, 1, 0], [1, 0, 1, 1]),
    ],
)
def test_uncertain_and_blank_labels_follow_the_policy(
    chexpert_dir, uncertainty, blank, label, mask
):
    image = set_first_row(chexpert_dir, **CELLS)
    dm = make_dm(chexpert_dir, labels=LABELS, uncertainty=uncertainty, blank=blank)
    dm.setup("fit")
    assert target_of(dm, image) == (label, mask)


def test_frontal_only_drops_lateral_views(chexpert_dir):
    lateral = [
        r for r in read_rows(chexpert_dir / "train.csv") if r["Frontal/Lateral"] == "Lateral"
    ]
    assert lateral
    dm = make_dm(chexpert_dir)
    dm.setup("fit")
    used = {str(p) for d in dm.datasets.values() for p in d.image_paths}
    assert not any("lateral" in p for p in used)
    dm = make_dm(chexpert_dir, frontal_only=False)
    dm.setup("fit")
    assert any("lateral" in str(p) for d in dm.datasets.values() for p in d.image_paths)


def test_train_and_validation_never_share_a_patient_and_valid_csv_is_the_test_set(chexpert_dir):
    dm = make_dm(chexpert_dir, val_fraction=0.25)
    dm.setup("fit")
    train = {patient_of(p) for p in dm.datasets["train"].image_paths}
    val = {patient_of(p) for p in dm.datasets["val"].image_paths}
    assert train and val and not train & val
    assert all("/valid/" in str(p) for p in dm.datasets["test"].image_paths)


def test_multiclass_keeps_single_positive_images_and_caps_classes(chexpert_dir):
    dm = make_dm(chexpert_dir, mode="multiclass", labels=SIX, frontal_only=False)
    assert not dm.multilabel and dm.num_classes == 6
    dm.setup("fit")
    rows = {r["Path"].split("/", 1)[1]: r for r in read_rows(chexpert_dir / "train.csv")}
    train = dm.datasets["train"]
    for path, label in zip(train.image_paths, train.labels, strict=True):
        row = rows[str(path.relative_to(chexpert_dir))]
        positives = [name for name in SIX if row[name] == "1.0"]
        assert positives == [SIX[label]]
    capped = make_dm(
        chexpert_dir, mode="multiclass", labels=SIX, frontal_only=False, max_per_class=1
    )
    capped.setup("fit")
    assert max(np.bincount(capped.datasets["train"].labels)) == 1


def test_row_without_its_image_is_named(chexpert_dir):
    image = set_first_row(chexpert_dir)
    image.unlink()
    with pytest.raises(ValueError, match=r"(?s)train.csv row 2: image .*not found"):
        make_dm(chexpert_dir).setup("fit")


def test_a_cell_that_is_not_a_label_is_named(chexpert_dir):
    set_first_row(chexpert_dir, Edema="maybe")
    with pytest.raises(ValueError, match="train.csv row 2: column 'Edema' holds 'maybe'"):
        make_dm(chexpert_dir).setup("fit")


def test_a_missing_column_is_named(chexpert_dir):
    rows = read_rows(chexpert_dir / "valid.csv")
    for row in rows:
        del row["Edema"]
    write_rows(chexpert_dir / "valid.csv", rows)
    with pytest.raises(ValueError, match=r"valid.csv: no column \['Edema'\]"):
        make_dm(chexpert_dir).setup("fit")


def test_unknown_label_and_policy_are_refused():
    with pytest.raises(ValueError, match="not CheXpert observations"):
        CheXpertDataModule(labels=["Covid"])
    with pytest.raises(ValueError, match="uncertainty must be ones, zeros or ignore"):
        CheXpertDataModule(uncertainty="maybe")
