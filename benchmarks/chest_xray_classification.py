"""The chest X-ray study's three arms (5-layer CNN, ResNet-18, ResNet-18 + augmentation).

    python benchmarks/chest_xray_classification.py --image-size 128 --epochs 15

Each arm is ``medvision fit`` on its config (``--data.init_args.test_split=val``: the
patient-disjoint ``val/`` folder is the test set; the checkpoint is picked on validation
macro-F1) and ``medvision test`` on its ``best.ckpt``, overriding only the paths and the
settings given here. The table reads what those runs wrote: the test's ``metrics.csv`` and
``test_summary.csv`` (macro-F1's 95% bootstrap interval over the test images), the fit's
``metrics.csv`` and ``epoch_times.json``. ``--reuse`` keeps the arms already in ``--out``;
``--write-docs`` puts the table into docs/chest_xray_classification.md.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime
from pathlib import Path

from harness.cli import script_parser
from harness.machine import DATA, REPO, code_version, machine_line, mean_after_first
from harness.runs import best_row, fit, overrides, saved_result
from harness.tables import Column, Table, publish

DOCS = REPO / "docs/chest_xray_classification.md"
ARMS = {
    "cnn5": ("configs/cnn5_chestxray.yaml", "5-layer CNN"),
    "resnet18": ("configs/resnet18_chestxray.yaml", "ResNet-18"),
    "resnet18_aug": ("configs/resnet18_chestxray_aug.yaml", "ResNet-18 + augmentation (basic)"),
}
TARGET = 0.82


def table(classes: list[str]) -> Table:
    """One row per arm; a recall column per class."""
    recall = [Column(f"recall {c}", f"test.recall/{c}", "{:.3f}") for c in classes]
    return Table(
        Column("model (config)", lambda r: f"{ARMS[r['arm']][1]} ({Path(r['config']).name})"),
        Column("test acc", "test.accuracy", "{:.4f}"),
        Column("test bal. acc", "test.balanced_accuracy", "{:.4f}"),
        Column("test macro-F1 (95% CI)", "test", "{0[f1]:.4f} ({0[f1_low]:.2f}-{0[f1_high]:.2f})"),
        Column("test AUROC", "test.auroc", "{:.4f}"),
        *recall,
        Column("best val macro-F1 (epoch)", "best", "{0[val_f1]:.4f} ({0[epoch]})"),
        Column("epochs", "epochs_run"),
        Column("epoch (s)", "epoch_s", "{:.1f}"),
        Column("load avg", "load_avg", "{:.1f}"),
    )


def run_arm(arm: str, args, folder: Path) -> dict:
    """``medvision fit`` + ``medvision test`` of one arm; what the table needs from them."""
    config = ARMS[arm][0]
    data = {"data_dir": args.data_dir, "test_split": "val", "image_size": args.image_size}
    data |= {"batch_size": args.batch_size, "num_workers": args.num_workers}
    run = fit(
        folder, *overrides(config, args.epochs, data=data, seed_everything=args.seed), *args.set
    )
    tested = run.test(*overrides(config, data=data, seed_everything=args.seed), *args.set)
    best, rows = best_row(run.metrics, "val/f1"), run.metrics  # the epoch best.ckpt holds
    f1 = tested.summary["f1"]  # macro-F1 on all test images, with its bootstrap interval
    split = re.search(r"train (\d+), val (\d+), test (\d+)", (folder / "fit.log").read_text())
    return {
        "arm": arm,
        "config": config,
        "settings": settings(args),
        "test": tested.metrics | {"f1_low": f1["ci_low"], "f1_high": f1["ci_high"]},
        "best": {"epoch": int(best["epoch"]) + 1, "val_f1": float(best["val/f1"])},  # from 1
        "epochs_run": len([row for row in rows if row.get("val/f1")]),
        "epoch_s": mean_after_first(run.epoch_s),
        "load_avg": mean_after_first(run.load_avg) if run.load_avg else None,
        "epoch_s_each": run.epoch_s,
        "fit_wall_s": run.fit_s,
        "split": dict(zip(("train", "val", "test"), map(int, split.groups()), strict=True)),
        "code": code_version(),
    }


def settings(args) -> dict:
    keys = ("data_dir", "image_size", "epochs", "batch_size", "num_workers", "seed", "set")
    return {k: str(v) if k == "data_dir" else v for k, v in vars(args).items() if k in keys}


def report(results: list[dict], args) -> str:
    """The header line, the table and what it means."""
    first = results[0]
    split, test = first["split"], first["test"]
    classes = sorted(key[len("recall/") :] for key in test if key.startswith("recall/"))
    best = max(results, key=lambda r: r["test"]["f1"])
    overrides = f"\nOverrides on every arm: {' '.join(args.set)}" if args.set else ""
    return (
        f"```\nChest X-ray classification: {args.data_dir} | test set: the val/ folder "
        f"({split['test']} images), used only for the final test | validation: stratified 20% "
        f"of train/ ({split['val']}), train {split['train']} | image_size {args.image_size} "
        f"(configs: 224) | {args.epochs} epochs (configs: 30), cosine T_max {args.epochs} | "
        f"batch {args.batch_size} | seed {args.seed} | {machine_line()} | medvision "
        f"{first['code']}{overrides}\n```\n\n{table(classes).markdown(results)}\n\n"
        "95% CI: percentile bootstrap over the test images (medvision test's test_summary.csv). "
        "Epochs are counted from 1. Epoch (s): mean wall time of an epoch (training, validation, "
        "checkpoints; medvision.training.EpochTimer), first epoch not counted. Load avg: mean "
        f"1-minute load average at the end of those epochs ({os.cpu_count()} cores: above that, "
        f"other work competed for the CPU).\nHighest test macro-F1: {ARMS[best['arm']][1]}, "
        f"{best['test']['f1']:.4f} ({'meets' if best['test']['f1'] >= TARGET else 'below'} the "
        f"{TARGET} target)."
    )


def build_parser():
    """The command line of this script."""
    parser = script_parser(
        __doc__, data_dir=DATA / "chest_xray", num_workers=2, out=None, write_docs=True
    )
    add = parser.add_argument
    add("--image-size", type=int, default=224, help="configs: 224")
    add("--epochs", type=int, default=30, help="configs: 30")
    add("--batch-size", type=int, default=32, help="configs: 32")
    add("--seed", type=int, default=42, help="seed_everything (the split's seed stays)")
    add("--arms", default=",".join(ARMS), help=f"subset of {','.join(ARMS)}")
    example = "--set=--data.init_args.sampler=weighted"
    add("--set", action="append", default=[], metavar="ARG", help=f"for every arm, e.g. {example}")
    add("--reuse", action="store_true", help="keep arms already run in --out")
    add("--docs-tag", default="main", help="which table of the page to replace")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.data_dir = args.data_dir.resolve()
    if not (args.data_dir / "train").is_dir() or not (args.data_dir / "val").is_dir():
        sys.exit(f"{args.data_dir} needs train/<CLASS>/ and val/<CLASS>/ folders")
    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        sys.exit(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
    out = (args.out or REPO / f"runs/chest_xray_benchmark/{datetime.now():%Y%m%d-%H%M%S}").resolve()
    results = []
    for arm in arms:
        saved = out / arm / "result.json"
        if not args.reuse and saved.parent.exists():
            sys.exit(f"{saved.parent} exists: give a new --out, or --reuse to keep its results")
        results.append(saved_result(saved, lambda a=arm: run_arm(a, args, out / a), args.reuse))
        if results[-1]["settings"] != settings(args):
            sys.exit(f"{saved} was run with other settings: {results[-1]['settings']}")
    tag = f"chest_xray_classification.py:{args.docs_tag} -->"
    markers = f"<!-- {tag}", f"<!-- end {tag}"
    publish(report(results, args), DOCS if args.write_docs else None, markers)
    print(f"\nRuns, logs and checkpoints: {out}")


if __name__ == "__main__":
    main()
