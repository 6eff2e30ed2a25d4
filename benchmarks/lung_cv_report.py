"""3-fold cross-validation of U-Net and FCN-8s on the real lung CT slices, then one report.

    python benchmarks/lung_cv_report.py --data-dir ../shared/data/lung_ct --epochs 10

``medvision-cv --folds K`` with configs/unet_lung.yaml into ``<output>/unet/cv`` and with
configs/fcn_lung.yaml into ``<output>/fcn/cv`` (settings reduced for a small CPU), then
``medvision-report`` of both into ``<output>/report`` (``report.md``, ``comparison.png``).
Printed: the machine, what was reduced, each CV's table with its wall time, and the report;
``--figure PATH`` also copies the figure there.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from harness.cli import script_parser
from harness.machine import DATA, REPO, machine_line

MODELS = {"unet": ("configs/unet_lung.yaml", "U-Net"), "fcn": ("configs/fcn_lung.yaml", "FCN-8s")}
CONFIG_IMAGE_SIZE, CONFIG_EPOCHS, CONFIG_ENCODER = 256, 40, "resnet34"  # the shipped configs'


def here(path: Path) -> Path:
    """``path`` relative to the working directory (short paths in the printed report)."""
    return Path(os.path.relpath(path))


def build_parser():
    """The command line of this script."""
    parser = script_parser(__doc__, data_dir=here(DATA / "lung_ct"), epochs=10, num_workers=None)
    add = parser.add_argument
    add("--folds", type=int, default=3)
    add("--image-size", type=int, default=64)
    add("--encoder", default=CONFIG_ENCODER, help="smp encoder of both models")
    add("--num-images", type=int, default=4, help="test slices in the figure")
    add("--output", type=Path, default=here(REPO / "runs" / "lung_cv"))
    add("--figure", type=Path, help="also copy comparison.png here")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from medvision.cli.compare import main as report_main
    from medvision.cli.crossval import main as cv_main

    encoder = f"encoder {CONFIG_ENCODER} -> {args.encoder}, " * (args.encoder != CONFIG_ENCODER)
    print(f"Machine: {machine_line()}")
    print(
        f"Reduced from the configs: image_size {CONFIG_IMAGE_SIZE} -> {args.image_size}, "
        f"{encoder}max_epochs {CONFIG_EPOCHS} -> {args.epochs} (cosine T_max {args.epochs}); "
        "everything else (encoder trained from scratch, BCE+Dice, AdamW, augmentation, "
        "batch 16, seed 42) as shipped."
    )
    print(f"Data: {args.data_dir} | {args.folds}-fold CV, the same 10% test split for all folds")
    folders = []
    for key, (config, name) in MODELS.items():
        root, started = args.output / key, time.perf_counter()
        overrides = [
            *("--folds", str(args.folds), "--output", str(root / "cv")),
            *("--config", str(here(REPO / config))),
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
        cv_main(overrides)
        print(f"{name} ({config}): {args.folds} folds in {time.perf_counter() - started:.0f} s")
        folders.append(str(root / "cv"))
    names, report = [name for _, name in MODELS.values()], args.output / "report"
    report_main([*folders, "--output", str(report), "--names", *names])
    named = f"--output {report} --names {' '.join(names)}"
    print(f"Report command: medvision-report {' '.join(folders)} {named}")
    if args.figure is not None:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report / "comparison.png", args.figure)
        print(f"Figure copied to {args.figure}")


if __name__ == "__main__":
    main()
