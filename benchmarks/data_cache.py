"""Epoch time of the lung U-Net with and without the in-memory sample cache (``cache: true``).

    python benchmarks/data_cache.py --data-dir ../shared/data/lung_ct --image-size 64
    python benchmarks/data_cache.py --data-dir ../shared/data/lung_ct_fullres_sample \
        --copies 21 --image-size 128

For ``cache: false`` and ``cache: true`` at the same augmentation, in alternating rounds:
1. ``fit``: ``configs/unet_lung.yaml`` (encoder ``--encoder``) for ``--epochs`` epochs; the
   mean epoch wall time after the first (training, validation and checkpointing, as
   :class:`medvision.training.EpochTimer` measures it).
2. ``loader``: the same datamodule's train loader iterated ``--epochs`` times without a model;
   the mean epoch time after the first (decoding, resizing, augmentation and collation only).

``--copies N`` links every slice of ``--data-dir`` N times under new names into a temporary
folder, to make a set of realistic size from the ten full-resolution slices. Printed: the
machine, one row per round and arm, and the median over rounds with the time the cache saves.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness.arms import alternate
from harness.cli import script_parser
from harness.machine import REPO, machine_line, mean_after_first
from harness.runs import linked_lung_copies
from harness.tables import Column, Table

ARMS = {"uncached": False, "cached": True}
#: one row per round and arm
ROUNDS = Table(
    "round",
    "arm",
    Column("fit epoch (s)", "fit", "{:.3f}"),
    Column("loader epoch (s)", "loader", "{:.3f}"),
)
#: the medians per arm, then the share of time the cache saves
MEDIANS = Table(
    Column("median over rounds", "arm"),
    Column("fit epoch (s)", "fit", "{:.3f}"),
    Column("loader epoch (s)", "loader", "{:.3f}"),
)


def cli_args(data_dir: Path, run_dir: Path, cache: bool, args) -> list[str]:
    """``medvision fit`` arguments of one arm: the lung U-Net config at the benchmark's size."""
    return [
        "--config",
        str(REPO / "configs/unet_lung.yaml"),
        f"--data.init_args.data_dir={data_dir}",
        f"--data.init_args.image_size={args.image_size}",
        f"--data.init_args.num_workers={args.num_workers}",
        f"--data.init_args.batch_size={args.batch_size}",
        f"--data.init_args.augmentation={args.augmentation}",
        f"--data.init_args.cache={str(cache).lower()}",
        f"--model.init_args.encoder_name={args.encoder}",
        f"--trainer.max_epochs={args.epochs}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def fit_epoch_s(data_dir: Path, run_dir: Path, cache: bool, args) -> float:
    """Mean fit epoch wall time after the first."""
    from medvision.cli import MedVisionCLI
    from medvision.training import EpochTimer

    cli = MedVisionCLI(args=cli_args(data_dir, run_dir, cache, args), run=False)
    timer = EpochTimer(output=run_dir / "epoch_times.json")
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    return mean_after_first([epoch["wall_s"] for epoch in timer.epochs])


def loader_epoch_s(data_dir: Path, cache: bool, args) -> float:
    """Mean wall time of one pass over the train loader, after the first, with no model."""
    from medvision.data import LungCTDataModule

    datamodule = LungCTDataModule(
        data_dir,
        image_size=args.image_size,
        augmentation=args.augmentation,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        cache=cache,
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    times = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        for _batch in loader:
            pass
        times.append(time.perf_counter() - start)
    return mean_after_first(times)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark."""
    parser = script_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared/data/lung_ct")
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--augmentation", default="basic", choices=["none", "basic", "elastic"])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--skip-fit", action="store_true", help="time the loaders only")
    return parser


def main(argv=None) -> None:
    """Run the rounds and print the table."""
    args = build_parser().parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if args.copies > 1:
            count = len(list((args.data_dir / "2d_images").iterdir()))
            data_dir = linked_lung_copies(args.data_dir, Path(tmp) / "data", args.copies * count)

        def measure(arm: str, index: int) -> dict:
            cache, run_dir = ARMS[arm], Path(tmp) / f"{arm}_{index}"
            fit = None if args.skip_fit else fit_epoch_s(data_dir, run_dir, cache, args)
            return {"fit": fit, "loader": loader_epoch_s(data_dir, cache, args)}

        rounds = alternate(list(ARMS), measure, args.rounds)
    print_table(rounds, args)


def print_table(rounds: list[dict], args) -> None:
    """Print the machine, the per-round rows and the medians with the time the cache saves."""
    print(f"Machine: {machine_line()}")
    print(
        f"Data: {args.data_dir} x{args.copies}, image_size {args.image_size}, augmentation "
        f"{args.augmentation}, batch {args.batch_size}, {args.num_workers} workers, "
        f"encoder {args.encoder}, {args.epochs} epochs (first excluded)\n"
    )
    print(ROUNDS.markdown({"round": i, "arm": a, **r[a]} for i, r in enumerate(rounds) for a in r))
    medians = {}
    for arm in ARMS:
        medians[arm] = {"arm": arm}
        for key in ("fit", "loader"):
            values = [r[arm][key] for r in rounds if r[arm][key] is not None]
            medians[arm][key] = float(np.median(values)) if values else None
    saved = {"arm": "time saved by the cache"}
    for key in ("fit", "loader"):
        before, after = medians["uncached"][key], medians["cached"][key]
        saved[key] = None if before is None else f"{1 - after / before:.0%}"
    print("\n" + MEDIANS.markdown([*medians.values(), saved]))


if __name__ == "__main__":
    main()
