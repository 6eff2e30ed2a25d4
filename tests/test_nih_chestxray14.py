"""NIH ChestX-ray14 and the multi-label mode: labels, patient splits, thresholds, predictions."""

import csv
import logging

import numpy as np
import pytest
import torch

from medvision.cli import main
from medvision.data import NIHChestXray14DataModule
from medvision.evaluation.metrics import best_f1_thresholds, multilabel_metrics
from medvision.models import ClassificationModule

from .conftest import config_run_args


def make_dm(data_dir, **kwargs) -> NIHChestXray14DataModule:
    kwargs = {"image_size": 32, "num_workers": 0, "batch_size": 8, **kwargs}
    return NIHChestXray14DataModule(data_dir, **kwargs)


def rows_of(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def patients(dataset) -> set:
    return {p.name.split("_")[0] for p in dataset.image_paths}


def test_findings_become_multi_hot_targets_in_the_order_given(nih_dir):
    dm = make_dm(nih_dir, labels=["Pneumonia", "Atelectasis"])
    assert dm.class_names == ["Pneumonia", "Atelectasis"] and dm.num_classes == 2
    dm.setup("fit")
    rows = {r["Image Index"]: r["Finding Labels"] for r in rows_of(nih_dir / "Data_Entry_2017.csv")}
    for dataset in dm.datasets.values():
        for index in range(len(dataset)):
            sample = dataset[index]
            findings = rows[sample["path"].rsplit("/", 1)[-1]].split("|")
            expected = [float(name in findings) for name in ("Pneumonia", "Atelectasis")]
            assert sample["label"].tolist() == expected
            assert sample["label_mask"].tolist() == [1.0, 1.0]


def test_no_patient_is_in_two_splits(nih_dir):
    dm = make_dm(nih_dir)
    dm.setup("fit")
    train, val, test = (patients(dm.datasets[s]) for s in ("train", "val", "test"))
    assert train and val and test
    assert not train & val and not train & test and not val & test


def test_official_lists_decide_the_test_set(nih_dir):
    names = [r["Image Index"] for r in rows_of(nih_dir / "Data_Entry_2017.csv")]
    official_test = [n for n in names if n.startswith(("00000001", "00000002"))]
    (nih_dir / "test_list.txt").write_text("\n".join(official_test) + "\n")
    (nih_dir / "train_val_list.txt").write_text("\n".join(set(names) - set(official_test)))
    dm = make_dm(nih_dir)
    dm.setup("fit")
    assert sorted(p.name for p in dm.datasets["test"].image_paths) == sorted(official_test)
    assert not patients(dm.datasets["train"]) & patients(dm.datasets["val"])


def test_rows_without_images_are_an_error_or_skipped_with_a_count(nih_dir, caplog):
    (nih_dir / "images" / "00000003_000.png").unlink()
    missing = "(?s)row 00000003_000.png: not under.*missing_images"
    with pytest.raises(ValueError, match=missing):
        make_dm(nih_dir).setup("fit")
    with caplog.at_level(logging.WARNING):
        dm = make_dm(nih_dir, missing_images="skip")
        dm.setup("fit")
    assert "1 of" in caplog.text and "skipped" in caplog.text


def test_unknown_finding_names_the_line(nih_dir):
    path = nih_dir / "Data_Entry_2017.csv"
    lines = path.read_text().splitlines()
    fields = lines[3].split(",")
    fields[1] = "Pneumonia|Covid"
    lines[3] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"(?s)line 4 .*\['Covid'\]"):
        make_dm(nih_dir).setup("fit")


def test_masked_binary_cross_entropy_by_hand():
    module = ClassificationModule("cnn5", num_classes=2, class_names=["a", "b"], multilabel=True)
    module.net = torch.nn.Identity()
    module.input_mean, module.input_std = torch.tensor(0.0), torch.tensor(1.0)
    batch = {
        "image": torch.tensor([[2.0, 0.0]]),
        "label": torch.tensor([[1.0, 0.0]]),
        "label_mask": torch.tensor([[1.0, 0.0]]),  # label b unknown: left out
    }
    # only label a counts: BCE(logit 2, target 1) = log(1 + e^-2) = 0.126928
    assert module.step(batch, "train").item() == pytest.approx(0.126928, abs=1e-5)
    batch["label_mask"] = torch.ones(1, 2)  # b known: + log(1 + e^0) = 0.693147, mean of two
    assert module.step(batch, "train").item() == pytest.approx((0.126928 + 0.693147) / 2, abs=1e-5)


def test_best_f1_threshold_by_hand():
    metrics = multilabel_metrics(num_labels=2, threshold_bins=11)  # thresholds 0.0, 0.1, ... 1.0
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.1], [0.3, 0.9], [0.2, 0.9]])
    metrics.update(probs, torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]]))
    thresholds, f1 = best_f1_thresholds(metrics.compute()["pr_curve"])
    # label 0: at 0.3 the negative 0.3 counts as positive (F1 0.8); 0.4 is the lowest with F1 1
    # label 1: at 0.1 both negatives count (F1 2/3); 0.2 is the lowest with F1 1
    assert thresholds.tolist() == pytest.approx([0.4, 0.2]) and f1.tolist() == pytest.approx([1, 1])


def test_single_label_model_on_multi_label_data_is_refused(nih_dir, tmp_path):
    args = nih_args(
        tmp_path, nih_dir, "--model.init_args.multilabel=false", "--trainer.fast_dev_run=1"
    )
    with pytest.raises(ValueError, match="multi-label targets but the model has multilabel: False"):
        main(["fit", *args])


def nih_args(root, data_dir, *extra):
    return config_run_args(
        "resnet50_nih.yaml",
        root,
        data_dir,
        "--model.init_args.model_name=resnet18",
        *extra,
        image_size=32,
        batch_size=8,
    )


def test_multilabel_fit_tunes_thresholds_that_test_and_predict_use(nih_dir, tmp_path, caplog):
    args = nih_args(tmp_path, nih_dir, "--trainer.max_epochs=2")
    main(["fit", *args])
    metrics = (tmp_path / "version_0/metrics.csv").read_text()
    assert "val/auroc" in metrics and "val/f1_tuned" in metrics
    assert "val/threshold/Pneumonia" in metrics and "val/auroc_per_label/Edema" in metrics
    best = tmp_path / "version_0/checkpoints/best.ckpt"
    thresholds = torch.load(best, weights_only=True)["state_dict"]["thresholds"]
    assert thresholds.shape == (14,)

    with caplog.at_level(logging.INFO, logger="medvision"):
        main(["test", *args, f"--ckpt_path={best}"])
    assert "Test results per label" in caplog.text
    per_label = rows_of(tmp_path / "version_0/test/test_per_label.csv")
    assert [r["label"] for r in per_label] == list(NIHChestXray14DataModule.findings)
    assert [float(r["threshold"]) for r in per_label] == pytest.approx(thresholds.tolist())

    main(
        [
            "predict",
            *args,
            f"--ckpt_path={best}",
            f"--data.init_args.predict_dir={nih_dir / 'images'}",
            f"--prediction_writer.output_dir={tmp_path / 'predictions'}",
        ]
    )
    rows = rows_of((tmp_path / "predictions") / "predictions.csv")
    assert len(rows) == len(list((nih_dir / "images").glob("*.png")))
    names = NIHChestXray14DataModule.findings
    for row in rows[:5]:
        probs = np.array([float(row[f"prob_{n}"]) for n in names])
        expected = [n for n, p, t in zip(names, probs, thresholds.tolist(), strict=True) if p > t]
        assert row["pred"] == "|".join(expected)
