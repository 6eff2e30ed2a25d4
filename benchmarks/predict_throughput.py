"""Predict throughput: a folder of lung slices through ``medvision predict`` with the torch and
the onnx runtime, against a plain PyTorch loop on the same model.

    python benchmarks/predict_throughput.py --data-dir ../shared/data/lung_ct --images 200
    python benchmarks/predict_throughput.py --bundle BUNDLE --images 200 --rounds 3 --write-docs

Prepared once, untimed: the first ``--images`` slices of ``DATA/2d_images`` linked into one
folder (images only, so predict scores no masks), and a quickstart-like U-Net (``--encoder``
encoder, ``--image-size`` px) fitted ``--epochs`` on ``DATA`` with ``configs/unet_lung.yaml``
and exported as a bundle with ``model.onnx`` (or ``--bundle``: an existing one). Speed, not
accuracy, is measured: one epoch is enough.

Arms, each in a process of its own, alternating over ``--rounds``, all on ``--threads`` threads
with batches of ``--batch-size`` and no loader workers:

- ``torch``: ``medvision predict --ckpt_path BUNDLE --runtime torch``, masks only
  (``--prediction_writer.overlays false``);
- ``onnx``: the same with ``--runtime onnx`` (onnxruntime on the CPU);
- ``plain``: a hand-written loop on the same weights (smp's U-Net, ``model.safetensors``):
  read each file, scale as the record says, resize, forward, sigmoid, resize back,
  threshold, write the PNG mask.

Each arm reports ``predict s``: from loading the model to the last mask written, timed inside
the process after the imports all arms share (medvision's command itself, its parsing and
set-up included, is timed); and ``process s``: the whole process (start-up included). The
table gives images/s and each arm's ratio to the plain loop (per round, then the median), and
the fraction of mask pixels equal to the plain loop's. ``--write-docs`` puts it into
docs/performance.md.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from harness.arms import Spread, alternate, print_result, ratio, run_arm_child
from harness.cli import at_least, script_parser, this_command
from harness.machine import DATA, REPO, code_version, machine_line
from harness.runs import medvision, overrides
from harness.tables import Column, Table, publish

DOCS = REPO / "docs/performance.md"
MARKERS = "<!-- predict-throughput:start -->", "<!-- predict-throughput:end -->"
ARMS = ("torch", "onnx", "plain")
TABLE = Table(
    "arm",
    "images",
    "batch",
    "threads",
    Column("predict s", "predict_s", "{:.2f}"),
    Column("images/s", "images_per_s", "{:.1f}"),
    Column("vs plain", "vs_plain", "{:.2f}"),
    Column("process s", "process_s", "{:.1f}"),
    Column("process vs plain", "process_vs_plain", "{:.2f}"),
    Column("masks = plain", "agreement", "{:.4f}"),
)


def build_parser():
    """The command line of this benchmark."""
    parser = script_parser(
        __doc__, rounds=3, batch_size=16, epochs=1, csv=None, write_docs=True, arm=True
    )
    add = parser.add_argument
    add("--data-dir", type=Path, default=DATA / "lung_ct", help="a Kaggle-layout lung folder")
    add("--images", type=at_least(1), default=200, help="slices to predict")
    add("--bundle", type=Path, help="an existing bundle with model.onnx (no fit)")
    add("--encoder", default="resnet34", help="the U-Net's encoder (the quickstart's)")
    add("--image-size", type=at_least(8), default=64, help="the network's input size")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    add("--threads", type=at_least(1), default=cores, help="torch/onnxruntime threads per arm")
    return parser


def link_images(data_dir: Path, out: Path, count: int) -> Path:
    """``out`` holding links to the first ``count`` files of ``data_dir/2d_images``."""
    names = sorted((data_dir / "2d_images").iterdir())[:count]
    if len(names) < count:
        sys.exit(f"{data_dir / '2d_images'} holds {len(names)} slices, fewer than --images {count}")
    out.mkdir(parents=True)
    for path in names:
        (out / path.name).symlink_to(path.resolve())
    return out


def prepare_bundle(args, work: Path) -> Path:
    """``--bundle``, or a U-Net fitted ``--epochs`` on ``--data-dir`` and exported with ONNX."""
    if args.bundle is not None:
        if not (args.bundle / "model.onnx").is_file():
            sys.exit(f"--bundle {args.bundle}: no model.onnx; export it with --onnx")
        return args.bundle
    from harness.runs import fit

    data = {"data_dir": args.data_dir, "image_size": args.image_size, "num_workers": 0}
    model = {"encoder_name": args.encoder}
    run = fit(
        work / "fit",
        *overrides(REPO / "configs/unet_lung.yaml", args.epochs, data=data, model=model),
    )
    bundle = work / "bundle"
    medvision(
        "export",
        f"--ckpt_path={run.best}",
        "--format=bundle",
        "--onnx",
        f"--output={bundle}",
        log=work / "export.log",
    )
    return bundle


def measure_arm(spec: dict) -> dict:
    """One arm in this process: ``predict_s`` of ``spec``'s images with its bundle, timed
    after the imports every arm needs (torch, smp, OpenCV, tifffile, Pillow; medvision's CLI
    for its arms, whose own start inside ``main`` is timed)."""
    import cv2  # noqa: F401
    import PIL.Image  # noqa: F401
    import segmentation_models_pytorch  # noqa: F401
    import tifffile  # noqa: F401
    import torch

    torch.set_num_threads(spec["threads"])
    out = Path(spec["out"])
    if spec["arm"] == "plain":
        start = time.perf_counter()
        plain_loop(Path(spec["bundle"]), Path(spec["images"]), out, spec["batch"])
        return {"predict_s": time.perf_counter() - start}
    from medvision.cli import main

    start = time.perf_counter()
    main(
        [
            "predict",
            f"--ckpt_path={spec['bundle']}",
            f"--data.predict_dir={spec['images']}",
            f"--data.batch_size={spec['batch']}",
            "--data.num_workers=0",
            f"--runtime={spec['arm']}",
            f"--output={out}",
            "--prediction_writer.overlays=false",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
        ]
    )
    return {"predict_s": time.perf_counter() - start}


def plain_loop(bundle: Path, images: Path, out: Path, batch: int) -> None:
    """The reference: read, scale, resize, forward, sigmoid, resize back, threshold, write."""
    import cv2
    import numpy as np
    import segmentation_models_pytorch as smp
    import tifffile
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    config = json.loads((bundle / "config.json").read_text())
    record, network = config["preprocessing"], config["network"]["init_args"]
    extra = network.get("arch_kwargs") or {}  # smp's own options (encoder_depth, ...)
    net = smp.Unet(network["encoder_name"], encoder_weights=None, in_channels=1, classes=1, **extra)
    state = load_file(bundle / "model.safetensors")
    net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    net.eval()
    height, width = record["image_size"]
    paths = sorted(images.iterdir())
    out.mkdir(parents=True)
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            raws = [tifffile.imread(p).astype(np.float32) for p in paths[start : start + batch]]
            inputs = [cv2.resize(_scaled(raw, record), (width, height)) for raw in raws]
            probs = net(torch.from_numpy(np.stack(inputs))[:, None]).sigmoid()
            for path, raw, prob in zip(paths[start : start + batch], raws, probs, strict=True):
                full = torch.nn.functional.interpolate(
                    prob[None], size=raw.shape[:2], mode="bilinear", align_corners=False
                )
                mask = (full[0, 0] > record["mask_threshold"]).numpy().astype(np.uint8) * 255
                Image.fromarray(mask).save(out / f"{path.stem}.png")


def _scaled(image, record: dict):
    """[0, 1] intensities as the record says: its window, or min-max per image."""
    import numpy as np

    low, high = record["intensity_window"] or (float(image.min()), float(image.max()))
    return np.clip((image - low) / (high - low), 0, 1) if high > low else image * 0


def agreement(folder: Path, reference: Path) -> float:
    """The fraction of mask pixels in ``folder`` equal to those of the same names in
    ``reference``."""
    import numpy as np
    from PIL import Image

    equal = total = 0
    for path in sorted(reference.glob("*.png")):
        mine = np.array(Image.open(folder / path.name)) > 0
        equal += int((mine == (np.array(Image.open(path)) > 0)).sum())
        total += mine.size
    return equal / total if total else float("nan")


def summarize(rounds: list[dict], images: int, batch: int, threads: int) -> list[dict]:
    """One row per arm: median seconds, images/s and the median of its per-round ratios to the
    plain loop (throughput: plain's seconds over the arm's)."""
    rows = []
    for arm in ARMS:
        predict = Spread.of(r[arm]["predict_s"] for r in rounds)
        process = Spread.of(r[arm]["arm_s"] for r in rounds)
        vs_plain = Spread.of(ratio(r["plain"]["predict_s"], r[arm]["predict_s"]) for r in rounds)
        whole = Spread.of(ratio(r["plain"]["arm_s"], r[arm]["arm_s"]) for r in rounds)
        rows.append(
            {
                "arm": arm,
                "images": images,
                "batch": batch,
                "threads": threads,
                "predict_s": predict.median,
                "images_per_s": images / predict.median,
                "vs_plain": vs_plain.median,
                "process_s": process.median,
                "process_vs_plain": whole.median,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Prepare the images and the bundle, time the arms in alternation, print the table."""
    args = build_parser().parse_args(argv)
    if args.arm:
        return print_result(measure_arm(json.loads(args.arm)))
    with tempfile.TemporaryDirectory(prefix="medvision_predict_") as tmp:
        work = Path(tmp)
        images = link_images(args.data_dir, work / "images", args.images)
        bundle = prepare_bundle(args, work)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

        def run(arm: str, index: int) -> dict:
            spec = {
                "arm": arm,
                "bundle": str(bundle),
                "images": str(images),
                "batch": args.batch_size,
            }
            spec |= {"threads": args.threads, "out": str(work / f"{arm}_{index}")}
            return run_arm_child(__file__, spec, env=env)

        rounds = alternate(ARMS, run, args.rounds, rotate=True, progress=True)
        rows = summarize(rounds, args.images, args.batch_size, args.threads)
        last = args.rounds - 1
        for row in rows:
            masks = work / f"{row['arm']}_{last}" / ("" if row["arm"] == "plain" else "masks")
            row["agreement"] = agreement(masks, work / f"plain_{last}")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    model = f"U-Net ({args.encoder} encoder), {args.image_size} px, fitted {args.epochs} epoch(s)"
    header = (
        f"```\nMachine: {machine_line()} (load average {load} at the end)\nCode: "
        f"{code_version()}\nImages: the first {args.images} slices of {args.data_dir}; model: "
        f"{f'--bundle {args.bundle}' if args.bundle else model}; {args.rounds} rounds, arms "
        "alternating, each in its own process\n```"
    )
    if args.csv:
        TABLE.write_csv(args.csv, rows)
    command = this_command("predict_throughput.py", leave_out=("--write-docs",))
    publish(
        header + "\n\n" + TABLE.markdown(rows), DOCS if args.write_docs else None, MARKERS, command
    )


if __name__ == "__main__":
    main()
