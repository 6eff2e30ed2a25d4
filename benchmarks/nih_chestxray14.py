"""Multi-label NIH ChestX-ray14: per-label and mean test AUROC of ``configs/resnet50_nih.yaml``.

    python benchmarks/nih_chestxray14.py --model resnet18 --image-size 128 --epochs 8

On an NIH-layout folder (default ``../shared/data/nih_chestxray14``): ``medvision fit`` with the
config (patient-level split; checkpoint on validation mean AUROC, per-label thresholds tuned for
F1 on validation), then ``medvision test --ckpt_path best.ckpt`` on the held-out patients. The
config is used as it is except for the paths and the reduced settings given here, which the
printed header names. Printed: a Markdown table of each label's test AUROC, F1 at 0.5 and at
the tuned threshold, with the number of positive test images; the mean AUROC over the labels
with test positives (AUROC is undefined otherwise) and over those with at least 20, whose AUROC
means something. ``--reuse RUN`` prints the table of a finished run without training again.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from harness.cli import script_parser
from harness.machine import REPO, code_version, machine_line
from harness.runs import MEDVISION, read_csv_rows, run_logged
from harness.tables import Column, Table

CONFIG = "configs/resnet50_nih.yaml"
MIN_POSITIVES = 20  # a label's AUROC is reported in the mean only with this many test positives
DOCS = REPO / "docs/nih_chestxray14.md"
#: one row per label of ``test_per_label.csv``, then the means
TABLE = Table(
    "label",
    Column("test positives", "positives"),
    Column("AUROC", lambda r: float(r["auroc"]) if r["positives"] else "n/a", "{:.3f}"),
    Column("F1 at 0.5", lambda r: float(r["f1_at_0.5"]), "{:.3f}"),
    Column("threshold", lambda r: float(r["threshold"]), "{:.2f}"),
    Column("F1 at threshold", lambda r: float(r["f1_at_threshold"]), "{:.3f}"),
)


def run(args, run_dir: Path) -> tuple[list[dict], dict]:
    common = [
        "--config",
        CONFIG,
        f"--data.init_args.data_dir={args.data_dir}",
        f"--data.init_args.image_size={args.image_size}",
        f"--data.init_args.batch_size={args.batch_size}",
        f"--data.init_args.num_workers={args.num_workers}",
        f"--model.init_args.model_name={args.model}",
        f"--model.init_args.lr_scheduler.init_args.T_max={args.epochs}",
        f"--trainer.max_epochs={args.epochs}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        f"--seed_everything={args.seed}",
    ]
    if not args.reuse:
        run_logged([*MEDVISION, "fit", *common], run_dir / "fit.log")
        best = run_dir / "version_0/checkpoints/best.ckpt"
        run_logged([*MEDVISION, "test", *common, f"--ckpt_path={best}"], run_dir / "test.log")
    per_label = read_csv_rows(run_dir / "version_0/test/test_per_label.csv")
    test_positives = positives_in_split(args, "test")
    for row in per_label:
        row["positives"] = test_positives[row["label"]]
    fit_metrics = [
        r for r in read_csv_rows(run_dir / "version_0/metrics.csv") if r.get("val/auroc")
    ]
    best_val = max(fit_metrics, key=lambda r: float(r["val/auroc"]))
    return per_label, {"val_auroc": float(best_val["val/auroc"]), "epoch": int(best_val["epoch"])}


def positives_in_split(args, split: str) -> dict[str, int]:
    """Positive images per label in a split, from the same datamodule the config builds."""
    sys.path.insert(0, str(REPO))
    from medvision.data import NIHChestXray14DataModule

    dm = NIHChestXray14DataModule(args.data_dir, seed=42, check_images=False, num_workers=0)
    dm.setup("fit")
    labels = dm.datasets[split].labels.sum(0).astype(int)
    return dict(zip(dm.class_names, labels.tolist(), strict=True))


def format_report(per_label: list[dict], best: dict, args) -> str:
    defined = [r for r in per_label if r["positives"] > 0]
    mean_auroc = sum(float(r["auroc"]) for r in defined) / max(len(defined), 1)
    common = [r for r in per_label if r["positives"] >= MIN_POSITIVES]
    mean_common = sum(float(r["auroc"]) for r in common) / max(len(common), 1)
    lines = [
        f"NIH ChestX-ray14, {args.data_dir}; {machine_line()}; {code_version()}; "
        f"{datetime.now():%Y-%m-%d}",
        f"{CONFIG} with model {args.model}, {args.image_size} px, {args.epochs} epochs "
        f"(reduced for a CPU), batch {args.batch_size}, seed {args.seed}",
        f"best validation mean AUROC {best['val_auroc']:.4f} at epoch {best['epoch']}",
        "",
        TABLE.markdown(per_label),
    ]
    for labels, mean in (
        (f"the {len(defined)} labels with test positives", mean_auroc),
        (
            f"the {len(common)} labels with >= {MIN_POSITIVES} test positives "
            f"({', '.join(r['label'] for r in common)})",
            mean_common,
        ),
    ):
        lines.append(f"| **mean over {labels}** | | **{mean:.3f}** | | | |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (``main`` parses ``sys.argv`` with it)."""
    parser = script_parser(__doc__)
    parser.add_argument(
        "--data-dir", type=Path, default=REPO.parent / "shared/data/nih_chestxray14"
    )
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=REPO / "runs/nih_benchmark")
    parser.add_argument("--write-docs", action="store_true", help=f"write the table to {DOCS}")
    parser.add_argument("--reuse", type=Path, help="print the table of this finished run folder")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.data_dir = args.data_dir.resolve()
    run_dir = args.reuse or args.out / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=bool(args.reuse))
    per_label, best = run(args, run_dir)
    report = format_report(per_label, best, args)
    print(report)
    if args.write_docs:
        DOCS.write_text(
            "# NIH ChestX-ray14: multi-label classification\n\n"
            "Made by `python benchmarks/nih_chestxray14.py "
            f"--model {args.model} --image-size {args.image_size} --epochs {args.epochs} "
            "--write-docs`; rerun it to reproduce.\n\n" + report + "\n"
        )


if __name__ == "__main__":
    main()
