"""A trained model applies itself: the preprocessing record, predict without a config,
``medvision.load_model``, test-time augmentation and the slim weights file (issue 16)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import medvision
from medvision.apply.tta import check_tta, tta_probabilities
from medvision.cli import main
from medvision.data.synthetic import lung_phantom, write_lung_ct
from medvision.models import SegmentationModule
from medvision.models.record import FORMAT_VERSION, Preprocessing
from medvision.utils.files import read_csv

from .conftest import CONFIGS, chest_run_args, config_run_args, shared_dataset, unet_run_args

QUICK_FIT = [
    "--trainer.max_steps=2",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.limit_val_batches=0",
]
QUIET = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def masks_in(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.array(Image.open(p)) for p in sorted((folder / "masks").glob("*.png"))}


def record(**changes) -> Preprocessing:
    fields = dict(
        task="segmentation",
        image_size=(64, 48),
        in_channels=1,
        intensity_window=(-1000.0, 400.0),
        class_names=("lung",),
        network={"class_path": "medvision.models.SegmentationModule", "init_args": {}},
        mask_threshold=0.5,
    )
    return Preprocessing(**{**fields, **changes})


class InputSizes:
    """Records the height and width of every image batch a model class is given."""

    def __init__(self, module_class) -> None:
        self.module_class, self.sizes = module_class, set()

    def __enter__(self):
        def hook(module, args):
            if isinstance(module, self.module_class):
                self.sizes.add(tuple(args[0].shape[-2:]))

        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


# --- the record, TTA: unit tests ----------------------------------------------------------------


def test_record_round_trips_through_json():
    original = record(lesion_focus={"mode": "crop", "margin": 0.1})
    written = json.loads(json.dumps(original.to_dict()))
    assert written["image_size"] == [64, 48] and written["intensity_window"] == [-1000.0, 400.0]
    assert written["interpolation"] == "linear" and written["activation"] == "sigmoid"
    assert written["version"] == FORMAT_VERSION
    assert Preprocessing.from_dict(written) == original
    classifier = record(task="classification", class_names=("a", "b"), multilabel=False)
    assert classifier.activation == "softmax" and classifier.interpolation == "area"
    assert record(task="classification", multilabel=True).activation == "sigmoid"


def test_record_refuses_a_newer_version_and_missing_fields():
    newer = {**record().to_dict(), "version": FORMAT_VERSION + 1}
    with pytest.raises(ValueError, match="x.ckpt: .*newer than this medvision reads.*upgrade"):
        Preprocessing.from_dict(newer, "x.ckpt")
    incomplete = {k: v for k, v in record().to_dict().items() if k != "image_size"}
    with pytest.raises(ValueError, match=r"lacks \['image_size'\]"):
        Preprocessing.from_dict(incomplete, "x.ckpt")
    with pytest.raises(ValueError, match="2 thresholds for 1 class_names"):
        record(thresholds=(0.5, 0.5))


def test_flip_tta_is_the_mean_of_the_image_and_its_mirror():
    images = torch.arange(6.0).view(1, 1, 2, 3)  # rows [0 1 2], [3 4 5]
    # a "network" whose mask output is the image: un-flipped, the mirror adds nothing
    assert torch.equal(tta_probabilities(lambda x: x, images, "flip", spatial=True), images)
    # a classifier scoring the leftmost column: the mean of the left and right columns
    left = tta_probabilities(lambda x: x[..., 0].flatten(1), images, "flip", spatial=False)
    assert left.tolist() == [[1.0, 4.0]]  # (0 + 2) / 2, (3 + 5) / 2
    assert tta_probabilities(lambda x: x[..., 0].flatten(1), images, None, False).tolist() == [
        [0.0, 3.0]
    ]
    with pytest.raises(ValueError, match=r"tta='rotate' \(--tta\): use one of \['flip'\]"):
        check_tta("rotate")


# --- bad checkpoints: no training needed -------------------------------------------------------


@pytest.fixture
def foreign_files(tmp_path) -> dict[str, Path]:
    """Files that are not current medvision checkpoints."""
    net = SegmentationModule(encoder_name="resnet18", class_names=["lung"])
    files = {
        "older": tmp_path / "older.ckpt",  # a medvision checkpoint from before the record
        "state_dict": tmp_path / "resnet.pth",  # another tool's bare weights
        "truncated": tmp_path / "truncated.ckpt",
    }
    torch.save(
        {"state_dict": net.state_dict(), "pytorch-lightning_version": "2.6.0"}, files["older"]
    )
    torch.save(net.net.state_dict(), files["state_dict"])
    files["truncated"].write_bytes(files["older"].read_bytes()[:5000])
    return files


@pytest.mark.parametrize(
    "kind, message",
    [
        ("older", r"older.ckpt: holds no preprocessing record.*--config CONFIG --ckpt_path"),
        ("state_dict", r"resnet.pth: not a medvision checkpoint"),
        ("truncated", r"truncated.ckpt: not a readable PyTorch checkpoint.*truncated"),
    ],
)
def test_files_without_a_usable_record_are_refused_naming_them(
    foreign_files, tmp_path, kind, message
):
    path = foreign_files[kind]
    with pytest.raises(ValueError, match=message):
        main(["predict", f"--ckpt_path={path}", f"--data.predict_dir={tmp_path}", *QUIET])
    with pytest.raises(ValueError, match=message):
        medvision.load_model(path)
    with pytest.raises(FileNotFoundError, match="no_such.ckpt does not exist"):
        medvision.load_model(tmp_path / "no_such.ckpt")


def test_unknown_tta_on_the_command_line_names_the_choices(foreign_files, tmp_path):
    with pytest.raises(ValueError, match=r"tta='rotate' \(--tta\): use one of \['flip'\]"):
        main(["predict", f"--ckpt_path={foreign_files['older']}", "--tta", "rotate"])


# --- a lung U-Net trained at 64 px -------------------------------------------------------------


@pytest.fixture(scope="module")
def unet(tmp_path_factory) -> dict:
    """A U-Net fitted two steps at 64 px, and new images of other sizes and dtypes."""
    root = tmp_path_factory.mktemp("unet")
    data = root / "lung_ct"
    write_lung_ct(data, num_slices=20, size=64, seed=0)
    args = unet_run_args(root, data, *QUICK_FIT)
    main(["fit", *args])
    incoming = root / "incoming"
    incoming.mkdir()
    image, _ = lung_phantom(96, np.random.default_rng(1))
    Image.fromarray((image[:, :80] * 255).astype(np.uint8)).save(incoming / "wide.png")
    tifffile.imwrite(incoming / "hu.tif", (image[:70] * 2500 - 1024).astype(np.int16))
    rgb = np.repeat((image[:50, :90, None] * 255).astype(np.uint8), 3, axis=2)
    Image.fromarray(rgb).save(incoming / "nested.png")
    return {
        "root": root,
        "args": args,
        "checkpoint": root / "version_0/checkpoints/last.ckpt",
        "incoming": incoming,
        "sizes": {"wide.png": (96, 80), "hu.png": (70, 96), "nested.png": (50, 90)},
    }


@pytest.mark.slow
def test_unet_predicts_from_its_checkpoint_alone_as_with_its_config(unet, tmp_path):
    alone, with_config = tmp_path / "alone", tmp_path / "with_config"
    with InputSizes(SegmentationModule) as seen:
        main(
            [
                "predict",
                f"--ckpt_path={unet['checkpoint']}",
                f"--data.predict_dir={unet['incoming']}",
                f"--output={alone}",
                *QUIET,
            ]
        )
    assert seen.sizes == {(64, 64)}  # the trained size, not the config's 256
    masks = masks_in(alone)
    assert {name: m.shape for name, m in masks.items()} == unet["sizes"]  # original sizes
    assert all(set(np.unique(m)) <= {0, 255} for m in masks.values())
    info = json.loads((alone / "prediction_info.json").read_text())
    assert info["preprocessing"]["image_size"] == [64, 64]
    assert info["checkpoint"] == str(unet["checkpoint"].resolve())
    main(
        [
            "predict",
            *unet["args"],
            f"--ckpt_path={unet['checkpoint']}",
            f"--data.init_args.predict_dir={unet['incoming']}",
            f"--output={with_config}",
        ]
    )
    explicit = masks_in(with_config)
    assert explicit.keys() == masks.keys()
    assert all(np.array_equal(masks[name], explicit[name]) for name in masks)
    assert not list((unet["root"] / "logs").glob("version_1"))  # predict makes no log folder


@pytest.mark.slow
def test_a_config_that_disagrees_is_refused_unless_overridden(unet, tmp_path, caplog):
    config = [
        "--config",
        str(CONFIGS / "unet_lung.yaml"),  # image_size 256
        "--model.init_args.encoder_name=resnet18",
        f"--data.init_args.predict_dir={unet['incoming']}",
        f"--ckpt_path={unet['checkpoint']}",
        *QUIET,
    ]
    with pytest.raises(ValueError) as refused:
        main(["predict", *config, f"--output={tmp_path / 'refused'}"])
    message = str(refused.value)
    assert "\n" not in message
    assert "configs/unet_lung.yaml gives image_size=[256, 256]" in message
    assert "was trained with image_size=[64, 64]" in message
    assert not (tmp_path / "refused").exists()  # nothing left behind
    with InputSizes(SegmentationModule) as seen, caplog.at_level(logging.WARNING):
        main(["predict", *config, "--data.init_args.image_size=96", f"--output={tmp_path / 'o'}"])
    assert seen.sizes == {(96, 96)}
    assert "image_size=[96, 96] as given on the command line" in caplog.text


@pytest.mark.slow
def test_load_model_predicts_what_the_cli_writes(unet, tmp_path):
    model = medvision.load_model(unet["checkpoint"], device="cpu")
    assert not model.module.training and model.task == "segmentation"
    assert model.preprocessing.image_size == (64, 64)
    paths = sorted(unet["incoming"].iterdir())
    for tta in (None, "flip"):
        out = tmp_path / f"cli_{tta}"
        extra = [] if tta is None else ["--tta", tta]
        main(
            [
                "predict",
                f"--ckpt_path={unet['checkpoint']}",
                f"--data.predict_dir={unet['incoming']}",
                f"--output={out}",
                *extra,
                *QUIET,
            ]
        )
        written = masks_in(out)
        results = model.predict(paths, tta=tta, batch_size=2)
        for path, result in zip(paths, results, strict=True):
            assert result.source == str(path)
            assert np.array_equal(written[f"{path.stem}.png"] > 0, result.mask)
            assert result.probabilities.shape == result.mask.shape
    # a decoded array (raw int16 intensities) and a tensor are prepared as the file is
    hu = tifffile.imread(unet["incoming"] / "hu.tif")
    from_file = model.predict(unet["incoming"] / "hu.tif")
    assert np.array_equal(model.predict(hu).mask, from_file.mask)
    assert np.array_equal(model.predict(torch.from_numpy(hu)).mask, from_file.mask)
    with pytest.raises(ValueError, match=r"<array 0>: shape \(2, 3, 4, 5\) is not one image"):
        model.predict(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="missing.png: file not found"):
        model.predict(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="tta='rotate'"):
        model.predict(paths[0], tta="rotate")


@pytest.mark.slow
def test_every_predict_run_writes_a_folder_of_its_own(unet, tmp_path):
    arguments = [
        "predict",
        f"--ckpt_path={unet['checkpoint']}",
        f"--data.predict_dir={unet['incoming']}",
        *QUIET,
    ]
    main(arguments)
    main(arguments)
    runs = sorted((unet["root"] / "version_0/predictions").iterdir())  # the run folder
    assert len(runs) == 2 and all(len(masks_in(run)) == 3 for run in runs)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("an earlier run's")
    with pytest.raises(ValueError, match="taken is not empty: predict never mixes"):
        main([*arguments, f"--output={taken}"])
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="predict_dir .*nowhere does not exist"):
        main([*arguments, f"--data.predict_dir={tmp_path / 'nowhere'}", f"--output={missing}"])
    assert not missing.exists()


@pytest.mark.slow
def test_a_kaggle_layout_folder_predicts_its_images_and_scores_its_masks(unet, tmp_path):
    folder = unet["root"] / "lung_ct"  # 2d_images/ and 2d_masks/
    common = ["predict", f"--ckpt_path={unet['checkpoint']}", f"--data.predict_dir={folder}"]
    main([*common, f"--output={tmp_path / 'images'}", *QUIET])
    assert len(masks_in(tmp_path / "images")) == 20  # the masks are not taken for images
    assert not (tmp_path / "images/failed.csv").exists()
    scored = tmp_path / "scored"
    main([*common, f"--data.predict_mask_dir={folder / '2d_masks'}", f"--output={scored}", *QUIET])
    rows = read_csv(scored / "metrics.csv")
    assert len(rows) == 20 and all(0 <= float(r["dice"]) <= 1 for r in rows)


@pytest.mark.slow
def test_an_unreadable_image_is_listed_and_the_others_predicted(unet, tmp_path):
    incoming = tmp_path / "incoming"
    shutil.copytree(unet["incoming"], incoming)
    (incoming / "broken.png").write_bytes(b"not a png")
    (incoming / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as status:
        main(
            [
                "predict",
                f"--ckpt_path={unet['checkpoint']}",
                f"--data.predict_dir={incoming}",
                f"--output={out}",
                *QUIET,
            ]
        )
    assert status.value.code == 1
    failed = {Path(r["file"]).name: r["problem"] for r in read_csv(out / "failed.csv")}
    assert failed.keys() == {"broken.png", "notes.txt"}
    assert "cannot be decoded" in failed["broken.png"] and "not an image" in failed["notes.txt"]
    assert len(masks_in(out)) == 3


@pytest.mark.slow
def test_an_older_checkpoint_predicts_with_its_config_and_a_warning(unet, tmp_path, caplog):
    checkpoint = torch.load(unet["checkpoint"], weights_only=True)
    del checkpoint["medvision"]  # as written before the record existed
    older = tmp_path / "older.ckpt"
    torch.save(checkpoint, older)
    with pytest.raises(ValueError, match="older.ckpt: holds no preprocessing record"):
        main(["predict", f"--ckpt_path={older}", f"--data.predict_dir={unet['incoming']}"])
    with caplog.at_level(logging.WARNING):
        main(
            [
                "predict",
                *unet["args"],
                f"--ckpt_path={older}",
                f"--data.init_args.predict_dir={unet['incoming']}",
                f"--output={tmp_path / 'out'}",
            ]
        )
    assert "older.ckpt holds no preprocessing record" in caplog.text
    assert len(masks_in(tmp_path / "out")) == 3
    # its datamodule's saved hyperparameters still catch the wrong size
    config = [
        "--config",
        str(CONFIGS / "unet_lung.yaml"),
        "--model.init_args.encoder_name=resnet18",
    ]
    with pytest.raises(ValueError, match=r"image_size=\[256, 256\] but .*older.ckpt was trained"):
        main(
            [
                "predict",
                *config,
                f"--ckpt_path={older}",
                f"--data.init_args.predict_dir={unet['incoming']}",
                *QUIET,
            ]
        )


@pytest.mark.slow
def test_the_slim_weights_file_predicts_like_the_checkpoint(unet, tmp_path):
    weights = tmp_path / "lung_unet.ckpt"
    main(["export", f"--ckpt_path={unet['checkpoint']}", "--format=weights", f"--output={weights}"])
    assert weights.stat().st_size < unet["checkpoint"].stat().st_size / 2  # no optimizer state
    assert set(torch.load(weights, weights_only=True)) == {
        "state_dict",
        "medvision",
        "hyper_parameters",
        "pytorch-lightning_version",
    }
    sidecar = json.loads((tmp_path / "lung_unet.ckpt.json").read_text())
    assert sidecar["preprocessing"]["image_size"] == [64, 64]
    assert SegmentationModule.load_from_checkpoint(weights).hparams.encoder_name == "resnet18"
    paths = sorted(unet["incoming"].iterdir())
    full = medvision.load_model(unet["checkpoint"]).predict(paths)
    slim = medvision.load_model(weights).predict(paths)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(full, slim, strict=True))
    main(
        [
            "predict",
            f"--ckpt_path={weights}",
            f"--data.predict_dir={unet['incoming']}",
            f"--output={tmp_path / 'out'}",
            *QUIET,
        ]
    )
    written = masks_in(tmp_path / "out")
    pairs = zip(paths, full, strict=True)
    assert all(np.array_equal(written[f"{p.stem}.png"] > 0, r.mask) for p, r in pairs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without")
def test_a_cuda_device_without_a_gpu_is_an_error_not_a_fallback(foreign_files):
    with pytest.raises(RuntimeError, match="no CUDA GPU is available here; use device='cpu'"):
        medvision.load_model(foreign_files["older"], device="cuda")


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_load_model_on_a_gpu_predicts_as_on_the_cpu(unet, tmp_path):
    paths = sorted(unet["incoming"].iterdir())
    on_cpu = medvision.load_model(unet["checkpoint"]).predict(paths)
    on_gpu = medvision.load_model(unet["checkpoint"], device="cuda").predict(paths, tta="flip")
    flipped = medvision.load_model(unet["checkpoint"]).predict(paths, tta="flip")
    for cpu, gpu in zip(flipped, on_gpu, strict=True):
        assert np.abs(cpu.probabilities - gpu.probabilities).max() < 1e-3
        assert (cpu.mask == gpu.mask).mean() > 0.999
    assert len(on_cpu) == len(on_gpu)
    out = tmp_path / "gpu"
    main(
        [
            "predict",
            f"--ckpt_path={unet['checkpoint']}",
            f"--data.predict_dir={unet['incoming']}",
            f"--output={out}",
            "--trainer.accelerator=gpu",
            "--trainer.devices=1",
        ]
    )
    assert len(masks_in(out)) == len(paths)


# --- classifiers -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_classifier_predicts_a_loose_folder_without_config_or_training_data(tmp_path, chest_dir):
    main(["fit", *chest_run_args(tmp_path, chest_dir, *QUICK_FIT)])
    checkpoint = tmp_path / "version_0/checkpoints/last.ckpt"
    loose = tmp_path / "loose"
    (loose / "ward_a").mkdir(parents=True)
    for index, path in enumerate(sorted((chest_dir / "test").rglob("*.*"))[:5]):
        shutil.copy(path, loose / ("ward_a" if index % 2 else "") / f"{index}{path.suffix}")
    shutil.rmtree(chest_dir)  # no training data on this machine
    out = tmp_path / "out"
    main(["predict", f"--ckpt_path={checkpoint}", f"--data.predict_dir={loose}", f"--output={out}"])
    rows = read_csv(out / "predictions.csv")
    classes = ["COVID19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS"]  # the checkpoint's order
    assert list(rows[0]) == ["file", "pred", *[f"prob_{c}" for c in classes]]
    assert len(rows) == 5  # loose files at any depth
    model = medvision.load_model(checkpoint)
    results = model.predict([row["file"] for row in rows])
    for row, result in zip(rows, results, strict=True):
        written = np.array([float(row[f"prob_{c}"]) for c in classes])
        assert np.abs(written - result.probabilities).max() <= 1e-6  # the CSV keeps 6 decimals
        assert row["pred"] == result.label == classes[int(result.probabilities.argmax())]
    # with the config but without its data folder: the classes come from the checkpoint
    main(
        [
            "predict",
            *chest_run_args(tmp_path, tmp_path / "not_here"),
            f"--ckpt_path={checkpoint}",
            f"--data.init_args.predict_dir={loose}",
            f"--output={tmp_path / 'with_config'}",
        ]
    )
    assert read_csv(tmp_path / "with_config/predictions.csv") == rows


@pytest.mark.slow
def test_a_multilabel_model_lists_the_labels_above_its_thresholds(tmp_path, nih_dir):
    args = config_run_args(
        "resnet50_nih.yaml", tmp_path, nih_dir, "--model.init_args.model_name=resnet18", *QUICK_FIT
    )
    main(["fit", *args])
    checkpoint = torch.load(tmp_path / "version_0/checkpoints/last.ckpt", weights_only=True)
    names = checkpoint["medvision"]["preprocessing"]["class_names"]
    assert len(names) == 14 and checkpoint["medvision"]["preprocessing"]["multilabel"]
    # as if tuned: Edema always above its threshold, every other label never
    thresholds = [0.0 if name == "Edema" else 1.0 for name in names]
    checkpoint["state_dict"]["thresholds"] = torch.tensor(thresholds)
    checkpoint["medvision"]["preprocessing"]["thresholds"] = thresholds
    tuned = tmp_path / "tuned.ckpt"
    torch.save(checkpoint, tuned)
    out = tmp_path / "out"
    main(
        [
            "predict",
            f"--ckpt_path={tuned}",
            f"--data.predict_dir={nih_dir / 'images'}",
            f"--output={out}",
            *QUIET,
        ]
    )
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == len(list((nih_dir / "images").rglob("*.png")))
    assert {row["pred"] for row in rows} == {"Edema"}
    assert list(rows[0])[2:] == [f"prob_{name}" for name in names]
    result = medvision.load_model(tuned).predict(rows[0]["file"])
    assert result.labels == ("Edema",) and result.label == "Edema"


@pytest.mark.slow
def test_a_rebalanced_classifier_predicts_without_its_extractor(tmp_path, chest_dir):
    from .conftest import rebalance_run_args, train_extractor

    extractor = train_extractor("cnn5_chestxray.yaml", tmp_path / "ex", chest_dir, image_size=32)
    args = rebalance_run_args(
        "rebalance_chestxray.yaml",
        tmp_path / "gan",
        chest_dir,
        extractor,
        "--config",
        str(CONFIGS / "rebalancing/feature_gan.yaml"),
        "--model.init_args.gan_epochs=1",
        "--model.init_args.generator_width=16",
        "--model.init_args.discriminator_width=16",
        "--trainer.max_epochs=2",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        image_size=32,
    )
    main(["fit", *args])
    checkpoint = tmp_path / "gan/version_0/checkpoints/last.ckpt"
    saved = torch.load(checkpoint, weights_only=True)
    assert any(key.startswith("generator.") for key in saved["state_dict"])
    predict_dir = tmp_path / "to_predict"
    shutil.copytree(chest_dir / "test" / "NORMAL", predict_dir)
    shutil.rmtree(extractor.parent.parent)  # the extractor's run: gone
    out = tmp_path / "out"
    main(
        [
            "predict",
            f"--ckpt_path={checkpoint}",
            f"--data.predict_dir={predict_dir}",
            f"--output={out}",
        ]
    )
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == len(list(predict_dir.iterdir()))
    assert list(rows[0])[2:] == [
        f"prob_{c}" for c in ("COVID19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS")
    ]
    results = medvision.load_model(checkpoint).predict([row["file"] for row in rows])
    assert [row["pred"] for row in rows] == [r.label for r in results]


# --- real data ---------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
def test_real_lung_unet_predicts_alone_as_with_its_config(real_lung_dir, tmp_path):
    args = unet_run_args(
        tmp_path, real_lung_dir, "--trainer.max_steps=3", "--trainer.limit_val_batches=0"
    )
    main(["fit", *args])
    checkpoint = tmp_path / "version_0/checkpoints/last.ckpt"
    fullres = shared_dataset("lung_ct_fullres_sample", "2d_images") / "2d_images"
    slices = tmp_path / "slices"  # 512 x 512 RGB TIFFs, trained on 64 x 64 gray ones
    slices.mkdir()
    for path in sorted(fullres.glob("*.tif"))[:4]:
        shutil.copy(path, slices / path.name)
    alone, with_config = tmp_path / "alone", tmp_path / "with_config"
    main(
        [
            "predict",
            f"--ckpt_path={checkpoint}",
            f"--data.predict_dir={slices}",
            f"--output={alone}",
            *QUIET,
        ]
    )
    main(
        [
            "predict",
            *args,
            f"--ckpt_path={checkpoint}",
            f"--data.init_args.predict_dir={slices}",
            f"--output={with_config}",
        ]
    )
    masks, explicit = masks_in(alone), masks_in(with_config)
    assert len(masks) == 4 and masks.keys() == explicit.keys()
    assert all(m.shape == (512, 512) for m in masks.values())
    assert all(np.array_equal(masks[name], explicit[name]) for name in masks)
