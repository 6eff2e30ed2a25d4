"""Model bundles (issue 28): safetensors, config.json, a model card and model.onnx; loading a
bundle by folder or Hub repo id without pickle; the onnx runtime; one clear line per bad file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import medvision
from medvision.apply.bundle import CONFIG, ONNX, WEIGHTS
from medvision.apply.export import export
from medvision.apply.inference import build_module
from medvision.apply.model_card import RunFacts, front_matter
from medvision.apply.model_card_sections import evaluation, limitations
from medvision.cli import main
from medvision.data.datasets import ClassificationDataset
from medvision.data.description import describe_data
from medvision.data.synthetic import write_lung_ct
from medvision.models.record import Preprocessing
from medvision.utils.files import read_csv
from medvision.utils.runs import newest_test_folder

from .conftest import CONFIGS, lung_record, subprocess_env

pytestmark = pytest.mark.usefixtures("one_thread")

#: a small untrained lung U-Net at 64 px (conftest.lung_record)
RECORD = lung_record(image_size=(64, 64))
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl"}


def front_matter_of(card: Path) -> dict:
    """The YAML between the first two ``---`` lines of a model card."""
    _, matter, _ = card.read_text().split("---\n", 2)
    return yaml.safe_load(matter)


# --- a bundle of an untrained network, outside a run folder -------------------------------------


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A weights file of a freshly initialized U-Net (64 px) and its record, in no run folder."""
    record = RECORD
    module = build_module(record)
    path = tmp_path / "unet.ckpt"
    torch.save(
        {"state_dict": module.state_dict(), "medvision": {"preprocessing": record.to_dict()}}, path
    )
    return path


@pytest.fixture
def bundle(checkpoint, tmp_path) -> Path:
    folder = tmp_path / "lung-unet"
    export(checkpoint, "bundle", folder)
    return folder


def test_a_checkpoint_outside_a_run_gets_a_card_of_what_its_record_knows(bundle):
    assert {p.name for p in bundle.iterdir()} == {CONFIG, "README.md", WEIGHTS}
    matter = front_matter_of(bundle / "README.md")
    assert matter["library_name"] == "medvision"
    assert matter["pipeline_tag"] == "image-segmentation"
    assert "model-index" not in matter and "metrics" not in matter  # no test: no figures
    card = (bundle / "README.md").read_text()
    assert "## Intended use and modality" in card and "`lung`" in card
    assert "The network sees 64 x 64 pixels" in card
    assert "## Training recipe" not in card and "## Evaluation" not in card  # nothing known
    assert "Not tested: this card knows of no test of the model" in card
    config = json.loads((bundle / CONFIG).read_text())
    assert config["preprocessing"] == RECORD.to_dict()
    digest = hashlib.sha256((bundle / WEIGHTS).read_bytes()).hexdigest()
    assert config["files"][WEIGHTS]["sha256"] == digest
    assert config["medvision_version"] == medvision.__version__


def test_a_bundle_loads_without_pickle_and_predicts_as_its_checkpoint(
    bundle, checkpoint, monkeypatch
):
    assert not {p.suffix for p in bundle.rglob("*")} & PICKLE_SUFFIXES
    image = np.random.default_rng(0).integers(0, 255, (70, 90), dtype=np.uint8)
    expected = medvision.load_model(checkpoint).predict(image)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    model = medvision.load_model(bundle)
    result = model.predict(image)
    assert model.source == bundle and model.runtime == "torch"
    assert np.array_equal(result.mask, expected.mask)
    assert np.array_equal(result.probabilities, expected.probabilities)


def damage(bundle: Path, how: str) -> str:
    """Damage ``bundle`` as ``how`` says; the file the error must name."""
    config_path, weights = bundle / CONFIG, bundle / WEIGHTS
    config = json.loads(config_path.read_text())
    if how == "no config":
        config_path.unlink()
        return f"{bundle} is a folder without config.json"
    if how == "config not json":
        config_path.write_text(config_path.read_text()[:-20])
        return f"{config_path}: not valid JSON"
    if how == "newer layout":
        config.update(bundle_version=2, medvision_version="9.0")
        config_path.write_text(json.dumps(config))
        return f"{config_path}: written by medvision 9.0 in bundle layout 2, newer than"
    if how == "no weights":
        weights.unlink()
        return f"{weights} is missing"
    if how == "damaged weights":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
        return f"{weights}: damaged or replaced"
    if how == "truncated weights":  # and config.json no longer knows its digest
        del config["files"][WEIGHTS]
        config_path.write_text(json.dumps(config))
        weights.write_bytes(weights.read_bytes()[:1000])
        return f"{weights}: not a readable safetensors file"
    assert how == "weights of another network"
    for network in (config["network"], config["preprocessing"]["network"]):
        network["init_args"]["encoder_name"] = "resnet34"
    config_path.write_text(json.dumps(config))
    return f"{weights}: its weights do not fit"


@pytest.mark.parametrize(
    "how",
    [
        "no config",
        "config not json",
        "newer layout",
        "no weights",
        "damaged weights",
        "truncated weights",
        "weights of another network",
    ],
)
def test_a_bad_bundle_is_refused_in_one_line_naming_the_file(bundle, tmp_path, how):
    expected = damage(bundle, how)
    with pytest.raises(ValueError) as refused:
        medvision.load_model(bundle)
    message = str(refused.value)
    assert message.startswith(expected) and "\n" not in message
    with pytest.raises(ValueError, match="^" + expected.replace(".", r"\.")):
        main(["predict", f"--ckpt_path={bundle}", f"--data.predict_dir={tmp_path}"])


def tiny_onnx(path: Path, channels: int, size: int) -> None:
    """An ONNX file taking ``image`` N x channels x size x size, giving its sigmoid."""
    from onnx import TensorProto, helper, save

    shape = ["N", channels, size, size]
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["image"], ["probabilities"])],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, shape)],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_onnx_runtime_refuses_what_it_cannot_run(bundle, checkpoint):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match=f"^{bundle / ONNX} is missing: the bundle has no ONNX"):
        medvision.load_model(bundle, runtime="onnx")
    tiny_onnx(bundle / ONNX, channels=1, size=32)  # not the record's 64 x 64
    with pytest.raises(ValueError) as refused:
        medvision.load_model(bundle, runtime="onnx")
    assert str(refused.value) == (
        f"{bundle / ONNX}: takes images of 1 x 32 x 32 (channels x height x width) but "
        "config.json records in_channels 1 and image_size [64, 64]: the two files are of "
        "different models; export the bundle again."
    )
    (bundle / ONNX).write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match=f"^{bundle / ONNX}: not a readable ONNX model"):
        medvision.load_model(bundle, runtime="onnx")
    with pytest.raises(ValueError, match=r"unet.ckpt is a checkpoint file: export one with"):
        medvision.load_model(checkpoint, runtime="onnx")
    with pytest.raises(ValueError, match=r"runtime 'tensorflow' \(--runtime\): use one of"):
        medvision.load_model(bundle, runtime="tensorflow")
    with pytest.raises(ValueError, match="--cam needs the network's layers"):
        main(["predict", f"--ckpt_path={bundle}", "--runtime=onnx", "--cam=gradcam"])


def test_an_existing_output_is_refused_and_a_failed_export_leaves_nothing(
    bundle, checkpoint, tmp_path, monkeypatch
):
    with pytest.raises(ValueError, match="lung-unet exists: give a new folder"):
        export(checkpoint, "bundle", bundle)
    with pytest.raises(ValueError, match="--onnx adds model.onnx to a bundle"):
        export(checkpoint, "onnx", tmp_path / "x.onnx", onnx=True)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("medvision.apply.bundle.write_model_card", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export(checkpoint, "bundle", tmp_path / "other")
    assert not (tmp_path / "other").exists()
    assert not list(tmp_path.glob(".partial-*"))


def hub_cache(cache: Path, repo_id: str, bundle: Path) -> None:
    """``bundle`` as the Hub repo ``repo_id`` in a cache laid out as huggingface_hub lays it
    out: files as blobs named by hash, a snapshot of links to them, and ``refs/main``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    for file in (p for p in bundle.rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        link = repo / "snapshots" / commit / file.relative_to(bundle)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_a_repo_id_resolves_through_the_hub_cache_offline(bundle, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    hub_cache(cache, "medvision-test/lung-unet", bundle)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    image = np.random.default_rng(1).random((50, 60)).astype(np.float32)
    from_hub = medvision.load_model("medvision-test/lung-unet")
    assert from_hub.source.parent.name == "snapshots"
    assert np.array_equal(
        from_hub.predict(image).mask, medvision.load_model(bundle).predict(image).mask
    )
    with pytest.raises(FileNotFoundError) as missing:
        medvision.load_model("medvision-test/no-such-model")
    message = str(missing.value)
    assert message.startswith("medvision-test/no-such-model: no such file or folder here, and no")
    assert str(cache) in message and "hf download medvision-test/no-such-model" in message


# --- what the card and run_info.json are made of (unit tests) ----------------------------------


def test_newest_test_folder_is_the_last_finished_test(tmp_path):
    run = tmp_path / "version_0"
    assert newest_test_folder(run) is None
    for name in ("test", "test-20250101-120000", "test-20250102-090000"):
        (run / name).mkdir(parents=True)
    (run / "test" / "test_summary.csv").write_text("metric,value\n")
    (run / "test-20250101-120000" / "test_summary.csv").write_text("metric,value\n")
    os.utime(run / "test" / "test_summary.csv", (1, 1))  # the older one
    assert newest_test_folder(run) == run / "test-20250101-120000"  # the other never finished


def test_describe_data_counts_each_split_and_fingerprints_its_files(tmp_path):
    files = [tmp_path / f"img{index}.png" for index in range(5)]

    class Data:
        class_names = ["benign", "malignant", "other"]
        data_dir = tmp_path
        datasets = {
            "train": ClassificationDataset(files[:3], [0, 1, 1], None),
            "test": ClassificationDataset(files[3:], [2, 0], None),
        }

    described = describe_data(Data())
    assert described["datamodule"].endswith("Data")
    assert described["splits"] == {
        "train": {"images": 3, "classes": {"benign": 1, "malignant": 2, "other": 0}},
        "test": {"images": 2, "classes": {"benign": 1, "malignant": 0, "other": 1}},
    }
    lines = "train img0.png\ntrain img1.png\ntrain img2.png\ntest img3.png\ntest img4.png"
    assert described["fingerprint"] == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    Data.datasets["train"], Data.datasets["test"] = Data.datasets["test"], Data.datasets["train"]
    assert describe_data(Data())["fingerprint"] != described["fingerprint"]  # other splits


def test_a_calibrated_classifiers_card_gives_its_classes_and_ece_before_and_after(tmp_path):
    record = Preprocessing(
        task="classification",
        image_size=(32, 32),
        in_channels=3,
        intensity_window=None,
        class_names=("benign", "malignant"),
        network={"class_path": "medvision.models.ClassificationModule", "init_args": {}},
        temperature=1.7,
    )
    facts = RunFacts(
        run=tmp_path,
        test=tmp_path / "test",
        summary=[{"metric": "ece", "value": 0.031, "ci_low": 0.02, "ci_high": 0.05, "n": 40}],
        per_class=[{"class": "benign", "f1": "0.812345", "support": "30"}],
        calibration={
            "temperature": 1.7,
            "num_images": 20,
            "val_ece_before": 0.12,
            "val_ece_after": 0.04,
            "val_nll_before": 0.6,
            "val_nll_after": 0.5,
        },
    )
    text = evaluation(record, facts)
    assert "| ece | 0.0310 | [0.0200, 0.0500] | 40 |" in text
    assert "| benign | 0.8123 | 30 |" in text
    assert "T = 1.7; ECE 0.1200 before, 0.0400 after; NLL 0.6000 before, 0.5000 after" in text
    assert "HD95" not in text
    assert "not calibrated" not in limitations(record, facts)
    matter = front_matter(record, {"medvision_version": "0.1.0"}, facts, "chest")
    assert matter["pipeline_tag"] == "image-classification" and matter["metrics"] == ["ece"]


# --- a trained quickstart model --------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """configs/quickstart.yaml (resnet18 encoder, 24 synthetic 64 px slices) fitted 3 epochs,
    tested, and exported as a bundle with model.onnx."""
    root = tmp_path_factory.mktemp("quickstart")
    data = root / "data"
    write_lung_ct(data, num_slices=24, size=64, seed=0)
    common = [
        "--config",
        str(CONFIGS / "quickstart.yaml"),
        f"--data.init_args.data_dir={data}",
        "--data.init_args.num_slices=24",
        "--data.init_args.batch_size=8",
        "--data.init_args.num_workers=0",
        "--model.init_args.encoder_name=resnet18",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
    ]
    main(["fit", *common, "--trainer.max_epochs=3", f"--trainer.default_root_dir={root / 'runs'}"])
    run = root / "runs/version_0"
    best = run / "checkpoints/best.ckpt"
    main(["test", *common, f"--ckpt_path={best}"])
    bundle = root / "lung-unet"
    main(["export", f"--ckpt_path={best}", "--format=bundle", "--onnx", f"--output={bundle}"])
    return {"run": run, "checkpoint": best, "bundle": bundle, "images": data / "2d_images"}


@pytest.mark.slow
def test_the_cards_figures_are_the_runs_test_summary(trained):
    summary = read_csv(trained["run"] / "test/test_summary.csv")
    matter = front_matter_of(trained["bundle"] / "README.md")
    assert matter["library_name"] == "medvision" and "onnx" in matter["tags"]
    assert matter["metrics"] == [row["metric"] for row in summary]
    (result,) = matter["model-index"][0]["results"]
    assert result["dataset"]["type"] == "medvision.data.lung_ct.SyntheticLungCTDataModule"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {
        row["metric"]: float(row["value"]) for row in summary
    }
    recorded = matter["medvision"]["test"]["summary"]
    assert recorded == [
        {
            **{k: float(row[k]) for k in ("value", "ci_low", "ci_high")},
            "metric": row["metric"],
            "n": int(row["n"]),
        }
        for row in summary
    ]
    card = (trained["bundle"] / "README.md").read_text()
    dice = next(row for row in summary if row["metric"] == "dice")
    shown = f"[{float(dice['ci_low']):.4f}, {float(dice['ci_high']):.4f}]"
    assert f"| dice | {float(dice['value']):.4f} | {shown} | {dice['n']} |" in card
    assert "smoke_run" not in matter["medvision"] and "Smoke run" not in card


@pytest.mark.slow
def test_the_card_says_what_data_trained_it_and_how_long(trained):
    info = json.loads((trained["run"] / "run_info.json").read_text())
    splits = info["data"]["splits"]
    assert set(splits) == {"train", "val", "test"}
    assert sum(split["images"] for split in splits.values()) == 24  # every slice, once
    assert info["fit"]["epochs"] == 3 and info["fit"]["max_epochs"] == 3
    card = (trained["bundle"] / "README.md").read_text()
    assert info["data"]["fingerprint"] in card
    for split, counts in splits.items():
        assert f"| {split} | {counts['images']} |" in card
    assert "- Trained 3 epochs (max_epochs 3)" in card
    assert "medvision.data.lung_ct.SyntheticLungCTDataModule" in card
    assert "Trained on synthetic images" in card
    figures = sorted(p.name for p in (trained["bundle"] / "figures").iterdir())
    assert figures == ["learning_curves.png", "overlays.png"]
    assert all(f"](figures/{name})" in card for name in figures)


FRESH_PROCESS = """
import sys
from pathlib import Path

import numpy as np
import torch


def refuse(*args, **kwargs):
    raise AssertionError("torch.load was called")


torch.load = refuse
import medvision
from medvision.cli import main

bundle, images, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
paths = sorted(images.glob("*.tif"))
sources = {"torch": bundle, "onnx": bundle, "hub": "medvision-test/lung-unet"}
for name, source in sources.items():
    model = medvision.load_model(source, runtime="onnx" if name == "onnx" else "torch")
    np.save(out / f"{name}.npy", np.stack([r.mask for r in model.predict(paths)]))
quiet = "--trainer.enable_progress_bar=false"
for runtime in ("torch", "onnx"):
    main(["predict", f"--ckpt_path={bundle}", f"--data.predict_dir={images}",
          f"--output={out / runtime}", f"--runtime={runtime}", quiet])
"""


@pytest.mark.slow
def test_a_fresh_process_predicts_the_checkpoints_masks_from_the_bundle_alone(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    paths = sorted(trained["images"].glob("*.tif"))
    expected = np.stack(
        [r.mask for r in medvision.load_model(trained["checkpoint"]).predict(paths)]
    )
    shared = tmp_path / "elsewhere" / "lung-unet"
    shutil.copytree(trained["bundle"], shared)
    hub_cache(tmp_path / "hub", "medvision-test/lung-unet", trained["bundle"])
    hidden = trained["run"] / "checkpoints_hidden"
    (trained["run"] / "checkpoints").rename(hidden)  # the fresh process has no checkpoint
    try:
        script = tmp_path / "fresh.py"
        script.write_text(textwrap.dedent(FRESH_PROCESS))
        env = {**subprocess_env(), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
        proc = subprocess.run(
            [sys.executable, str(script), str(shared), str(trained["images"]), str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    finally:
        hidden.rename(trained["run"] / "checkpoints")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expected.mean() > 0.01  # the model found lungs
    for name in ("torch", "onnx", "hub"):
        masks = np.load(tmp_path / f"{name}.npy")
        assert (masks == expected).mean() == 1.0, name
    for runtime in ("torch", "onnx"):
        written = [
            np.array(Image.open(tmp_path / runtime / "masks" / f"{p.stem}.png")) for p in paths
        ]
        assert ((np.stack(written) > 0) == expected).mean() == 1.0, runtime
