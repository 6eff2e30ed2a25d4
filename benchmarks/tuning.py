"""A small Optuna search of configs/unet_lung.yaml on the real lung CT slices (docs/tuning.md).

    python benchmarks/tuning.py --data-dir ../shared/data/lung_ct --trials 6 --epochs 3

Runs, in a child process (its log beside the study)::

    medvision tune --config configs/unet_lung.yaml --search configs/search/unet_lung.yaml \\
        --trials N --study lung_smoke --output OUTPUT --startup-trials K [reductions]

with the config reduced so that the search finishes on a small CPU (image size, epochs and the
cosine period, encoder; the slices cached in memory; the search file as shipped). Printed: the
machine, the reductions, the trials table (``trials.csv``), the best trial and the wall time.
``--docs PAGE`` also writes that block between the ``<!-- tuning-table:start/end -->`` markers
of PAGE and copies the study's plots to ``docs/figures/tuning_<plot>.png``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.cli import script_parser
from harness.machine import REPO, code_version, machine_line
from harness.runs import MEDVISION, run_logged
from harness.tables import write_marked

CONFIG, SEARCH = "configs/unet_lung.yaml", "configs/search/unet_lung.yaml"
#: What the shipped config uses, for the "reduced" line.
CONFIG_IMAGE_SIZE, CONFIG_EPOCHS, CONFIG_ENCODER = 256, 40, "resnet34"
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")
MARKERS = ("<!-- tuning-table:start -->", "<!-- tuning-table:end -->")


def build_parser():
    """The script's options (also checked by tests/test_docs.py against the documentation)."""
    parser = script_parser(__doc__)
    add = parser.add_argument
    add("--data-dir", type=Path, default=REPO.parent / "shared/data/lung_ct")
    add("--trials", type=int, default=6, help="the study's finished trials (6)")
    add("--epochs", type=int, default=3, help="max_epochs of each trial (3)")
    add("--image-size", type=int, default=32, help="a multiple of 32 (the U-Net's depth)")
    add("--encoder", default="resnet18", help="smp encoder (the config's: resnet34)")
    add("--startup-trials", type=int, default=2, help="trials before the median pruner acts")
    add("--num-workers", type=int, default=0, help="loader workers (0: the slices are cached)")
    add("--output", type=Path, default=REPO / "runs" / "lung_smoke")
    add("--docs", type=Path, help="write the table into this page (docs/tuning.md)")
    add("--no-run", action="store_true", help="report the study already in --output")
    return parser


def tune_command(args) -> list[str]:
    """The ``medvision tune`` command line of the search."""
    command = [
        *MEDVISION,
        "tune",
        *("--config", CONFIG, "--search", SEARCH, "--study", args.output.name),
        *("--trials", str(args.trials), "--output", str(args.output)),
        *("--startup-trials", str(args.startup_trials), "--seed", "0"),
        f"--data.init_args.data_dir={args.data_dir}",
        f"--data.init_args.image_size={args.image_size}",
        f"--model.init_args.encoder_name={args.encoder}",
        f"--trainer.max_epochs={args.epochs}",
        f"--model.init_args.lr_scheduler.init_args.T_max={args.epochs}",
        "--data.init_args.cache=true",  # decoded once per trial, not every epoch
        f"--data.init_args.num_workers={args.num_workers}",
        "--trainer.enable_progress_bar=false",
    ]
    return command


def typed(value: str):
    """A CSV cell as a float when it is a decimal number (for the table's rounding)."""
    try:
        return value if value.lstrip("-").isdigit() else float(value)
    except ValueError:
        return value


def report(args, run: dict) -> str:
    """The Markdown block: what ran, where, and the trials table with the best trial.

    Args:
        args: The script's options.
        run: ``{"wall_s", "code"}`` of the run (``run.json`` in the study's folder).
    """
    from medvision.cli.tune.summary import format_table
    from medvision.utils.files import read_csv

    rows = read_csv(args.output / "trials.csv")
    table = [{k: typed(v) for k, v in row.items() if k != "folder"} for row in rows]
    complete = [row for row in rows if row["state"] == "COMPLETE"]
    best = max(complete, key=lambda row: float(row["value"]))
    counts = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
    command = f"python benchmarks/tuning.py --data-dir {args.data_dir} --trials {args.trials} "
    command += f"--epochs {args.epochs} --image-size {args.image_size} --encoder {args.encoder}"
    return "\n".join(
        [
            f"Smoke run (not a tuned result): `{command}`, {run['code']}.",
            "",
            f"Machine: {machine_line()}.",
            "",
            f"Reduced from `{CONFIG}`: image_size {CONFIG_IMAGE_SIZE} -> {args.image_size}, "
            f"max_epochs {CONFIG_EPOCHS} -> {args.epochs} (cosine T_max {args.epochs}), encoder "
            f"{CONFIG_ENCODER} -> {args.encoder}, slices cached in memory; search `{SEARCH}` as "
            f"shipped; median pruner "
            f"after {args.startup_trials} trials; TPE sampler, seed 0. "
            f"{len(rows)} trials ({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
            f"{counts['FAIL']} failed) in {run['wall_s'] / 60:.1f} min; value = best val/dice.",
            "",
            format_table(table, markdown=True),
            "",
            f"Best: trial {best['number']}, val/dice {float(best['value']):.4f}. Pruned: "
            + (
                ", ".join(
                    f"trial {r['number']} after {r['epochs']} of {args.epochs} epochs"
                    for r in rows
                    if r["state"] == "PRUNED"
                )
                or "none"
            )
            + ".",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    record = args.output / "run.json"
    if not args.no_run:
        wall = run_logged(tune_command(args), args.output / "tune.log")  # stops if it fails
        record.write_text(json.dumps({"wall_s": wall, "code": code_version()}))
    block = report(args, json.loads(record.read_text()))
    print(block)
    if args.docs is not None:
        write_marked(args.docs, *MARKERS, block, append=False)
        figures = args.docs.parent / "figures"
        figures.mkdir(exist_ok=True)
        for name in PLOTS:
            if (args.output / f"{name}.png").is_file():
                shutil.copyfile(args.output / f"{name}.png", figures / f"tuning_{name}.png")
        print(f"Table written to {args.docs}; plots to {figures}/tuning_*.png")


if __name__ == "__main__":
    main()
