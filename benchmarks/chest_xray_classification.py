"""The chest X-ray study's three arms (5-layer CNN, ResNet-18, ResNet-18 + augmentation).

    python benchmarks/chest_xray_classification.py --image-size 128 --epochs 15

On a Kaggle-layout folder (``train/<CLASS>/*``, ``val/<CLASS>/*``), for each of
``configs/cnn5_chestxray.yaml``, ``configs/resnet18_chestxray.yaml`` and
``configs/resnet18_chestxray_aug.yaml``:

1. ``medvision fit`` with ``--data.init_args.test_split=val``: the ``val/`` folder (patient-disjoint
   from ``train/``) becomes the untouched test set, validation is the configs' stratified 20% of
   ``train/``, and ModelCheckpoint keeps ``best.ckpt`` on validation macro-F1 only.
2. ``medvision test --ckpt_path best.ckpt`` on the test set.

Each runs as its own ``medvision`` process; the configs are used as they are, except the paths,
the reduced settings given here (image size, epochs with the cosine schedule's ``T_max`` to
match, batch size, loader workers, seed) and any ``--set`` overrides, all of which the printed
header names. Printed: a Markdown table of test accuracy, balanced accuracy, macro-F1 with a 95%
bootstrap interval over the test images, AUROC and per-class recall (from the test run's
``metrics.csv`` and confusion matrix), the best validation macro-F1 and its epoch (the epoch stored
in ``best.ckpt``, its score from the fit's ``metrics.csv``), epochs run, and mean epoch wall time.
Each arm's numbers are saved in ``<out>/<arm>/result.json``; ``--reuse`` prints the table again
from them (``--write-docs`` puts it into docs/chest_xray_classification.md) without training.

Epoch time is wall-clock seconds from the start of an epoch to its end (its training batches,
validation and checkpoint saving), averaged over all epochs but the first (start-up). The fit runs
under a thin wrapper (``--timed-medvision``) that is ``medvision fit`` with Lightning's fit loop
patched to print the time at each epoch's bounds; no callback is added and nothing else changes.
Beside it, the machine's 1-minute load average at the end of those epochs: above the core count,
something else was competing for the CPU and the epoch times are inflated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from harness.cli import script_parser
from harness.machine import REPO, code_version, machine_line, mean_after_first
from harness.runs import MEDVISION, read_csv_rows, run_logged
from harness.tables import Column, Table, write_marked

DOCS = REPO / "docs/chest_xray_classification.md"
ARMS = {
    "cnn5": ("configs/cnn5_chestxray.yaml", "5-layer CNN"),
    "resnet18": ("configs/resnet18_chestxray.yaml", "ResNet-18"),
    "resnet18_aug": ("configs/resnet18_chestxray_aug.yaml", "ResNet-18 + augmentation (basic)"),
}
TIMED_MEDVISION = [sys.executable, __file__, "--timed-medvision"]
EPOCH_MARK = "BENCHMARK-EPOCH"


def macro_f1_interval(confusion_csv: Path, draws: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of macro-F1 over the test images, from the test confusion matrix."""
    rows = read_csv_rows(confusion_csv)
    counts = np.array([[int(v) for k, v in r.items() if not k.startswith("true")] for r in rows])
    k = len(counts)
    pairs = np.repeat(np.arange(k * k), counts.ravel())  # one entry per image: true * k + pred
    sample = np.random.default_rng(0).choice(pairs, size=(draws, len(pairs)))
    confusion = np.stack([np.bincount(s, minlength=k * k).reshape(k, k) for s in sample])
    tp = confusion.diagonal(axis1=1, axis2=2)
    wrong = confusion.sum(1) + confusion.sum(2) - 2 * tp  # false positives + false negatives
    f1 = np.where(2 * tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0).mean(1)
    return float(np.quantile(f1, 0.025)), float(np.quantile(f1, 0.975))


def timed_medvision(argv: list[str]) -> None:
    """``medvision <argv>`` with the wall clock and load average printed at each epoch's bounds.

    Wraps Lightning's fit loop (``on_advance_start``/``on_advance_end`` bracket one epoch: its
    training batches, validation and checkpoint saving); the run itself is ``medvision`` as is.
    """
    sys.path.insert(0, str(REPO))  # the medvision next to this script, as `python -m` from REPO
    from lightning.pytorch.loops.fit_loop import _FitLoop

    from medvision.cli import main as medvision_main

    def stamp(label: str) -> None:
        print(
            f"{EPOCH_MARK} {label} {time.time():.3f} {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
            flush=True,
        )

    start, end = _FitLoop.on_advance_start, _FitLoop.on_advance_end

    def on_advance_start(self):
        stamp("start")
        start(self)

    def on_advance_end(self):
        end(self)
        stamp("end")

    _FitLoop.on_advance_start, _FitLoop.on_advance_end = on_advance_start, on_advance_end
    medvision_main(argv)


def epoch_clock(log: Path) -> tuple[list[float], list[float]]:
    """Wall seconds of each epoch and the load average at its end, from a timed fit's log."""
    marks = [
        line.split()[1:] for line in log.read_text().splitlines() if line.startswith(EPOCH_MARK)
    ]
    starts = [float(t) for label, t, _ in marks if label == "start"]
    ends = [(float(t), float(load)) for label, t, load in marks if label == "end"]
    return [e - s for s, (e, _) in zip(starts, ends, strict=False)], [load for _, load in ends]


def run_arm(arm: str, args, run_dir: Path) -> dict:
    config = ARMS[arm][0]
    common = [
        "--config",
        config,
        f"--data.init_args.data_dir={args.data_dir}",
        "--data.init_args.test_split=val",
        f"--data.init_args.image_size={args.image_size}",
        f"--data.init_args.batch_size={args.batch_size}",
        f"--data.init_args.num_workers={args.num_workers}",
        f"--seed_everything={args.seed}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        *args.set,
    ]
    fit = [
        *TIMED_MEDVISION,
        "fit",
        *common,
        f"--trainer.max_epochs={args.epochs}",
        f"--model.init_args.lr_scheduler.init_args.T_max={args.epochs}",
    ]
    fit_dir = run_dir / "version_0"  # the fit's run folder; test writes into its test/
    start = time.time()
    run_logged(fit, run_dir / "fit.log")
    fit_wall = time.time() - start
    epoch_s, loads = epoch_clock(run_dir / "fit.log")
    best = fit_dir / "checkpoints/best.ckpt"
    test = [
        *MEDVISION,
        "test",
        *common,
        f"--ckpt_path={best}",
    ]
    run_logged(test, run_dir / "test.log")

    val = {
        int(r["epoch"]): float(r["val/f1"])
        for r in read_csv_rows(fit_dir / "metrics.csv")
        if r.get("val/f1")
    }
    best_epoch = int(torch.load(best, map_location="cpu", weights_only=False)["epoch"])
    tested = next(r for r in read_csv_rows(fit_dir / "test/metrics.csv") if r.get("test/f1"))
    split = re.search(r"train (\d+), val (\d+), test (\d+)", (run_dir / "fit.log").read_text())
    return {
        "arm": arm,
        "config": config,
        "settings": settings(args),
        "test": {
            k[len("test/") :]: float(v) for k, v in tested.items() if k.startswith("test/") and v
        },
        "val_f1_by_epoch": val,
        "best_epoch": best_epoch,
        "best_val_f1": val[best_epoch],
        "epochs_run": len(val),
        "epoch_s": mean_after_first(epoch_s),
        "load_avg": mean_after_first(loads),
        "epoch_s_each": epoch_s,
        "fit_wall_s": fit_wall,
        "split": dict(zip(("train", "val", "test"), map(int, split.groups()), strict=True))
        if split
        else None,
        "commands": [" ".join(["medvision", *c[3:]]) for c in (fit, test)],
        "code": code_version(),
    }


def settings(args) -> dict:
    keys = ("data_dir", "image_size", "epochs", "batch_size", "num_workers", "seed", "set")
    return {k: str(v) if k == "data_dir" else v for k, v in vars(args).items() if k in keys}


def format_report(results: dict, args) -> str:
    first = next(iter(results.values()))
    classes = sorted(k[len("recall/") :] for k in first["test"] if k.startswith("recall/"))
    split = first["split"] or {}
    lines = [
        f"Chest X-ray classification: {args.data_dir} | test set: the val/ folder "
        f"({split.get('test', '?')} images), used only for the final test | validation: "
        f"stratified 20% of train/ ({split.get('val', '?')}), train {split.get('train', '?')} | "
        f"image_size {args.image_size} (configs: 224) | {args.epochs} epochs (configs: 30), "
        f"cosine T_max {args.epochs} | batch {args.batch_size} | seed {args.seed} | "
        f"{machine_line()} | medvision {first['code']}",
    ]
    if args.set:
        lines.append(f"Overrides on every arm: {' '.join(args.set)}")
    table = Table(
        Column("model (config)", lambda r: f"{ARMS[r['arm']][1]} ({Path(r['config']).name})"),
        Column("test acc", "test.accuracy", "{:.4f}"),
        Column("test bal. acc", "test.balanced_accuracy", "{:.4f}"),
        Column(
            "test macro-F1 (95% CI)",
            lambda r: "{:.4f} ({:.2f}-{:.2f})".format(r["test"]["f1"], *r["f1_interval"]),
        ),
        Column("test AUROC", "test.auroc", "{:.4f}"),
        *(
            Column(f"recall {c}", lambda r, c=c: r["test"][f"recall/{c}"], "{:.3f}")
            for c in classes
        ),
        Column(
            "best val macro-F1 (epoch)", lambda r: f"{r['best_val_f1']:.4f} ({r['best_epoch'] + 1})"
        ),
        Column("epochs", "epochs_run"),
        Column("epoch (s)", "epoch_s", "{:.1f}"),
        Column("load avg", "load_avg", "{:.1f}"),
    )
    lines += ["", table.markdown(results.values())]
    best = max(results.values(), key=lambda r: r["test"]["f1"])
    lines += [
        "",
        "95% CI: bootstrap over the test images (resampling the test confusion matrix). Epochs "
        "are counted from 1. Epoch (s): mean wall time of an epoch (training, validation, "
        "checkpoints), first epoch not counted. Load avg: mean 1-minute load average at the end "
        f"of those epochs ({os.cpu_count()} cores: above that, other work competed for the CPU).",
        f"Highest test macro-F1: {ARMS[best['arm']][1]}, {best['test']['f1']:.4f} "
        f"({'meets' if best['test']['f1'] >= 0.82 else 'below'} the 0.82 target).",
    ]
    return "\n".join(lines)


def write_docs(report: str, tag: str) -> None:
    """Put ``report`` between this tag's markers in the docs page (appended if it has none)."""
    begin = f"<!-- chest_xray_classification.py:{tag} -->"
    end = f"<!-- end chest_xray_classification.py:{tag} -->"
    header, _, rest = report.partition("\n")
    body = f"```\n{header}\n```\n{rest.strip()}"
    write_marked(DOCS, begin, end, body, title="Chest X-ray classification")
    print(f"Written to {DOCS} ({tag})", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (``main`` parses ``sys.argv`` with it)."""
    parser = script_parser(__doc__)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared/data/chest_xray")
    parser.add_argument("--image-size", type=int, default=224, help="configs: 224")
    parser.add_argument("--epochs", type=int, default=30, help="configs: 30")
    parser.add_argument("--batch-size", type=int, default=32, help="configs: 32")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument(
        "--seed", type=int, default=42, help="seed_everything (the split's seed stays)"
    )
    parser.add_argument("--arms", default=",".join(ARMS), help=f"subset of {','.join(ARMS)}")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ARG",
        help="extra medvision argument for every arm, e.g. --set=--data.init_args.sampler=weighted",
    )
    parser.add_argument("--out", type=Path, help="default: runs/chest_xray_benchmark/<time>")
    parser.add_argument("--reuse", action="store_true", help="keep arms already run in --out")
    parser.add_argument("--write-docs", action="store_true", help=f"put the table into {DOCS.name}")
    parser.add_argument("--docs-tag", default="main", help="which table of the page to replace")
    return parser


def main() -> None:
    if sys.argv[1:2] == ["--timed-medvision"]:
        return timed_medvision(sys.argv[2:])
    args = build_parser().parse_args()
    args.data_dir = args.data_dir.resolve()
    if not (args.data_dir / "train").is_dir() or not (args.data_dir / "val").is_dir():
        sys.exit(f"{args.data_dir} needs train/<CLASS>/ and val/<CLASS>/ folders")
    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        sys.exit(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
    out = (args.out or REPO / f"runs/chest_xray_benchmark/{datetime.now():%Y%m%d-%H%M%S}").resolve()

    results = {}
    for arm in arms:
        run_dir = out / arm
        saved = run_dir / "result.json"
        if args.reuse and saved.exists():
            results[arm] = json.loads(saved.read_text())
            if results[arm]["settings"] != settings(args):
                sys.exit(f"{saved} was run with other settings: {results[arm]['settings']}")
        else:
            if run_dir.exists():
                sys.exit(f"{run_dir} exists: give a new --out, or --reuse to keep its results")
            run_dir.mkdir(parents=True)
            results[arm] = run_arm(arm, args, run_dir)
            saved.write_text(json.dumps(results[arm], indent=1))
        r = results[arm]
        r["f1_interval"] = macro_f1_interval(run_dir / "version_0/test/test_confusion_matrix.csv")
        print(
            f"{arm}: test macro-F1 {r['test']['f1']:.4f}, best val macro-F1 {r['best_val_f1']:.4f}"
            f" at epoch {r['best_epoch'] + 1}, {r['fit_wall_s'] / 60:.1f} min fit ({run_dir})",
            file=sys.stderr,
        )
    report = format_report(results, args)
    print(report)
    print(f"\nRuns, logs and checkpoints: {out}")
    if args.write_docs:
        write_docs(report, args.docs_tag)


if __name__ == "__main__":
    main()
