"""Epoch time of the lung U-Net with and without the in-memory sample cache (``cache: true``).

    python benchmarks/data_cache.py --data-dir ../shared/data/lung_ct --image-size 64
    python benchmarks/data_cache.py --data-dir ../shared/data/lung_ct_fullres_sample \
        --copies 21 --image-size 128

For ``cache: false`` and ``cache: true``, in alternating rounds: ``fit``, the mean epoch wall
time after the first of configs/unet_lung.yaml (encoder ``--encoder``; training, validation and
checkpoints, as EpochTimer measures it), and ``loader``, the mean time of a pass over the same
train loader without a model. ``--copies N`` links every slice N times (a set of realistic size
from a few slices). Printed: one row per round and arm, the medians and the time the cache saves.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness.arms import alternate
from harness.cli import script_parser
from harness.machine import DATA, REPO, machine_line, mean_after_first
from harness.runs import linked_lung_copies, overrides
from harness.tables import Column, Table

ARMS = {"uncached": False, "cached": True}
TIMES = [Column("fit epoch (s)", "fit", "{:.3f}"), Column("loader epoch (s)", "loader", "{:.3f}")]
ROUNDS = Table("round", "arm", *TIMES)
MEDIANS = Table(Column("median over rounds", "arm"), *TIMES)


def fit_epoch_s(data_dir: Path, run_dir: Path, cache: bool, args) -> float:
    """Mean fit epoch wall time after the first."""
    from medvision.cli import MedVisionCLI
    from medvision.training import EpochTimer

    data = {"data_dir": data_dir, "image_size": args.image_size, "cache": cache}
    data |= {key: getattr(args, key) for key in ("num_workers", "batch_size", "augmentation")}
    trainer = {"max_epochs": args.epochs, "default_root_dir": run_dir}
    trainer |= {"logger.init_args.save_dir": run_dir, "enable_model_summary": False}
    model = {"encoder_name": args.encoder}
    config = REPO / "configs/unet_lung.yaml"
    cli = MedVisionCLI(args=overrides(config, data=data, model=model, trainer=trainer), run=False)
    timer = EpochTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    return mean_after_first([epoch["wall_s"] for epoch in timer.epochs])


def loader_epoch_s(data_dir: Path, cache: bool, args) -> float:
    """Mean wall time of one pass over the train loader, after the first, with no model."""
    from medvision.data import LungCTDataModule

    datamodule = LungCTDataModule(
        data_dir, image_size=args.image_size, augmentation=args.augmentation,
        batch_size=args.batch_size, num_workers=args.num_workers, cache=cache,
    )  # fmt: skip
    datamodule.setup("fit")
    loader, times = datamodule.train_dataloader(), []
    for _ in range(args.epochs):
        start = time.perf_counter()
        for _batch in loader:
            pass
        times.append(time.perf_counter() - start)
    return mean_after_first(times)


def build_parser():
    """The command line of this benchmark."""
    parser = script_parser(
        __doc__, data_dir=DATA / "lung_ct", rounds=2, num_workers=0, epochs=3, batch_size=16
    )
    add = parser.add_argument
    add("--copies", type=int, default=1)
    add("--image-size", type=int, default=64)
    add("--augmentation", default="basic", choices=["none", "basic", "elastic"])
    add("--encoder", default="resnet18")
    add("--skip-fit", action="store_true", help="time the loaders only")
    return parser


def main(argv=None) -> None:
    """Run the rounds and print the tables."""
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
    print(f"Machine: {machine_line()}")
    print(
        f"Data: {args.data_dir} x{args.copies}, image_size {args.image_size}, augmentation "
        f"{args.augmentation}, batch {args.batch_size}, {args.num_workers} workers, "
        f"encoder {args.encoder}, {args.epochs} epochs (first excluded)\n"
    )
    print(ROUNDS.markdown({"round": i, "arm": a, **r[a]} for i, r in enumerate(rounds) for a in r))
    medians = {arm: {"arm": arm} for arm in ARMS}
    saved = {"arm": "time saved by the cache"}
    for key in ("fit", "loader"):
        for arm in ARMS:
            values = [r[arm][key] for r in rounds if r[arm][key] is not None]
            medians[arm][key] = float(np.median(values)) if values else None
        before, after = medians["uncached"][key], medians["cached"][key]
        saved[key] = None if before is None else f"{1 - after / before:.0%}"
    print("\n" + MEDIANS.markdown([*medians.values(), saved]))


if __name__ == "__main__":
    main()
