"""DICOM in: HU values, polarity, windows, spacing, series order, read_image, and every error."""

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from medvision.data.dicom import read_dicom, read_dicom_slice  # noqa: E402
from medvision.data.dicom_series import read_dicom_series  # noqa: E402
from medvision.data.io import IMAGE_SUFFIXES, ImageReadError, read_image  # noqa: E402
from medvision.data.synthetic import chest_xray_phantom  # noqa: E402
from medvision.data.synthetic_volumes import (  # noqa: E402
    write_dicom_chest_xray,
    write_dicom_series,
)

from .conftest import fast_trainer_args  # noqa: E402


@pytest.fixture
def series_dir(tmp_path) -> tuple[Path, np.ndarray]:
    """5 CT slices, MONOCHROME2, slope 2, intercept -1024, window 40/400: folder and stored."""
    folder = tmp_path / "series"
    return folder, write_dicom_series(folder, slope=2.0, intercept=-1024.0)


def test_series_reads_to_hu_sorted_by_position_with_spacing(series_dir):
    folder, stored = series_dir
    volume, info = read_dicom_series(folder)
    assert volume.dtype == np.float32 and volume.shape == (5, 24, 20)
    np.testing.assert_array_equal(volume, stored * 2.0 - 1024.0)  # HU = 2 * stored - 1024
    assert info.slice_order == "position"
    assert info.positions[:, 2].tolist() == [-20.0, -17.5, -15.0, -12.5, -10.0]
    assert info.pixel_spacing == (0.7, 0.8) and info.slice_spacing == pytest.approx(2.5)
    assert info.rescale == (2.0, -1024.0) and info.modality == "CT"
    # the files are named and numbered out of position order: the sort did the work
    assert [Path(f).name for f in info.files] != sorted(Path(f).name for f in info.files)


def test_monochrome1_is_mirrored_within_the_stored_range(tmp_path):
    stored = write_dicom_series(tmp_path / "m1", photometric="MONOCHROME1", intercept=-1024.0)
    volume, info = read_dicom_series(tmp_path / "m1")
    # 12-bit unsigned, slope 1, intercept -1024: lo = -1024, hi = 3071; v -> lo + hi - v
    np.testing.assert_array_equal(volume, 2047.0 - (stored - 1024.0))
    assert info.photometric == "MONOCHROME1"
    windowed, _ = read_dicom_series(tmp_path / "m1", window=(40, 400))
    plain, _ = read_dicom_series(
        _as_monochrome2(tmp_path / "m1", tmp_path / "m2"), window=(40, 400)
    )
    np.testing.assert_allclose(windowed, 1.0 - plain, atol=1e-6)  # windowed, then 1 - y


def _as_monochrome2(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        ds = pydicom.dcmread(path)
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.save_as(target / path.name)
    return target


def test_explicit_window_maps_level_plus_minus_half_width_to_0_and_1(series_dir):
    folder, stored = series_dir
    volume, info = read_dicom_series(folder, window=(40.0, 400.0))
    hu = stored * 2.0 - 1024.0
    np.testing.assert_allclose(volume, np.clip((hu - (-160.0)) / 400.0, 0, 1), atol=1e-6)
    assert info.window == (40.0, 400.0)
    assert volume.min() == 0.0 and 0 < volume.max() <= 1.0


def test_file_window_uses_the_files_voi_window(series_dir):
    folder, stored = series_dir
    volume, _ = read_dicom_series(folder, window="file")
    # WindowCenter 40, WindowWidth 400, DICOM LINEAR: (x - 39.5) / 399 + 0.5, clipped
    hu = stored * 2.0 - 1024.0
    np.testing.assert_allclose(volume, np.clip((hu - 39.5) / 399 + 0.5, 0, 1), atol=1e-5)


def test_file_window_missing_is_an_error_naming_the_file(tmp_path, series_dir):
    folder, _ = series_dir
    path = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(path)
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(path)
    with pytest.raises(ImageReadError, match=rf"{path.name}: has no VOI window.*window=\("):
        read_dicom(path, window="file")


def test_multiframe_file_reads_all_frames_with_spacing(tmp_path):
    stored = write_dicom_series(tmp_path / "mf", multiframe=True, slope=0.5, intercept=-1000.0)
    frames, info = read_dicom(tmp_path / "mf/multiframe.dcm")
    np.testing.assert_array_equal(frames, stored * 0.5 - 1000.0)
    assert info.frames == 5 and info.slice_spacing == 2.5 and info.pixel_spacing == (0.7, 0.8)


def test_instance_number_orders_slices_without_positions(tmp_path):
    stored = write_dicom_series(tmp_path / "s")
    for path in (tmp_path / "s").iterdir():
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path)
    volume, info = read_dicom_series(tmp_path / "s")
    assert info.slice_order == "instance number" and info.positions is None
    # the writer numbers slices from the top down: instance order is position order reversed
    np.testing.assert_array_equal(volume, stored[::-1] - 1024.0)


def test_read_image_gives_a_float32_hu_slice_for_dcm(series_dir):
    folder, stored = series_dir
    assert ".dcm" in IMAGE_SUFFIXES
    path = next(p for p in folder.iterdir() if pydicom.dcmread(p).InstanceNumber == 5)
    image = read_image(path)  # instance 5 of 5 is the bottom slice
    assert image.dtype == np.float32 and image.shape == (24, 20)
    np.testing.assert_array_equal(image, stored[0] * 2.0 - 1024.0)


# --- errors: each names the file and the fix ----------------------------------------------------


def test_multiframe_through_read_image_is_refused_like_a_stack(tmp_path):
    write_dicom_series(tmp_path / "mf", multiframe=True)
    with pytest.raises(ImageReadError, match=r"multiframe.dcm: is a multi-frame DICOM \(5 frames"):
        read_image(tmp_path / "mf/multiframe.dcm")
    with pytest.raises(ImageReadError, match="VolumeSliceDataModule"):
        read_dicom_slice(tmp_path / "mf/multiframe.dcm")


def test_dicom_without_pixel_data(tmp_path, series_dir):
    folder, _ = series_dir
    path = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(ImageReadError, match=rf"{path.name}: is a DICOM file without pixel data"):
        read_image(path)
    with pytest.raises(ImageReadError, match="Remove it from the image folder"):
        read_dicom_series(folder)


def test_compressed_pixels_without_a_decoder_name_the_extra(tmp_path, series_dir, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import RLELossless

    folder, stored = series_dir
    path = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)  # encapsulated with pydicom's own RLE encoder
    ds.save_as(tmp_path / "rle.dcm")
    assert pydicom.dcmread(tmp_path / "rle.dcm").file_meta.TransferSyntaxUID == RLELossless
    read_dicom(tmp_path / "rle.dcm")  # decodes while the plugin is there
    monkeypatch.setattr(get_decoder(RLELossless), "_available", {})  # the plugin is missing
    with pytest.raises(ImageReadError) as error:
        read_image(tmp_path / "rle.dcm")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'rle.dcm'}: its pixel data is compressed as RLE")
    assert 'pip install "medvision-lightning[dicom]"' in message and "pylibjpeg" in message


def test_series_of_mixed_slice_sizes_names_two_files_with_their_sizes(tmp_path):
    write_dicom_series(tmp_path / "s", size=(24, 20))
    odd = write_dicom_series(tmp_path / "other", num_slices=1, size=(16, 16), seed=3)
    assert odd.shape == (1, 16, 16)
    ds = pydicom.dcmread(next((tmp_path / "other").iterdir()))
    ds.SeriesInstanceUID = pydicom.dcmread(next((tmp_path / "s").iterdir())).SeriesInstanceUID
    ds.ImagePositionPatient = [-10.0, -12.0, 30.0]
    ds.save_as(tmp_path / "s" / "odd.dcm")
    with pytest.raises(ImageReadError, match=r"odd.dcm: is 16x16 but .*IM\d{4}.dcm is 24x20"):
        read_dicom_series(tmp_path / "s")


def test_folder_mixing_two_series_is_refused(tmp_path):
    write_dicom_series(tmp_path / "s", seed=0)
    write_dicom_series(tmp_path / "t", num_slices=1, seed=1)
    (tmp_path / "t/IM0000.dcm").rename(tmp_path / "s/zz_other.dcm")
    with pytest.raises(ImageReadError, match="zz_other.dcm: belongs to series .* own folder"):
        read_dicom_series(tmp_path / "s")


def test_not_a_dicom_file(tmp_path):
    (tmp_path / "fake.dcm").write_bytes(b"not dicom at all" * 20)
    with pytest.raises(ImageReadError, match="fake.dcm: is not a readable DICOM file"):
        read_image(tmp_path / "fake.dcm")


# --- a classifier on DICOM class folders ------------------------------------------------------


@pytest.mark.slow  # about 5 s: a CLI fit
def test_chest_classifier_trains_one_batch_on_dicom_class_folders(tmp_path, monkeypatch):
    from medvision.cli import main

    data_dir = tmp_path / "dicom_chest"
    write_dicom_chest_xray(data_dir, scale=0.25, size=32)
    monochrome1 = data_dir / "train/NORMAL/normal_0001.dcm"
    assert pydicom.dcmread(monochrome1).PhotometricInterpretation == "MONOCHROME1"
    # stored inverted (4095 - s), read back high = bright: the phantom's own 12-bit values
    rng = np.random.default_rng([0, 0, 1, 1])  # seed, split train, class NORMAL, image 1
    height, width = (int(32 * rng.uniform(1.0, 1.2)) for _ in range(2))
    phantom = chest_xray_phantom(height, width, "NORMAL", rng)
    np.testing.assert_array_equal(read_image(monochrome1), np.round(phantom * 4095))
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(Path(__file__).parents[1] / "configs/quickstart_dicom_chestxray.yaml"),
            f"--data.init_args.data_dir={data_dir}",
            "--data.init_args.image_size=32",
            "--model.init_args.pretrained=false",
            *fast_trainer_args(tmp_path),
        ]
    )
    assert not (tmp_path / "data").exists()  # used the given folder, wrote no synthetic data


def test_lung_predict_folder_accepts_dcm_beside_png(tmp_path, series_dir):
    from PIL import Image

    from medvision.data import LungCTDataModule

    folder, stored = series_dir
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (folder / "IM0000.dcm").rename(incoming / "ct.dcm")
    Image.fromarray(np.zeros((50, 70), np.uint8)).save(incoming / "photo.png")
    dm = LungCTDataModule(tmp_path / "unused", image_size=32, num_workers=0, predict_dir=incoming)
    dm.setup("predict")
    samples = {Path(s["path"]).name: s for s in dm.datasets["predict"]}
    assert samples["ct.dcm"]["original_size"].tolist() == [24, 20]
    assert samples["ct.dcm"]["image"].shape == (1, 32, 32) and not dm.predict_failures
