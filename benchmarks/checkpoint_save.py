"""Checkpoint writing: Lightning's default writer against medvision's AtomicCheckpointIO.

    python benchmarks/checkpoint_save.py \
        --checkpoint runs/unet_lung/version_0/checkpoints/last.ckpt

Loads one checkpoint, then saves it ``--repeats`` times, alternating, with Lightning's
``TorchCheckpointIO`` (serialize into memory, then write), medvision's ``AtomicCheckpointIO``
(``torch.save`` into a temporary file, then rename) and a bare ``torch.save`` to a path, into a
fresh temporary folder. Prints a table of seconds per save (median, min, max).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import machine_line, script_parser
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medvision.training.checkpointing import AtomicCheckpointIO


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (``main`` parses ``sys.argv`` with it)."""
    parser = script_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    writers = {
        "Lightning TorchCheckpointIO": TorchCheckpointIO().save_checkpoint,
        "medvision AtomicCheckpointIO": AtomicCheckpointIO().save_checkpoint,
        "torch.save to the path": lambda ckpt, path: torch.save(ckpt, path),
    }
    times: dict[str, list[float]] = {name: [] for name in writers}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for name, write in writers.items():
                start = time.perf_counter()
                write(checkpoint, Path(folder) / "last.ckpt")
                times[name].append(time.perf_counter() - start)
    size_mb = args.checkpoint.stat().st_size / 2**20
    print(
        f"Saving {args.checkpoint} ({size_mb:.0f} MB), {args.repeats} times each, alternating "
        f"| {machine_line()}\n"
    )
    print("| writer | median (s) | min (s) | max (s) |")
    print("|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {np.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |")


if __name__ == "__main__":
    main()
