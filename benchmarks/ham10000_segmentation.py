"""HAM10000 lesion segmentation with the shipped config, scored on lesions never seen in training.

    python benchmarks/ham10000_segmentation.py --data-dir ../shared/data/ham10000 --epochs 1 \\
        --image-size 160 224 --encoder resnet34 --num-workers 2

The diagnosis classification arms (segment-then-classify included) are
``benchmarks/ham10000_classification.py``. What this one does, on a HAM10000-layout folder
(``images/``, ``masks/``, ``HAM10000_metadata.csv``):

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
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from _common import REPO, best_row, machine_line, read_csv_rows, script_parser, write_marked
from _ham10000 import DOCS, add_shared_options, limit_args, medvision, prepare, this_command

SCRIPT = "ham10000_segmentation.py"
CONFIG = REPO / "configs/unet_ham10000.yaml"
TABLE_START, TABLE_END = "<!-- ham10000-table:start -->", "<!-- ham10000-table:end -->"
ISIC_JACCARD_FLOOR = 0.65
SEED_STUDY_THRESHOLD = 0.4


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
    wall = medvision(
        "fit",
        *common_args(args),
        f"--trainer.max_epochs={args.epochs}",
        f"--model.init_args.lr_scheduler.init_args.T_max={args.epochs}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        *limit_args(args.limit_train_batches),
        "--trainer.callbacks+=medvision.training.EpochTimer",
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
    row = best_row(read_csv_rows(version / "metrics.csv"), "val/iou", "max")
    return {
        "checkpoint": best,
        "val_iou": float(row["val/iou"]),
        "val_dice": float(row["val/dice"]),
        "val_thresholded_iou": float(row.get("val/thresholded_iou") or "nan"),
        "best_epoch": int(row["epoch"]),
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
    rows = read_csv_rows(pred_dir / "predictions/metrics.csv")
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
    """The finished run's Markdown table, with a header line naming data and machine."""
    fit_, main, low = result["fit"], result["main"], result.get("t04")
    epochs = fit_["epoch_s"]
    batches = "all" if args.limit_train_batches is None else str(args.limit_train_batches)
    lines = [
        f"HAM10000 lesion segmentation (configs/unet_ham10000.yaml): {args.data_dir} | "
        f"{result['num_holdout']} held-out images of {result['num_lesions']} lesions never seen "
        f"in training or validation | {machine_line()}",
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


def write_docs(text: str, command: str) -> None:
    """Put ``command`` (a code block) and ``text`` between the table's markers in the docs."""
    body = f"```\n{command}\n```\n\n{text}"
    write_marked(DOCS, TABLE_START, TABLE_END, body, title="HAM10000 lesion segmentation")


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script (``main`` parses ``sys.argv`` with it)."""
    parser = script_parser(__doc__)
    add_shared_options(parser, epochs="default: the config's 30", batch="default: the config's 16")
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument(
        "--no-threshold-04",
        action="store_true",
        help=f"skip the second predict at threshold {SEED_STUDY_THRESHOLD}",
    )
    parser.add_argument(
        "--reuse-fit",
        action="store_true",
        help="train nothing: take the finished fit in --out and redo the held-out predictions",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    out = prepare(args, "medvision_ham10000_bench_")
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
    result["args"]["command"] = this_command(SCRIPT)
    result["sizes"] = image_sizes(holdout / "images")
    (out / "result.json").write_text(json.dumps(result, indent=2))
    report(args, result, out)


def report(args, result: dict, out: Path) -> None:
    """Print the table of a finished run; with ``--write-docs`` put it into the docs page."""
    result.setdefault("sizes", image_sizes(out / "holdout/images"))
    text = table(args, result)
    print("\n" + text)
    print(f"\nRuns, checkpoint and predictions: {out}")
    if args.write_docs:
        write_docs(text, getattr(args, "command", None) or this_command(SCRIPT))
        print(f"Table written to {DOCS}")


if __name__ == "__main__":
    main()
