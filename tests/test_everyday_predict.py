"""Everyday ``medvision predict`` (issue 24): volumes and DICOM series from the checkpoint
alone, patient-per-folder layouts, quiet runs, options checked before the model loads, the
Kaggle layout scored as it is; and the predict path's structure (issue 25): the record picks
one reader and one writer, the models hold no predict option."""

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
from medvision.apply import PredictionWriter, SegmentationPredictionWriter, VolumePredictionWriter
from medvision.apply.prediction import ClassificationPredictionWriter
from medvision.cli import main
from medvision.cli.predict import record_defaults
from medvision.data.synthetic import lung_phantom, write_lung_ct
from medvision.models import SegmentationModule, segmentation
from medvision.models.record import Preprocessing
from medvision.utils.files import read_csv

from .conftest import CONFIGS, cnn5_checkpoint, lung_record, record_checkpoint, unet_run_args

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

from medvision.data.nifti import series_image  # noqa: E402
from medvision.data.synthetic_volumes import write_dicom_series, write_nifti_volumes  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]
#: A 3-level U-Net: predict needs weights, not skill.
SMALL_UNET = '--model.init_args.arch_kwargs={"encoder_depth":3,"decoder_channels":[32,16,8]}'
LABELS = ["background", "left", "right"]


# --- checkpoints -------------------------------------------------------------------------------


def fit_volumes(root: Path, data: Path, *extra: str) -> Path:
    """``configs/quickstart_volumes.yaml`` fitted one step at 16 px on ``data``: its last.ckpt."""
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart_volumes.yaml"),
            f"--data.init_args.data_dir={data}",
            "--data.init_args.image_size=16",
            "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=8",
            SMALL_UNET,
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0",
            f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}",
            *QUIET,
            *extra,
        ]
    )
    return root / "version_0/checkpoints/last.ckpt"


@pytest.fixture(scope="module")
def volume_models(tmp_path_factory) -> dict:
    """A binary and a 3-class U-Net fitted on NIfTI volumes, and new volumes to predict."""
    base = tmp_path_factory.mktemp("volumes")
    write_nifti_volumes(base / "binary", 3, (24, 20, 6), seed=0)
    for _, mask in write_nifti_volumes(base / "labels", 3, (24, 20, 6), seed=1):
        loaded = nib.load(mask)
        labels = np.asanyarray(loaded.dataobj).astype(np.uint8)
        labels[12:] *= 2  # the blob's second half (stored axis 0) is label 2
        nib.save(nib.Nifti1Image(labels, loaded.affine, loaded.header), mask)
    binary = fit_volumes(base / "runs_binary", base / "binary")
    three = fit_volumes(
        base / "runs_labels",
        base / "labels",
        f"--data.init_args.class_names=[{','.join(LABELS)}]",
        "--model.init_args.loss=dice_ce",
    )
    new = base / "new"  # one patient per folder, the same file name in each
    for patient, index in (("p1", 0), ("p2", 1)):
        (new / patient).mkdir(parents=True)
        shutil.copy(base / f"binary/images/vol_00{index}.nii.gz", new / patient / "ct.nii.gz")
    write_dicom_series(new / "p3/series", num_slices=5, size=(24, 20))  # a DICOM series
    nib.save(series_image(new / "p3/series"), new / "p3_as_nifti.nii.gz")  # the same, as NIfTI
    return {"binary": binary, "three": three, "new": new, "base": base}


@pytest.fixture(scope="module")
def lung_checkpoint(tmp_path_factory) -> Path:
    """An untrained 2D lung U-Net's checkpoint with its record (no fit needed)."""
    record = lung_record()
    module = SegmentationModule(
        encoder_name="resnet18",
        class_names=["lung"],
        arch_kwargs=record.network["init_args"]["arch_kwargs"],
    )
    return record_checkpoint(tmp_path_factory.mktemp("lung") / "lung.ckpt", module, record)


def write_images(folder: Path, names: list[str], seed: int = 0) -> None:
    """Phantom lung slices (uint8 PNG, or int16 TIFF) at ``folder/<name>``."""
    rng = np.random.default_rng(seed)
    for name in names:
        image, _ = lung_phantom(40, rng)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".tif"):
            tifffile.imwrite(folder / name, (image * 2500 - 1024).astype(np.int16))
        else:
            Image.fromarray((image * 255).astype(np.uint8)).save(folder / name)


# --- issue 24, point 3: volumes from the checkpoint alone --------------------------------------


def written_labels(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "labels"), [("binary", {0, 1}), ("three", {0, 1, 2})])
def test_a_volume_model_predicts_nifti_on_the_inputs_grid_without_config(
    volume_models, tmp_path, model, labels
):
    checkpoint = volume_models[model]
    new, out = volume_models["new"], tmp_path / "out"
    main(["predict", f"--ckpt_path={checkpoint}", f"--data.predict_dir={new}", f"--output={out}"])
    record = torch.load(checkpoint, weights_only=True)["medvision"]["preprocessing"]
    assert record["input"] == "volume" and record["slice_axis"] == 2  # fit wrote what it read
    for source, result in [
        ("p1/ct.nii.gz", "p1/ct.nii.gz"),  # patient folders kept: one name, two files
        ("p2/ct.nii.gz", "p2/ct.nii.gz"),
        ("p3_as_nifti.nii.gz", "p3_as_nifti.nii.gz"),
    ]:
        written, original = nib.load(out / result), nib.load(new / source)
        assert written.shape == original.shape
        np.testing.assert_allclose(written.affine, original.affine)
        assert set(np.unique(written_labels(out / result))) <= labels
    # the DICOM series: on the grid dcm2niix would give it (columns x rows x slices, RAS),
    # worked out by hand from the written tags: PixelSpacing (0.7, 0.8), orientation
    # (1,0,0, 0,1,0), slice k at (-10, -12, -20 + 2.5 k)
    series = nib.load(out / "p3/series.nii.gz")
    assert series.shape == (20, 24, 5)
    expected = np.array([[-0.8, 0, 0, 10], [0, -0.7, 0, 12], [0, 0, 2.5, -20], [0, 0, 0, 1]])
    np.testing.assert_allclose(series.affine, expected)
    np.testing.assert_array_equal(
        written_labels(out / "p3/series.nii.gz"), written_labels(out / "p3_as_nifti.nii.gz")
    )
    info = json.loads((out / "prediction_info.json").read_text())
    assert info["preprocessing"]["input"] == "volume"
    # load_model predicts the labels the command wrote, a series folder included
    results = medvision.load_model(checkpoint).predict([new / "p1/ct.nii.gz", new / "p3/series"])
    for result, written in zip(results, ["p1/ct.nii.gz", "p3/series.nii.gz"], strict=True):
        np.testing.assert_array_equal(result.labels, written_labels(out / written))
        np.testing.assert_allclose(result.image.affine, nib.load(out / written).affine)


@pytest.mark.slow
def test_the_volume_config_predicts_a_multi_class_checkpoint_without_class_names(
    volume_models, tmp_path
):
    out = tmp_path / "out"
    main(
        [
            "predict",
            "--config",
            str(CONFIGS / "quickstart_volumes.yaml"),  # leaves class_names at the default
            f"--data.init_args.data_dir={volume_models['base'] / 'labels'}",
            "--data.init_args.image_size=16",
            f"--ckpt_path={volume_models['three']}",
            f"--data.init_args.predict_dir={volume_models['new'] / 'p1'}",
            f"--output={out}",
            *QUIET,
        ]
    )
    assert written_labels(out / "ct.nii.gz").shape == (24, 20, 6)
    info = json.loads((out / "prediction_info.json").read_text())
    assert info["preprocessing"]["class_names"] == LABELS


# --- point 7: a quiet run, options checked before the model loads ------------------------------


@pytest.mark.slow
def test_predict_says_nothing_about_seeds_or_restored_callbacks(tmp_path, caplog, recwarn):
    root, data = tmp_path / "fit", tmp_path / "lung_ct"
    write_lung_ct(data, num_slices=8, size=32, seed=0)
    fit = ["--trainer.max_steps=1", "--trainer.limit_val_batches=0", SMALL_UNET]
    main(["fit", *unet_run_args(root, data, *fit)])
    out = tmp_path / "out"
    caplog.clear()
    recwarn.clear()
    with caplog.at_level(logging.INFO):
        main(
            [
                "predict",
                f"--ckpt_path={root / 'version_0/checkpoints/last.ckpt'}",  # with its callbacks
                f"--data.predict_dir={data / '2d_images'}",
                f"--output={out}",
                *QUIET,
            ]
        )
    assert len(list((out / "masks").glob("*.png"))) == 8
    said = caplog.text + "".join(str(w.message) for w in recwarn)
    assert "No seed found" not in said and "Seed set" not in said
    assert "Be aware that when using `ckpt_path`" not in said
    assert "Restoring states from the checkpoint" not in said


def test_options_that_cannot_work_are_refused_before_the_model_is_built(
    lung_checkpoint, tmp_path, monkeypatch
):
    built = []
    original = segmentation.create_segmentation_net

    def counting(*args, **kwargs):
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(segmentation, "create_segmentation_net", counting)
    incoming = tmp_path / "incoming"
    write_images(incoming, ["a.png"])
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("an earlier run's")
    common = ["predict", f"--ckpt_path={lung_checkpoint}", f"--data.predict_dir={incoming}"]
    with pytest.raises(ValueError, match="taken is not empty: predict never mixes"):
        main([*common, f"--output={taken}", *QUIET])
    with pytest.raises(ValueError, match=r"tta='rot90' \(--tta\): use one of \['flip'\]"):
        main([*common, "--prediction_writer.tta=rot90", *QUIET])
    with pytest.raises(ValueError, match=r"tta='rot90'"):  # checked before the file is read
        main(["predict", f"--ckpt_path={tmp_path / 'missing.ckpt'}", "--tta", "rot90"])
    assert built == []


# --- point 10: patient-per-folder layouts -------------------------------------------------------


def test_patient_folders_with_the_same_file_names_are_mirrored_in_the_output(
    lung_checkpoint, tmp_path
):
    incoming = tmp_path / "incoming"
    write_images(incoming, ["a/x.tif", "b/x.tif", "b/deeper/x.png", "y.png"])
    (incoming / "b/x.png").write_bytes((incoming / "b/deeper/x.png").read_bytes())  # b/x twice
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as status:  # b/x.tif clashes with b/x.png: listed, exit 1
        main(
            [
                "predict",
                f"--ckpt_path={lung_checkpoint}",
                f"--data.predict_dir={incoming}",
                f"--output={out}",
                *QUIET,
            ]
        )
    assert status.value.code == 1
    names = {"a/x.png", "b/x.png", "b/deeper/x.png", "y.png"}
    for folder in ("masks", "overlays"):
        assert {p.relative_to(out / folder).as_posix() for p in (out / folder).rglob("*.png")} == (
            names
        )
    assert Image.open(out / "masks/a/x.png").size == (40, 40)
    failed = read_csv(out / "failed.csv")
    assert [Path(r["file"]).relative_to(incoming).as_posix() for r in failed] == ["b/x.tif"]
    assert "same name as x.png" in failed[0]["problem"]
    # load_model predicts the same masks as the command wrote
    model = medvision.load_model(lung_checkpoint)
    result = model.predict(incoming / "b/deeper/x.png")
    written = np.array(Image.open(out / "masks/b/deeper/x.png"))
    np.testing.assert_array_equal(written > 0, result.mask)


def test_a_classifier_keeps_each_files_path_in_predictions_csv(tmp_path):
    checkpoint = cnn5_checkpoint(tmp_path / "cnn5.ckpt")
    incoming = tmp_path / "incoming"
    write_images(incoming, ["p1/x.png", "p2/x.png"])
    out = tmp_path / "out"
    main(
        [
            "predict",
            f"--ckpt_path={checkpoint}",
            f"--data.predict_dir={incoming}",
            f"--output={out}",
        ]
    )
    rows = read_csv(out / "predictions.csv")
    assert [Path(r["file"]).relative_to(incoming).as_posix() for r in rows] == [
        "p1/x.png",
        "p2/x.png",
    ]


# --- point 13 ------------------------------------------------------------------------------------


def test_explaining_a_segmenter_says_it_cannot_be_explained(lung_checkpoint, tmp_path):
    write_images(tmp_path, ["a.png"])
    model = medvision.load_model(lung_checkpoint)
    with pytest.raises(ValueError, match="a segmentation model cannot be explained") as error:
        model.explain(tmp_path / "a.png")
    assert "Drop" not in str(error.value) and "probabilities" in str(error.value)


def test_the_kaggle_layout_is_scored_without_predict_mask_dir(lung_checkpoint, tmp_path):
    folder = tmp_path / "lung_ct"
    write_lung_ct(folder, num_slices=4, size=40, seed=0)  # 2d_images/ and 2d_masks/
    out = tmp_path / "out"
    main(
        [
            "predict",
            f"--ckpt_path={lung_checkpoint}",
            f"--data.predict_dir={folder}",
            f"--output={out}",
            *QUIET,
        ]
    )
    rows = read_csv(out / "metrics.csv")
    assert len(rows) == 4 and all(Path(r["mask"]).parent.name == "2d_masks" for r in rows)
    assert len(list((out / "masks").glob("*.png"))) == 4  # named as before, not 2d_images/...


def test_an_undecodable_dicom_is_one_line_naming_the_file_and_pydicom_stays_quiet(tmp_path, caplog):
    from pydicom.uid import RLELossless

    from medvision.data.io import ImageReadError, read_image

    write_dicom_series(tmp_path / "series", num_slices=1)
    dataset = pydicom.dcmread(next((tmp_path / "series").glob("*.dcm")))
    dataset.compress(RLELossless)
    dataset.PixelData = dataset.PixelData[:-40]  # a truncated RLE segment
    damaged = tmp_path / "damaged.dcm"
    dataset.save_as(damaged)
    with caplog.at_level(logging.DEBUG), pytest.raises(ImageReadError) as error:
        read_image(damaged)
    message = str(error.value)
    assert (
        message.startswith(f"{damaged}: its pixel data cannot be decoded") and "\n" not in message
    )
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]


# --- issue 25: one reader and one writer from the record; no predict option on models ----------


@pytest.mark.parametrize(
    ("changes", "writer"),
    [
        ({}, SegmentationPredictionWriter),
        ({"input": "volume", "slice_axis": 2}, VolumePredictionWriter),
        (
            {"task": "classification", "class_names": ("a", "b"), "mask_threshold": None},
            ClassificationPredictionWriter,
        ),
    ],
)
def test_the_record_picks_the_reader_and_the_one_writer(changes, writer):
    record = lung_record(**changes)
    chosen = PredictionWriter(threshold=0.3)
    chosen.use(record, torch.nn.Identity())
    assert type(chosen.writer) is writer
    data = record_defaults(record)["data"]
    assert data["class_path"].endswith(
        "VolumeSliceDataModule" if record.input == "volume" else "ImageFolderPredictDataModule"
    )
    assert data["init_args"]["image_size"] == (32, 32)  # the record's tuple, not a JSON string


def test_models_hold_no_predict_options():
    module = SegmentationModule(encoder_name="resnet18", class_names=["lung"])
    assert not hasattr(module, "predict_tta")
    output = module.eval().predict_step({"image": torch.rand(1, 1, 32, 32), "path": ["a"]}, 0)
    assert output["probs"].shape == (1, 1, 32, 32) and output["path"] == ["a"]


def test_an_older_record_without_input_reads_as_images():
    record = lung_record().to_dict()
    del record["input"], record["slice_axis"]
    assert Preprocessing.from_dict(record).input == "image"
    with pytest.raises(ValueError, match="input 'volume' needs task 'segmentation'"):
        lung_record(task="classification", input="volume", slice_axis=2)
