"""``medvision export``: ONNX and TorchScript files give PyTorch's output, with the
preprocessing beside them (issue 16). The ONNX tests need the ``export`` extra."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import medvision
from medvision.apply.export import run_exported
from medvision.apply.inference import build_module
from medvision.cli import main
from medvision.data.predict_folder import ArrayImageDataset, predict_transform
from medvision.data.synthetic import lung_phantom
from medvision.models.record import Preprocessing

SEGMENTATION = "medvision.models.SegmentationModule"
CLASSIFICATION = "medvision.models.ClassificationModule"
RECORDS = {
    "unet": dict(
        task="segmentation",
        image_size=(64, 64),
        in_channels=1,
        intensity_window=(-1000.0, 400.0),
        class_names=("lung",),
        network={
            "class_path": SEGMENTATION,
            "init_args": {"arch": "Unet", "encoder_name": "resnet18", "arch_kwargs": None},
        },
        mask_threshold=0.5,
    ),
    "fcn": dict(
        task="segmentation",
        image_size=(64, 96),
        in_channels=1,
        intensity_window=None,
        class_names=("lung",),
        network={
            "class_path": SEGMENTATION,
            "init_args": {"arch": "FCN", "encoder_name": "resnet18", "arch_kwargs": None},
        },
        mask_threshold=0.5,
    ),
    "resnet18": dict(
        task="classification",
        image_size=(32, 32),
        in_channels=3,
        intensity_window=None,
        class_names=("benign", "malignant", "other"),
        network={
            "class_path": CLASSIFICATION,
            "init_args": {"model_name": "resnet18", "model_kwargs": None, "multilabel": False},
        },
    ),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def weights(tmp_path):
    """``name -> weights file`` of a freshly initialized network with its record."""

    def make(name: str):
        record = Preprocessing(**RECORDS[name])
        module = build_module(record)
        torch.manual_seed(0)
        for parameter in module.parameters():  # not the init: outputs away from 0 and 1
            parameter.data.normal_(0, 0.05)
        path = tmp_path / f"{name}.ckpt"
        payload = {
            "state_dict": module.state_dict(),
            "medvision": {"preprocessing": record.to_dict()},
        }
        torch.save(payload, path)
        return path

    return make


def synthetic_batch(model, count: int) -> torch.Tensor:
    """``count`` synthetic images prepared as the record says (steps 1-4): the file's input."""
    rng = np.random.default_rng(count)
    images = []
    for index in range(count):
        image, _ = lung_phantom(80, rng)
        if model.preprocessing.in_channels == 3:
            image = np.stack([image, image**2, 1 - image], axis=-1)
        images.append((image[: 60 + index, : 70 - index] * 255).astype(np.uint8))
    record = model.preprocessing
    window = record.intensity_window if record.task == "segmentation" else None
    dataset = ArrayImageDataset(
        images, predict_transform(record.task, record.image_size), record.in_channels, window
    )
    return torch.stack([dataset[i]["image"] for i in range(count)])


def pytorch_probabilities(model, images: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        logits = model.module(images)
        if model.task == "segmentation":
            return logits.sigmoid().numpy()
        return model.module.probabilities(logits).numpy()


def check_against_pytorch(path, format, checkpoint) -> None:
    model = medvision.load_model(checkpoint)
    for count in (1, 3):  # any batch size
        images = synthetic_batch(model, count)
        exported = run_exported(path, format, images)
        expected = pytorch_probabilities(model, images)
        assert exported.shape == expected.shape
        assert np.abs(exported - expected).max() <= 1e-4
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["preprocessing"] == model.preprocessing.to_dict()
    height, width = model.preprocessing.image_size
    assert sidecar["input"]["shape"] == ["N", model.preprocessing.in_channels, height, width]
    assert sidecar["max_difference"] <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet", "fcn", "resnet18"])
def test_onnx_gives_pytorchs_output(weights, tmp_path, name):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    checkpoint = weights(name)
    output = tmp_path / f"{name}.onnx"
    main(["export", f"--ckpt_path={checkpoint}", "--format=onnx", f"--output={output}"])
    check_against_pytorch(output, "onnx", checkpoint)
    properties = {p.key: p.value for p in onnx.load(str(output)).metadata_props}
    recorded = json.loads(properties["medvision_preprocessing"])
    assert recorded == Preprocessing(**RECORDS[name]).to_dict()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet", "fcn", "resnet18"])
def test_torchscript_gives_pytorchs_output(weights, tmp_path, name):
    checkpoint = weights(name)
    output = tmp_path / f"{name}.pt"
    main(["export", f"--ckpt_path={checkpoint}", "--format=torchscript", f"--output={output}"])
    check_against_pytorch(output, "torchscript", checkpoint)
    extra = {"medvision_preprocessing.json": ""}
    torch.jit.load(str(output), _extra_files=extra)
    assert json.loads(extra["medvision_preprocessing.json"])["task"] == RECORDS[name]["task"]


def test_onnx_without_the_export_extra_names_it(weights, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    output = tmp_path / "model.onnx"
    with pytest.raises(ImportError, match=r'pip install "medvision-lightning\[export\]"'):
        main(
            ["export", f"--ckpt_path={weights('resnet18')}", "--format=onnx", f"--output={output}"]
        )
    assert not output.exists()


def test_export_refuses_an_existing_output_and_an_unknown_format(weights, tmp_path, capsys):
    checkpoint = weights("resnet18")
    taken = tmp_path / "model.pt"
    taken.write_text("an earlier export")
    with pytest.raises(ValueError, match="model.pt exists: remove it or give another --output"):
        main(["export", f"--ckpt_path={checkpoint}", "--format=torchscript", f"--output={taken}"])
    assert taken.read_text() == "an earlier export"
    with pytest.raises(SystemExit):
        main(["export", f"--ckpt_path={checkpoint}", "--format=tflite", "--output=x"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
