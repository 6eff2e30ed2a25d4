"""Checkpoint writing: Lightning's default writer against medvision's AtomicCheckpointIO.

    python benchmarks/checkpoint_save.py \
        --checkpoint runs/unet_lung/version_0/checkpoints/last.ckpt

Loads one checkpoint, then saves it ``--repeats`` times, alternating, with Lightning's
``TorchCheckpointIO`` (serialize into memory, then write), medvision's ``AtomicCheckpointIO``
(``torch.save`` into a temporary file, then rename) and a bare ``torch.save``, into a
temporary folder. Prints seconds per save (median, min, max).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from harness.arms import Spread, alternate
from harness.cli import script_parser
from harness.machine import machine_line
from harness.tables import Column, Table

TABLE = Table("writer", *(Column(f"{k} (s)", k, "{:.3f}") for k in ("median", "min", "max")))


def build_parser():
    """The command line of this script."""
    parser = script_parser(__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    return parser


def main() -> None:
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from medvision.training.checkpointing import AtomicCheckpointIO

    args = build_parser().parse_args()
    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    writers = {
        "Lightning TorchCheckpointIO": TorchCheckpointIO().save_checkpoint,
        "medvision AtomicCheckpointIO": AtomicCheckpointIO().save_checkpoint,
        "torch.save to the path": torch.save,
    }
    with tempfile.TemporaryDirectory() as folder:

        def save(writer: str, _round: int) -> float:
            start = time.perf_counter()
            writers[writer](checkpoint, Path(folder) / "last.ckpt")
            return time.perf_counter() - start

        rounds = alternate(list(writers), save, args.repeats)
    size_mb = args.checkpoint.stat().st_size / 2**20
    print(
        f"Saving {args.checkpoint} ({size_mb:.0f} MB), {args.repeats} times each, alternating "
        f"| {machine_line()}\n"
    )
    spreads = {name: Spread.of(r[name] for r in rounds) for name in writers}
    print(TABLE.markdown({"writer": name, **s._asdict()} for name, s in spreads.items()))


if __name__ == "__main__":
    main()
