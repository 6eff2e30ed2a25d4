"""The machine a figure was measured on, the code it measured, and what a run reduced."""

from __future__ import annotations

import platform
import re
import resource
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: the repository this harness belongs to
REPO = Path(__file__).resolve().parents[2]


def machine_line() -> str:
    """The machine in one line: CPU model, usable cores, GPUs, torch, Python and OS.

    Built from :func:`medvision.utils.provenance.hardware` (what ``run_info.json`` records), plus
    the CPU's model name and torch's version and thread count. Example: ``Intel(R) Xeon(R)
    ..., 2 usable cores, no GPU, torch 2.6.0 (2 threads), Python 3.11.9,
    Linux-6.8-x86_64``.

    Returns:
        The line, without a trailing full stop.
    """
    import torch

    from medvision.utils.provenance import hardware

    info = hardware()
    gpus = info["gpus"]
    if gpus:
        names = sorted(set(gpus))
        gpu = ", ".join(f"{gpus.count(n)}x {n}" for n in names)
        gpu += f" (CUDA {info['cuda']}, cuDNN {info['cudnn']})"
    else:
        gpu = "no GPU"
    return (
        f"{cpu_model()}, {info['cpu_count']} usable cores, {gpu}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {info['python']}, {info['platform']}"
    )


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else ``platform.processor()`` or the arch."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        return re.search(r"^model name\s*:\s*(.+)$", text, re.M).group(1).strip()
    except (OSError, AttributeError):
        return platform.processor() or platform.machine()


def peak_memory_mb(device: str) -> float:
    """Peak memory of this process in MiB.

    Args:
        device: ``cuda``: the peak of ``torch.cuda.max_memory_allocated`` (tensors only);
            anything else: the process's peak resident set size (``ru_maxrss``).

    Returns:
        MiB.
    """
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mean_after_first(times: Sequence[float]) -> float:
    """Mean of ``times`` without the first (warm-up) one, unless it is the only one.

    Args:
        times: seconds per epoch (or any repeated measure), at least one.

    Returns:
        The mean.
    """
    return float(np.mean(times[1:] if len(times) > 1 else times))


def code_version(folder: Path = REPO) -> str:
    """A checkout's commit, marked when its ``medvision/`` or ``configs/`` differ from it.

    Args:
        folder: the checkout (default: this one).

    Returns:
        ``commit abc1234`` or ``commit abc1234 + uncommitted changes`` (``commit unknown``
        outside git).
    """

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=folder, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = git("status", "--porcelain", "medvision", "configs").strip()
    return f"commit {commit}" + (" + uncommitted changes" if dirty else "")


def size_line(reduced: Sequence[str], device: str, full: str) -> str:
    """The first line of a run's output: its full sizes, or exactly what it reduced.

    A run reduced for a CPU is a smoke run: its figures show that every arm runs, not speed.

    Args:
        reduced: what was reduced, in words (``U-Net 64x64 (full 256)``); empty: nothing.
        device: ``cpu`` or ``cuda``.
        full: the full sizes in words, printed when nothing was reduced.

    Returns:
        ``full size: ...``, ``reduced for CPU: ...`` or ``reduced: ...``.
    """
    if not reduced:
        return f"full size: {full}"
    return ("reduced for CPU: " if device == "cpu" else "reduced: ") + ", ".join(reduced)
