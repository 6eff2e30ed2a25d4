"""``benchmarks/predict_throughput.py``: its ratios, its mask agreement, its scaling, and a smoke
run of its three arms on a small bundle (nothing here asserts a speed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medvision.apply.export import export
from medvision.apply.inference import build_module
from medvision.data.synthetic import write_lung_ct

from .conftest import REPO, load_benchmark, lung_record


@pytest.fixture(scope="module")
def bench():
    return load_benchmark(REPO / "benchmarks" / "predict_throughput.py")


def test_rows_give_images_per_second_and_per_round_ratios_to_plain(bench):
    rounds = [
        {
            "torch": {"predict_s": 4.0, "arm_s": 10.0},
            "onnx": {"predict_s": 2.0, "arm_s": 9.0},
            "plain": {"predict_s": 2.0, "arm_s": 5.0},
        },
        {
            "torch": {"predict_s": 6.0, "arm_s": 12.0},
            "onnx": {"predict_s": 4.0, "arm_s": 10.0},
            "plain": {"predict_s": 4.0, "arm_s": 6.0},
        },
    ]
    rows = bench.summarize(rounds, images=200, batch=16, threads=2)
    torch_row, onnx_row, plain_row = rows
    assert torch_row["predict_s"] == 5.0 and torch_row["images_per_s"] == 40.0
    assert torch_row["vs_plain"] == pytest.approx((0.5 + 4 / 6) / 2)  # per round, then median
    assert onnx_row["vs_plain"] == 1.0 and plain_row["vs_plain"] == 1.0
    assert torch_row["process_vs_plain"] == pytest.approx((0.5 + 0.5) / 2)
    lines = bench.TABLE.markdown(rows).splitlines()
    assert lines[2] == "| torch | 200 | 16 | 2 | 5.00 | 40.0 | 0.58 | 11.0 | 0.50 | - |"


def test_agreement_is_the_fraction_of_equal_mask_pixels(bench, tmp_path):
    mine, reference = tmp_path / "mine", tmp_path / "reference"
    mine.mkdir()
    reference.mkdir()
    mask = np.zeros((4, 5), np.uint8)
    Image.fromarray(mask).save(reference / "a.png")
    mask[0, :2] = 255  # 2 of 20 pixels differ
    Image.fromarray(mask).save(mine / "a.png")
    assert bench.agreement(mine, reference) == pytest.approx(18 / 20)


def test_the_plain_loop_scales_as_the_record_says(bench):
    image = np.array([[-1200.0, 0.0], [200.0, 1000.0]], np.float32)
    windowed = bench._scaled(image, {"intensity_window": [-1000.0, 400.0]})
    assert windowed.ravel().tolist() == pytest.approx([0.0, 1000 / 1400, 1200 / 1400, 1.0])
    assert bench._scaled(image, {"intensity_window": None})[1, 1] == 1.0
    assert not bench._scaled(np.ones((2, 2), np.float32), {"intensity_window": None}).any()


@pytest.mark.slow
def test_smoke_run_of_the_three_arms(bench, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    record = lung_record()
    checkpoint = tmp_path / "unet.ckpt"
    state = build_module(record).state_dict()
    torch.save({"state_dict": state, "medvision": {"preprocessing": record.to_dict()}}, checkpoint)
    export(checkpoint, "bundle", tmp_path / "bundle", onnx=True)
    write_lung_ct(tmp_path / "lung", num_slices=4, size=48, seed=0)
    bench.main(
        ["--data-dir", str(tmp_path / "lung"), "--bundle", str(tmp_path / "bundle")]
        + ["--images", "3", "--rounds", "1", "--threads", "1", "--batch-size", "2"]
    )
    out = capsys.readouterr().out
    assert "Machine: " in out and "the first 3 slices of" in out
    rows = {
        line.split("|")[1].strip(): line.split("|") for line in out.splitlines() if "| 3 |" in line
    }
    assert set(rows) == {"torch", "onnx", "plain"}
    for cells in rows.values():
        assert float(cells[-2]) > 0.99  # the arms made the same masks
