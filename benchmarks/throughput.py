"""Training and inference images/s and peak memory: medvision against a plain PyTorch loop.

    python benchmarks/throughput.py --device cuda
    python benchmarks/throughput.py --device cpu --image-size 64 --batch-size 8 --steps 6

Arms: ``--models`` x ``--precisions`` x ``--layouts`` x ``--loops`` (medvision's Trainer, the
same ``noguard``, or a ``plain`` hand-written loop on the same network, loss and batches) x
``--data`` (batches in ``memory``, the lung datamodule ``cached`` / ``uncached``), each in its
own process. docs/performance.md ("Throughput") explains the arms and every column.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import tempfile
import time
from itertools import product
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from harness import plain
from harness.arms import alternate, print_result, ratio, run_arm_child
from harness.cli import at_least, comma_list, script_parser
from harness.machine import machine_line, peak_memory_mb, reduced_line
from harness.runs import synthetic_lung
from harness.tables import Column, Table
from harness.timing import NVML_HINT, StepTimer, TimedBatches, lightning_timers, nvml_available

MODELS, LOOPS = ("unet", "resnet50"), ("medvision", "noguard", "plain")
PRECISIONS, LAYOUTS = ("32", "bf16-mixed", "16-mixed"), ("nchw", "channels_last")
DATA = ("memory", "cached", "uncached")
NAMES = {"unet": "U-Net", "resnet50": "ResNet-50"}
FULL_SIZE, FULL_BATCH = {"unet": 256, "resnet50": 224}, {"unet": 64, "resnet50": 256}
FULL_STEPS = 50
CPU_SIZE, CPU_BATCH, CPU_STEPS = 64, 8, 6  # the full sizes would take hours on a few cores
LOG_EVERY = {"unet": 5, "resnet50": 20}  # the configs' log_every_n_steps
NUM_CLASSES, LR, WEIGHT_DECAY, UNET_ENCODER = 3, 1e-3, 1e-4, "resnet34"

TABLE = Table(
    Column("model", pattern=NAMES.get),
    *("size", "batch", "precision", "layout", "loop", "data"),
    Column("train img/s", "train_images_per_s", "{:.1f}"),
    Column("train vs plain", "train_vs_plain", "{:.3f}"),
    Column("infer img/s", "infer_images_per_s", "{:.1f}"),
    Column("infer vs plain", "infer_vs_plain", "{:.3f}"),
    Column("peak MB", "peak_mb", "{:.0f}"),
    Column("data wait %", "data_wait_percent", "{:.1f}"),
    Column("NVML util %", "nvml_util_percent", "{:.1f}"),
    Column("setup s", "setup_s", "{:.1f}"),
    Column("arm s", "arm_s", "{:.0f}"),
)
#: with --rounds: the training ratio of each pair in each round
ROUNDS = Table(
    "round",
    Column("model", pattern=NAMES.get),
    *("precision", "layout", "data", "loop"),
    Column("train vs plain", pattern="{:.3f}"),
)


class Arm(NamedTuple):
    """One combination of model, precision, memory layout, training loop and data source."""

    model: str
    precision: str
    layout: str
    loop: str
    data: str


def lung_loader(spec: dict, cache: bool):
    """The lung CT datamodule's train loader (augmentation ``spec["augmentation"]``)."""
    from medvision.data import LungCTDataModule

    datamodule = LungCTDataModule(
        spec["data_dir"], image_size=spec["size"], augmentation=spec["augmentation"],
        batch_size=spec["batch_size"], num_workers=spec["num_workers"], cache=cache,
        cache_limit_gb=64,
    )  # fmt: skip
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def run_medvision(arm: Arm, spec: dict, timers: list, train: TimedBatches, infer) -> float:
    """Lightning ``fit`` for the timed steps, then ``predict`` on the memory batches; the peak
    memory of training."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import LearningRateMonitor

    from medvision.models import ClassificationModule, SegmentationModule
    from medvision.training import NonFiniteGuard
    from medvision.training.loggers import CSVLogger

    optimizer = functools.partial(torch.optim.AdamW, lr=LR, weight_decay=WEIGHT_DECAY)
    options = {"optimizer": optimizer, "channels_last": arm.layout == "channels_last"}
    if arm.model == "unet":
        module = SegmentationModule(
            arch="Unet", encoder_name=UNET_ENCODER, encoder_weights=None, in_channels=1,
            loss="bce_dice", **options,
        )  # fmt: skip
    else:
        module = ClassificationModule("resnet50", in_channels=3, num_classes=NUM_CLASSES, **options)
    callbacks = [LearningRateMonitor(), lightning_timers(*timers)]
    if arm.loop == "medvision":
        callbacks.insert(0, NonFiniteGuard())  # what MedVisionCLI adds to every trainer
    trainer = Trainer(
        accelerator=spec["device"], devices=1, precision=arm.precision, max_steps=len(train),
        max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
        logger=CSVLogger(spec["run_dir"], name="logs"), log_every_n_steps=LOG_EVERY[arm.model],
        callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
        benchmark=spec["cudnn_benchmark"] or None,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=train)
    peak_mb = peak_memory_mb(spec["device"])
    if infer is not None:
        trainer.predict(module, dataloaders=infer, return_predictions=False)
    return peak_mb


def run_plain(arm: Arm, spec: dict, timers: list, train: TimedBatches, infer) -> float:
    """The plain loop on the same network, loss, data and settings; then eval mode,
    ``inference_mode`` and autocast: probabilities of every memory batch. The peak memory of
    training."""
    device, layout = spec["device"], plain.memory_format(arm.layout)
    torch.backends.cudnn.benchmark = spec["cudnn_benchmark"]
    if arm.model == "unet":
        model = plain.unet(UNET_ENCODER, in_channels=1)
    else:
        model = plain.classifier("resnet50", in_channels=3, num_classes=NUM_CLASSES)
    model.net.to(device, memory_format=layout).train()
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    scaler = torch.amp.GradScaler(device) if arm.precision == "16-mixed" else None

    def train_step(batch: dict) -> None:
        image = batch["image"].to(device, non_blocking=True).contiguous(memory_format=layout)
        target = batch[model.target].to(device, non_blocking=True)
        plain.train_step(model, optimizer, image, target, arm.precision, scaler)

    def infer_step(batch: dict) -> None:
        with plain.autocast(device, arm.precision):
            image = batch["image"].contiguous(memory_format=layout)
            model.probabilities(model.net(model.preprocess(image)).float())

    timed_loop(timers[0], train, train_step)
    peak_mb = peak_memory_mb(device)
    model.net.eval()
    with torch.inference_mode():
        timed_loop(timers[1], infer or [], infer_step)
    return peak_mb


def timed_loop(timer: StepTimer, batches, step) -> None:
    """``step(batch)`` of each batch, timed, until the timer's window closes."""
    for batch in batches:
        timer.start(len(batch["image"]))
        step(batch)
        timer.end()
        if timer.done:
            break


def run_arm(arm: Arm, spec: dict) -> dict:
    """Train (and for memory data, infer) one arm; returns its measures."""
    torch.manual_seed(0)
    started = time.perf_counter()
    if arm.data == "memory":
        channels, target = (1, "mask") if arm.model == "unet" else (3, "label")
        source = plain.random_batches(
            2, spec["batch_size"], channels, spec["size"], target, spec["device"], NUM_CLASSES
        )
        infer = TimedBatches(source, spec["warmup"] + spec["infer_steps"])
    else:
        source, infer = lung_loader(spec, cache=arm.data == "cached"), None
    setup_s = time.perf_counter() - started
    train = TimedBatches(source, spec["warmup"] + spec["steps"])
    if spec["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warmup = spec["warmup"], spec["warmup_seconds"]
    steps = spec["steps"], spec["infer_steps"]
    timers = [StepTimer(spec["device"], warmup[0], n, warmup[1]) for n in steps]
    run = run_plain if arm.loop == "plain" else run_medvision
    result = {"peak_mb": run(arm, spec, timers, train, infer), "setup_s": setup_s}
    result["train"] = timers[0].result(train)
    return result | ({"infer": timers[1].result(None)} if infer is not None else {})


def arm_spec(arm: Arm, args, work: Path) -> dict:
    """What a child process needs for ``arm``: the options, the arm's size and batch."""
    spec = {**vars(args), "arm": arm._asdict(), "run_dir": str(work / "runs")}
    return spec | {"size": args.sizes[arm.model], "batch_size": args.batch_sizes[arm.model]}


def arms(args) -> list[Arm]:
    """Memory arms: every model x precision x layout x loop; data arms: the U-Net at the last
    precision and layout, every loop. The loop varies fastest: pairs run back to back."""
    matrix = product(args.models, args.precisions, args.layouts, args.loops)
    out = [Arm(*arm, "memory") for arm in matrix] if "memory" in args.data else []
    if "unet" in args.models:
        last = args.precisions[-1], args.layouts[-1]
        data = [d for d in args.data if d != "memory"]
        out += [Arm("unet", *last, loop, d) for d in data for loop in args.loops]
    return out


def build_parser():
    """The command line of this benchmark."""
    parser = script_parser(
        __doc__, rounds=1, data_dir=None, num_workers=None, json=None, csv=None, arm=True
    )
    add = parser.add_argument
    add("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda if present")
    add("--models", type=comma_list(MODELS, "--models"), default=list(MODELS))
    precisions = comma_list(PRECISIONS, "--precisions")
    add("--precisions", type=precisions, help="default: 32,bf16-mixed on a GPU, 32 on a CPU")
    add("--layouts", type=comma_list(LAYOUTS, "--layouts"), default=list(LAYOUTS))
    add("--loops", type=comma_list(LOOPS, "--loops"), default=["medvision", "plain"])
    add("--data", type=comma_list(DATA, "--data"), default=list(DATA))
    add("--image-size", type=at_least(32), help="both models' side (default 256/224; CPU 64)")
    add("--batch-size", type=at_least(1), help="both models' batch (default 64/256; CPU 8)")
    add("--warmup", type=at_least(0), help="untimed first steps at most (default 10; CPU 2)")
    add("--warmup-seconds", type=float, default=30.0, help="end the warm-up after this long")
    add("--steps", type=at_least(1), help="timed steps (default 50; 6 on a CPU)")
    add("--infer-steps", type=at_least(1), help="timed inference steps (default: --steps)")
    add("--arm-timeout", type=float, default=600.0, help="seconds before an arm is stopped")
    add("--num-slices", type=at_least(10), help="synthetic slices (default: one pass)")
    add("--distinct", type=at_least(1), default=8, help="synthetic phantoms written, linked over")
    add("--slice-size", type=at_least(32), help="synthetic slices' side (default 2x U-Net's)")
    add("--augmentation", default="basic", choices=["none", "basic", "elastic"])
    add("--cudnn-benchmark", action="store_true", help="cudnn.benchmark in every arm")
    return parser


def resolve(args):
    """Fill device-dependent defaults; refuse ``--device cuda`` without a GPU or fp16 on CPU."""
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "--device cuda: no CUDA GPU is visible (torch.cuda.is_available() is False). Run on "
            "a GPU machine, or pass --device cpu for a reduced CPU run."
        )
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = args.device == "cpu"
    args.precisions = args.precisions or (["32"] if cpu else ["32", "bf16-mixed"])
    if cpu and "16-mixed" in args.precisions:
        sys.exit("--precisions 16-mixed: fp16 autocast needs a GPU; use bf16-mixed on a CPU.")
    if args.image_size and args.image_size % 32:
        sys.exit(f"--image-size {args.image_size}: use a multiple of 32 (the U-Net halves it)")
    if not arms(args):
        sys.exit("No arms: --data cached/uncached runs the U-Net only; add unet to --models.")
    if args.data_dir and not (args.data_dir / "2d_images").is_dir():
        sys.exit(f"--data-dir {args.data_dir}: not a lung CT folder (2d_images/, 2d_masks/).")
    args.sizes = {m: args.image_size or (CPU_SIZE if cpu else FULL_SIZE[m]) for m in MODELS}
    args.batch_sizes = {m: args.batch_size or (CPU_BATCH if cpu else FULL_BATCH[m]) for m in MODELS}
    args.warmup = (2 if cpu else 10) if args.warmup is None else args.warmup
    args.steps = args.steps or (CPU_STEPS if cpu else FULL_STEPS)
    args.infer_steps = args.infer_steps or args.steps
    if args.num_workers is None:
        from medvision.data.screening import default_num_workers

        args.num_workers = default_num_workers()
    one_pass = (args.warmup + args.steps) * args.batch_sizes["unet"]  # 80% are train slices
    args.num_slices = args.num_slices or max(20, math.ceil(one_pass / 0.8) + 2)
    args.slice_size = args.slice_size or 2 * args.sizes["unet"]
    return args


def size_line(args) -> str:
    """The issue's sizes, or exactly what this run reduced."""
    sizes, batches, models = args.sizes, args.batch_sizes, args.models
    small = [m for m in models if sizes[m] < FULL_SIZE[m]]
    reduced = [f"{NAMES[m]} {sizes[m]}x{sizes[m]} (full {FULL_SIZE[m]})" for m in small]
    small = [m for m in models if batches[m] < FULL_BATCH[m]]
    reduced += [f"{NAMES[m]} batch {batches[m]} (full {FULL_BATCH[m]})" for m in small]
    if args.steps < FULL_STEPS:
        reduced.append(f"{args.steps} timed steps (full {FULL_STEPS})")
    full = ", ".join(f"{NAMES[m]} {sizes[m]}x{sizes[m]} batch {batches[m]}" for m in models)
    return reduced_line(reduced, args.device, full)


def median(runs: list[dict], *keys: str) -> float | None:
    """Median over rounds of ``run[keys[0]][keys[1]]...``; None where no round has it."""
    values = []
    for value in runs:
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        values += [] if value is None else [value]
    return float(np.median(values)) if values else None


def table_rows(results: dict[Arm, list[dict]], args) -> list[dict]:
    """One row per arm: its settings and the medians over rounds, ratios to the plain arm."""
    rows = []
    for arm, runs in results.items():
        reference = results.get(arm._replace(loop="plain"), []) if arm.loop != "plain" else []
        row = {**arm._asdict(), "size": args.sizes[arm.model], "batch": args.batch_sizes[arm.model]}
        for kind in ("train", "infer"):
            mine, ref = (median(r, kind, "images_per_s") for r in (runs, reference))
            row[f"{kind}_images_per_s"], row[f"{kind}_vs_plain"] = mine, ratio(mine, ref)
        wait = median(runs, "train", "data_wait")
        row["data_wait_percent"] = None if wait is None else 100 * wait
        row["nvml_util_percent"] = median(runs, "train", "nvml_util")
        row |= {key: median(runs, key) for key in ("peak_mb", "setup_s", "arm_s")}
        row["error"] = next((run["error"] for run in runs if "error" in run), None)
        rows.append(row)
    return rows


def print_table(results: dict[Arm, list[dict]], args) -> list[dict]:
    """The arms' table, the failed arms listed below it; returns the rows."""
    rows = table_rows(results, args)
    print((TABLE if args.device == "cuda" else TABLE.without("NVML util %")).markdown(rows))
    for row in rows:
        if row["error"]:
            print(f"\n{NAMES[row['model']]} {row['loop']} {row['data']}: {row['error']}")
    return rows


def print_rounds(results: dict[Arm, list[dict]]) -> None:
    """The training medvision/plain ratio of each pair in each round."""
    rows = []
    for arm, runs in results.items():
        reference = results.get(arm._replace(loop="plain")) if arm.loop != "plain" else None
        for index, pair in enumerate(zip(runs, reference or [], strict=False)):
            speeds = (median([run], "train", "images_per_s") for run in pair)
            rows.append({**arm._asdict(), "round": index, "train vs plain": ratio(*speeds)})
    print("\n" + ROUNDS.markdown(rows))


def print_header(args, data: str) -> None:
    """The sizes (or what was reduced), the machine, the steps, NVML and the data."""
    print(size_line(args))
    print(f"Machine: {machine_line()}; device used: {args.device}")
    print(
        f"Steps: {args.warmup} warm-up (at most {args.warmup_seconds:g} s) + {args.steps} timed "
        f"training steps, {args.infer_steps} timed inference steps; {args.rounds} round(s); "
        f"cudnn.benchmark {'on' if args.cudnn_benchmark else 'off'}"
    )
    if args.device == "cuda":
        how = "sampled every 50 ms" if nvml_available() else f"not measured: {NVML_HINT}"
        print(f"NVML util: GPU-Util over the timed training steps, {how}")
    print(data + "\n")


def data_line(args, matrix: list[Arm], work: Path) -> str:
    """Write the synthetic slices the data arms need (unless ``--data-dir``); their line."""
    if all(arm.data == "memory" for arm in matrix):
        return "Data: memory batches only"
    source = str(args.data_dir)
    if args.data_dir is None:
        slices = args.num_slices, args.slice_size, args.distinct
        args.data_dir, source = synthetic_lung(work / "lung", *slices)
    return (
        f"Data arms: {source}; U-Net, precision {args.precisions[-1]}, {args.layouts[-1]}; "
        f"augmentation {args.augmentation}; {args.num_workers} loader workers"
    )


def main(argv=None) -> None:
    """Run every arm in its own process, ``--rounds`` times, and print the tables."""
    args = build_parser().parse_args(argv)
    if args.arm:
        spec = json.loads(args.arm)
        return print_result(run_arm(Arm(**spec["arm"]), spec))
    args = resolve(args)
    matrix = arms(args)
    with tempfile.TemporaryDirectory(prefix="medvision_throughput_") as tmp:
        data = data_line(args, matrix, Path(tmp))

        def measure(arm: Arm, _round: int) -> dict:
            spec = arm_spec(arm, args, Path(tmp))
            return run_arm_child(__file__, spec, args.arm_timeout, keep_going=True)

        rounds = alternate(matrix, measure, args.rounds, progress=True)
    results = {arm: [round_[arm] for round_ in rounds] for arm in matrix}
    print_header(args, data)
    rows = print_table(results, args)
    if args.rounds > 1:
        print_rounds(results)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.csv:
        TABLE.write_csv(args.csv, rows)
    if any(row["error"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
