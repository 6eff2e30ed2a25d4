"""``benchmarks/data_path.py``: its tables, and a minimal run on synthetic slices."""

from __future__ import annotations

import argparse

import pytest

from .conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark(REPO / "benchmarks" / "data_path.py")


def test_stage_table_shares_and_rates(bench):
    times = {
        "uncached": {
            "decode": 6e-3,
            "normalize": 1e-3,
            "resize": 2e-3,
            "augment": 0.5e-3,
            "to tensor": 0.25e-3,
            "collate": 0.25e-3,
        },
        "cached": {"float16 -> float32": 1e-4, "augment": 5e-4, "to tensor": 2e-4, "collate": 2e-4},
        "uncached whole": 1e-2,
        "cached whole": 1e-3,
        "resize first": 0.5e-3,
    }
    lines = bench.stage_table(times).splitlines()
    assert "| decode | 6,000 | 60% | - | - |" in lines
    assert "| float16 -> float32 | - | - | 100 | 10% |" in lines
    assert "| augment | 500 | 5% | 500 | 50% |" in lines
    assert "| sum of the stages | 10,000 | 100% | 1,000 | 100% |" in lines
    assert "| images/s on one core (1 / whole) | 100 | | 1,000 | |" in lines
    assert lines[-1] == (
        "| what-if: resize, then normalize (instead of normalize + resize: 3,000) | 500 | | - | |"
    )


def test_resize_first_gives_the_same_scaling_to_half_a_step():
    """The what-if row's claim: min-max scaling commutes with the resize, but for rounding."""
    import cv2
    import numpy as np

    from medvision.data.io import normalize_intensity, to_channels

    raw = np.random.default_rng(0).integers(20, 220, (64, 64), dtype=np.uint8)
    now = cv2.resize(normalize_intensity(to_channels(raw, 1)), (32, 32), cv2.INTER_LINEAR)
    small = cv2.resize(raw, (32, 32), interpolation=cv2.INTER_LINEAR)
    window = (float(raw.min()), float(raw.max()))
    alternative = normalize_intensity(to_channels(small, 1), window)[..., 0]
    step = 1 / (window[1] - window[0])
    assert np.abs(now - alternative).max() <= 0.5 * step + 1e-6


def test_loader_settings_pair_prefetch_with_workers_only(bench, monkeypatch):
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    args = argparse.Namespace(workers=[0, 2], pin_memory=[False, True], prefetch=[2, 4])
    assert bench.loader_settings(args) == [(0, False, None), (2, False, 2), (2, False, 4)]
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    assert len(bench.loader_settings(args)) == 6


def test_option_types_refuse_bad_lists(bench):
    assert bench.int_list("0,1, 2") == [0, 1, 2]
    assert bench.switch_list("on,off") == [True, False]
    with pytest.raises(ValueError):
        bench.int_list("-1")
    with pytest.raises(ValueError):
        bench.switch_list("maybe")


def test_minimal_run_prints_both_tables(bench, capsys):
    bench.main(
        ["--num-slices", "20", "--distinct", "2", "--slice-size", "64", "--image-size", "32"]
        + ["--samples", "4", "--repeats", "1", "--batch-size", "4", "--workers", "0"]
        + ["--pin-memory", "off", "--batches", "1"]
    )
    out = capsys.readouterr().out
    assert "16 training slices" in out  # 80% of 20
    stages = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("|")}
    for stage in ("decode", "normalize", "resize", "augment", "to tensor", "collate"):
        assert stage in stages
    uncached = [float(stages[s].split("|")[2].replace(",", "")) for s in bench.UNCACHED_STAGES]
    total = float(stages["sum of the stages"].split("|")[2].replace(",", ""))
    assert total == pytest.approx(sum(uncached), abs=len(uncached))  # rounding of each cell
    loader_rows = [line for line in out.splitlines() if line.startswith(("| off | 0", "| on | 0"))]
    assert len(loader_rows) == 2 and all(
        float(r.split("|")[-2].replace(",", "")) > 0 for r in loader_rows
    )
