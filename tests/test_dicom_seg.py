"""DICOM series annotated with DICOM SEG (issue 27): training cases read through the SEG's
references, the same slices and Dice as the NIfTI path, predicted SEGs read back with highdicom
and checked by dciodvfy, the UIDs of classified DICOM files, and every bad input in one line."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")
nib = pytest.importorskip("nibabel")

from medvision.cli import MedVisionCLI, main  # noqa: E402
from medvision.data.dicom_case import find_case_files, read_case  # noqa: E402
from medvision.data.dicom_cases import DicomSegDataModule  # noqa: E402
from medvision.data.dicom_seg import read_seg, seg_labels  # noqa: E402
from medvision.data.dicom_series import read_dicom_series  # noqa: E402
from medvision.data.errors import ImageReadError  # noqa: E402
from medvision.data.nifti import load_volume  # noqa: E402
from medvision.data.synthetic_dicom import write_dicom_seg_cases  # noqa: E402
from medvision.data.synthetic_volumes import write_dicom_series  # noqa: E402
from medvision.data.volumes import VolumeSliceDataModule  # noqa: E402
from medvision.models import SegmentationModule, segmentation  # noqa: E402
from medvision.utils.files import read_csv  # noqa: E402

from .conftest import (  # noqa: E402
    CONFIGS,
    SMALL_UNET_ARCH,
    cnn5_checkpoint,
    lung_record,
    record_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABELS = ["background", "left", "right"]
QUIET = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]
SMALL_UNET = '--model.init_args.arch_kwargs={"encoder_depth":3,"decoder_channels":[32,16,8]}'
#: what the datamodules read the same way (binary, 32 px, a CT window)
SETTINGS = {"image_size": 32, "intensity_window": (-1000, 400), "val_fraction": 0.25}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """4 binary cases (6 slices of 32x32) with NIfTI twins, and 3 label-map cases."""
    base = tmp_path_factory.mktemp("dicom_seg")
    write_dicom_seg_cases(base / "dicom", 4, (32, 32, 6), nifti_dir=base / "nifti")
    write_dicom_seg_cases(base / "labels", 3, (32, 32, 6), class_names=LABELS, seed=1)
    return {
        "base": base,
        "dicom": base / "dicom",
        "nifti": base / "nifti",
        "labels": base / "labels",
    }


def copy_case(source: Path, tmp_path: Path, name: str = "case_000") -> Path:
    """A writable copy of ``source`` (one case folder) inside ``tmp_path/cases/``."""
    target = tmp_path / "cases" / name
    shutil.copytree(source, target)
    return target


def slice_files(case: Path) -> list[Path]:
    """The case's series files, bottom slice first (by ImagePositionPatient)."""
    files = [p for p in case.iterdir() if p.name != "seg.dcm"]
    return sorted(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))


def edit(path: Path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


# --- reading: references, classes, the same volumes as NIfTI -----------------------------------


def test_a_case_reads_as_its_nifti_twin_through_the_segs_references(data):
    case = read_case(data["dicom"] / "case_001", ["lung"])
    image, info = load_volume(data["nifti"] / "images/case_001.nii.gz")
    labels, _ = load_volume(data["nifti"] / "masks/case_001.nii.gz")
    np.testing.assert_array_equal(case.image, image)  # HU, same canonical voxels
    np.testing.assert_array_equal(case.labels, labels)  # every frame on its own slice
    assert labels.sum() > 0 and case.info.spacing == pytest.approx(info.spacing)
    np.testing.assert_allclose(case.info.affine, info.affine)
    # file names and InstanceNumbers do not follow the positions: order came from elsewhere
    names = [p.name for p in slice_files(data["dicom"] / "case_001")]
    assert names != sorted(names)


def test_frames_land_on_the_slices_they_reference_in_any_order(data, tmp_path):
    case = copy_case(data["dicom"] / "case_000", tmp_path)  # one segment
    seg = pydicom.dcmread(case / "seg.dcm")
    items = list(seg.PerFrameFunctionalGroupsSequence)  # each frame's slice, position, segment
    assert len(items) > 1
    seg.PerFrameFunctionalGroupsSequence = items[::-1]  # the pixels stay in place
    seg.save_as(case / "seg.dcm")
    volume, info = read_dicom_series(case)
    files = find_case_files(case)
    uids = [files.sop_uids[Path(p)] for p in info.files]
    ours = seg_labels(
        read_seg(case / "seg.dcm"), case / "seg.dcm", files.study_uid, uids, info, ["lung"]
    )
    theirs = hd.seg.segread(case / "seg.dcm").get_pixels_by_source_instance(
        uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    np.testing.assert_array_equal(ours, theirs)  # highdicom's own reading of the references
    original = read_seg(data["dicom"] / "case_000/seg.dcm")
    unshuffled = seg_labels(original, case / "seg.dcm", files.study_uid, uids, info, ["lung"])
    assert not np.array_equal(ours, unshuffled)  # the references moved the frames


def test_frames_without_references_are_placed_by_their_positions(data, tmp_path):
    case = copy_case(data["dicom"] / "case_001", tmp_path)
    seg = pydicom.dcmread(case / "seg.dcm")
    for frame in seg.PerFrameFunctionalGroupsSequence:
        del frame.DerivationImageSequence
    del seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[1:]  # keep one (type 1)
    seg.save_as(case / "seg.dcm")
    labels, _ = load_volume(data["nifti"] / "masks/case_001.nii.gz")
    np.testing.assert_array_equal(read_case(case, ["lung"]).labels, labels)


@pytest.mark.parametrize("kind", ["LABELMAP", "FRACTIONAL"])
def test_label_map_and_fractional_segs_read_as_the_binary_one(data, tmp_path, kind):
    case = copy_case(data["labels"] / "case_000", tmp_path)
    truth = read_case(case, LABELS).labels
    binary = hd.seg.segread(case / "seg.dcm")
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in slice_files(case)]
    labels = binary.get_pixels_by_source_instance(
        [s.SOPInstanceUID for s in sources], combine_segments=True
    )
    if kind == "FRACTIONAL":  # probabilities: foreground above half
        labels = np.stack([labels == 1, labels == 2], axis=-1) * np.float32(0.9)
    descriptions = [binary.get_segment_description(n) for n in binary.segment_numbers]
    rewritten = hd.seg.Segmentation(
        sources, labels, kind, descriptions, hd.UID(), 2, hd.UID(), 1, "x", "x", "1", "1"
    )
    rewritten.save_as(case / "seg.dcm")
    np.testing.assert_array_equal(read_case(case, LABELS).labels, truth)


def test_segments_become_classes_by_label_in_the_order_class_names_give(data):
    truth = read_case(data["labels"] / "case_000", LABELS).labels
    assert set(np.unique(truth)) == {0, 1, 2}
    swapped = read_case(data["labels"] / "case_000", ["background", "RIGHT", "Left"]).labels
    np.testing.assert_array_equal(swapped, np.choose(truth, [0, 2, 1]))
    right_only = read_case(data["labels"] / "case_000", ["right"], unlisted="ignore").labels
    np.testing.assert_array_equal(right_only, (truth == 2).astype(np.uint8))
    with pytest.raises(ImageReadError) as error:
        read_case(data["labels"] / "case_000", ["background", "left"])
    message = str(error.value)
    assert message.startswith(f"{data['labels'] / 'case_000/seg.dcm'}: segment 2 'right' is not")
    assert "unlisted_segments ignore" in message and "\n" not in message


def test_class_names_default_to_the_first_segs_labels(data):
    assert DicomSegDataModule(data["labels"]).class_names == LABELS
    assert DicomSegDataModule(data["dicom"]).num_classes == 1
    assert DicomSegDataModule(data["dicom"]).class_names == ["lung"]


def test_the_slices_equal_the_nifti_volume_datamodules(data):
    """Same slices, masks, spacing and split: the cache and sampling of the NIfTI path."""
    options = {**SETTINGS, "empty_slice_fraction": 0.5, "num_workers": 0, "seed": 3}
    dicom = DicomSegDataModule(data["dicom"], class_names=["lung"], **options)
    nifti = VolumeSliceDataModule(data["nifti"], class_names=["lung"], **options)
    dicom.setup("fit")
    nifti.setup("fit")
    for stage in ("train", "val", "test"):
        ours, theirs = dicom.datasets[stage].slices, nifti.datasets[stage].slices
        np.testing.assert_array_equal(ours.images, theirs.images)
        np.testing.assert_array_equal(ours.masks, theirs.masks)
        assert [Path(r["path"]).name for r in ours.records] == [
            Path(r["path"]).name.removesuffix(".nii.gz") for r in theirs.records
        ]
        assert [r["spacing"] for r in ours.records] == [r["spacing"] for r in theirs.records]
    assert len(dicom.datasets["train"]) < 2 * 6  # empty slices were sampled out in training


def test_splits_are_drawn_over_patients(tmp_path):
    write_dicom_seg_cases(tmp_path / "cases", 8, (16, 16, 3), cases_per_patient=2, seed=5)
    patient_of = {
        c.name: find_case_files(c).patient_id for c in sorted((tmp_path / "cases").iterdir())
    }
    assert len(set(patient_of.values())) == 4
    dm = DicomSegDataModule(
        tmp_path / "cases", image_size=16, num_workers=0, val_fraction=0.25, test_fraction=0.25
    )
    dm.setup("fit")
    side = {}
    for stage, dataset in dm.datasets.items():
        for record in dataset.slices.records:
            side.setdefault(patient_of[Path(record["path"]).name], set()).add(stage)
    assert len(side) == 4 and all(len(stages) == 1 for stages in side.values())
    assert {stage for stages in side.values() for stage in stages} == {"train", "val", "test"}


# --- bad input: one line naming the file -------------------------------------------------------


def overlapping_seg(case: Path) -> None:
    """Replace the case's SEG by one whose segments 'left' and 'right' share pixels."""
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in slice_files(case)]
    frames = np.zeros((len(sources), 32, 32, 2), np.uint8)
    frames[2:4, 8:20, 8:20, 0] = 1
    frames[3:5, 16:24, 16:24, 1] = 1  # overlaps the first on slice 3
    segments = [
        hd.seg.SegmentDescription(
            number,
            label,
            hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            "MANUAL",
        )
        for number, label in ((1, "left"), (2, "right"))
    ]
    seg = hd.seg.Segmentation(
        sources, frames, "BINARY", segments, hd.UID(), 2, hd.UID(), 1, "x", "x", "1", "1"
    )
    seg.save_as(case / "seg.dcm")


def break_case(case: Path, other: Path, problem: str) -> str:
    """Make ``case`` show ``problem``; the start of the one-line error it should give."""
    files, seg = slice_files(case), case / "seg.dcm"
    if problem == "another study":
        edit(seg, StudyInstanceUID=pydicom.uid.generate_uid())
        return f"{seg}: is a SEG of study"
    if problem == "instances not in its series":
        files[-1].unlink()  # the top slice: no gap, but the SEG references it
        return f"{seg}: references 1 instances that are not in its series"
    if problem == "duplicate position":
        clone = case / "clone"
        shutil.copy(files[2], clone)
        edit(clone, SOPInstanceUID=pydicom.uid.generate_uid())
        return "has the same position as"
    if problem == "missing position":
        edit(files[3], ImagePositionPatient=None)
        return "lack ImagePositionPatient"
    if problem == "a missing slice":
        files[3].unlink()
        return f"{files[4]}: lies 5 mm from the slice before it"
    if problem == "frames of another size":
        edit(seg, Rows=16)
        return f"{seg}: its frames are 16x32 but the slices of its series"
    if problem == "overlapping segments":
        overlapping_seg(case)
        return f"{seg}: segments 1 and 2 overlap in 16 pixels of the slice {files[3]}"
    if problem == "no SEG":
        seg.unlink()
        return f"{case}: holds no DICOM SEG file"
    if problem == "two series":
        shutil.copy(slice_files(other)[0], case / "stranger")
        return f"{case}: holds 2 series"
    raise AssertionError(problem)


PROBLEMS = [
    "another study",
    "instances not in its series",
    "duplicate position",
    "missing position",
    "a missing slice",
    "frames of another size",
    "overlapping segments",
    "no SEG",
    "two series",
]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_each_bad_case_is_one_line_naming_the_file(data, tmp_path, problem):
    case = copy_case(data["labels"] / "case_000", tmp_path)
    expected = break_case(case, data["labels"] / "case_001", problem)
    with pytest.raises(ImageReadError) as error:
        read_case(case, LABELS)
    message = str(error.value)
    assert expected in message and "\n" not in message, message
    if problem == "overlapping segments":  # says how to choose
        assert "--data.init_args.overlap last" in message
        labels = read_case(case, LABELS, overlap="last").labels
        assert set(np.unique(labels)) == {0, 1, 2}  # the later class won on the shared pixels


def test_the_datamodule_lists_bad_cases_or_leaves_them_out(data, tmp_path):
    for name in ("case_000", "case_001", "case_002"):
        copy_case(data["labels"] / name, tmp_path, name)
    (tmp_path / "cases/case_001/seg.dcm").unlink()
    options = {"image_size": 16, "num_workers": 0, "val_fraction": 0.0, "test_fraction": 0.0}
    with pytest.raises(ValueError, match=r"(?s)bad DICOM cases.*case_001: holds no DICOM SEG"):
        DicomSegDataModule(tmp_path / "cases", class_names=LABELS, **options).setup("fit")
    dm = DicomSegDataModule(tmp_path / "cases", class_names=LABELS, bad_files="exclude", **options)
    dm.setup("fit")
    assert {Path(r["path"]).name for r in dm.datasets["train"].slices.records} == {
        "case_000",
        "case_002",
    }
    assert [Path(b.path).name for b in dm.excluded_files] == ["case_001"]


# --- predict: formats, SEG read back, dciodvfy, the same Dice as NIfTI ------------------------


def fit(root: Path, data_dir: Path, *extra: str) -> Path:
    """``configs/quickstart_dicom_seg.yaml`` fitted briefly at 32 px on ``data_dir``."""
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart_dicom_seg.yaml"),
            f"--data.init_args.data_dir={data_dir}",
            "--data.init_args.image_size=32",
            "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=8",
            "--data.init_args.val_fraction=0.25",
            "--data.init_args.test_fraction=0.25",
            SMALL_UNET,
            "--trainer.max_epochs=2",
            "--trainer.num_sanity_val_steps=0",
            f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}",
            *QUIET,
            *extra,
        ]
    )
    return root / "version_0/checkpoints/last.ckpt"


@pytest.fixture(scope="module")
def models(data) -> dict[str, Path]:
    base = data["base"]
    return {
        "binary": fit(base / "runs_binary", data["dicom"]),
        "labels": fit(
            base / "runs_labels",
            data["labels"],
            f"--data.init_args.class_names=[{','.join(LABELS)}]",
            "--trainer.max_epochs=1",
            "--data.init_args.test_fraction=0",
        ),
    }


def predict(checkpoint: Path, folder: Path, out: Path, *extra: str) -> Path:
    main(
        ["predict", f"--ckpt_path={checkpoint}", f"--data.predict_dir={folder}", f"--output={out}"]
        + [*QUIET, *extra]
    )
    return out


def frames_of(seg_path: Path, case: Path) -> tuple:
    """The SEG read back with highdicom: the dataset, and its labels ``S x rows x columns``
    on the case's slices (bottom first), with the SOP Instance UIDs of those slices."""
    seg = hd.seg.segread(seg_path)
    uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in slice_files(case)]
    labels = seg.get_pixels_by_source_instance(
        uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    return seg, labels, uids


def nifti_slices(path: Path) -> np.ndarray:
    """A written NIfTI of a series (columns x rows x slices) as ``S x rows x columns``."""
    return np.asanyarray(nib.load(path).dataobj).transpose(2, 1, 0)


@pytest.mark.slow
def test_a_label_map_model_writes_a_seg_per_series_that_round_trips(data, models, tmp_path):
    out = predict(models["labels"], data["labels"], tmp_path / "out", "--output_format=seg,nifti")
    for case in sorted(data["labels"].iterdir()):
        seg, labels, uids = frames_of(out / f"{case.name}.seg.dcm", case)
        source = pydicom.dcmread(slice_files(case)[0])
        assert seg.Modality == "SEG" and seg.SOPClassUID == SEGMENTATION_STORAGE
        assert seg.SegmentationType == "BINARY"
        referenced = [
            str(item.ReferencedSOPInstanceUID)
            for series in seg.ReferencedSeriesSequence
            for item in series.ReferencedInstanceSequence
        ]
        assert sorted(referenced) == sorted(uids)  # every source instance
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
        assert (seg.PatientID, seg.StudyInstanceUID) == (source.PatientID, source.StudyInstanceUID)
        assert seg.SeriesInstanceUID != source.SeriesInstanceUID  # a new series
        written = nifti_slices(out / f"{case.name}.nii.gz")
        np.testing.assert_array_equal(labels, written)  # voxel for voxel
        assert len(np.unique(written)) > 1  # not a trivially empty comparison
        numbers = seg.segment_numbers
        assert [seg.get_segment_description(n).segment_label for n in numbers] == LABELS[1:]
        description = seg.get_segment_description(1)
        assert description.algorithm_type.value == "AUTOMATIC"
        algorithm = description.algorithm_identification[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("Unet resnet18", "0.1.0")
        assert description.segmented_property_type.value == "85756007"  # generic: Tissue
    info = json.loads((out / "prediction_info.json").read_text())
    assert info["output_format"] == ["seg", "nifti"]


@pytest.fixture(scope="module")
def binary_predictions(data, models, tmp_path_factory) -> Path:
    """The binary model on the DICOM cases (default formats) with coded segments."""
    codes = {
        "lung": {
            "category": ["SCT", "91723000", "Anatomical Structure"],
            "type": ["SCT", "39607008", "Lung"],
        }
    }
    out = tmp_path_factory.mktemp("binary") / "out"
    return predict(
        models["binary"],
        data["dicom"],
        out,
        f"--prediction_writer.segment_codes={json.dumps(codes)}",
    )


@pytest.mark.slow
def test_a_binary_model_writes_seg_and_nifti_by_default(data, binary_predictions):
    case = data["dicom"] / "case_002"
    seg, labels, _ = frames_of(binary_predictions / "case_002.seg.dcm", case)
    np.testing.assert_array_equal(labels, nifti_slices(binary_predictions / "case_002.nii.gz"))
    assert seg.segment_numbers == [1]
    description = seg.get_segment_description(1)
    assert description.segment_label == "lung"
    assert description.segmented_property_type.value == "39607008"
    assert description.segmented_property_category.meaning == "Anatomical Structure"


@pytest.mark.slow
def test_the_written_seg_passes_dciodvfy(binary_predictions):
    validator = shutil.which("dciodvfy")
    if validator is None:
        pytest.skip(
            "dciodvfy is not installed (Debian package dicom3tools; .ci/run installs it): "
            "the written SEG is not validated"
        )
    result = subprocess.run(
        [validator, str(binary_predictions / "case_000.seg.dcm")],
        capture_output=True,
        text=True,
        check=False,
    )
    said = result.stdout + result.stderr
    errors = [line for line in said.splitlines() if line.startswith("Error")]
    assert result.returncode == 0 and not errors, said
    assert "Segmentation" in said  # it recognised the IOD


@pytest.mark.slow
def test_nifti_and_dicom_give_the_same_dice(data, models, tmp_path):
    common = [
        f"--ckpt_path={models['binary']}",
        "--data.init_args.image_size=32",
        "--data.init_args.intensity_window=[-1000,400]",
        "--data.init_args.val_fraction=0.25",
        "--data.init_args.test_fraction=0.25",
        "--data.init_args.num_workers=0",
        "--data.init_args.class_names=[lung]",
        SMALL_UNET,
        *QUIET,
    ]
    scores = {}
    for kind, config, data_dir in (
        ("dicom", "quickstart_dicom_seg.yaml", data["dicom"]),
        ("nifti", "quickstart_volumes.yaml", data["nifti"]),
    ):
        extra = [] if kind == "dicom" else ["--data=medvision.data.volumes.VolumeSliceDataModule"]
        cli = MedVisionCLI(
            args=[
                "test",
                "--config",
                str(CONFIGS / config),
                *extra,
                f"--data.init_args.data_dir={data_dir}",
                f"--trainer.default_root_dir={tmp_path / kind}",
                f"--trainer.logger.init_args.save_dir={tmp_path / kind}",
                *common,
            ]
        )
        scores[kind] = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    assert scores["dicom"]["test/dice"] == pytest.approx(scores["nifti"]["test/dice"], abs=1e-6)
    assert scores["dicom"]["test/dice"] > 0
    if importlib.util.find_spec("monai") is not None:  # surface metrics, in mm
        for key in ("test/hd95", "test/surface_dice"):
            assert scores["dicom"][key] == pytest.approx(scores["nifti"][key], abs=1e-5)


# --- output formats and their checks (no training) ---------------------------------------------


def untrained_checkpoint(path: Path, **record_changes) -> Path:
    """A small U-Net's untrained weights with a volume record, as fit writes them."""
    module = SegmentationModule(
        encoder_name="resnet18", class_names=["lung"], arch_kwargs=SMALL_UNET_ARCH
    )
    volume = dict(intensity_window=(-1000.0, 400.0), input="volume", slice_axis=2)
    return record_checkpoint(path, module, lung_record(**{**volume, **record_changes}))


def test_formats_a_model_cannot_write_are_refused_before_it_loads(tmp_path, monkeypatch):
    volume = untrained_checkpoint(tmp_path / "volume.ckpt")
    image = untrained_checkpoint(tmp_path / "image.ckpt", input="image", slice_axis=None)
    built = []
    monkeypatch.setattr(segmentation, "create_segmentation_net", lambda *a, **k: built.append(1))
    (tmp_path / "in").mkdir()
    args = [f"--data.predict_dir={tmp_path / 'in'}", *QUIET]
    with pytest.raises(ValueError, match=r"--output_format tiff: use one or more of seg, nifti"):
        main(["predict", f"--ckpt_path={volume}", "--output_format", "tiff", *args])
    with pytest.raises(ValueError, match=r"--output_format seg: this model predicts 2D images"):
        main(["predict", f"--ckpt_path={image}", "--output_format", "seg,png", *args])
    with pytest.raises(ValueError, match=r"--output_format png: this model predicts 3D volumes"):
        main(["predict", f"--ckpt_path={volume}", "--output_format", "[png]", *args])
    assert built == []  # no network was built


def test_a_seg_needs_a_dicom_source_with_a_frame_of_reference(data, tmp_path, caplog):
    checkpoint = untrained_checkpoint(tmp_path / "volume.ckpt")
    incoming = tmp_path / "in"
    write_dicom_series(incoming / "bare", num_slices=3, size=(32, 32))  # no FrameOfReferenceUID
    shutil.copy(data["nifti"] / "images/case_000.nii.gz", incoming / "ct.nii.gz")
    with caplog.at_level(logging.WARNING):  # by default: its NIfTI, and a warning
        predict(checkpoint, incoming, tmp_path / "default")
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == [
        "bare.nii.gz",
        "ct.nii.gz",
        "prediction_info.json",
    ]
    assert "bare: no DICOM SEG written, only NIfTI" in caplog.text
    assert "has no FrameOfReferenceUID" in caplog.text
    with pytest.raises(SystemExit) as status:  # asked for: each input that cannot is a failure
        predict(checkpoint, incoming, tmp_path / "asked", "--output_format=seg")
    assert status.value.code == 1
    failed = {Path(r["file"]).name: r["problem"] for r in read_csv(tmp_path / "asked/failed.csv")}
    assert "has no FrameOfReferenceUID" in failed["bare"]
    assert "this input is a NIfTI file" in failed["ct.nii.gz"]


# --- classification: the UIDs beside each file ---------------------------------------------


def test_predictions_csv_carries_the_uids_of_dicom_inputs(tmp_path):
    checkpoint = cnn5_checkpoint(tmp_path / "cnn5.ckpt")
    incoming = tmp_path / "in"
    write_dicom_series(incoming / "p1", num_slices=2, size=(32, 32))
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(incoming / "plain.png")
    predict(checkpoint, incoming, tmp_path / "out")
    rows = read_csv(tmp_path / "out/predictions.csv")
    assert list(rows[0])[:5] == [
        "file",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "pred",
    ]
    for row in rows:
        if row["file"].endswith(".dcm"):
            ds = pydicom.dcmread(row["file"])
            assert row["SOPInstanceUID"] == ds.SOPInstanceUID
            assert row["SeriesInstanceUID"] == ds.SeriesInstanceUID
            assert row["StudyInstanceUID"] == ds.StudyInstanceUID
        else:
            assert row["SOPInstanceUID"] == row["StudyInstanceUID"] == ""
    assert sum(r["file"].endswith(".dcm") for r in rows) == 2
