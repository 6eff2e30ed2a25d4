"""HAM10000 diagnosis classification with the shipped configs, tested on held-out lesions.

    python benchmarks/ham10000_classification.py --data-dir ../shared/data/ham10000 \\
        --segmenter runs/unet_ham10000/version_0/checkpoints/best.ckpt

The arms include segment-then-classify (classifying the lesion crop a U-Net finds); the U-Net
comes from ``benchmarks/ham10000_segmentation.py``, which scores the lesion masks themselves.

Each arm of ``--arms`` is ``medvision fit`` on its config, overriding only the image size,
``--model-name``, batch size, loader workers, epochs and, optionally, ``limit_train_batches``,
then ``medvision test`` on the fit's ``best.ckpt`` (the configs' checkpoint, picked on
``val/loss``: the test split plays no part in choosing it):

- ``7class``: ``configs/resnet50_ham10000_7class.yaml``, the 7 diagnoses with
  ``class_weights: auto`` (the imbalance tools on);
- ``7class_unweighted``: the same with ``--model.init_args.class_weights=none``;
- ``3class``: ``configs/resnet50_ham10000.yaml`` (MEL / NV / OTHER);
- ``3class_lesion_crop``: ``configs/resnet50_ham10000_lesion_crop.yaml``, the same classes on
  the lesion crop of the U-Net given as ``--segmenter`` (its masks are predicted once into
  ``<out>/lesion_masks``). ``3class`` vs ``3class_lesion_crop`` is "without vs with
  segment-then-classify".

Each arm writes ``<out>/<arm>/result.json``; the test scores come from what ``medvision test``
wrote: ``metrics.csv`` (accuracy, balanced accuracy, macro-F1, macro AUROC) and
``test_per_class.csv`` (melanoma recall and F1). Printed: a Markdown table of every finished
arm in ``--out``, whose first line names what was reduced against the configs;
``--report`` only reprints it, ``--write-docs`` puts it into docs/ham10000.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from _ham10000 import DOCS, add_shared_options, limit_args, prepare, this_command
from harness.cli import script_parser
from harness.machine import REPO, machine_line
from harness.runs import best_row, fit, medvision, read_csv_rows
from harness.tables import Column, Table, write_marked

SCRIPT = "ham10000_classification.py"
CLS_START = "<!-- ham10000-classification:start -->"
CLS_END = "<!-- ham10000-classification:end -->"
MELANOMA = ("mel", "MEL")

#: arm -> (config, extra overrides, what it is). Each arm is ``medvision fit`` + ``medvision
#: test`` on the config; the overrides are what the arm is about, not tuning.
ARMS = {
    "7class": ("resnet50_ham10000_7class.yaml", [], "7 dx classes, class weights auto"),
    "7class_unweighted": (
        "resnet50_ham10000_7class.yaml",
        ["--model.init_args.class_weights=none"],
        "7 dx classes, no class weights",
    ),
    "3class": ("resnet50_ham10000.yaml", [], "MEL/NV/OTHER, class weights auto"),
    "3class_lesion_crop": (
        "resnet50_ham10000_lesion_crop.yaml",
        [],
        "MEL/NV/OTHER on the U-Net's lesion crop, class weights auto",
    ),
}


def fmt_setting(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


#: one row per finished arm (its ``result.json``)
TABLE = Table(
    Column("arm", lambda r: f"{r['arm']}: {r['description']}"),
    Column("config", lambda r: " ".join(f"`{o}`" for o in [r["config"], *r["overrides"]])),
    Column("model", "settings.model_name"),
    Column("image size", "settings.image_size", fmt_setting),
    Column(
        "epochs x train batches",
        lambda r: f"{r['settings']['epochs']} x {r['limit_train_batches'] or 'all'}",
    ),
    Column("best val loss (epoch)", lambda r: "{loss:.4f} ({epoch})".format(**r["validation"])),
    Column("test accuracy", "test.accuracy", "{:.4f}"),
    Column("balanced accuracy", "test.balanced_accuracy", "{:.4f}"),
    Column("macro-F1", "test.macro_f1", "{:.4f}"),
    Column("AUROC (macro)", "test.auroc", "{:.4f}"),
    Column(
        "melanoma recall",
        lambda r: "{melanoma_recall:.4f} ({melanoma_support} images)".format(**r["test"]),
    ),
    Column("melanoma F1", "test.melanoma_f1", "{:.4f}"),
    Column("fit wall (s)", "fit_s", "{:.0f}"),
)


def config_settings(config: Path) -> dict:
    """The settings of a classification config that the benchmark may reduce."""
    import yaml

    raw = yaml.safe_load(config.read_text())
    return {
        "model_name": raw["model"]["init_args"]["model_name"],
        "image_size": list(raw["data"]["init_args"]["image_size"]),
        "batch_size": raw["data"]["init_args"]["batch_size"],
        "epochs": raw["trainer"]["max_epochs"],
    }


def reductions(settings: dict, config: dict, limit_train_batches: int | None) -> list[str]:
    """What an arm's settings reduce against its config, in words (empty when nothing)."""
    names = {"model_name": "model", "image_size": "image size", "batch_size": "batch"}
    names["epochs"] = "max epochs"
    said = [
        f"{names[key]} {fmt_setting(settings[key])} instead of {fmt_setting(config[key])}"
        for key in names
        if settings[key] != config[key]
    ]
    if limit_train_batches is not None:
        said.append(f"{limit_train_batches} training batches per epoch instead of all")
    return said


def classification_args(args, config: Path, settings: dict, out: Path) -> list[str]:
    """The overrides shared by an arm's fit and test: data, size, model, batch, outputs."""
    extra = []
    if config.name == ARMS["3class_lesion_crop"][0]:
        if args.segmenter is None or not Path(args.segmenter).is_file():
            sys.exit(
                f"the 3class_lesion_crop arm needs --segmenter, a U-Net best.ckpt (got "
                f"{args.segmenter}); train one with benchmarks/ham10000_segmentation.py"
            )
        extra = [
            f"--data.init_args.lesion_segmenter={Path(args.segmenter).resolve()}",
            f"--data.init_args.lesion_mask_dir={out / 'lesion_masks'}",
        ]
    height, width = settings["image_size"]
    return [
        "--config",
        str(config),
        f"--data.init_args.data_dir={args.data_dir}",
        f"--data.init_args.image_size=[{height},{width}]",
        f"--data.init_args.batch_size={settings['batch_size']}",
        f"--data.init_args.num_workers={args.num_workers}",
        f"--model.init_args.model_name={settings['model_name']}",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


def run_arm(args, arm: str, out: Path) -> dict:
    """``medvision fit`` then ``medvision test`` on the best checkpoint; writes ``result.json``."""
    config_name, arm_overrides, description = ARMS[arm]
    config = REPO / "configs" / config_name
    defaults = config_settings(config)
    settings = {
        "model_name": args.model_name or defaults["model_name"],
        "image_size": list(args.image_size),
        "batch_size": args.batch_size or defaults["batch_size"],
        "epochs": args.epochs or defaults["epochs"],
    }
    arm_dir = out / arm
    shutil.rmtree(arm_dir, ignore_errors=True)  # no result.json of an earlier run stays
    shared = classification_args(args, config, settings, out) + arm_overrides
    epochs = f"--trainer.max_epochs={settings['epochs']}"
    run = fit(arm_dir / "fit", *shared, epochs, *limit_args(args.limit_train_batches))
    (arm_dir / "test").mkdir()
    test_s = medvision("test", *shared, f"--ckpt_path={run.best}", log=arm_dir / "test/test.log")
    tested = run.folder / "version_0/test"  # the run's test/ folder
    result = {
        "arm": arm,
        "config": f"configs/{config_name}",
        "description": description,
        "overrides": arm_overrides,
        "settings": settings,
        "config_settings": defaults,
        "limit_train_batches": args.limit_train_batches,
        "validation": best_validation(run.metrics),
        "test": test_scores(
            read_csv_rows(tested / "metrics.csv"), read_csv_rows(tested / "test_per_class.csv")
        ),
        "epoch_s": run.epoch_s,
        "fit_s": run.fit_s,
        "test_s": test_s,
        "checkpoint": str(run.best),
        "command": this_command(SCRIPT, arms=[arm]),
    }
    (arm_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def best_validation(rows: list[dict]) -> dict:
    """The validation scores of the epoch with the lowest ``val/loss`` (the configs' monitor)."""
    best = best_row(rows, "val/loss", "min")
    return {
        "epoch": int(best["epoch"]),
        "loss": float(best["val/loss"]),
        "balanced_accuracy": float(best.get("val/balanced_accuracy") or "nan"),
    }


def test_scores(metric_rows: list[dict], per_class: list[dict]) -> dict:
    """Test scores from ``medvision test``'s ``metrics.csv`` and ``test_per_class.csv``.

    ``metric_rows``: the CSV logger's rows (``test/accuracy``, ``test/balanced_accuracy``,
    ``test/f1`` (macro), ``test/auroc``, ...); ``per_class``: rows with ``class``,
    ``precision``, ``recall``, ``f1``, ``support``. Melanoma is the class named mel or MEL.
    """
    logged = {}
    for row in metric_rows:
        logged.update(
            {k: v for k, v in row.items() if k.startswith("test/") and v not in ("", None)}
        )
    missing = [k for k in ("test/accuracy", "test/balanced_accuracy", "test/f1") if k not in logged]
    if missing:
        raise ValueError(f"medvision test logged no {missing}")
    melanoma = [r for r in per_class if r["class"] in MELANOMA]
    if len(melanoma) != 1:
        raise ValueError(f"no single melanoma class among {[r['class'] for r in per_class]}")
    return {
        "accuracy": float(logged["test/accuracy"]),
        "balanced_accuracy": float(logged["test/balanced_accuracy"]),
        "macro_f1": float(logged["test/f1"]),
        "auroc": float(logged.get("test/auroc", "nan")),
        "melanoma_recall": float(melanoma[0]["recall"]),
        "melanoma_f1": float(melanoma[0]["f1"]),
        "melanoma_support": int(melanoma[0]["support"]),
        "num_images": sum(int(r["support"]) for r in per_class),
        "recall_per_class": {r["class"]: float(r["recall"]) for r in per_class},
    }


def classification_table(results: list[dict], data_dir: str, machine: str) -> str:
    """The finished arms' results (``run_arm``'s dicts) as a Markdown table with a header line."""
    said = list(
        dict.fromkeys(
            text
            for r in results
            for text in reductions(r["settings"], r["config_settings"], r["limit_train_batches"])
        )
    )
    num_images = {r["test"]["num_images"] for r in results}
    lines = [
        f"HAM10000 diagnosis classification: {data_dir} | "
        f"{'/'.join(map(str, sorted(num_images)))} held-out test images (lesion-grouped split, "
        f"never used to choose) | reduced from the configs: {'; '.join(said) or 'nothing'} | "
        f"{machine}",
        "",
        TABLE.markdown(results),
        "",
        "Test recall per class:",
        "",
    ]
    lines += [
        f"- {r['arm']}: "
        + ", ".join(f"{name} {value:.2f}" for name, value in r["test"]["recall_per_class"].items())
        for r in results
    ]
    return "\n".join(lines)


def finished_arms(out: Path) -> list[dict]:
    """The ``result.json`` of every finished arm in ``out``, in the order of :data:`ARMS`."""
    paths = [out / arm / "result.json" for arm in ARMS]
    return [json.loads(path.read_text()) for path in paths if path.is_file()]


def classification_main(args, out: Path) -> None:
    """Run the chosen arms (unless ``--report``), then print the table of all finished arms."""
    if not args.report:
        for arm in args.arms:
            result = run_arm(args, arm, out)
            print(f"{arm}: {result['test']}", file=sys.stderr, flush=True)
    results = finished_arms(out)
    if not results:
        sys.exit(f"no finished classification arm in {out} (<arm>/result.json)")
    text = classification_table(results, str(args.data_dir), machine_line())
    print("\n" + text)
    print(f"\nRuns, checkpoints and test reports: {out}")
    if args.write_docs:
        commands = "\n".join(dict.fromkeys(r["command"] for r in results))
        body = f"```\n{commands}\n```\n\n{text}"
        write_marked(DOCS, CLS_START, CLS_END, body, title="HAM10000")
        print(f"Table written to {DOCS}")


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (``main`` parses ``sys.argv`` with it)."""
    parser = script_parser(__doc__)
    add_shared_options(
        parser,
        epochs="default: the config's (100, with early stopping)",
        batch="default: the config's (32)",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=list(ARMS),
        default=list(ARMS),
        help="the arms to run (each one fit + test; the table shows every finished arm in --out)",
    )
    parser.add_argument(
        "--model-name",
        default=None,
        help="classifier backbone (timm name); default: the configs' resnet50",
    )
    parser.add_argument(
        "--segmenter",
        type=Path,
        default=None,
        help="U-Net checkpoint (best.ckpt of a segmentation run) whose masks crop the images "
        "of the lesion_crop arm",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    classification_main(args, prepare(args, "medvision_ham10000_bench_"))


if __name__ == "__main__":
    main()
