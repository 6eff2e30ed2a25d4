"""HAM10000 diagnosis classification with the shipped configs, tested on held-out lesions.

    python benchmarks/ham10000_classification.py --data-dir ../shared/data/ham10000 \\
        --segmenter runs/unet_ham10000/version_0/checkpoints/best.ckpt

Each arm of ``--arms`` is ``medvision fit`` on its config (overriding only the image size,
model, batch size, loader workers, epochs and ``limit_train_batches``) and ``medvision test`` on
its ``best.ckpt`` (picked on ``val/loss``). ``3class_lesion_crop`` classifies the lesion crop of
the U-Net given as ``--segmenter`` (see ham10000_segmentation.py). The table reads the test's
``metrics.csv`` and ``test_per_class.csv`` (melanoma: class ``mel`` or ``MEL``) of every
finished arm in ``--out``; ``--report`` only reprints it, ``--write-docs`` puts it into
docs/ham10000.md.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from _ham10000 import DOCS, PRINT_ONLY, ham_parser, prepare
from harness.cli import this_command
from harness.machine import REPO, machine_line
from harness.runs import best_row, fit, overrides, test_metrics
from harness.tables import Column, Table, publish

SCRIPT = "ham10000_classification.py"
MARKERS = "<!-- ham10000-classification:start -->", "<!-- ham10000-classification:end -->"
MELANOMA = ("mel", "MEL")
SEVEN, THREE = "resnet50_ham10000_7class.yaml", "resnet50_ham10000.yaml"
CROP, UNWEIGHTED = "resnet50_ham10000_lesion_crop.yaml", "--model.init_args.class_weights=none"
ARMS = {  # arm -> (config, the overrides the arm is about, what it is)
    "7class": (SEVEN, [], "7 dx classes, class weights auto"),
    "7class_unweighted": (SEVEN, [UNWEIGHTED], "7 dx classes, no class weights"),
    "3class": (THREE, [], "MEL/NV/OTHER, class weights auto"),
    "3class_lesion_crop": (CROP, [], "MEL/NV/OTHER on the U-Net's lesion crop, class weights auto"),
}
SETTINGS = {"model_name": "model", "image_size": "image size", "batch_size": "batch"}
SETTINGS["epochs"] = "max epochs"


def fmt_setting(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


def batches(result: dict) -> str:
    return result["limit_train_batches"] or "all"


TABLE = Table(
    Column("arm", lambda r: f"{r['arm']}: {r['description']}"),
    Column("config", lambda r: " ".join(f"`{o}`" for o in [r["config"], *r["overrides"]])),
    Column("model", "settings.model_name"),
    Column("image size", "settings.image_size", fmt_setting),
    Column("epochs x train batches", lambda r: f"{r['settings']['epochs']} x {batches(r)}"),
    Column("best val loss (epoch)", "validation", "{0[loss]:.4f} ({0[epoch]})"),
    Column("test accuracy", "test.accuracy", "{:.4f}"),
    Column("balanced accuracy", "test.balanced_accuracy", "{:.4f}"),
    Column("macro-F1", "test.macro_f1", "{:.4f}"),
    Column("AUROC (macro)", "test.auroc", "{:.4f}"),
    Column("melanoma recall", "test", "{0[melanoma_recall]:.4f} ({0[melanoma_support]} images)"),
    Column("melanoma F1", "test.melanoma_f1", "{:.4f}"),
    Column("fit wall (s)", "fit_s", "{:.0f}"),
)


def config_settings(config: Path) -> dict:
    """The settings of a classification config that the benchmark may reduce."""
    import yaml

    raw = yaml.safe_load(config.read_text())
    data, model = raw["data"]["init_args"], raw["model"]["init_args"]
    return {
        "model_name": model["model_name"],
        "image_size": list(data["image_size"]),
        "batch_size": data["batch_size"],
        "epochs": raw["trainer"]["max_epochs"],
    }


def run_arm(args, arm: str, out: Path) -> dict:
    """``medvision fit`` then ``medvision test`` on the best checkpoint; writes ``result.json``."""
    config_name, arm_overrides, description = ARMS[arm]
    config = REPO / "configs" / config_name
    defaults = config_settings(config)
    chosen = {"model_name": args.model_name, "batch_size": args.batch_size, "epochs": args.epochs}
    settings = {k: v if v is not None else defaults[k] for k, v in chosen.items()}
    settings["image_size"] = list(args.image_size)
    data = {"data_dir": args.data_dir, "image_size": settings["image_size"]}
    data |= {"batch_size": settings["batch_size"], "num_workers": args.num_workers}
    if arm == "3class_lesion_crop":  # the U-Net's masks, predicted once into lesion_masks/
        if args.segmenter is None or not args.segmenter.is_file():
            sys.exit(
                f"the 3class_lesion_crop arm needs --segmenter, a U-Net best.ckpt (got "
                f"{args.segmenter}); train one with benchmarks/ham10000_segmentation.py"
            )
        data["lesion_segmenter"] = args.segmenter.resolve()
        data["lesion_mask_dir"] = out / "lesion_masks"
    model = {"model_name": settings["model_name"]}
    limit = {"max_epochs": settings["epochs"], "limit_train_batches": args.limit_train_batches}
    shutil.rmtree(out / arm, ignore_errors=True)  # no result.json of an earlier run stays
    run = fit(
        out / arm / "fit", *overrides(config, data=data, model=model, trainer=limit), *arm_overrides
    )
    tested = run.test(*overrides(config, data=data, model=model), *arm_overrides)
    result = {
        "arm": arm,
        "config": f"configs/{config_name}",
        "description": description,
        "overrides": arm_overrides,
        "settings": settings,
        "config_settings": defaults,
        "limit_train_batches": args.limit_train_batches,
        "validation": best_validation(run.metrics),
        "test": test_scores(tested.metrics, tested.per_class),
        "epoch_s": run.epoch_s,
        "fit_s": run.fit_s,
        "test_s": tested.test_s,
        "checkpoint": str(run.best),
        "command": this_command(SCRIPT, PRINT_ONLY, arms=[arm]),
    }
    (out / arm / "result.json").write_text(json.dumps(result, indent=2))
    return result


def best_validation(rows: list[dict]) -> dict:
    """The validation scores of the epoch with the lowest ``val/loss`` (the configs' monitor)."""
    best = best_row(rows, "val/loss", "min")
    scores = {"epoch": int(best["epoch"]), "loss": float(best["val/loss"])}
    return scores | {"balanced_accuracy": float(best.get("val/balanced_accuracy") or "nan")}


def test_scores(metrics: dict | list, per_class: list[dict]) -> dict:
    """The table's test scores from what ``medvision test`` wrote.

    Args:
        metrics: its logged metrics (see ``harness.runs.test_metrics``), or its ``metrics.csv``
            rows.
        per_class: ``test_per_class.csv``'s rows (``class``, ``recall``, ``f1``, ``support``).
    """
    logged = test_metrics(metrics) if isinstance(metrics, list) else metrics
    missing = [f"test/{k}" for k in ("accuracy", "balanced_accuracy", "f1") if k not in logged]
    if missing:
        raise ValueError(f"medvision test logged no {missing}")
    melanoma = [row for row in per_class if row["class"] in MELANOMA]
    if len(melanoma) != 1:
        raise ValueError(f"no single melanoma class among {[r['class'] for r in per_class]}")
    return {
        "accuracy": logged["accuracy"],
        "balanced_accuracy": logged["balanced_accuracy"],
        "macro_f1": logged["f1"],
        "auroc": logged.get("auroc", float("nan")),
        "melanoma_recall": float(melanoma[0]["recall"]),
        "melanoma_f1": float(melanoma[0]["f1"]),
        "melanoma_support": int(melanoma[0]["support"]),
        "num_images": sum(int(r["support"]) for r in per_class),
        "recall_per_class": {r["class"]: float(r["recall"]) for r in per_class},
    }


def classification_table(results: list[dict], data_dir: str, machine: str) -> str:
    """The finished arms' results as a Markdown table under a line naming what was reduced."""
    said = []
    for r in results:
        mine, config = r["settings"], r["config_settings"]
        said += [
            f"{name} {fmt_setting(mine[key])} instead of {fmt_setting(config[key])}"
            for key, name in SETTINGS.items()
            if mine[key] != config[key]
        ]
        limit = r["limit_train_batches"]
        said += [f"{limit} training batches per epoch instead of all"] if limit else []
    images = "/".join(map(str, sorted({r["test"]["num_images"] for r in results})))
    recalls = [
        f"- {r['arm']}: " + ", ".join(f"{c} {v:.2f}" for c, v in recall.items())
        for r in results
        for recall in [r["test"]["recall_per_class"]]
    ]
    return "\n".join(
        [
            f"HAM10000 diagnosis classification: {data_dir} | {images} held-out test images "
            "(lesion-grouped split, never used to choose) | reduced from the configs: "
            f"{'; '.join(dict.fromkeys(said)) or 'nothing'} | {machine}",
            "",
            TABLE.markdown(results),
            "",
            "Test recall per class:",
            "",
            *recalls,
        ]
    )


def build_parser():
    """The command line of this script."""
    parser = ham_parser(__doc__, "default: the config's (100, early stopping)", "default: 32")
    add = parser.add_argument
    add("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="the arms to run")
    add("--model-name", help="classifier backbone (timm name); default: the configs' resnet50")
    add("--segmenter", type=Path, help="U-Net best.ckpt whose masks crop the lesion_crop arm")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    out = prepare(args, "medvision_ham10000_bench_")
    for arm in [] if args.report else args.arms:
        print(f"{arm}: {run_arm(args, arm, out)['test']}", file=sys.stderr, flush=True)
    paths = [out / arm / "result.json" for arm in ARMS]
    results = [json.loads(path.read_text()) for path in paths if path.is_file()]
    if not results:
        sys.exit(f"no finished classification arm in {out} (<arm>/result.json)")
    commands = "\n".join(dict.fromkeys(r["command"] for r in results))
    text = classification_table(results, str(args.data_dir), machine_line())
    publish(text, DOCS if args.write_docs else None, MARKERS, commands)
    print(f"\nRuns, checkpoints and test reports: {out}")


if __name__ == "__main__":
    main()
