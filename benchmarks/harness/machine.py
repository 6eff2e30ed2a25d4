"""The machine a figure was measured on, the code it measured, and what a run reduced."""

from __future__ import annotations

import platform
import re
import resource
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]  # the repository of this harness
DATA = REPO.parent / "shared/data"  # the shared real data beside it


def machine_line() -> str:
    """CPU model, usable cores, GPUs, torch (and its threads), Python and OS in one line, from
    :func:`medvision.utils.provenance.hardware` (what ``run_info.json`` records)."""
    import torch

    from medvision.utils.provenance import hardware

    info, gpu = hardware(), "no GPU"
    if info["gpus"]:
        gpu = ", ".join(f"{info['gpus'].count(n)}x {n}" for n in sorted(set(info["gpus"])))
        gpu += f" (CUDA {info['cuda']}, cuDNN {info['cudnn']})"
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"^model name\s*:\s*(.+)$", text, re.M).group(1).strip()
    except (OSError, AttributeError):
        cpu = platform.processor() or platform.machine()
    return (
        f"{cpu}, {info['cpu_count']} usable cores, {gpu}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {info['python']}, {info['platform']}"
    )


def peak_memory_mb(device: str) -> float:
    """Peak memory of this process in MiB: ``torch.cuda.max_memory_allocated`` on ``cuda``
    (tensors only), else the peak resident set size."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mean_after_first(times: Sequence[float]) -> float:
    """Mean of ``times`` without the first (warm-up) one, unless it is the only one."""
    return float(np.mean(times[1:] if len(times) > 1 else times))


def code_version(folder: Path = REPO) -> str:
    """``commit abc1234`` of a checkout, `` + uncommitted changes`` when its ``medvision/``
    or ``configs/`` differ (``commit unknown`` outside git)."""

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=folder, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = git("status", "--porcelain", "medvision", "configs").strip()
    return f"commit {commit}" + (" + uncommitted changes" if dirty else "")


def reduced_line(reduced: Sequence[str], device: str, full: str) -> str:
    """A run's first line: ``full size: <full>``, or ``reduced for CPU: ...`` (a smoke run: its
    figures show that every arm runs, not speed) or ``reduced: ...``, listing ``reduced``."""
    if not reduced:
        return f"full size: {full}"
    return ("reduced for CPU: " if device == "cpu" else "reduced: ") + ", ".join(reduced)
