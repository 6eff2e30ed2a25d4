"""The one table at the end of ``benchmarks/gpu_check.sh``, from what its steps left in a folder.

    python benchmarks/gpu_check_table.py WORK [--cpu]

``WORK`` holds ``steps.jsonl`` (per step: ``step``, ``rc``, ``seconds``, ``status`` ``ran`` /
``timeout`` / ``skipped``, ``log``), ``throughput.json``, the steps' logs and per fit
``fit_<task>/`` (``metrics.csv``, ``epoch_times.json``, ``util.csv``: nvidia-smi's GPU-Util).
One row per check: images/s, ratio to the plain loop, NVML utilization, pass or fail, a note.
A medvision loop passes when it ran with a throughput ratio of at least 0.95 to the plain loop
(not judged with ``--cpu``, whose minimal sizes say nothing about speed); everything else
when it ran and exited 0. The exit status is 1 when a row fails.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
from harness.cli import script_parser
from harness.machine import mean_after_first
from harness.runs import best_row, logged, read_csv_rows
from harness.tables import Column, Table

TARGET = 0.95
NAMES = {"unet": "U-Net r34", "resnet50": "ResNet-50"}
#: fit step -> (task in words, the metric its config's checkpoint monitors)
FITS = {
    "fit_lung": ("lung U-Net (configs/unet_lung.yaml)", "val/dice"),
    "fit_chest": ("chest X-ray ResNet-18 (configs/resnet18_chestxray.yaml)", "val/f1"),
    "fit_nih": ("NIH multi-label ResNet-50 (configs/resnet50_nih.yaml)", "val/auroc"),
}
OVERHEAD = re.compile(r"^step overhead: .*?([+-]\d+) us/step, throughput ratio ([\d.]+)", re.M)
LOADER_ROW = re.compile(
    r"^\| (off|on) \| (\d+) \| (off|on) \| (\S+) \| [\d.]+ \| ([\d,]+) \|$", re.M
)
SUMMARY = r"^=*\s*(\d+ (?:passed|failed|skipped|errors?|deselected)\b.*?)\s*=*$"
PYTEST_SUMMARY = re.compile(SUMMARY, re.M)
TABLE = Table(
    "check",
    # 4,054 from 100 up, one decimal below (the CPU dry run's tiny rates)
    Column("img/s", "img_s", lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.1f}"),
    Column("vs plain", "vs_plain", "{:.3f}"),
    Column("NVML util %", "util", "{:.0f}"),
    "result",
    "note",
)


def row(check: str, result: str, note: str = "", **values) -> dict:
    return {"check": check, "result": result, "note": note, **values}


def failure(step: dict | None) -> str | None:
    """Why a step gives no figures (not run, stopped, failed), or None when it exited 0."""
    if step is None or step["status"] == "skipped":
        return "skipped (time budget or an earlier setup failure)"
    if step["status"] == "timeout":
        return f"stopped after {step['seconds']:.0f} s"
    return f"exit {step['rc']}, see {step['log']}" if step["rc"] != 0 else None


def log_of(step: dict | None) -> str:
    """The step's log, empty when there is none."""
    path = Path(step["log"]) if step else None
    return path.read_text() if path and path.is_file() else ""


def pytest_rows(step: dict | None) -> list[dict]:
    found = PYTEST_SUMMARY.findall(log_of(step))
    why = failure(step)
    check = "pytest -m gpu tests/test_gpu.py tests/test_gpu_augmentation.py"
    return [row(check, "fail" if why else "pass", (found[-1] if found else "") or why or "")]


def throughput_rows(step: dict | None, path: Path, cpu: bool) -> list[dict]:
    if not path.is_file():
        return [row("throughput.py arms", "fail", failure(step) or f"no {path.name}")]
    rows = []
    for arm in json.loads(path.read_text()):
        precision = "fp32" if arm["precision"] == "32" else arm["precision"]
        check = f"{NAMES[arm['model']]} {arm['size']} px b{arm['batch']} {precision} "
        check += f"{arm['layout']}: {arm['loop']}, {arm['data']}"
        ratio, result, note = arm["train_vs_plain"], "pass", ""
        if arm["error"]:
            result, note = "fail", arm["error"].splitlines()[-1][:120]
        elif arm["loop"] != "plain" and not cpu and ratio is not None and ratio < TARGET:
            result, note = "fail", f"ratio below {TARGET}"
        if arm["setup_s"] is not None and arm["data"] != "memory":
            note = f"{note}; loader setup {arm['setup_s']:.0f} s".lstrip("; ")
        values = {"img_s": arm["train_images_per_s"], "vs_plain": ratio}
        rows.append(row(check, result, note, util=arm["nvml_util_percent"], **values))
    return rows


def overhead_rows(step: dict | None, cpu: bool) -> list[dict]:
    check, why = "step_overhead.py: medvision vs plain, resnet10t 32 px b32", failure(step)
    found = OVERHEAD.search(log_of(step)) if not why else None
    if found is None:
        return [row(check, "fail", why or "no 'step overhead:' line")]
    ratio = float(found[2])
    result = "fail" if not cpu and ratio < TARGET else "pass"
    return [row(check, result, f"{found[1]} us/step", vs_plain=ratio)]


def data_path_rows(step: dict | None) -> list[dict]:
    """The fastest loader setting of ``data_path.py`` with the cache off and on."""
    why = failure(step)
    settings = LOADER_ROW.findall(log_of(step)) if not why else []
    if not settings:
        return [row("data_path.py: lung loader", "fail", why or "no loader table")]
    rows = []
    for cache in ("off", "on"):
        found = [s for s in settings if s[0] == cache]
        if found:
            best = max(found, key=lambda s: float(s[4].replace(",", "")))
            _, workers, pin, prefetch, speed = best
            check = f"data_path.py: lung loader, cache {cache}, best setting"
            note = f"{workers} workers, pin_memory {pin}, prefetch {prefetch}"
            rows.append(row(check, "pass", note, img_s=float(speed.replace(",", ""))))
    return rows


def fit_rows(steps: dict, work: Path, cpu: bool) -> list[dict]:
    rows = []
    for name, (task, monitor) in FITS.items():
        folder, why = work / name, failure(steps.get(name))
        check = f"fit {task}, {'minimal, on the CPU' if cpu else 'configs/trainer/gpu_amp.yaml'}"
        metrics = folder / "version_0/metrics.csv"
        if why or not metrics.is_file():
            rows.append(row(check, "fail", why or f"no {metrics}"))
            continue
        history = read_csv_rows(metrics)
        best = best_row(history, monitor) if logged(history, monitor) else None
        note = f"best {monitor} {float(best[monitor]):.3f}" if best else "no validation logged"
        if (folder / "epoch_times.json").is_file():
            epochs = [e["wall_s"] for e in json.loads((folder / "epoch_times.json").read_text())]
            first = " (first left out)" if len(epochs) > 1 else ""
            note += f", {len(epochs)} epoch(s), {mean_after_first(epochs):.1f} s/epoch{first}"
        util = (folder / "util.csv").read_text().split() if (folder / "util.csv").is_file() else []
        samples = [float(x) for x in util if x.replace(".", "", 1).isdigit()]
        mean = float(np.mean(samples)) if samples else None
        rows.append(row(check, "pass" if best else "fail", note, util=mean))
    return rows


def collect(work: Path, cpu: bool) -> list[dict]:
    """Every row, in the order the script runs its steps."""
    log = work / "steps.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    steps = {record["step"]: record for record in records}
    return [
        *pytest_rows(steps.get("pytest_gpu")),
        *throughput_rows(steps.get("throughput"), work / "throughput.json", cpu),
        *overhead_rows(steps.get("step_overhead"), cpu),
        *data_path_rows(steps.get("data_path")),
        *fit_rows(steps, work, cpu),
    ]


def build_parser():
    """The command line of this script."""
    parser = script_parser(__doc__)
    parser.add_argument("work", type=Path, help="the folder gpu_check.sh wrote into")
    parser.add_argument("--cpu", action="store_true", help="a CPU dry run: no speed targets")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rows = collect(args.work, args.cpu)
    if args.cpu:
        print("CPU dry run at minimal sizes: the figures say nothing about speed.\n")
    print(TABLE.markdown(rows))
    failed = [r["check"] for r in rows if r["result"] != "pass"]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} checks passed")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
