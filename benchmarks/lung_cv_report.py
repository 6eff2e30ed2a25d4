"""3-fold cross-validation of U-Net and FCN-8s on the real lung CT slices, then one report.

    python benchmarks/lung_cv_report.py --data-dir ../shared/data/lung_ct --epochs 10

What it runs, in this process:
1. ``medvision-cv --folds K --config configs/unet_lung.yaml --data.init_args.data_dir DIR``
   with the settings below reduced so that it finishes on a small CPU, writing
   ``<output>/unet/cv``; then the same for ``configs/fcn_lung.yaml`` into ``<output>/fcn/cv``.
2. ``medvision-report <output>/unet/cv <output>/fcn/cv --names U-Net FCN-8s --output
   <output>/report``: ``report.md`` and ``comparison.png`` (the same test slices, each model's
   mask).

Printed: the machine, the settings changed from the configs, each CV's table (mean ± std of
every test metric over the folds) with its wall time, and the report. ``--figure PATH`` also
copies the figure there (e.g. ``docs/figures/lung_cv_comparison.png``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from harness.cli import script_parser
from harness.machine import REPO, machine_line

MODELS = {"unet": ("configs/unet_lung.yaml", "U-Net"), "fcn": ("configs/fcn_lung.yaml", "FCN-8s")}
#: What the shipped configs use, for the "reduced" line.
CONFIG_IMAGE_SIZE, CONFIG_EPOCHS, CONFIG_ENCODER = 256, 40, "resnet34"


def _here(path: Path) -> Path:
    """``path`` relative to the working directory (short paths in the printed report)."""
    return Path(os.path.relpath(path))


def build_parser() -> argparse.ArgumentParser:
    """The script's options (also checked by tests/test_docs.py against the documentation)."""
    parser = script_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, default=_here(REPO.parent / "shared/data/lung_ct"))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--encoder", default=CONFIG_ENCODER, help="smp encoder of both models")
    parser.add_argument("--num-workers", type=int, default=None, help="default: the config's")
    parser.add_argument("--num-images", type=int, default=4, help="test slices in the figure")
    parser.add_argument("--output", type=Path, default=_here(REPO / "runs" / "lung_cv"))
    parser.add_argument("--figure", type=Path, help="also copy comparison.png here")
    return parser


def fit_overrides(args: argparse.Namespace, root: Path) -> list[str]:
    """The changes to the shipped configs: size, epochs (and the cosine period), paths."""
    overrides = [
        f"--data.init_args.data_dir={args.data_dir}",
        f"--data.init_args.image_size={args.image_size}",
        f"--trainer.max_epochs={args.epochs}",
        f"--model.init_args.encoder_name={args.encoder}",
        f"--model.init_args.lr_scheduler.init_args.T_max={args.epochs}",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
    ]
    if args.num_workers is not None:
        overrides.append(f"--data.init_args.num_workers={args.num_workers}")
    return overrides


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from medvision.cli.compare import main as report_main
    from medvision.cli.crossval import main as cv_main

    print(f"Machine: {machine_line()}")
    encoder = (
        f"encoder {CONFIG_ENCODER} -> {args.encoder}, " if args.encoder != CONFIG_ENCODER else ""
    )
    print(
        f"Reduced from the configs: image_size {CONFIG_IMAGE_SIZE} -> {args.image_size}, "
        f"{encoder}max_epochs {CONFIG_EPOCHS} -> {args.epochs} (cosine T_max {args.epochs}); "
        "everything else (encoder trained from scratch, BCE+Dice, AdamW, augmentation, "
        "batch 16, seed 42) as shipped."
    )
    print(f"Data: {args.data_dir} | {args.folds}-fold CV, the same 10% test split for all folds")
    folders = []
    for key, (config, name) in MODELS.items():
        root = args.output / key
        started = time.perf_counter()
        cv_main(
            [
                "--folds",
                str(args.folds),
                "--output",
                str(root / "cv"),
                "--config",
                str(_here(REPO / config)),
                *fit_overrides(args, root),
            ]
        )
        print(f"{name} ({config}): {args.folds} folds in {time.perf_counter() - started:.0f} s")
        folders.append(str(root / "cv"))
    names = [name for _, name in MODELS.values()]
    report = args.output / "report"
    report_main([*folders, "--output", str(report), "--names", *names])
    report_main_args = f"{' '.join(folders)} --output {report} --names {' '.join(names)}"
    print(f"Report command: medvision-report {report_main_args}")
    if args.figure is not None:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report / "comparison.png", args.figure)
        print(f"Figure copied to {args.figure}")


if __name__ == "__main__":
    main()
