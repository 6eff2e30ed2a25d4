"""Grad-CAM end to end: ``medvision predict --cam`` writes heat-map overlays and
``load_model(...).explain`` returns them, on a task whose answer is known (issue 21)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import medvision
from medvision.apply.explanations import CLI_OPTIONS, CamExplainer
from medvision.cli import main
from medvision.models import SegmentationModule
from medvision.models.record import Preprocessing

from .conftest import config_run_args

pytest.importorskip("pytorch_grad_cam")

SIZE = 48  # stored images; the network sees 32 px
SIDE = 14
CLASSES = ["bottom_right", "top_left"]


pytestmark = pytest.mark.usefixtures("one_thread")


def corner_square(label: str, rng: np.random.Generator) -> np.ndarray:
    """A noisy 48 px uint8 image with a bright square near the class's corner."""
    image = np.clip(0.3 + 0.1 * rng.standard_normal((SIZE, SIZE)), 0, 1)
    row, col = rng.integers(0, 6, size=2)
    if label == "bottom_right":
        row, col = SIZE - SIDE - row, SIZE - SIDE - col
    image[row : row + SIDE, col : col + SIDE] = 1.0
    return (image * 255).round().astype(np.uint8)


def write_corner_squares(root, counts=(("train", 48), ("val", 8), ("test", 6)), seed=0):
    """The synthetic corner-square task in the chest X-ray ImageFolder layout."""
    rng = np.random.default_rng(seed)
    for split, count in counts:
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(corner_square(label, rng)).save(folder / f"{label}_{index}.png")
    return root


def quadrant_share(heat: np.ndarray, label: str) -> float:
    """Share of a heat map's mass in the quadrant of its class's corner."""
    half = SIZE // 2
    own = heat[half:, half:] if label == "bottom_right" else heat[:half, :half]
    return float(own.sum() / heat.sum())


@pytest.fixture(scope="module")
def corner_model(tmp_path_factory):
    """cnn5 fitted through the CLI on the corner-square task; returns (checkpoint, data)."""
    base = tmp_path_factory.mktemp("corners")
    data = write_corner_squares(base / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    args = config_run_args(
        "cnn5_chestxray.yaml",
        base / "runs",
        data,
        "--model.init_args.model_kwargs={channels: [8, 16, 32], hidden: 32}",
        "--model.init_args.optimizer.init_args.lr=0.003",
        "--model.init_args.lr_scheduler=null",
        "--trainer.max_epochs=8",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.log_every_n_steps=1",
        "--checkpoint.monitor=val/loss",
        "--checkpoint.mode=min",
        image_size=32,
        batch_size=16,
    )
    main(["fit", *args])
    torch.set_num_threads(threads)
    return base / "runs" / "version_0" / "checkpoints" / "best.ckpt", data


@pytest.mark.slow
def test_cam_overlays_from_the_cli_and_heat_maps_in_the_right_quadrant(corner_model, tmp_path):
    checkpoint, data = corner_model
    out = tmp_path / "out"
    test_dir = data / "test"
    main(
        [
            "predict",
            f"--ckpt_path={checkpoint}",
            f"--data.predict_dir={test_dir}",
            f"--output={out}",
            "--cam",
            "hirescam",
        ]
    )
    files = sorted(test_dir.rglob("*.png"))
    written = sorted(p.relative_to(out / "cams") for p in (out / "cams").rglob("*.png"))
    assert written == [p.relative_to(test_dir) for p in files]  # class folders kept (issue 24)
    info = json.loads((out / "prediction_info.json").read_text())
    assert info["cam"] == {"method": "hirescam", "target_layer": "features", "class": "predicted"}

    model = medvision.load_model(checkpoint)
    explanations = model.explain([str(p) for p in files])
    predictions = model.predict([str(p) for p in files])
    for path, explanation, prediction in zip(files, explanations, predictions, strict=True):
        truth = path.parent.name
        assert prediction.label == truth  # the task is learnt
        assert explanation.class_name == truth  # the predicted class is explained
        assert explanation.heat_map.shape == (SIZE, SIZE)  # at the image's own size
        assert quadrant_share(explanation.heat_map, truth) > 0.5, path.name
        with Image.open(out / "cams" / path.relative_to(test_dir)) as overlay:
            np.testing.assert_array_equal(np.asarray(overlay), explanation.overlay)
    # a chosen class, from a tensor: the other corner's class has no evidence in its quadrant
    image = np.asarray(Image.open(files[0]))
    other = model.explain(torch.from_numpy(image), class_index="top_left", method="gradcam")
    assert other.class_index == 1 and other.source == "<array 0>"
    assert other.overlay.shape == (SIZE, SIZE, 3)


@pytest.mark.slow
def test_cam_options_are_checked_with_the_option_named(corner_model, tmp_path, caplog):
    checkpoint, data = corner_model
    base = ["predict", f"--ckpt_path={checkpoint}", f"--data.predict_dir={data / 'test'}"]
    with pytest.raises(ValueError, match=r"--cam 'saliency' is not a known.*gradcam, hirescam"):
        main([*base, "--cam", "saliency"])
    with pytest.raises(
        ValueError,
        match=r"--prediction_writer.cam_target_layer: target layer 'layer4' does not exist in "
        r"CNN5.*'features'",
    ):
        main([*base, "--cam=gradcam", "--prediction_writer.cam_target_layer=layer4"])
    with pytest.raises(ValueError, match=r"--prediction_writer.cam_class 'middle' is not a class"):
        main([*base, "--cam=gradcam", "--prediction_writer.cam_class=middle"])
    with pytest.raises(ValueError, match=r"cam_target_layer .* add --cam gradcam"):
        main([*base, "--prediction_writer.cam_target_layer=features"])
    model = medvision.load_model(checkpoint)
    with pytest.raises(ValueError, match=r"target_layer: target layer 'head.9' does not exist"):
        model.explain(str(next((data / "test").rglob("*.png"))), target_layer="head.9")
    # Grad-CAM on cnn5 runs, with a warning that HiResCAM is the faithful method there
    out = tmp_path / "gradcam"
    with caplog.at_level(logging.WARNING):
        main([*base, "--cam=gradcam", "--prediction_writer.cam_class=1", f"--output={out}"])
    assert "hirescam shows where the evidence lies" in caplog.text
    assert len(list((out / "cams").rglob("*.png"))) == 12
    info = json.loads((out / "prediction_info.json").read_text())["cam"]
    assert info["class"] == "top_left"


def test_cam_on_a_segmentation_model_is_refused(tmp_path, monkeypatch):
    record = Preprocessing(
        task="segmentation",
        image_size=(32, 32),
        in_channels=1,
        intensity_window=None,
        class_names=("lung",),
        network={"class_path": "medvision.models.SegmentationModule", "init_args": {}},
        mask_threshold=0.5,
    )
    checkpoint = tmp_path / "unet.ckpt"
    torch.save({"state_dict": {}, "medvision": {"preprocessing": record.to_dict()}}, checkpoint)
    with pytest.raises(ValueError, match=r"--cam explains classifiers only.*segmentation.*Drop"):
        main(
            [
                "predict",
                f"--ckpt_path={checkpoint}",
                f"--data.predict_dir={tmp_path}",
                "--cam=gradcam",
            ]
        )
    segmenter = SegmentationModule(arch="Unet", encoder_name="resnet18", encoder_weights=None)
    with pytest.raises(ValueError, match=r"--cam explains classifiers only.*Drop --cam"):
        CamExplainer(segmenter, "gradcam", options=CLI_OPTIONS)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    from medvision.models import ClassificationModule

    classifier = ClassificationModule("cnn5", in_channels=1, num_classes=2, class_names=CLASSES)
    with pytest.raises(ImportError, match=r"medvision-lightning\[trust\]"):
        CamExplainer(classifier)
