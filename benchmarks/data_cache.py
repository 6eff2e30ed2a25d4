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
from _common import REPO, linked_lung_copies, machine_line, mean_after_first, script_parser

ARMS = {"uncached": False, "cached": True}


def linked_copies(data_dir: Path, copies: int, out: Path) -> Path:
    """``out`` with every pair of ``data_dir`` linked ``copies`` times."""
    num_slices = copies * len(list((data_dir / "2d_images").iterdir()))
    return linked_lung_copies(data_dir, out, num_slices)


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
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if args.copies > 1:
            data_dir = linked_copies(args.data_dir, args.copies, Path(tmp) / "data")
        for round_ in range(args.rounds):
            for arm, cache in ARMS.items():
                run_dir = Path(tmp) / f"{arm}_{round_}"
                fit = None if args.skip_fit else fit_epoch_s(data_dir, run_dir, cache, args)
                rows.append((round_, arm, fit, loader_epoch_s(data_dir, cache, args)))
    print_table(rows, args)


def print_table(rows: list[tuple], args) -> None:
    """Print the machine, the per-round rows ``(round, arm, fit s, loader s)`` and medians."""

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    print(f"Machine: {machine_line()}")
    print(
        f"Data: {args.data_dir} x{args.copies}, image_size {args.image_size}, augmentation "
        f"{args.augmentation}, batch {args.batch_size}, {args.num_workers} workers, "
        f"encoder {args.encoder}, {args.epochs} epochs (first excluded)\n"
    )
    print("| round | arm | fit epoch (s) | loader epoch (s) |")
    print("|---|---|---|---|")
    for round_, arm, fit, loader in rows:
        print(f"| {round_} | {arm} | {seconds(fit)} | {seconds(loader)} |")
    print("\n| median over rounds | fit epoch (s) | loader epoch (s) |")
    print("|---|---|---|")
    medians = {}
    for arm in ARMS:
        fits = [r[2] for r in rows if r[1] == arm and r[2] is not None]
        loaders = [r[3] for r in rows if r[1] == arm]
        medians[arm] = (float(np.median(fits)) if fits else None, float(np.median(loaders)))
        print(f"| {arm} | {seconds(medians[arm][0])} | {seconds(medians[arm][1])} |")
    saved = [
        "-"
        if medians["uncached"][i] is None
        else f"{1 - medians['cached'][i] / medians['uncached'][i]:.0%}"
        for i in (0, 1)
    ]
    print(f"| time saved by the cache | {saved[0]} | {saved[1]} |")


if __name__ == "__main__":
    main()
