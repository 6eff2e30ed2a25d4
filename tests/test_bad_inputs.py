"""Bad inputs, one by one: every error names the offending file, row or key, and says what to do.

Datamodules scan every file at setup and report all problems in one error (or, with
``bad_files: exclude``, leave them out and list them in ``excluded_files.csv``); config mistakes
give one clear line; ``predict`` goes on past bad files, lists them in ``failed.csv`` and exits
with status 1.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import lightning
import numpy as np
import pytest
import tifffile
import torch
from lightning.pytorch import Trainer
from PIL import Image

from medvision.cli import MedVisionCLI, main
from medvision.data import (
    ChestXrayDataModule,
    CheXpertDataModule,
    HAM10000DataModule,
    LungCTDataModule,
    NIHChestXray14DataModule,
)
from medvision.data.synthetic import lung_phantom, write_chest_xray, write_lung_ct
from medvision.utils.files import read_csv

from .conftest import chest_run_args, unet_run_args


def write_rows(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def truncate(path: Path, keep: int = 120) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def nth(folder: Path, index: int, pattern: str = "*") -> Path:
    return sorted(folder.glob(pattern))[index]


def assert_named(error: pytest.ExceptionInfo, path: Path | str, pattern: str) -> None:
    """The error's message names ``path`` and matches ``pattern`` (a regex)."""
    message = str(error.value)
    assert str(path) in message, message
    assert re.search(pattern, message), message


# --- lung CT: image/mask pairs ----------------------------------------------------------------


def slice_file(root: Path, kind: str, index: int, folder: str | None = None) -> Path:
    """Image or mask number ``index`` of :func:`write_lung_ct` (its file name is fixed)."""
    return root / (folder or f"2d_{kind}") / f"ID_{index:04d}_Z_{index * 7 % 200:04d}.tif"


def _label_mask(root: Path, folder: str = "2d_masks") -> Path:
    """The 4th mask rewritten as a label mask holding values 0..7."""
    mask = slice_file(root, "masks", 3, folder)
    tifffile.imwrite(mask, (np.arange(64 * 64) % 8).reshape(64, 64).astype(np.uint8))
    return mask


def _rgba_mask(root: Path) -> Path:
    mask = slice_file(root, "masks", 4)
    tifffile.imwrite(mask, np.full((64, 64, 4), 255, np.uint8))  # alpha everywhere: not a mask
    return mask


def _nan_image(root: Path) -> Path:
    image = slice_file(root, "images", 5)
    array = np.zeros((64, 64), np.float32)
    array[3, 3] = np.nan
    tifffile.imwrite(image, array)
    return image


def _stack(root: Path) -> Path:
    image = slice_file(root, "images", 6)
    tifffile.imwrite(image, np.zeros((5, 64, 64), np.uint8))
    return image


def _small_mask(root: Path) -> Path:
    mask = slice_file(root, "masks", 7)
    tifffile.imwrite(mask, np.zeros((32, 32), np.uint8))
    return mask


def _image_without_mask(root: Path) -> Path:
    slice_file(root, "masks", 8).unlink()
    return slice_file(root, "images", 8)


def _mask_without_image(root: Path) -> Path:
    mask = slice_file(root, "masks", 9)
    (root / "2d_images" / mask.name).unlink()
    return mask


def _text_as_tiff(root: Path) -> Path:
    image = slice_file(root, "images", 10)
    image.write_text("patient notes, not a TIFF")
    return image


def _empty_mask(root: Path) -> Path:
    mask = slice_file(root, "masks", 11)
    mask.write_bytes(b"")
    return mask


LUNG_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated image": (lambda root: truncate(slice_file(root, "images", 2)), "truncated"),
    "zero-byte mask": (_empty_mask, r"is empty \(0 bytes\)"),
    "text saved as .tif": (_text_as_tiff, "cannot be decoded as an image"),
    "image without mask": (_image_without_mask, "no mask .*Add the mask"),
    "mask without image": (_mask_without_image, "no image .*Add the image"),
    "mask of another size": (_small_mask, "mask is 32x32 but its image .* 64x64"),
    "label mask with values up to 7": (_label_mask, "mask values go up to 7 .*binary mask"),
    "4-channel mask": (_rgba_mask, "mask has 4 channels .*single-channel"),
    "float image with NaN": (_nan_image, "NaN or infinite"),
    "stack of slices": (_stack, "one file per slice"),
}


@pytest.mark.parametrize("case", list(LUNG_CASES))
def test_lung_ct_bad_file_is_named_before_training(case, lung_dir):
    make_bad, pattern = LUNG_CASES[case]
    bad = make_bad(lung_dir)
    with pytest.raises(ValueError, match="1 bad image/mask pairs") as error:
        LungCTDataModule(lung_dir, image_size=32, num_workers=0).setup("fit")
    assert_named(error, bad, pattern)
    assert "bad_files: exclude" in str(error.value)  # the way out is named too


def test_lung_ct_reports_every_problem_in_one_error(lung_dir):
    bad = [make_bad(lung_dir) for make_bad, _ in LUNG_CASES.values()]
    with pytest.raises(ValueError, match=f"{len(bad)} bad image/mask pairs") as error:
        LungCTDataModule(lung_dir, image_size=32, num_workers=0).setup("fit")
    assert all(str(path) in str(error.value) for path in bad)


# --- exclusion: bad_files: exclude ----------------------------------------------------------


def test_exclude_without_a_trainer_warns_and_keeps_the_list(lung_dir, caplog):
    cases = ("truncated image", "label mask with values up to 7")
    bad = [LUNG_CASES[case][0](lung_dir) for case in cases]
    dm = LungCTDataModule(lung_dir, image_size=32, num_workers=0, bad_files="exclude")
    with caplog.at_level(logging.WARNING, logger="medvision"):
        dm.setup("fit")
    assert sorted(b.path for b in dm.excluded_files) == sorted(map(str, bad))
    assert sum(len(d) for d in dm.datasets.values()) == 20 - 2
    assert all(str(path) in caplog.text for path in bad) and "excluded" in caplog.text
    assert not list(lung_dir.parent.rglob("excluded_files.csv"))  # no run folder: no file


def test_exclude_writes_excluded_files_csv_in_the_trainers_run_folder(chest_dir, tmp_path):
    corrupt = truncate(nth(chest_dir / "train" / "NORMAL", 0))
    empty = nth(chest_dir / "val" / "PNEUMONIA", 0)
    empty.write_bytes(b"")
    dm = ChestXrayDataModule(chest_dir, image_size=32, num_workers=0, bad_files="exclude")
    dm.trainer = Trainer(default_root_dir=tmp_path / "run", logger=False, accelerator="cpu")
    dm.setup("fit")
    rows = read_csv(tmp_path / "run" / "excluded_files.csv")
    assert [r["file"] for r in rows] == sorted([str(corrupt), str(empty)])
    assert "truncated" in rows[0]["problem"] and "is empty (0 bytes)" in rows[1]["problem"]
    used = {p for d in dm.datasets.values() for p in d.image_paths}
    assert corrupt not in used and empty not in used


def test_bad_files_must_be_error_or_exclude(lung_dir):
    with pytest.raises(ValueError, match="bad_files must be 'error' or 'exclude', got 'skip'"):
        LungCTDataModule(lung_dir, bad_files="skip")


# --- chest X-ray folders --------------------------------------------------------------------


def _corrupt_jpg(root: Path) -> Path:
    return truncate(nth(root / "train", 0, "*/*.jpg"), keep=300)


def _text_as_png(root: Path) -> Path:
    path = root / "val" / "NORMAL" / "report.png"
    path.write_text("not an image")
    return path


def _empty_class_folder(root: Path) -> Path:
    folder = root / "val" / "TUBERCULOSIS"
    for path in folder.iterdir():
        path.unlink()
    return folder


def _class_missing_in_a_split(root: Path) -> Path:
    shutil.rmtree(root / "test" / "COVID19")
    return root / "test" / "COVID19"


def _notes_in_class_folder(root: Path) -> Path:
    path = root / "train" / "PNEUMONIA" / "notes.txt"
    path.write_text("reader comments")
    return path


def _zero_byte_png(root: Path) -> Path:
    path = root / "test" / "NORMAL" / "blank.png"
    path.write_bytes(b"")
    return path


CHEST_CASES: dict[str, tuple[Callable[[Path], Path], type[Exception], str]] = {
    "corrupt jpg": (_corrupt_jpg, ValueError, "unreadable images.*cannot be decoded"),
    "text file with an image suffix": (_text_as_png, ValueError, "cannot be decoded"),
    "zero-byte png": (_zero_byte_png, ValueError, r"is empty \(0 bytes\)"),
    "empty class folder": (_empty_class_folder, FileNotFoundError, "holds no images"),
    "class missing in a split": (_class_missing_in_a_split, FileNotFoundError, "missing"),
    "non-image file in a class folder": (_notes_in_class_folder, ValueError, "not images"),
}


@pytest.mark.parametrize("case", list(CHEST_CASES))
def test_chest_xray_bad_input_is_named(case, chest_dir):
    make_bad, kind, pattern = CHEST_CASES[case]
    bad = make_bad(chest_dir)
    with pytest.raises(kind) as error:
        ChestXrayDataModule(chest_dir, image_size=32, num_workers=0).setup("fit")
    assert_named(error, bad, f"(?s){pattern}")


# --- HAM10000 -------------------------------------------------------------------------------


def ham_rows(root: Path) -> list[dict]:
    return read_csv(root / "HAM10000_metadata.csv")


def _edit_ham_row(root: Path, index: int, **cells) -> Path:
    rows = ham_rows(root)
    rows[index].update(cells)
    write_rows(root / "HAM10000_metadata.csv", rows)
    return root / "HAM10000_metadata.csv"


def _ham_without_dx_column(root: Path) -> str:
    rows = [{k: v for k, v in r.items() if k != "dx"} for r in ham_rows(root)]
    write_rows(root / "HAM10000_metadata.csv", rows)
    return str(root / "HAM10000_metadata.csv")


def _ham_unknown_dx(root: Path) -> str:
    return f"{_edit_ham_row(root, 4, dx='melanoma')} line 6"


def _ham_duplicate_row(root: Path) -> str:
    rows = ham_rows(root)
    rows.append(dict(rows[1]))
    write_rows(root / "HAM10000_metadata.csv", rows)
    return f"{root / 'HAM10000_metadata.csv'} line {len(rows) + 1}"


def _ham_blank_lesion(root: Path) -> str:
    return f"{_edit_ham_row(root, 2, lesion_id=' ')} line 4"


def _ham_missing_image(root: Path) -> Path:
    image = root / "images" / f"{ham_rows(root)[3]['image_id']}.jpg"
    image.unlink()
    return image


def _ham_missing_mask(root: Path) -> Path:
    mask = root / "masks" / f"{ham_rows(root)[5]['image_id']}_segmentation.png"
    mask.unlink()
    return mask


def _ham_label_mask(root: Path) -> Path:
    mask = root / "masks" / f"{ham_rows(root)[6]['image_id']}_segmentation.png"
    Image.fromarray((np.arange(48 * 64) % 4).reshape(48, 64).astype(np.uint8)).save(mask)
    return mask


def _ham_corrupt_jpeg(root: Path) -> Path:
    return truncate(root / "images" / f"{ham_rows(root)[7]['image_id']}.jpg", keep=200)


HAM_CASES: dict[str, tuple[Callable[[Path], Path | str], str, str]] = {
    "metadata without a dx column": (
        _ham_without_dx_column,
        "classification",
        r"no column \['dx'\]",
    ),
    "unknown dx": (_ham_unknown_dx, "classification", "unknown dx 'melanoma'"),
    "image listed twice": (_ham_duplicate_row, "classification", "is already on line 3"),
    "blank lesion_id": (_ham_blank_lesion, "classification", "lesion_id must both be given"),
    "row without its image": (_ham_missing_image, "classification", "no image for"),
    "missing mask": (_ham_missing_mask, "segmentation", "missing, for image"),
    "label mask with values up to 3": (_ham_label_mask, "segmentation", "mask values go up to 3"),
    "corrupt jpeg": (_ham_corrupt_jpeg, "classification", "cannot be decoded"),
}


@pytest.mark.parametrize("case", list(HAM_CASES))
def test_ham10000_bad_row_or_file_is_named(case, ham_dir):
    make_bad, task, pattern = HAM_CASES[case]
    bad = make_bad(ham_dir)
    dm = HAM10000DataModule(ham_dir, task=task, image_size=[48, 64], num_workers=0)
    with pytest.raises(ValueError) as error:
        dm.setup("fit")
    assert_named(error, bad, pattern)


# --- NIH ChestX-ray14 and CheXpert ----------------------------------------------------------


def _nih_edit(root: Path, index: int, **cells) -> str:
    path = root / "Data_Entry_2017.csv"
    rows = read_csv(path)
    rows[index].update(cells)
    write_rows(path, rows)
    return f"{path} line {index + 2}"


def _nih_drop_column(root: Path) -> str:
    path = root / "Data_Entry_2017.csv"
    write_rows(path, [{k: v for k, v in r.items() if k != "Patient ID"} for r in read_csv(path)])
    return str(path)


def _nih_duplicate(root: Path) -> str:
    path = root / "Data_Entry_2017.csv"
    rows = read_csv(path)
    write_rows(path, [*rows, rows[0]])
    return f"{path} line {len(rows) + 2}"


NIH_CASES: dict[str, tuple[Callable[[Path], Path | str], str]] = {
    "unknown finding": (lambda r: _nih_edit(r, 2, **{"Finding Labels": "Edema|Covid"}), "Covid"),
    "CSV without Patient ID": (_nih_drop_column, r"no column \['Patient ID'\]"),
    "image listed twice": (_nih_duplicate, "is already on line 2"),
    "corrupt png": (lambda r: truncate(nth(r / "images", 3)), "truncated"),
}


@pytest.mark.parametrize("case", list(NIH_CASES))
def test_nih_bad_row_or_file_is_named(case, nih_dir):
    make_bad, pattern = NIH_CASES[case]
    bad = make_bad(nih_dir)
    with pytest.raises(ValueError) as error:
        NIHChestXray14DataModule(nih_dir, image_size=32, num_workers=0).setup("fit")
    assert_named(error, bad, pattern)


def _chexpert_first_row(release: Path, **cells) -> tuple[Path, Path]:
    rows = read_csv(release / "train.csv")
    rows[0].update({"Frontal/Lateral": "Frontal", **cells})
    write_rows(release / "train.csv", rows)
    return release / "train.csv", release.parent / rows[0]["Path"]


def _chexpert_drop_column(release: Path) -> str:
    rows = [{k: v for k, v in r.items() if k != "Edema"} for r in read_csv(release / "train.csv")]
    write_rows(release / "train.csv", rows)
    return str(release / "train.csv")


CHEXPERT_CASES: dict[str, tuple[Callable[[Path], Path | str], str]] = {
    "label cell that is not 1/0/-1": (
        lambda r: f"{_chexpert_first_row(r, Edema='maybe')[0]} row 2",
        "column 'Edema' holds 'maybe'",
    ),
    "CSV without a label column": (_chexpert_drop_column, r"no column \['Edema'\]"),
    "corrupt jpeg": (lambda r: truncate(_chexpert_first_row(r)[1], keep=200), "cannot be decoded"),
}


@pytest.mark.parametrize("case", list(CHEXPERT_CASES))
def test_chexpert_bad_row_or_file_is_named(case, chexpert_dir):
    make_bad, pattern = CHEXPERT_CASES[case]
    bad = make_bad(chexpert_dir)
    with pytest.raises(ValueError) as error:
        CheXpertDataModule(chexpert_dir, image_size=32, num_workers=0).setup("fit")
    assert_named(error, bad, pattern)


# --- config errors: one clear line naming the key -------------------------------------------


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("--model.init_args.encoder=resnet18", "Option 'encoder' is not accepted"),
        ("--data.init_args.batch_size=four", "--data.init_args.batch_size: Expected a <class"),
        ("--data.init_args.bad_files=skip", "--data.init_args.bad_files: Expected a typing.Lit"),
    ],
    ids=["unknown key", "wrong type", "bad_files not a choice"],
)
def test_config_parse_errors_name_the_key(override, named, tmp_path, lung_dir, capsys, monkeypatch):
    monkeypatch.delenv("MEDVISION_DEBUG")  # as users see it: one line, exit status 2
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *unet_run_args(tmp_path, lung_dir, override)])
    assert exit_info.value.code == 2 and named in capsys.readouterr().err


def test_missing_data_dir_names_the_folder(tmp_path):
    nowhere = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError, match=f"data_dir {nowhere} does not exist"):
        main(["fit", *unet_run_args(tmp_path, nowhere, "--trainer.fast_dev_run=1")])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--model.init_args.arch=Unett", r"unknown arch 'Unett' \(model.init_args.arch\)"),
        (
            "--model.init_args.encoder_name=resnet99",
            r"unknown encoder_name 'resnet99' \(model.init_args.encoder_name\)",
        ),
        ("--model.init_args.encoder_name=tu-nonet", "unknown encoder_name 'tu-nonet'"),
    ],
    ids=["unknown arch", "unknown smp encoder", "unknown timm encoder"],
)
def test_unknown_segmentation_names_are_one_line(override, message, tmp_path, lung_dir):
    with pytest.raises(ValueError, match=message) as error:
        MedVisionCLI(args=unet_run_args(tmp_path, lung_dir, override), run=False)
    line = next(line for line in str(error.value).splitlines() if "unknown" in line)
    assert len(line) < 300  # not smp's list of every encoder


def test_unknown_timm_model_name_is_one_line(tmp_path, chest_dir):
    args = chest_run_args(tmp_path, chest_dir, "--model.init_args.model_name=resnet999")
    with pytest.raises(ValueError, match="unknown model_name 'resnet999': use a timm model name"):
        MedVisionCLI(args=args, run=False)


def test_class_weights_for_another_number_of_classes(tmp_path, chest_dir):
    args = chest_run_args(tmp_path, chest_dir, "--model.init_args.class_weights=[1,2,3]")
    with pytest.raises(ValueError, match="class_weights has 3 values for 4 classes"):
        MedVisionCLI(args=args, run=False)


@pytest.mark.parametrize("name, value, found", [("num_classes", 3, 4), ("in_channels", 2, 1)])
def test_linked_argument_that_disagrees_with_the_data(tmp_path, chest_dir, name, value, found):
    args = chest_run_args(tmp_path, chest_dir, f"--model.init_args.{name}={value}")
    with pytest.raises(ValueError, match=f"{name}={value} disagrees with the data") as error:
        MedVisionCLI(args=args, run=False)
    assert f"has {name}={found}" in str(error.value)


def test_linked_argument_that_agrees_with_the_data_is_accepted(tmp_path, chest_dir):
    args = chest_run_args(tmp_path, chest_dir, "--model.init_args.num_classes=4")
    assert MedVisionCLI(args=args, run=False).model.hparams.num_classes == 4


# --- predict: every good file gets its outputs, every bad one is reported -------------------


#: a small U-Net (3 encoder stages) keeps predict quick on a busy CPU
SMALL_UNET = '--model.init_args.arch_kwargs={"encoder_depth":3,"decoder_channels":[32,16,8]}'


def init_checkpoint(args: list[str], path: Path) -> Path:
    """A checkpoint of the model ``args`` build, untrained: predict needs weights, not skill."""
    model = MedVisionCLI(args=args, run=False).model
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),  # class names, arch: as fit would save them
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints of a lung segmenter and a chest X-ray classifier, and their data."""
    root = tmp_path_factory.mktemp("trained")
    write_lung_ct(root / "lung_data", num_slices=12, size=64, seed=0)
    write_chest_xray(root / "chest_data", scale=0.5, size=48, seed=0)
    lung_args = unet_run_args(root / "lung", root / "lung_data", SMALL_UNET)
    return {
        "lung_data": root / "lung_data",
        "chest_data": root / "chest_data",
        "lung": init_checkpoint(lung_args, root / "lung.ckpt"),
        "chest": init_checkpoint(chest_run_args(root, root / "chest_data"), root / "chest.ckpt"),
    }


def mixed_folder(folder: Path) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Images of every kind (name: height, width) and bad files (name: what the error says)."""
    folder.mkdir(parents=True)
    image = (lung_phantom(64, np.random.default_rng(3))[0] * 255).astype(np.uint8)
    Image.fromarray(image).save(folder / "gray.png")
    Image.fromarray(image[:37, :53]).save(folder / "odd.png")
    Image.fromarray(np.stack([image[:48, :40]] * 3, -1)).save(folder / "rgb.jpg")
    Image.fromarray(np.dstack([image[:50, :60]] * 3 + [np.full((50, 60), 200, np.uint8)])).save(
        folder / "rgba.png"
    )
    tifffile.imwrite(folder / "deep.tif", image[:37, :53].astype(np.uint16) * 250)
    Image.fromarray(image[:40, :64].astype(np.uint16) * 250).save(folder / "deep16.png")
    Image.fromarray(image[:33, :33]).save(folder / "small.bmp")
    tifffile.imwrite(folder / "corrupt.tif", image)
    truncate(folder / "corrupt.tif", keep=150)
    (folder / "empty.png").write_bytes(b"")
    (folder / "fake.jpg").write_text("this is not a JPEG")
    good = {
        "gray.png": (64, 64),
        "odd.png": (37, 53),
        "rgb.jpg": (48, 40),
        "rgba.png": (50, 60),
        "deep.tif": (37, 53),
        "deep16.png": (40, 64),
        "small.bmp": (33, 33),
    }
    bad = {
        "corrupt.tif": "truncated",
        "empty.png": "is empty (0 bytes)",
        "fake.jpg": "cannot be decoded",
    }
    return good, bad


def assert_no_partial_files(folder: Path) -> None:
    leftovers = [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers, leftovers


def test_segmentation_predict_goes_on_past_bad_files_and_exits_1(trained, tmp_path, caplog):
    incoming = tmp_path / "incoming"
    good, bad = mixed_folder(incoming)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(incoming / "gray.jpg")  # a stem twice
    good = {**good, "gray.jpg": (20, 20)}
    bad = {**bad, "gray.png": "same name as gray.jpg"}
    del good["gray.png"]
    out = tmp_path / "predicted"
    args = unet_run_args(tmp_path, trained["lung_data"])
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as exit_info:
        main(
            [
                "predict",
                *args,
                f"--ckpt_path={trained['lung']}",
                f"--data.init_args.predict_dir={incoming}",
                f"--prediction_writer.output_dir={out}",
            ]
        )
    assert exit_info.value.code == 1
    assert f"{len(bad)} input files failed" in caplog.text
    for name, size in good.items():
        stem = Path(name).stem
        assert np.array(Image.open(out / "masks" / f"{stem}.png")).shape == size, name
        assert np.array(Image.open(out / "overlays" / f"{stem}.png")).shape == (*size, 3), name
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(
        f"{Path(n).stem}.png" for n in good
    )
    failed = {Path(r["file"]).name: r["problem"] for r in read_csv(out / "failed.csv")}
    assert set(failed) == set(bad)
    for name, problem in bad.items():
        assert problem in failed[name]
        assert f"Not predicted: {incoming / name}" in caplog.text  # a warning per file
    assert_no_partial_files(out)


def test_classification_predict_goes_on_past_bad_files_and_exits_1(trained, tmp_path):
    incoming = tmp_path / "incoming"
    good, bad = mixed_folder(incoming)
    (incoming / "notes.txt").write_text("not an image")
    bad["notes.txt"] = "not an image"
    out = tmp_path / "predicted"
    args = chest_run_args(tmp_path, trained["chest_data"])
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "predict",
                *args,
                f"--ckpt_path={trained['chest']}",
                f"--data.init_args.predict_dir={incoming}",
                f"--prediction_writer.output_dir={out}",
            ]
        )
    assert exit_info.value.code == 1
    rows = read_csv(out / "predictions.csv")
    assert sorted(Path(r["file"]).name for r in rows) == sorted(good)
    failed = {Path(r["file"]).name: r["problem"] for r in read_csv(out / "failed.csv")}
    assert set(failed) == set(bad) and all(bad[n] in failed[n] for n in bad)
    assert_no_partial_files(out)


def test_predict_with_masks_reports_a_bad_or_missing_mask(trained, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    shutil.copytree(trained["lung_data"] / "2d_images", images)
    shutil.copytree(trained["lung_data"] / "2d_masks", masks)
    label_mask = _label_mask(tmp_path, "masks")
    no_mask = nth(images, 5)
    nth(masks, 5).unlink()
    out = tmp_path / "predicted"
    with pytest.raises(SystemExit):
        main(
            [
                "predict",
                *unet_run_args(tmp_path, trained["lung_data"]),
                f"--ckpt_path={trained['lung']}",
                f"--data.init_args.predict_dir={images}",
                f"--data.init_args.predict_mask_dir={masks}",
                f"--prediction_writer.output_dir={out}",
            ]
        )
    failed = {r["file"]: r["problem"] for r in read_csv(out / "failed.csv")}
    assert set(failed) == {str(label_mask), str(no_mask)}
    assert "mask values go up to 7" in failed[str(label_mask)] and "no mask" in failed[str(no_mask)]
    assert len(read_csv(out / "metrics.csv")) == 12 - 2
    assert not (out / "masks" / f"{no_mask.stem}.png").exists()


def test_predict_on_nothing_but_bad_files_is_one_error(trained, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "empty.png").write_bytes(b"")
    (incoming / "fake.tif").write_text("no")
    with pytest.raises(ValueError, match="2 files in .* cannot be predicted") as error:
        main(
            [
                "predict",
                *unet_run_args(tmp_path, trained["lung_data"]),
                f"--ckpt_path={trained['lung']}",
                f"--data.init_args.predict_dir={incoming}",
            ]
        )
    assert str(incoming / "empty.png") in str(error.value)
    assert str(incoming / "fake.tif") in str(error.value)


def test_checkpoint_for_another_number_of_classes_names_both(trained, tmp_path):
    three = tmp_path / "three_classes"
    shutil.copytree(trained["chest_data"], three)
    for split in ("train", "val", "test"):
        shutil.rmtree(three / split / "TUBERCULOSIS")
    with pytest.raises(ValueError, match=r"trained on classes .*TUBERCULOSIS.*\(4\).*\(3\)"):
        main(
            [
                "test",
                *chest_run_args(tmp_path, three),
                f"--ckpt_path={trained['chest']}",
            ]
        )
