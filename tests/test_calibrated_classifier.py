"""Temperature scaling end to end: fit with ``calibrate``, the temperature in every checkpoint,
and predict, ``load_model`` and export applying it; the test report's calibration and
bootstrap files (issue 21)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

import medvision
from medvision.apply.export import ExportedNetwork
from medvision.cli import main
from medvision.data.predict_folder import predict_dataset
from medvision.evaluation.calibration import expected_calibration_error
from medvision.models import ClassificationModule
from medvision.models.classifier_outputs import thresholds_at_temperature
from medvision.models.record import Preprocessing
from medvision.training.calibration import _store as store_temperature
from medvision.utils.files import read_csv

from .conftest import chest_run_args, config_run_args

NAMES = ["COVID19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS"]
ONE_STEP = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=1",
    "--trainer.num_sanity_val_steps=0",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def overconfident_weights(path):
    """cnn5 weights whose logits are 40 times too large: confident, and mostly wrong."""
    torch.manual_seed(0)
    module = ClassificationModule("cnn5", in_channels=1, num_classes=4, class_names=NAMES)
    with torch.no_grad():
        module.net.head[-1].weight.mul_(40)
        module.net.head[-1].bias.mul_(40)
    torch.save(module.net.state_dict(), path)
    return path


@pytest.mark.slow
def test_calibrate_lowers_val_nll_and_predict_uses_the_stored_temperature(tmp_path, chest_dir):
    weights = overconfident_weights(tmp_path / "overconfident.pt")
    frozen = [  # lr 0: the fit leaves the over-confident weights as they are
        f"--model.init_args.pretrained_weights={weights}",
        "--model.init_args.optimizer=torch.optim.SGD",
        "--model.init_args.optimizer.init_args.lr=0",
        "--model.init_args.lr_scheduler=null",
        "--model.init_args.calibrate=true",
    ]
    main(["fit", *chest_run_args(tmp_path / "runs", chest_dir, *ONE_STEP, *frozen)])
    run = tmp_path / "runs" / "version_0"
    report = json.loads((run / "calibration.json").read_text())
    assert set(report) == {"best.ckpt", "last.ckpt"}
    fitted = report["best.ckpt"]
    assert fitted["temperature"] > 5  # logits 40 x too large: a much softer T
    assert fitted["val_nll_after"] < 0.5 * fitted["val_nll_before"]
    assert fitted["val_ece_after"] < fitted["val_ece_before"]
    assert fitted["num_images"] == 10  # the chest fixture's whole val/ folder
    assert report["last.ckpt"]["temperature"] == fitted["temperature"]  # the same weights
    logged = [r for r in read_csv(run / "metrics.csv") if r.get("calibration/temperature")]
    assert float(logged[0]["calibration/temperature"]) == pytest.approx(fitted["temperature"])

    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    temperature = fitted["temperature"]
    assert float(checkpoint["state_dict"]["temperature"]) == pytest.approx(temperature)
    assert checkpoint["medvision"]["preprocessing"]["temperature"] == pytest.approx(temperature)

    # load_model: probabilities are softmax(logits / T) of the prepared images
    model = medvision.load_model(run / "checkpoints" / "best.ckpt")
    files = sorted(str(p) for p in (chest_dir / "test").rglob("*.*"))[:6]
    results = model.predict(files)
    data = predict_dataset("classification", files, (32, 32), 1, None)
    images = torch.stack([data[i]["image"] for i in range(len(files))])
    with torch.no_grad():
        logits = model.module.logits({"image": images})
    expected = (logits / temperature).softmax(dim=1).numpy()
    got = np.stack([r.probabilities for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - logits.softmax(dim=1).numpy()).max() > 0.1  # T really changed them
    # the exported network divides by T too
    with torch.no_grad():
        exported = ExportedNetwork(model)(images).numpy()
    np.testing.assert_allclose(exported, expected, atol=1e-5)

    # medvision predict writes the same probabilities
    out = tmp_path / "predicted"
    loose = tmp_path / "loose"
    loose.mkdir()
    for index, path in enumerate(files):
        Image.open(path).save(loose / f"{index}.png")
    ckpt = run / "checkpoints" / "best.ckpt"
    main(["predict", f"--ckpt_path={ckpt}", f"--data.predict_dir={loose}", f"--output={out}"])
    rows = {r["file"]: r for r in read_csv(out / "predictions.csv")}
    for index, result in enumerate(results):
        row = rows[str(loose / f"{index}.png")]
        written = np.array([float(row[f"prob_{c}"]) for c in NAMES])
        np.testing.assert_allclose(written, result.probabilities, atol=2e-6)

    # test: ECE on the calibrated probabilities, per-image rows and intervals in the run folder
    main(["test", "--config", str(run / "config.yaml"), f"--ckpt_path={ckpt}"])
    tested = run / "test"
    per_image = read_csv(tested / "test_per_image.csv")
    assert list(per_image[0]) == ["image", "label", "pred", *[f"prob_{c}" for c in NAMES]]
    assert len(per_image) == 10 and {r["label"] for r in per_image} <= set(NAMES)
    probs = torch.tensor([[float(r[f"prob_{c}"]) for c in NAMES] for r in per_image])
    labels = torch.tensor([NAMES.index(r["label"]) for r in per_image])
    summary = {r["metric"]: r for r in read_csv(tested / "test_summary.csv")}
    assert list(summary) == ["f1", "balanced_accuracy", "auroc", "ece"]
    ece = float(summary["ece"]["value"])
    assert ece == pytest.approx(expected_calibration_error(probs, labels), abs=1e-4)
    logged = [r for r in read_csv(tested / "metrics.csv") if r.get("test/ece")][0]
    assert float(logged["test/ece"]) == pytest.approx(ece, abs=1e-6)
    for row in summary.values():
        assert row["n"] == "10"
        value, low, high = (float(row[k]) for k in ("value", "ci_low", "ci_high"))
        assert math.isnan(value) or low <= high
    with Image.open(tested / "test_reliability.png") as diagram:
        assert diagram.size == (500, 600)


@pytest.mark.slow
def test_multilabel_calibration_and_test_report_with_per_label_ece(tmp_path, nih_dir):
    args = config_run_args(
        "resnet50_nih.yaml",
        tmp_path / "runs",
        nih_dir,
        "--model.init_args.model_name=resnet10t",
        "--trainer.max_steps=2",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.limit_val_batches=0",
        "--model.init_args.calibrate=true",
        image_size=32,
    )
    main(["fit", *args])
    run = tmp_path / "runs" / "version_0"
    fitted = json.loads((run / "calibration.json").read_text())["last.ckpt"]  # per known label
    assert fitted["num_images"] > 0 and fitted["val_nll_after"] <= fitted["val_nll_before"]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert float(checkpoint["state_dict"]["temperature"]) == pytest.approx(fitted["temperature"])
    main(["test", *args, f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    tested = run / "test"
    per_image = read_csv(tested / "test_per_image.csv")
    names = [c.removeprefix("prob/") for c in per_image[0] if c.startswith("prob/")]
    assert len(names) == 14
    assert list(per_image[0]) == [
        "image",
        *[f"label/{n}" for n in names],
        *[f"prob/{n}" for n in names],
    ]
    assert {v for r in per_image for k, v in r.items() if k.startswith("label/")} <= {"0", "1", ""}
    summary = [r["metric"] for r in read_csv(tested / "test_summary.csv")]
    assert summary == ["f1", "auroc", "ece"]
    logged = [r for r in read_csv(tested / "metrics.csv") if r.get("test/ece")][0]
    per_label = [float(logged[f"test/ece_per_label/{n}"]) for n in names]
    assert float(logged["test/ece"]) == pytest.approx(np.nanmean(per_label), abs=1e-6)
    assert (tested / "test_reliability.png").is_file()


def test_calibrate_without_validation_images_names_the_option(tmp_path, ham_dir):
    args = config_run_args(
        "resnet50_ham10000.yaml",
        tmp_path,
        ham_dir,
        "--model.init_args.model_name=cnn5",
        "--model.init_args.calibrate=true",
        "--data.init_args.val_fraction=0",
        *ONE_STEP,
        image_size=32,
    )
    with pytest.raises(
        ValueError,
        match=r"--model.calibrate true .*no validation images.*"
        r"--data.init_args.val_fraction 0.1.*--model.calibrate false",
    ):
        main(["fit", *args])
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before training


def test_old_checkpoints_load_with_temperature_one_and_thresholds_keep_decisions():
    module = ClassificationModule("cnn5", in_channels=1, num_classes=3, class_names=list("abc"))
    state = module.state_dict()
    del state["temperature"]  # as written before temperature scaling existed
    module.temperature.fill_(3.0)
    module.load_state_dict(state)
    assert float(module.temperature) == 1.0
    # a multi-label decision sigmoid(z / T) > t is the same before and after a new T
    logits = torch.tensor([[-2.0, 0.3, 1.5], [0.9, -0.2, 4.0]])
    thresholds = torch.tensor([0.2, 0.5, 0.9])
    moved = thresholds_at_temperature(thresholds, 1.0, 2.5)
    assert torch.equal(logits.sigmoid() > thresholds, (logits / 2.5).sigmoid() > moved)
    assert moved[1] == 0.5 and moved[0] > 0.2 and moved[2] < 0.9
    multilabel = ClassificationModule(
        "cnn5", in_channels=1, num_classes=3, class_names=list("abc"), multilabel=True
    )
    multilabel.thresholds = thresholds.clone()
    multilabel.set_temperature(2.5)
    assert torch.allclose(multilabel.thresholds, moved)
    assert multilabel.describe_output()["temperature"] == 2.5
    with pytest.raises(ValueError, match="temperature must be > 0"):
        multilabel.set_temperature(0.0)


def test_calibration_writes_the_record_through_preprocessing():
    """The record is rebuilt (``dataclasses.replace``) and stored whole, never patched (issue
    25): the dict the checkpoint was loaded with stays as it was."""
    record = Preprocessing(
        task="classification",
        image_size=(32, 32),
        in_channels=1,
        intensity_window=None,
        class_names=("a", "b", "c"),
        network={"class_path": "medvision.models.ClassificationModule", "init_args": {}},
        multilabel=True,
        thresholds=(0.2, 0.5, 0.9),
    )
    loaded = record.to_dict()
    checkpoint = {
        "state_dict": {
            "thresholds": torch.tensor(record.thresholds),
            "temperature": torch.ones(()),
        },
        "medvision": {"preprocessing": loaded, "training_only": ["generator."]},
    }
    store_temperature(checkpoint, 2.5, multilabel=True)
    assert loaded == record.to_dict()  # not patched in place
    moved = thresholds_at_temperature(torch.tensor([0.2, 0.5, 0.9]), 1.0, 2.5)
    assert torch.equal(checkpoint["state_dict"]["thresholds"], moved)
    assert float(checkpoint["state_dict"]["temperature"]) == 2.5
    calibrated = dataclasses.replace(record, temperature=2.5, thresholds=tuple(moved.tolist()))
    assert checkpoint["medvision"]["preprocessing"] == calibrated.to_dict()
    assert checkpoint["medvision"]["preprocessing"]["thresholds"][1] == 0.5  # logit 0 stays
    assert checkpoint["medvision"]["training_only"] == ["generator."]


def test_every_classifier_argument_is_described_in_its_help(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "ClassificationModule"])
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 200
    described = {}
    for chunk in re.split(r"\n  (?=--model\.)", out):
        option = re.match(r"--model\.(\w+)[ ,]", chunk)
        if option and "\n" in chunk:
            described[option.group(1)] = chunk.split("\n", 1)[1].split("(type:")[0].strip()
    for name in inspect.signature(ClassificationModule).parameters:
        assert described.get(name), f"--model.{name} has no description"
    assert "temperature" in described["calibrate"]
