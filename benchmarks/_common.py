"""What the benchmark scripts share: the machine line, docs tables, CSV reading, child runs.

A script run as ``python benchmarks/x.py`` has ``benchmarks/`` first on ``sys.path``, so it
imports these with ``from _common import ...``; ``tests/conftest.py``'s ``load_benchmark`` puts
the folder on the path while it loads a script. Heavy imports (torch, medvision) happen inside
the functions, so that ``python benchmarks/x.py --help`` stays quick.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: the ``medvision`` command of this interpreter, run from the repository root
MEDVISION = [sys.executable, "-m", "medvision.cli"]
#: the prefix of the one line a child process prints its result on (JSON after it)
RESULT = "RESULT "


# --- the machine -------------------------------------------------------------------------------
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


# --- run outputs -------------------------------------------------------------------------------
def read_csv_rows(path: Path) -> list[dict]:
    """The rows of a CSV file that a run wrote (``metrics.csv``, ``test_per_class.csv``, ...).

    Args:
        path: the file.

    Returns:
        One dict per row, keyed by the header; empty cells are ``""``.

    Raises:
        SystemExit: naming ``path`` when it does not exist (the run did not finish).
    """
    if not Path(path).is_file():
        sys.exit(f"{path} is missing: the run did not finish (see its .log beside it)")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def logged(rows: list[dict], key: str) -> list[dict]:
    """The rows of a CSV logger's ``metrics.csv`` that hold a value of ``key``."""
    return [row for row in rows if row.get(key) not in ("", None)]


def best_row(rows: list[dict], key: str, mode: str = "max") -> dict:
    """The row of ``metrics.csv`` rows with the highest (``max``) or lowest (``min``) ``key``.

    Args:
        rows: a CSV logger's rows (see :func:`read_csv_rows`).
        key: a logged metric, e.g. ``val/iou``.
        mode: ``max`` or ``min``.

    Returns:
        The row (string values).

    Raises:
        ValueError: when no row holds ``key``.
    """
    found = logged(rows, key)
    if not found:
        raise ValueError(f"no {key} in the fit's metrics.csv")
    pick = max if mode == "max" else min
    return pick(found, key=lambda row: float(row[key]))


def write_marked(
    page: Path, start: str, end: str, body: str, title: str | None = None, append: bool = True
) -> None:
    """Put ``body`` between the ``start`` and ``end`` marker lines of a docs page.

    The block written is ``start``, a blank line, ``body``, a blank line, ``end``; an earlier
    block between the same markers is replaced.

    Args:
        page: the Markdown file.
        start: the opening marker, e.g. ``<!-- ham10000-table:start -->``.
        end: the closing marker.
        body: Markdown.
        title: the heading of a new page, written when ``page`` does not exist.
        append: when the page lacks the markers, add the block at its end (True) or stop
            with an error naming the page and marker (False).
    """
    block = f"{start}\n\n{body}\n\n{end}"
    if page.exists():
        text = page.read_text()
    elif title is not None:
        text = f"# {title}\n"
    else:
        sys.exit(f"{page} does not exist")
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    elif append:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    else:
        sys.exit(f"{page} has no {start} marker")
    page.write_text(text)


def code_version() -> str:
    """The repository's commit, marked when ``medvision/`` or ``configs/`` differ from it."""

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = git("status", "--porcelain", "medvision", "configs").strip()
    return f"commit {commit}" + (" + uncommitted changes" if dirty else "")


def script_command(script: str, argv: Sequence[str]) -> str:
    """``python benchmarks/<script> ARGS`` as typed (arguments with spaces quoted)."""
    return f"python benchmarks/{script} " + " ".join(a if " " not in a else repr(a) for a in argv)


# --- child processes ---------------------------------------------------------------------------
class ChildFailed(SystemExit):
    """A child process failed or printed no result; uncaught, it ends the script with its
    message (a ``SystemExit``), and a script that goes on without that child catches it."""


def run_logged(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run ``cmd`` from the repository root, its output into ``log``; stop if it fails.

    Args:
        cmd: the command (e.g. ``[*MEDVISION, "fit", ...]``).
        log: the file for its stdout and stderr, which starts with the command line.
        env: the environment (default: this process's).

    Returns:
        Its wall time in seconds.

    Raises:
        SystemExit: with the log's tail when the command exits non-zero.
    """
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        handle.write(" ".join(cmd) + "\n\n")
        handle.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        sys.exit(f"{' '.join(cmd[:4])} failed (exit {proc.returncode}), see {log}:\n{tail}")
    return wall


def print_result(result: dict) -> None:
    """Print a child's result as its :data:`RESULT` line (read by :func:`child_result`)."""
    print(RESULT + json.dumps(result), flush=True)


def child_result(cmd: list[str], what: str, timeout: float | None = None) -> dict:
    """Run a child process and return the JSON of its last :data:`RESULT` line.

    Args:
        cmd: the command.
        what: what it runs, for the error message (e.g. ``arm plain``).
        timeout: seconds before the child is stopped (None: no limit).

    Returns:
        The decoded result.

    Raises:
        ChildFailed: with the child's stderr tail when it fails or prints no result.
        subprocess.TimeoutExpired: when it runs past ``timeout``.
    """
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise ChildFailed(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT) :])


# --- data --------------------------------------------------------------------------------------
def linked_lung_copies(source: Path, out: Path, num_slices: int) -> Path:
    """A Kaggle-layout lung folder of ``num_slices`` symlinks cycling over ``source``'s pairs.

    Link ``k`` of pair ``name`` is ``c<k>_<name>`` in ``out/2d_images`` and ``out/2d_masks``,
    so a few real or synthetic slices make a set of any size without copying pixels.

    Args:
        source: a folder with ``2d_images/`` and ``2d_masks/`` of the same file names.
        out: the new folder (created).
        num_slices: how many pairs to link.

    Returns:
        ``out``.
    """
    names = sorted(p.name for p in (source / "2d_images").iterdir())
    if not names:
        sys.exit(f"{source / '2d_images'} holds no slices")
    for sub in ("2d_images", "2d_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for index in range(num_slices):
            name = names[index % len(names)]
            link = out / sub / f"c{index // len(names):04d}_{name}"
            link.symlink_to((source / sub / name).resolve())
    return out


# --- command lines -----------------------------------------------------------------------------
def script_parser(doc: str) -> argparse.ArgumentParser:
    """A script's parser whose ``--help`` prints ``doc`` (its module docstring) as written."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


# --- command-line types ------------------------------------------------------------------------
def comma_list(choices: Sequence[str], option: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated subset of ``choices``.

    Args:
        choices: the allowed values.
        option: the option's name, for the error message.

    Returns:
        The parser of one argument.
    """

    def parse(text: str) -> list[str]:
        values = [value.strip() for value in text.split(",") if value.strip()]
        unknown = [value for value in values if value not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(
                f"{option}: {unknown or text!r} not among {', '.join(choices)}"
            )
        return values

    return parse


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse
