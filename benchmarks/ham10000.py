"""HAM10000 with the shipped configs, scored on lesions never seen in training.

    python benchmarks/ham10000.py --data-dir ../shared/data/ham10000 --epochs 1 \\
        --image-size 160 224 --encoder resnet34 --num-workers 2
    python benchmarks/ham10000.py --part classification --data-dir ../shared/data/ham10000 \\
        --segmenter runs/unet_ham10000/version_0/checkpoints/best.ckpt

Two parts: lesion segmentation (``--part segmentation``, the default; described first) and
diagnosis classification (``--part classification``, at the end), which includes
segment-then-classify (classifying the lesion crop a U-Net finds).

Segmentation. What it does, on a HAM10000-layout folder (``images/``, ``masks/``,
``HAM10000_metadata.csv``):

1. ``medvision fit`` with ``configs/unet_ham10000.yaml``, overriding only the epochs (and the
   cosine schedule's ``T_max`` with them), image size, encoder, batch size, loader workers and,
   optionally, ``limit_train_batches``. The datamodule splits by lesion (seed and fractions
   from the config); the checkpoint is the config's ``best.ckpt``, picked on ``val/iou``, so
   the test split plays no part in choosing it.
2. The test split, rebuilt exactly as ``medvision fit`` built it (``HAM10000DataModule`` with
   the config's seed and fractions, ``setup("fit")``, ``datasets["test"]``), is symlinked into
   ``<out>/holdout/{images,masks}``: no image in it shares a lesion with a training or
   validation image.
3. ``medvision predict`` with the best checkpoint on that folder writes the masks at each
   image's own size and scores them (``predictions/metrics.csv``); a second predict at
   threshold 0.4 (the seed study's) unless ``--no-threshold-04``, via
   ``--prediction_writer.threshold`` (with ``--ckpt_path`` LightningCLI lets the checkpoint's
   hyperparameters override ``--model.init_args.threshold``).

``--reuse-fit`` redoes steps 2-3 on the fit already in ``--out``; ``--report`` only reprints
the table of the run in ``--out`` (from its ``result.json``).

Printed: a Markdown table of the best validation IoU, held-out mean Dice, IoU and ISIC 2018
thresholded Jaccard (an image's IoU below 0.65 counts 0) at the images' own size, the held-out
IoU at threshold 0.4, and the fit wall time per epoch (training + validation, measured by a
callback) and in all (process start to end). ``--write-docs`` puts it into docs/ham10000.md.

Classification (``--part classification``). Each arm of ``--arms`` is ``medvision fit`` on its
config, overriding only the image size, ``--model-name``, batch size, loader workers, epochs
and, optionally, ``limit_train_batches``, then ``medvision test`` on the fit's ``best.ckpt``
(the configs' checkpoint, picked on ``val/loss``: the test split plays no part in choosing it):

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
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/unet_ham10000.yaml"
DOCS = REPO / "docs/ham10000.md"
TABLE_START, TABLE_END = "<!-- ham10000-table:start -->", "<!-- ham10000-table:end -->"
ISIC_JACCARD_FLOOR = 0.65
SEED_STUDY_THRESHOLD = 0.4

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lung_segmentation import machine  # noqa: E402  (same machine line as the lung benchmark)


# ---------------------------------------------------------------------------------------------
def config_split() -> dict:
    """The config's data arguments that decide the split (seed, fractions, folds)."""
    import yaml

    init = yaml.safe_load(CONFIG.read_text())["data"]["init_args"]
    keys = ("val_fraction", "test_fraction", "seed", "num_folds", "fold")
    return {k: init[k] for k in keys if k in init}


def make_holdout(data_dir: Path, out: Path, image_size: list[int]) -> tuple[Path, int, int]:
    """Symlink the test split ``medvision fit`` uses into ``out/{images,masks}``.

    Returns the folder, its number of images and of lesions.
    """
    from medvision.data import HAM10000DataModule
    from medvision.data.ham10000_metadata import read_metadata

    datamodule = HAM10000DataModule(
        data_dir,
        task="segmentation",
        image_size=image_size,
        check_images=False,  # `medvision fit` decoded every file already
        **config_split(),
    )
    datamodule.setup("fit")
    test = datamodule.datasets["test"]
    if out.exists():
        shutil.rmtree(out)
    for sub, paths in (("images", test.image_paths), ("masks", test.mask_paths)):
        (out / sub).mkdir(parents=True)
        for path in paths:
            (out / sub / path.name).symlink_to(path.resolve())
    stems = {p.stem for p in test.image_paths}
    lesions = {
        r.lesion_id
        for r in read_metadata(data_dir / "HAM10000_metadata.csv")
        if r.image_id in stems
    }
    # the split's promise, checked: no test lesion has an image in train or validation
    seen = {p.stem for stage in ("train", "val") for p in datamodule.datasets[stage].image_paths}
    leaked = {
        r.lesion_id for r in read_metadata(data_dir / "HAM10000_metadata.csv") if r.image_id in seen
    } & lesions
    if leaked:
        sys.exit(f"lesions in both test and train/val: {sorted(leaked)[:5]}")
    return out, len(stems), len(lesions)


def medvision(*args: str, env: dict | None = None, log: Path) -> float:
    """Run the ``medvision`` CLI of this interpreter's environment; returns its wall time."""
    exe = Path(sys.executable).with_name("medvision")
    cmd = [str(exe) if exe.exists() else "medvision", *args]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(
            f"{' '.join(cmd[:2])} failed (exit {proc.returncode}), see {log}:\n"
            + log.read_text()[-4000:]
        )
    return wall


def common_args(args) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        f"--data.init_args.data_dir={args.data_dir}",
        f"--data.init_args.image_size=[{args.image_size[0]},{args.image_size[1]}]",
        f"--data.init_args.batch_size={args.batch_size}",
        f"--data.init_args.num_workers={args.num_workers}",
        f"--model.init_args.encoder_name={args.encoder}",
        "--trainer.enable_progress_bar=false",
    ]


def fit(args, out: Path) -> dict:
    """``medvision fit``; returns the best checkpoint, its validation scores and timings."""
    run_dir = out / "fit"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    timer_file = run_dir / "epoch_times.json"
    extra = (
        []
        if args.limit_train_batches is None
        else [f"--trainer.limit_train_batches={args.limit_train_batches}"]
    )
    wall = medvision(
        "fit",
        *common_args(args),
        f"--trainer.max_epochs={args.epochs}",
        f"--model.init_args.lr_scheduler.init_args.T_max={args.epochs}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        *extra,
        "--trainer.callbacks+=medvision.callbacks.EpochTimer",
        f"--trainer.callbacks.output={timer_file}",
        log=run_dir / "fit.log",
    )
    return read_fit(run_dir, wall)


def read_fit(run_dir: Path, wall: float) -> dict:
    """The best checkpoint of a finished fit in ``run_dir``, its validation scores and timings."""
    version = run_dir / "version_0"
    best = version / "checkpoints/best.ckpt"
    if not best.is_file():
        sys.exit(f"no {best} after fit; see {run_dir / 'fit.log'}")
    # the validation scores of the epoch the checkpoint comes from (highest val/iou)
    with open(version / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val/iou")]
    best_row = max(rows, key=lambda r: float(r["val/iou"]))
    return {
        "checkpoint": best,
        "val_iou": float(best_row["val/iou"]),
        "val_dice": float(best_row["val/dice"]),
        "val_thresholded_iou": float(best_row.get("val/thresholded_iou") or "nan"),
        "best_epoch": int(best_row["epoch"]),
        "epoch_s": [e["wall_s"] for e in json.loads((run_dir / "epoch_times.json").read_text())],
        "fit_s": wall,
    }


def predict(args, out: Path, holdout: Path, checkpoint: Path, threshold: float | None) -> dict:
    """``medvision predict`` on the held-out folder; returns per-image scores and wall time."""
    name = "predict" if threshold is None else f"predict_t{threshold}"
    pred_dir = out / name
    if pred_dir.exists():
        shutil.rmtree(pred_dir)
    pred_dir.mkdir(parents=True)
    extra = []
    if threshold is not None:
        # the writer's threshold: --model.init_args.threshold would lose to the checkpoint's
        extra = [f"--prediction_writer.threshold={threshold}", "--prediction_writer.overlays=false"]
    wall = medvision(
        "predict",
        *common_args(args),
        f"--data.init_args.predict_dir={holdout}",
        f"--trainer.default_root_dir={pred_dir}",
        f"--trainer.logger.init_args.save_dir={pred_dir}",
        f"--prediction_writer.output_dir={pred_dir / 'predictions'}",
        f"--ckpt_path={checkpoint}",
        *extra,
        log=pred_dir / "predict.log",
    )
    with open(pred_dir / "predictions/metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    dice = np.array([float(r["dice"]) for r in rows])
    iou = np.array([float(r["iou"]) for r in rows])
    return {
        "num_images": len(rows),
        "dice": float(dice.mean()),
        "iou": float(iou.mean()),
        "thresholded_iou": float(np.where(iou < ISIC_JACCARD_FLOOR, 0.0, iou).mean()),
        "below_floor": int((iou < ISIC_JACCARD_FLOOR).sum()),
        "predict_s": wall,
        "folder": str(pred_dir / "predictions"),
    }


# ---------------------------------------------------------------------------------------------
def table(args, result: dict) -> str:
    import torch

    fit_, main, low = result["fit"], result["main"], result.get("t04")
    epochs = fit_["epoch_s"]
    batches = "all" if args.limit_train_batches is None else str(args.limit_train_batches)
    lines = [
        f"HAM10000 lesion segmentation (configs/unet_ham10000.yaml): {args.data_dir} | "
        f"{result['num_holdout']} held-out images of {result['num_lesions']} lesions never seen "
        f"in training or validation | {machine()} | torch {torch.__version__}",
        "",
        "| encoder | epochs | image size | batch | train batches/epoch | best val IoU (epoch) "
        "| held-out Dice | held-out IoU | ISIC thresholded Jaccard (IoU < 0.65 = 0) "
        f"| held-out IoU @ {SEED_STUDY_THRESHOLD} | epoch wall (s) | fit wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.encoder} | {args.epochs} | {args.image_size[0]}x{args.image_size[1]} "
        f"| {args.batch_size} | {batches} | {fit_['val_iou']:.4f} ({fit_['best_epoch']}) "
        f"| {main['dice']:.4f} | {main['iou']:.4f} | {main['thresholded_iou']:.4f} "
        f"| {'-' if low is None else format(low['iou'], '.4f')} "
        f"| {np.mean(epochs):.0f} | {fit_['fit_s']:.0f} |",
        "",
        f"Held-out scores at threshold 0.5, at each image's own size ({result['sizes']} px): "
        f"{main['below_floor']} of {main['num_images']} images have IoU < "
        f"{ISIC_JACCARD_FLOOR}. Epoch wall: training + validation, mean of "
        f"{len(epochs)} epoch(s) ({', '.join(f'{t:.0f}' for t in epochs)} s); fit wall: the "
        "whole `medvision fit` process (start-up and the image check included). Predict wall: "
        f"{main['predict_s']:.0f} s"
        + ("" if low is None else f" (at {SEED_STUDY_THRESHOLD}: {low['predict_s']:.0f} s)")
        + ".",
    ]
    return "\n".join(lines)


def image_sizes(folder: Path) -> str:
    """The images' stored sizes as ``WxH`` (most common first), read from the file headers."""
    from collections import Counter

    from PIL import Image

    counts = Counter()
    for path in sorted(folder.iterdir()):
        with Image.open(path) as image:
            counts["{}x{}".format(*image.size)] += 1
    return ", ".join(size if len(counts) == 1 else f"{size} ({n})" for size, n in counts.items())


def write_docs(text: str, command: str, start: str = TABLE_START, end: str = TABLE_END) -> None:
    """Put ``command`` (a code block) and ``text`` between the ``start``/``end`` markers."""
    block = f"{start}\n\n```\n{command}\n```\n\n{text}\n\n{end}"
    if DOCS.exists():
        doc = DOCS.read_text()
        if start in doc and end in doc:
            pattern = re.escape(start) + ".*?" + re.escape(end)
            DOCS.write_text(re.sub(pattern, lambda _: block, doc, flags=re.S))
            return
        DOCS.write_text(doc.rstrip() + "\n\n" + block + "\n")
    else:
        DOCS.write_text(f"# HAM10000 lesion segmentation\n\n{block}\n")


# --- diagnosis classification (--part classification) ----------------------------------------
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


def fmt_setting(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


def classification_args(args, config: Path, settings: dict, out: Path) -> list[str]:
    """The overrides shared by an arm's fit and test: data, size, model, batch, outputs."""
    extra = []
    if config.name == ARMS["3class_lesion_crop"][0]:
        if args.segmenter is None or not Path(args.segmenter).is_file():
            sys.exit(
                f"the 3class_lesion_crop arm needs --segmenter, a U-Net best.ckpt (got "
                f"{args.segmenter}); train one with --part segmentation"
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
    if arm_dir.exists():
        shutil.rmtree(arm_dir)
    (arm_dir / "fit").mkdir(parents=True)
    shared = classification_args(args, config, settings, out) + arm_overrides
    limit = (
        []
        if args.limit_train_batches is None
        else [f"--trainer.limit_train_batches={args.limit_train_batches}"]
    )
    fit_dir, test_dir = arm_dir / "fit", arm_dir / "test"
    fit_s = medvision(
        "fit",
        *shared,
        f"--trainer.max_epochs={settings['epochs']}",
        f"--trainer.default_root_dir={fit_dir}",
        f"--trainer.logger.init_args.save_dir={fit_dir}",
        *limit,
        "--trainer.callbacks+=medvision.callbacks.EpochTimer",
        f"--trainer.callbacks.output={fit_dir / 'epoch_times.json'}",
        log=fit_dir / "fit.log",
    )
    best = fit_dir / "version_0/checkpoints/best.ckpt"
    if not best.is_file():
        sys.exit(f"no {best} after fit; see {fit_dir / 'fit.log'}")
    test_dir.mkdir()
    test_s = medvision(
        "test",
        *shared,
        f"--trainer.default_root_dir={test_dir}",
        f"--trainer.logger.init_args.save_dir={test_dir}",
        f"--ckpt_path={best}",
        log=test_dir / "test.log",
    )
    result = {
        "arm": arm,
        "config": f"configs/{config_name}",
        "description": description,
        "overrides": arm_overrides,
        "settings": settings,
        "config_settings": defaults,
        "limit_train_batches": args.limit_train_batches,
        "validation": best_validation(read_csv_rows(fit_dir / "version_0/metrics.csv")),
        "test": test_scores(
            read_csv_rows(test_dir / "version_0/metrics.csv"),
            read_csv_rows(test_dir / "version_0/test_per_class.csv"),
        ),
        "epoch_s": [e["wall_s"] for e in json.loads((fit_dir / "epoch_times.json").read_text())],
        "fit_s": fit_s,
        "test_s": test_s,
        "checkpoint": str(best),
        "command": this_command(arms=[arm]),
    }
    (arm_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def read_csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        sys.exit(f"{path} is missing: the run did not finish (see its .log beside it)")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def best_validation(rows: list[dict]) -> dict:
    """The validation scores of the epoch with the lowest ``val/loss`` (the configs' monitor)."""
    rows = [r for r in rows if r.get("val/loss")]
    if not rows:
        raise ValueError("no val/loss in the fit's metrics.csv")
    best = min(rows, key=lambda r: float(r["val/loss"]))
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


def classification_table(results: list[dict], data_dir: str, machine_line: str) -> str:
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
        f"{machine_line}",
        "",
        "| arm | config | model | image size | epochs x train batches | best val loss (epoch) "
        "| test accuracy | balanced accuracy | macro-F1 | AUROC (macro) | melanoma recall "
        "| melanoma F1 | fit wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s, v, t = r["settings"], r["validation"], r["test"]
        batches = "all" if r["limit_train_batches"] is None else r["limit_train_batches"]
        lines.append(
            f"| {r['arm']}: {r['description']} | `{r['config']}`"
            + "".join(f" `{o}`" for o in r["overrides"])
            + f" | {s['model_name']} | {fmt_setting(s['image_size'])} | {s['epochs']} x {batches} "
            f"| {v['loss']:.4f} ({v['epoch']}) | {t['accuracy']:.4f} "
            f"| {t['balanced_accuracy']:.4f} | {t['macro_f1']:.4f} | {t['auroc']:.4f} "
            f"| {t['melanoma_recall']:.4f} ({t['melanoma_support']} images) "
            f"| {t['melanoma_f1']:.4f} | {r['fit_s']:.0f} |"
        )
    lines += ["", "Test recall per class:", ""]
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
    import torch

    text = classification_table(
        results, str(args.data_dir), f"{machine()} | torch {torch.__version__}"
    )
    print("\n" + text)
    print(f"\nRuns, checkpoints and test reports: {out}")
    if args.write_docs:
        commands = "\n".join(dict.fromkeys(r["command"] for r in results))
        write_docs(text, commands, CLS_START, CLS_END)
        print(f"Table written to {DOCS}")


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (``main`` parses ``sys.argv`` with it)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared/data/ham10000")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="default: the config's (segmentation 30, classification 100 with early stopping)",
    )
    parser.add_argument("--image-size", type=int, nargs=2, default=[192, 256], metavar=("H", "W"))
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: the config's (16, classification 32)"
    )
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument(
        "--limit-train-batches",
        type=int,
        default=None,
        help="train on this many batches per epoch (a quick estimate)",
    )
    parser.add_argument(
        "--no-threshold-04",
        action="store_true",
        help=f"skip the second predict at threshold {SEED_STUDY_THRESHOLD}",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: a new temporary folder")
    parser.add_argument(
        "--reuse-fit",
        action="store_true",
        help="train nothing: take the finished fit in --out and redo the held-out predictions",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="run nothing: print (and with --write-docs write) the table of the finished run "
        "in --out, from its result.json",
    )
    parser.add_argument(
        "--write-docs", action="store_true", help=f"put the table into {DOCS.relative_to(REPO)}"
    )
    cls = parser.add_argument_group("classification part (--part classification)")
    cls.add_argument(
        "--part",
        choices=("segmentation", "classification"),
        default="segmentation",
        help="segmentation: the U-Net (default); classification: the diagnosis arms",
    )
    cls.add_argument(
        "--arms",
        nargs="+",
        choices=list(ARMS),
        default=list(ARMS),
        help="the classification arms to run (each one fit + test; the table shows every "
        "finished arm in --out)",
    )
    cls.add_argument(
        "--model-name",
        default=None,
        help="classifier backbone (timm name); default: the configs' resnet50",
    )
    cls.add_argument(
        "--segmenter",
        type=Path,
        default=None,
        help="U-Net checkpoint (best.ckpt of a segmentation run) whose masks crop the images "
        "of the lesion_crop arm",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    args.data_dir = args.data_dir.resolve()
    if not (args.data_dir / "HAM10000_metadata.csv").is_file():
        sys.exit(
            f"{args.data_dir} is not a HAM10000 folder (images/, masks/, HAM10000_metadata.csv)"
        )
    if (args.report or args.reuse_fit) and args.out is None:
        sys.exit("--report and --reuse-fit need --out, the folder of a finished run")
    out = (args.out or Path(tempfile.mkdtemp(prefix="medvision_ham10000_bench_"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "classification":
        classification_main(args, out)
        return
    args.epochs = 30 if args.epochs is None else args.epochs
    args.batch_size = 16 if args.batch_size is None else args.batch_size
    if args.report:
        result = json.loads((out / "result.json").read_text())
        stored = {k: v for k, v in result.get("args", {}).items() if k != "write_docs"}
        report(argparse.Namespace(**{**vars(args), **stored}), result, out)
        return

    if args.reuse_fit:  # the fit's wall time is only known from the run that made it
        previous = out / "result.json"
        wall = json.loads(previous.read_text())["fit"]["fit_s"] if previous.exists() else np.nan
        result: dict = {"fit": read_fit(out / "fit", wall)}
    else:
        result = {"fit": fit(args, out)}
    print(f"fit: {result['fit']}", file=sys.stderr, flush=True)
    holdout, result["num_holdout"], result["num_lesions"] = make_holdout(
        args.data_dir, out / "holdout", args.image_size
    )
    result["main"] = predict(args, out, holdout, result["fit"]["checkpoint"], None)
    print(f"predict: {result['main']}", file=sys.stderr, flush=True)
    if not args.no_threshold_04:
        result["t04"] = predict(
            args, out, holdout, result["fit"]["checkpoint"], SEED_STUDY_THRESHOLD
        )
        print(f"predict @ {SEED_STUDY_THRESHOLD}: {result['t04']}", file=sys.stderr, flush=True)
    result["fit"]["checkpoint"] = str(result["fit"]["checkpoint"])
    result["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result["args"]["command"] = this_command()
    result["sizes"] = image_sizes(holdout / "images")
    (out / "result.json").write_text(json.dumps(result, indent=2))
    report(args, result, out)


def this_command(arms: list[str] | None = None) -> str:
    """This script's command line as typed, less the options that only print or write docs.

    With ``arms``, ``--arms`` and its values are replaced by those arms (one arm's command).
    """
    argv = [a for a in sys.argv[1:] if a not in ("--write-docs", "--report", "--reuse-fit")]
    if arms is not None:
        if "--arms" in argv:
            start = end = argv.index("--arms")
            while end + 1 < len(argv) and not argv[end + 1].startswith("--"):
                end += 1
            argv[start : end + 1] = []
        argv += ["--arms", *arms]
    return "python benchmarks/ham10000.py " + " ".join(a if " " not in a else repr(a) for a in argv)


def report(args, result: dict, out: Path) -> None:
    """Print the table of a finished run; with ``--write-docs`` put it into the docs page."""
    result.setdefault("sizes", image_sizes(out / "holdout/images"))
    text = table(args, result)
    print("\n" + text)
    print(f"\nRuns, checkpoint and predictions: {out}")
    if args.write_docs:
        write_docs(text, getattr(args, "command", None) or this_command())
        print(f"Table written to {DOCS}")


if __name__ == "__main__":
    main()
