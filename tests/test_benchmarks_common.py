"""``benchmarks/_common.py``: the helpers every benchmark script shares."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, load_benchmark

SCRIPTS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def common():
    return load_benchmark(REPO / "benchmarks" / "_common.py")


def test_load_benchmark_finds_common_and_restores_sys_path():
    before = list(sys.path)
    module = load_benchmark(REPO / "benchmarks" / "data_cache.py")
    assert sys.path == before
    assert module.machine_line.__module__ == "_common"


def test_no_script_reaches_a_sibling_through_sys_path():
    for script in SCRIPTS:
        text = script.read_text()
        assert "sys.path.insert(0, str(Path(__file__)" not in text, script.name


@pytest.mark.slow
def test_every_script_prints_its_help():
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    for script in SCRIPTS:
        proc = subprocess.run(
            [sys.executable, str(script), "--help"], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 0 and "usage:" in proc.stdout, (script.name, proc.stderr[-800:])


def test_machine_line_names_cores_torch_and_gpu(common):
    import torch

    line = common.machine_line()
    assert "usable cores" in line and f"torch {torch.__version__}" in line
    assert ("no GPU" in line) == (not torch.cuda.is_available())


def test_write_marked_replaces_between_markers_and_appends(common, tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\nbefore\n<!-- a -->\nold\n<!-- /a -->\nafter\n")
    common.write_marked(page, "<!-- a -->", "<!-- /a -->", "new")
    assert page.read_text() == "# Page\n\nbefore\n<!-- a -->\n\nnew\n\n<!-- /a -->\nafter\n"
    common.write_marked(page, "<!-- b -->", "<!-- /b -->", "more")
    assert page.read_text().endswith("after\n\n<!-- b -->\n\nmore\n\n<!-- /b -->\n")
    with pytest.raises(SystemExit, match="has no <!-- c --> marker"):
        common.write_marked(page, "<!-- c -->", "<!-- /c -->", "x", append=False)
    fresh = tmp_path / "new.md"
    common.write_marked(fresh, "<!-- a -->", "<!-- /a -->", "t", title="Title")
    assert fresh.read_text() == "# Title\n\n<!-- a -->\n\nt\n\n<!-- /a -->\n"


def test_best_row_and_read_csv_rows(common, tmp_path: Path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,val/loss,train/loss\n0,0.9,\n0,,1.5\n1,0.7,\n2,0.8,\n")
    rows = common.read_csv_rows(path)
    assert len(rows) == 4 and rows[1]["val/loss"] == ""
    assert common.best_row(rows, "val/loss", "min")["epoch"] == "1"
    assert common.best_row(rows, "val/loss", "max")["epoch"] == "0"
    with pytest.raises(ValueError, match="no val/dice"):
        common.best_row(rows, "val/dice")
    with pytest.raises(SystemExit, match="missing.csv is missing"):
        common.read_csv_rows(tmp_path / "missing.csv")


def test_mean_after_first(common):
    assert common.mean_after_first([10.0, 2.0, 4.0]) == 3.0
    assert common.mean_after_first([5.0]) == 5.0


def test_linked_lung_copies_cycles_over_the_pairs(common, tmp_path: Path):
    source = tmp_path / "src"
    for sub in ("2d_images", "2d_masks"):
        (source / sub).mkdir(parents=True)
        for name in ("a.tif", "b.tif"):
            (source / sub / name).write_bytes(sub.encode() + name.encode())
    out = common.linked_lung_copies(source, tmp_path / "out", 5)
    images = sorted(p.name for p in (out / "2d_images").iterdir())
    assert images == ["c0000_a.tif", "c0000_b.tif", "c0001_a.tif", "c0001_b.tif", "c0002_a.tif"]
    assert (out / "2d_masks/c0002_a.tif").read_bytes() == b"2d_masksa.tif"


def test_child_result_reads_the_last_result_line(common):
    code = "print('RESULT {\"x\": 1}'); print('noise'); print('RESULT {\"x\": 2}')"
    assert common.child_result([sys.executable, "-c", code], "child") == {"x": 2}
    with pytest.raises(SystemExit, match="child failed"):
        common.child_result([sys.executable, "-c", "import sys; sys.exit(3)"], "child")


def test_comma_list_and_at_least(common):
    import argparse

    parse = common.comma_list(("a", "b"), "--x")
    assert parse("b, a") == ["b", "a"]
    with pytest.raises(argparse.ArgumentTypeError, match=r"--x: \['c'\] not among a, b"):
        parse("a,c")
    with pytest.raises(argparse.ArgumentTypeError, match="at least 2"):
        common.at_least(2)("1")
