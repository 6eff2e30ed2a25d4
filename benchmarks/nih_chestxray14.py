"""Multi-label NIH ChestX-ray14: per-label and mean test AUROC of ``configs/resnet50_nih.yaml``.

    python benchmarks/nih_chestxray14.py --model resnet18 --image-size 128 --epochs 8

``medvision fit`` with the config (patient-level split; checkpoint on validation mean AUROC,
per-label thresholds tuned on validation), then ``medvision test`` on its ``best.ckpt``,
overriding only the paths and the settings given here. The table reads the test's
``test_per_label.csv`` (AUROC, F1 at 0.5 and at the tuned threshold) and
``test_per_image.csv`` (positive test images per label), then the mean AUROC over the labels
with test positives and over those with at least 20. ``--reuse RUN`` reprints a finished run.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from harness.cli import script_parser
from harness.machine import DATA, REPO, code_version, machine_line
from harness.runs import Tested, best_row, finished_fit, fit, overrides, read_csv_rows
from harness.tables import Column, Table

CONFIG = "configs/resnet50_nih.yaml"
MIN_POSITIVES = 20  # a label's AUROC counts in the second mean only with this many positives
DOCS = REPO / "docs/nih_chestxray14.md"
TABLE = Table(
    "label",
    Column("test positives", "positives"),
    Column("AUROC", lambda r: float(r["auroc"]) if r["positives"] else "n/a", "{:.3f}"),
    Column("F1 at 0.5", lambda r: float(r["f1_at_0.5"]), "{:.3f}"),
    Column("threshold", lambda r: float(r["threshold"]), "{:.2f}"),
    Column("F1 at threshold", lambda r: float(r["f1_at_threshold"]), "{:.3f}"),
)


def report(tested: Tested, fit_metrics: list[dict], args) -> str:
    """The header, one row per label, and the two mean AUROC rows."""
    per_label = read_csv_rows(tested.folder / "test_per_label.csv")
    images = read_csv_rows(tested.folder / "test_per_image.csv")
    for row in per_label:  # label/<name>: 1, 0, or empty where unknown
        row["positives"] = sum(float(image[f"label/{row['label']}"] or 0) == 1 for image in images)
    best = best_row(fit_metrics, "val/auroc")
    lines = [
        f"NIH ChestX-ray14, {args.data_dir}; {machine_line()}; {code_version()}; "
        f"{datetime.now():%Y-%m-%d}",
        f"{CONFIG} with model {args.model}, {args.image_size} px, {args.epochs} epochs "
        f"(reduced for a CPU), batch {args.batch_size}, seed {args.seed}",
        f"best validation mean AUROC {float(best['val/auroc']):.4f} at epoch {best['epoch']}",
        "",
        TABLE.markdown(per_label),
    ]
    defined = [r for r in per_label if r["positives"] > 0]  # AUROC is undefined otherwise
    common = [r for r in per_label if r["positives"] >= MIN_POSITIVES]
    for rows, which in (
        (defined, f"the {len(defined)} labels with test positives"),
        (common, f"the {len(common)} labels with >= {MIN_POSITIVES} test positives "
         f"({', '.join(r['label'] for r in common)})"),
    ):  # fmt: skip
        mean = sum(float(r["auroc"]) for r in rows) / max(len(rows), 1)
        lines.append(f"| **mean over {which}** | | **{mean:.3f}** | | | |")
    return "\n".join(lines)


def build_parser():
    """The command line of this script."""
    parser = script_parser(
        __doc__, data_dir=DATA / "nih_chestxray14", num_workers=2, epochs=20, batch_size=32
    )
    add = parser.add_argument
    add("--model", default="resnet50")
    add("--image-size", type=int, default=224)
    add("--seed", type=int, default=42)
    add("--out", type=Path, default=REPO / "runs/nih_benchmark")
    add("--write-docs", action="store_true", help=f"write the table to {DOCS}")
    add("--reuse", type=Path, help="print the table of this finished run folder")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.data_dir = args.data_dir.resolve()
    data = {"data_dir": args.data_dir, "image_size": args.image_size}
    data |= {"batch_size": args.batch_size, "num_workers": args.num_workers}
    model = {"model_name": args.model}
    common = overrides(CONFIG, args.epochs, data=data, model=model, seed_everything=args.seed)
    if args.reuse:
        run = finished_fit(args.reuse)
        tested = Tested(run.run / "test")
    else:
        run = fit(args.out / datetime.now().strftime("%Y%m%d-%H%M%S"), *common)
        tested = run.test(*common)
    text = report(tested, run.metrics, args)
    print(text)
    if args.write_docs:
        DOCS.write_text(
            "# NIH ChestX-ray14: multi-label classification\n\nMade by `python "
            f"benchmarks/nih_chestxray14.py --model {args.model} --image-size {args.image_size} "
            f"--epochs {args.epochs} --write-docs`; rerun it to reproduce.\n\n{text}\n"
        )


if __name__ == "__main__":
    main()
