"""HAM10000 lesion segmentation with the shipped config, scored on lesions never seen in training.

    python benchmarks/ham10000_segmentation.py --data-dir ../shared/data/ham10000 --epochs 1 \\
        --image-size 160 224 --encoder resnet34 --num-workers 2

1. ``medvision fit`` with configs/unet_ham10000.yaml (overriding only the epochs and the cosine
   ``T_max``, image size, encoder, batch size, loader workers, ``limit_train_batches``); the
   datamodule splits by lesion and the checkpoint is picked on ``val/iou``.
2. The test split, rebuilt as ``medvision fit`` built it, is symlinked into ``<out>/holdout``.
3. ``medvision predict`` with ``best.ckpt`` on it scores each mask at its image's own size
   (``predictions/metrics.csv``); again at threshold 0.4 unless ``--no-threshold-04``.

Printed: best validation IoU, held-out Dice, IoU and ISIC thresholded Jaccard (IoU < 0.65 counts
0), held-out IoU at 0.4, epoch and fit wall time. ``--reuse-fit`` redoes steps 2-3 on the fit in
``--out``; ``--report`` reprints its table; ``--write-docs`` puts it into docs/ham10000.md.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from _ham10000 import DOCS, PRINT_ONLY, ham_parser, limit_args, prepare
from harness.cli import this_command
from harness.machine import REPO, machine_line
from harness.runs import Fit, best_row, finished_fit, fit, medvision, overrides, read_csv_rows
from harness.tables import Column, Table, publish

SCRIPT = "ham10000_segmentation.py"
CONFIG = REPO / "configs/unet_ham10000.yaml"
MARKERS = "<!-- ham10000-table:start -->", "<!-- ham10000-table:end -->"
ISIC_FLOOR, LOW_THRESHOLD = 0.65, 0.4  # ISIC 2018's Jaccard floor; the seed study's threshold
TABLE = Table(
    *("encoder", "epochs", "image size", "batch", "train batches/epoch"),
    Column("best val IoU (epoch)", "fit", "{0[val_iou]:.4f} ({0[best_epoch]})"),
    Column("held-out Dice", "main.dice", "{:.4f}"),
    Column("held-out IoU", "main.iou", "{:.4f}"),
    Column("ISIC thresholded Jaccard (IoU < 0.65 = 0)", "main.thresholded_iou", "{:.4f}"),
    Column(f"held-out IoU @ {LOW_THRESHOLD}", "t04.iou", "{:.4f}"),
    Column("epoch wall (s)", lambda r: np.mean(r["fit"]["epoch_s"]), "{:.0f}"),
    Column("fit wall (s)", "fit.fit_s", "{:.0f}"),
)


def make_holdout(data_dir: Path, out: Path, image_size: list[int]) -> tuple[Path, int, int]:
    """Symlink the test split ``medvision fit`` uses into ``out/{images,masks}``; the folder,
    its number of images and of lesions. Stops if a test lesion has a train/val image."""
    import yaml

    from medvision.data import HAM10000DataModule
    from medvision.data.ham10000_metadata import read_metadata

    init = yaml.safe_load(CONFIG.read_text())["data"]["init_args"]
    keys = ("val_fraction", "test_fraction", "seed", "num_folds", "fold")  # what decides it
    split = {key: init[key] for key in keys if key in init}
    datamodule = HAM10000DataModule(
        data_dir, task="segmentation", image_size=image_size, check_images=False, **split
    )  # fit decoded every file already
    datamodule.setup("fit")
    test = datamodule.datasets["test"]
    shutil.rmtree(out, ignore_errors=True)
    for sub, paths in (("images", test.image_paths), ("masks", test.mask_paths)):
        (out / sub).mkdir(parents=True)
        for path in paths:
            (out / sub / path.name).symlink_to(path.resolve())
    lesion = {r.image_id: r.lesion_id for r in read_metadata(data_dir / "HAM10000_metadata.csv")}
    lesions = {lesion[p.stem] for p in test.image_paths}
    seen = [p.stem for stage in ("train", "val") for p in datamodule.datasets[stage].image_paths]
    if leaked := {lesion[stem] for stem in seen} & lesions:
        sys.exit(f"lesions in both test and train/val: {sorted(leaked)[:5]}")
    return out, len(test.image_paths), len(lesions)


def common_args(args, epochs: int | None = None) -> list[str]:
    data = {"data_dir": args.data_dir, "image_size": args.image_size}
    data |= {"batch_size": args.batch_size, "num_workers": args.num_workers}
    return overrides(CONFIG, epochs, data=data, model={"encoder_name": args.encoder})


def fit_scores(run: Fit) -> dict:
    """The validation scores of the epoch ``best.ckpt`` comes from (highest ``val/iou``)."""
    row = best_row(run.metrics, "val/iou", "max")
    return {
        "checkpoint": str(run.best),
        "val_iou": float(row["val/iou"]),
        "val_dice": float(row["val/dice"]),
        "val_thresholded_iou": float(row.get("val/thresholded_iou") or "nan"),
        "best_epoch": int(row["epoch"]),
        "epoch_s": run.epoch_s,
        "fit_s": run.fit_s,
    }


def predict(args, out: Path, holdout: Path, checkpoint: str, threshold: float | None) -> dict:
    """``medvision predict`` on the held-out folder; the mean per-image scores and wall time."""
    folder = out / ("predict" if threshold is None else f"predict_t{threshold}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    extra = [f"--data.init_args.predict_dir={holdout}", f"--ckpt_path={checkpoint}"]
    extra += [f"--prediction_writer.output_dir={folder / 'predictions'}"]
    if threshold is not None:  # the writer's: --model.init_args.threshold loses to the ckpt's
        extra += [f"--prediction_writer.threshold={threshold}"]
        extra += ["--prediction_writer.overlays=false"]
    wall = medvision("predict", *common_args(args), *extra, log=folder / "predict.log")
    rows = read_csv_rows(folder / "predictions/metrics.csv")
    dice, iou = (np.array([float(r[key]) for r in rows]) for key in ("dice", "iou"))
    return {
        "num_images": len(rows),
        "dice": float(dice.mean()),
        "iou": float(iou.mean()),
        "thresholded_iou": float(np.where(iou < ISIC_FLOOR, 0.0, iou).mean()),
        "below_floor": int((iou < ISIC_FLOOR).sum()),
        "predict_s": wall,
        "folder": str(folder / "predictions"),
    }


def image_sizes(folder: Path) -> str:
    """The images' stored sizes as ``WxH`` (most common first), read from the file headers."""
    from collections import Counter

    from PIL import Image

    counts = Counter()
    for path in sorted(folder.iterdir()):
        with Image.open(path) as image:
            counts["{}x{}".format(*image.size)] += 1
    return ", ".join(size if len(counts) == 1 else f"{size} ({n})" for size, n in counts.items())


def report(args, result: dict) -> str:
    """The finished run's table under a line naming data and machine, and what it means."""
    main, low, epochs = result["main"], result.get("t04"), result["fit"]["epoch_s"]
    row = {**result, "encoder": args.encoder, "epochs": args.epochs, "batch": args.batch_size}
    row["image size"] = "{}x{}".format(*args.image_size)
    row["train batches/epoch"] = args.limit_train_batches or "all"
    low_wall = "" if low is None else f" (at {LOW_THRESHOLD}: {low['predict_s']:.0f} s)"
    return (
        f"HAM10000 lesion segmentation (configs/unet_ham10000.yaml): {args.data_dir} | "
        f"{result['num_holdout']} held-out images of {result['num_lesions']} lesions never "
        f"seen in training or validation | {machine_line()}\n\n{TABLE.markdown([row])}\n\n"
        f"Held-out scores at threshold 0.5, at each image's own size ({result['sizes']} px): "
        f"{main['below_floor']} of {main['num_images']} images have IoU < {ISIC_FLOOR}. "
        f"Epoch wall: training + validation, mean of {len(epochs)} epoch(s) "
        f"({', '.join(f'{t:.0f}' for t in epochs)} s); fit wall: the whole `medvision fit` "
        f"process (start-up and the image check included). Predict wall: "
        f"{main['predict_s']:.0f} s{low_wall}."
    )


def build_parser():
    """The command line of this script."""
    parser = ham_parser(__doc__, "default: the config's 30", "default: the config's 16")
    add = parser.add_argument
    add("--encoder", default="resnet34")
    add("--no-threshold-04", action="store_true", help="skip the predict at threshold 0.4")
    add("--reuse-fit", action="store_true", help="take the fit in --out, redo the predictions")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    out = prepare(args, "medvision_ham10000_bench_")
    args.epochs = 30 if args.epochs is None else args.epochs
    args.batch_size = 16 if args.batch_size is None else args.batch_size
    saved = out / "result.json"
    if args.report:  # the table of the run in --out, with that run's options
        result = json.loads(saved.read_text())
        stored = {k: v for k, v in result["args"].items() if k != "write_docs"}
        args, command = type(args)(**{**vars(args), **stored}), stored["command"]
        result.setdefault("sizes", image_sizes(out / "holdout/images"))
    else:
        if args.reuse_fit:  # its wall time is known only from the run that made it
            wall = json.loads(saved.read_text())["fit"]["fit_s"] if saved.exists() else np.nan
            run = finished_fit(out / "fit", wall)
        else:
            limit = limit_args(args.limit_train_batches)
            run = fit(out / "fit", *common_args(args, args.epochs), *limit)
        result = {"fit": fit_scores(run)}
        holdout, result["num_holdout"], result["num_lesions"] = make_holdout(
            args.data_dir, out / "holdout", args.image_size
        )
        checkpoint = result["fit"]["checkpoint"]
        result["main"] = predict(args, out, holdout, checkpoint, None)
        if not args.no_threshold_04:
            result["t04"] = predict(args, out, holdout, checkpoint, LOW_THRESHOLD)
        command = this_command(SCRIPT, PRINT_ONLY)
        result["args"] = json.loads(json.dumps(vars(args), default=str)) | {"command": command}
        result["sizes"] = image_sizes(holdout / "images")
        saved.write_text(json.dumps(result, indent=2))
    publish(report(args, result), DOCS if args.write_docs else None, MARKERS, command)
    print(f"\nRuns, checkpoint and predictions: {out}")


if __name__ == "__main__":
    main()
