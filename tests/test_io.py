import numpy as np
import pytest
import tifffile
from PIL import Image

from medvision.data.io import (
    ImageReadError,
    binarize_mask,
    normalize_intensity,
    read_image,
    to_channels,
)
from medvision.utils.files import write_atomically

RAMP = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48)


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [("uint8", 0, 255), ("uint16", 0, 4095), ("int16", -1024, 1500), ("float32", -1024, 1500)],
)
def test_every_tiff_dtype_normalizes_to_the_same_image(tmp_path, dtype, low, high):
    path = tmp_path / f"slice_{dtype}.tif"
    tifffile.imwrite(path, (low + RAMP * (high - low)).astype(dtype))
    image = normalize_intensity(to_channels(read_image(path), 1))
    assert image.shape == (64, 48, 1) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 0], RAMP, atol=1 / 255 + 1e-6)


def test_three_channel_and_channel_first_tiffs_become_hwc(tmp_path):
    rgb = (np.stack([RAMP] * 3, axis=-1) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "hwc.tif", rgb)
    tifffile.imwrite(tmp_path / "chw.tif", rgb.transpose(2, 0, 1), photometric="minisblack")
    for name in ("hwc.tif", "chw.tif"):
        image = read_image(tmp_path / name)
        assert image.shape == (64, 48, 3)
        gray = to_channels(image, 1)
        np.testing.assert_allclose(gray[..., 0], rgb[..., 0], atol=1)


def test_rgba_png_drops_alpha_and_gray_repeats_to_rgb(tmp_path):
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    assert to_channels(read_image(tmp_path / "x.png"), 3).shape == (10, 12, 3)
    assert to_channels(np.zeros((5, 6), np.uint8), 3).shape == (5, 6, 3)


def test_intensity_window_clips_hounsfield_units():
    hu = np.array([[-2000, -1000, 400, 3000]], dtype=np.int16)
    np.testing.assert_allclose(normalize_intensity(hu, window=(-1000, 400)), [[0, 0, 1, 1]])


def test_constant_image_maps_to_zeros():
    assert not normalize_intensity(np.full((4, 4), 7, np.uint16)).any()


@pytest.mark.parametrize("scale", [1, 255])
def test_masks_0_1_and_0_255_binarize_alike(scale):
    mask = np.array([[0, 1], [1, 0]], dtype=np.uint8) * scale
    np.testing.assert_array_equal(binarize_mask(mask, "m.tif"), [[0, 1], [1, 0]])


def test_rgb_mask_and_empty_mask():
    rgb = np.zeros((3, 3, 3), np.uint8)
    rgb[1, 1] = 255
    assert binarize_mask(rgb, "m.tif").sum() == 1
    assert binarize_mask(np.zeros((3, 3), np.uint8), "m.tif").sum() == 0


def test_negative_mask_is_refused_with_its_name():
    with pytest.raises(ImageReadError, match="neg.tif"):
        binarize_mask(np.array([[-1, 0]]), "neg.tif")


def test_truncated_tiff_error_names_the_file(tmp_path):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, (RAMP * 255).astype(np.uint8))
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageReadError, match="truncated.tif.*unreadable or truncated"):
        read_image(bad)


def test_multi_slice_stack_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((7, 16, 16), np.uint8))
    with pytest.raises(ImageReadError, match="stack.tif.*one file per slice"):
        read_image(tmp_path / "stack.tif")


def test_write_atomically_leaves_nothing_when_the_writer_fails(tmp_path):
    def failing(path):
        path.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomically(tmp_path / "out.png", failing)
    assert list(tmp_path.iterdir()) == []
    write_atomically(tmp_path / "out.txt", lambda p: p.write_text("whole"))
    assert (tmp_path / "out.txt").read_text() == "whole"
