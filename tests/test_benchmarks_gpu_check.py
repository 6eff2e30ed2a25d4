"""``benchmarks/gpu_check.sh`` (its syntax and wheel list) and the table it ends with.

The whole dry run, ``bash benchmarks/gpu_check.sh --cpu`` with ``DATA`` set, takes minutes
on a 2-core CPU; docs/performance.md gives the command. Here: the table from the files the
steps leave behind, made by hand.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, load_benchmark

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


@pytest.fixture(scope="module")
def table():
    return load_benchmark(REPO / "benchmarks" / "gpu_check_table.py")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_parses_and_prints_its_help():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    shown = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "gpu_check.sh --cpu" in shown.stdout
    assert "Exit status" in shown.stdout  # the whole header comment


def test_wheel_list_is_the_readme_set_plus_nvml():
    names = [
        line.split("==")[0]
        for line in (REPO / "benchmarks" / "gpu_wheels.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert {"segmentation-models-pytorch", "albumentations", "jsonargparse"} <= set(names)
    assert "nvidia-ml-py" in names and len(names) == 14


def write_step(work: Path, step: str, rc: int = 0, status: str = "ran", log: str = "") -> None:
    path = work / f"{step}.log"
    path.write_text(log)
    record = {"step": step, "rc": rc, "seconds": 5, "status": status, "log": str(path)}
    with open(work / "steps.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def arm(loop: str, data: str, images: float | None, ratio: float | None, error=None) -> dict:
    return {
        "model": "unet",
        "size": 256,
        "batch": 64,
        "precision": "bf16-mixed",
        "layout": "channels_last",
        "loop": loop,
        "data": data,
        "train_images_per_s": images,
        "train_vs_plain": ratio,
        "nvml_util_percent": 80.0 if images else None,
        "setup_s": 12.0,
        "error": error,
    }


def test_table_rows_pass_and_fail(table, tmp_path: Path, capsys):
    write_step(tmp_path, "pytest_gpu", rc=1, log="..F\n===== 5 passed, 1 failed in 30.2s =====\n")
    write_step(tmp_path, "throughput")
    arms = [
        arm("medvision", "memory", 1900.0, 0.96),
        arm("plain", "memory", 1980.0, None),
        arm("medvision", "cached", 1360.0, 0.70),
        arm("plain", "cached", None, None, error="arm failed\nstopped after 100 s"),
    ]
    (tmp_path / "throughput.json").write_text(json.dumps(arms))
    line = "step overhead: medvision 2.10 ms/step vs plain 2.00 ms/step: +100 us/step, "
    write_step(tmp_path, "step_overhead", log=line + "throughput ratio 0.952 (meets ...)\n")
    loader = "| off | 0 | off | - | 0.05 | 451 |\n| off | 8 | on | 2 | 0.30 | 1,850 |\n"
    write_step(tmp_path, "data_path", log=loader + "| on | 0 | off | - | 0.01 | 2,751 |\n")
    fit = tmp_path / "fit_lung"
    (fit / "version_0").mkdir(parents=True)
    (fit / "version_0/metrics.csv").write_text("epoch,val/dice\n0,0.50\n1,\n1,0.75\n")
    (fit / "epoch_times.json").write_text(json.dumps([{"wall_s": 9.0}, {"wall_s": 3.0}]))
    (fit / "util.csv").write_text("60\n80\n")
    write_step(tmp_path, "fit_lung")
    write_step(tmp_path, "fit_chest", rc=124, status="timeout")
    write_step(tmp_path, "fit_nih", status="skipped")

    rows = {r["check"]: r for r in table.collect(tmp_path, cpu=False)}
    pytest_row = next(r for c, r in rows.items() if c.startswith("pytest"))
    assert pytest_row["note"] == "5 passed, 1 failed in 30.2s"
    results = [r["result"] for r in rows.values()]
    assert results == ["fail", "pass", "pass", "fail", "fail", "pass"] + ["pass"] * 3 + [
        "fail",
        "fail",
    ]
    fastest = rows["data_path.py: lung loader, cache off, best setting"]
    assert (fastest["img_s"], fastest["note"]) == (1850.0, "8 workers, pin_memory on, prefetch 2")
    cached = rows["U-Net r34 256 px b64 bf16-mixed channels_last: medvision, cached"]
    assert cached["note"] == "ratio below 0.95; loader setup 12 s"
    failed = rows["U-Net r34 256 px b64 bf16-mixed channels_last: plain, cached"]
    assert failed["note"].startswith("stopped after 100 s")
    lung = next(r for c, r in rows.items() if c.startswith("fit lung"))
    assert lung["note"] == "best val/dice 0.750, 2 epoch(s), 3.0 s/epoch (first left out)"
    assert lung["util"] == 70.0
    chest = next(r for c, r in rows.items() if c.startswith("fit chest"))
    assert chest["note"] == "stopped after 5 s"
    # the CPU dry run judges no speed
    cpu = {r["check"]: r["result"] for r in table.collect(tmp_path, cpu=True)}
    assert cpu["U-Net r34 256 px b64 bf16-mixed channels_last: medvision, cached"] == "pass"

    with pytest.raises(SystemExit):
        table.main([str(tmp_path)])
    out = capsys.readouterr().out
    memory = "| U-Net r34 256 px b64 bf16-mixed channels_last: medvision, memory | 1,900 | 0.960 "
    assert memory in out
    assert out.rstrip().endswith("6 of 11 checks passed")
