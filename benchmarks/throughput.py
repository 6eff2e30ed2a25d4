"""Training and inference images/s and peak memory: medvision against a plain PyTorch loop.

    python benchmarks/throughput.py --device cuda
    python benchmarks/throughput.py --device cpu --image-size 64 --batch-size 8 --steps 6

Models (the issue's sizes by default): ``unet``, the U-Net of ``configs/unet_lung.yaml`` (smp
Unet, resnet34 encoder, 1 channel, loss ``bce_dice``) at 256x256 through
:class:`medvision.models.SegmentationModule`; ``resnet50``, timm's ResNet-50 (3 channels, 3
classes, cross-entropy) at 224x224 through :class:`medvision.models.ClassificationModule`.
Both train with AdamW (lr 1e-3, weight decay 1e-4) and no LR schedule.

Every arm is one combination of
- ``--precisions``: ``32``, ``bf16-mixed`` or ``16-mixed`` (autocast; a gradient scaler with fp16);
- ``--layouts``: ``nchw`` or ``channels_last`` (the module option ``channels_last``);
- ``--loops``: ``medvision`` (a Lightning ``Trainer`` with the callback the CLI adds to every
  fit, :class:`medvision.training.NonFiniteGuard`, plus the configs' CSV logger and
  ``LearningRateMonitor``; no progress bar: ``benchmarks/step_overhead.py`` measures that),
  ``noguard`` (the same without ``NonFiniteGuard``) or ``plain`` (a hand-written loop: the same
  network, loss, optimizer, autocast, layout and data, no Lightning, no host sync);
- ``--data``: ``memory`` (batches made once, already on the device: the model's throughput
  alone), ``cached`` / ``uncached`` (U-Net only: the lung CT datamodule's train loader with
  ``cache: true`` / ``false`` and augmentation ``basic``, on synthetic slices in the Kaggle
  layout (``--distinct`` phantoms written once, then linked over and over), or on
  ``--data-dir``). The data arms run at the last of ``--precisions`` and of ``--layouts``.

Each arm runs in its own process (peak memory is its own), stopped after ``--arm-timeout``
seconds. Warm-up ends after ``--warmup`` steps or ``--warmup-seconds``, whichever comes first;
then ``--steps`` steps are timed, from a device sync at the end of the last warm-up step to one
after the last timed step; inference (eval mode, ``inference_mode``, autocast; Lightning's
``predict`` for medvision) likewise over ``--infer-steps`` on the memory batches. Per arm:
images/s; the ratio to the plain loop of the same model, precision, layout and data, measured
in the same run; peak memory (``torch.cuda.max_memory_allocated`` over training on a GPU, the
process's peak RSS on a CPU); the share of the timed wall time spent inside the loader's
``next()`` ("data wait"); on a GPU, NVML utilization ("GPU-Util", sampled every 50 ms over the
timed steps; needs ``nvidia-ml-py``); the seconds spent building the loader (the datamodule's
setup, the cache filled) and the arm's whole process. ``--rounds N`` repeats the arms in
alternation and reports medians, with the per-round ratios; ``--json PATH`` writes the table's
rows as JSON, ``--csv PATH`` as CSV.

The first printed line says whether the sizes are the issue's or what was reduced.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from harness import machine, plain
from harness.arms import alternate, print_result, ratio, run_arm_child
from harness.cli import at_least, comma_list, script_parser
from harness.machine import machine_line, peak_memory_mb
from harness.runs import synthetic_lung
from harness.tables import Column, Table
from harness.timing import NVML_HINT, StepTimer, TimedBatches, lightning_timers, nvml_available

MODELS = ("unet", "resnet50")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
LAYOUTS = ("nchw", "channels_last")
LOOPS = ("medvision", "noguard", "plain")
DATA = ("memory", "cached", "uncached")
NAMES = {"unet": "U-Net", "resnet50": "ResNet-50"}
#: the issue's sizes and the batch sizes of a full (GPU) run
FULL_SIZE = {"unet": 256, "resnet50": 224}
FULL_BATCH = {"unet": 64, "resnet50": 256}
FULL_STEPS = {"warmup": 10, "steps": 50}
#: a CPU run's defaults: the full sizes would take hours on a few cores
CPU_SIZE, CPU_BATCH, CPU_STEPS = 64, 8, {"warmup": 2, "steps": 6}
#: the configs' logging interval (configs/unet_lung.yaml, configs/resnet50_ham10000.yaml)
LOG_EVERY = {"unet": 5, "resnet50": 20}
NUM_CLASSES = 3
LR, WEIGHT_DECAY = 1e-3, 1e-4
#: the U-Net encoder of configs/unet_lung.yaml
UNET_ENCODER = "resnet34"

#: the printed table: one row per arm, medians over rounds
TABLE = Table(
    Column("model", pattern=NAMES.get),
    "size",
    "batch",
    "precision",
    "layout",
    "loop",
    "data",
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
    "precision",
    "layout",
    "data",
    "loop",
    Column("train vs plain", pattern="{:.3f}"),
)


class Arm(NamedTuple):
    """One combination of model, precision, memory layout, training loop and data source."""

    model: str
    precision: str
    layout: str
    loop: str
    data: str

    def pair(self) -> tuple:
        """What a medvision arm and its plain-loop counterpart share."""
        return (self.model, self.precision, self.layout, self.data)


# --- data ----------------------------------------------------------------------------------------
def lung_loader(spec: dict, cache: bool):
    """The lung CT datamodule's train loader (augmentation ``spec["augmentation"]``)."""
    from medvision.data import LungCTDataModule

    datamodule = LungCTDataModule(
        spec["data_dir"],
        image_size=spec["size"],
        augmentation=spec["augmentation"],
        batch_size=spec["batch_size"],
        num_workers=spec["num_workers"],
        cache=cache,
        cache_limit_gb=64,
    )
    datamodule.setup("fit")
    return datamodule.train_dataloader()


# --- the medvision arms --------------------------------------------------------------------------
def medvision_module(model: str, layout: str):
    """The model as medvision trains it (the configs' network and loss, AdamW)."""
    from medvision.models import ClassificationModule, SegmentationModule

    optimizer = functools.partial(torch.optim.AdamW, lr=LR, weight_decay=WEIGHT_DECAY)
    channels_last = layout == "channels_last"
    if model == "unet":
        return SegmentationModule(
            arch="Unet",
            encoder_name=UNET_ENCODER,
            encoder_weights=None,
            in_channels=1,
            loss="bce_dice",
            optimizer=optimizer,
            channels_last=channels_last,
        )
    return ClassificationModule(
        model_name="resnet50",
        in_channels=3,
        num_classes=NUM_CLASSES,
        optimizer=optimizer,
        channels_last=channels_last,
    )


def run_medvision(arm: Arm, spec: dict, train_batches: TimedBatches, infer_batches) -> dict:
    """Lightning ``fit`` for the timed steps, then ``predict`` on the memory batches."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import LearningRateMonitor

    from medvision.training import NonFiniteGuard
    from medvision.training.loggers import CSVLogger

    module = medvision_module(arm.model, arm.layout)
    train_timer = step_timer(spec, spec["steps"])
    infer_timer = step_timer(spec, spec["infer_steps"])
    callbacks = [LearningRateMonitor(), lightning_timers(train_timer, infer_timer)]
    if arm.loop == "medvision":
        callbacks.insert(0, NonFiniteGuard())  # what MedVisionCLI adds to every trainer
    trainer = Trainer(
        accelerator=spec["device"],
        devices=1,
        precision=arm.precision,
        max_steps=len(train_batches),
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        logger=CSVLogger(spec["run_dir"], name="logs"),
        log_every_n_steps=LOG_EVERY[arm.model],
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        benchmark=spec["cudnn_benchmark"] or None,
    )
    trainer.fit(module, train_dataloaders=train_batches)
    result = {"train": train_timer.result(train_batches), "peak_mb": peak_memory_mb(spec["device"])}
    if infer_batches is not None:
        trainer.predict(module, dataloaders=infer_batches, return_predictions=False)
        result["infer"] = infer_timer.result(None)
    return result


# --- the plain PyTorch arm: the harness's reference loop, sharing only the data ----------------
def plain_model(model: str) -> plain.Plain:
    """The same network and loss as medvision's, built directly (see ``harness.plain``)."""
    if model == "unet":
        return plain.unet(UNET_ENCODER, in_channels=1)
    return plain.classifier("resnet50", in_channels=3, num_classes=NUM_CLASSES)


def run_plain(arm: Arm, spec: dict, train_batches: TimedBatches, infer_batches) -> dict:
    """A hand-written training loop, then inference, with the same network, data and settings."""
    device = spec["device"]
    torch.backends.cudnn.benchmark = spec["cudnn_benchmark"]
    model = plain_model(arm.model)
    layout = plain.memory_format(arm.layout)
    model.net.to(device, memory_format=layout).train()
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    scaler = torch.amp.GradScaler(device) if arm.precision == "16-mixed" else None
    timer = step_timer(spec, spec["steps"])
    for batch in train_batches:
        image = batch["image"].to(device, non_blocking=True).contiguous(memory_format=layout)
        target = batch[model.target].to(device, non_blocking=True)
        timer.start(len(image))
        plain.train_step(model, optimizer, image, target, arm.precision, scaler)
        timer.end()
        if timer.done:
            break
    result = {"train": timer.result(train_batches), "peak_mb": peak_memory_mb(device)}
    if infer_batches is not None:
        result["infer"] = plain_inference(arm, spec, model, infer_batches)
    return result


def plain_inference(arm: Arm, spec: dict, model: plain.Plain, batches) -> dict:
    """Eval mode, ``inference_mode``, autocast: probabilities of every batch."""
    layout = plain.memory_format(arm.layout)
    timer = step_timer(spec, spec["infer_steps"])
    model.net.eval()
    with torch.inference_mode():
        for batch in batches:
            image = batch["image"].contiguous(memory_format=layout)
            timer.start(len(image))
            with plain.autocast(spec["device"], arm.precision):
                model.probabilities(model.net(model.preprocess(image)).float())
            timer.end()
    return timer.result(None)


# --- one arm (in its own process) ----------------------------------------------------------------
def step_timer(spec: dict, steps: int) -> StepTimer:
    """A :class:`StepTimer` with the run's warm-up (steps and time box) and device."""
    return StepTimer(spec["device"], spec["warmup"], steps, spec["warmup_seconds"])


def run_arm(arm: Arm, spec: dict) -> dict:
    """Train (and for memory data, infer) one arm; returns its measures."""
    torch.manual_seed(0)
    device, batch_size = spec["device"], spec["batch_size"]
    started = time.perf_counter()
    if arm.data == "memory":
        channels, target = (1, "mask") if arm.model == "unet" else (3, "label")
        source = plain.random_batches(
            2, batch_size, channels, spec["size"], target, device, NUM_CLASSES
        )
        infer = TimedBatches(source, spec["warmup"] + spec["infer_steps"])
    else:
        source, infer = lung_loader(spec, cache=arm.data == "cached"), None
    setup_s = time.perf_counter() - started
    train = TimedBatches(source, spec["warmup"] + spec["steps"])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = run_plain if arm.loop == "plain" else run_medvision
    return {**run(arm, spec, train, infer), "setup_s": setup_s}


def arm_spec(arm: Arm, args, work: Path) -> dict:
    """Everything a child process needs for ``arm``, as JSON-able values."""
    return {
        "arm": arm._asdict(),
        "device": args.device,
        "size": args.sizes[arm.model],
        "batch_size": args.batch_sizes[arm.model],
        "warmup": args.warmup,
        "warmup_seconds": args.warmup_seconds,
        "steps": args.steps,
        "infer_steps": args.infer_steps,
        "data_dir": str(args.data_dir) if args.data_dir else None,
        "num_workers": args.num_workers,
        "augmentation": args.augmentation,
        "cudnn_benchmark": args.cudnn_benchmark,
        "run_dir": str(work / "runs"),
    }


# --- the matrix and settings ---------------------------------------------------------------------
def arms(args) -> list[Arm]:
    """Memory arms: every model x precision x layout x loop. Data arms: the U-Net at the last
    precision and layout listed, every loop. The loop varies fastest, so pairs run back to back."""
    out = [
        Arm(model, precision, layout, loop, "memory")
        for model in args.models
        for precision in args.precisions
        for layout in args.layouts
        for loop in args.loops
        if "memory" in args.data
    ]
    if "unet" in args.models:
        out += [
            Arm("unet", args.precisions[-1], args.layouts[-1], loop, data)
            for data in args.data
            if data != "memory"
            for loop in args.loops
        ]
    return out


def build_parser():
    """The command line of this benchmark."""
    parser = script_parser(__doc__)
    add = parser.add_argument
    add("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda if present")
    add("--models", type=comma_list(MODELS, "--models"), default=list(MODELS))
    add(
        "--precisions",
        type=comma_list(PRECISIONS, "--precisions"),
        help="default: 32,bf16-mixed on a GPU, 32 on a CPU",
    )
    add("--layouts", type=comma_list(LAYOUTS, "--layouts"), default=list(LAYOUTS))
    add("--loops", type=comma_list(LOOPS, "--loops"), default=["medvision", "plain"])
    add("--data", type=comma_list(DATA, "--data"), default=list(DATA))
    add("--image-size", type=at_least(32), help="both models' side (default 256/224; CPU 64)")
    add("--batch-size", type=at_least(1), help="both models' batch (default 64/256; CPU 8)")
    add("--warmup", type=at_least(0), help="untimed first steps at most (default 10; CPU 2)")
    add(
        "--warmup-seconds",
        type=float,
        default=30.0,
        help="end the warm-up after this many seconds, even before --warmup steps (default 30)",
    )
    add("--steps", type=at_least(1), help="timed steps (default 50; 6 on a CPU)")
    add("--infer-steps", type=at_least(1), help="timed inference steps (default: --steps)")
    add("--rounds", type=at_least(1), default=1, help="repeat the arms in alternation")
    add("--arm-timeout", type=float, default=600.0, help="seconds before an arm is stopped")
    add("--data-dir", type=Path, help="a lung CT folder (default: synthetic)")
    add("--num-slices", type=at_least(10), help="synthetic slices (default: one pass)")
    add("--distinct", type=at_least(1), default=8, help="synthetic phantoms written (linked over)")
    add("--slice-size", type=at_least(32), help="synthetic slices' side (default 2x U-Net's)")
    add("--num-workers", type=at_least(0), help="loader workers (default: medvision's, <= 8)")
    add("--augmentation", default="basic", choices=["none", "basic", "elastic"])
    add("--cudnn-benchmark", action="store_true", help="cudnn.benchmark in every arm (default off)")
    add("--json", type=Path, help="also write the table's rows to this JSON file")
    add("--csv", type=Path, help="also write the table to this CSV file")
    add("--arm", help=argparse.SUPPRESS)  # internal: run one arm, print its RESULT line
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
        sys.exit(
            f"--image-size {args.image_size}: use a multiple of 32 (the U-Net halves it 5 times)"
        )
    if not arms(args):
        sys.exit("No arms: --data cached/uncached runs the U-Net only; add unet to --models.")
    if args.data_dir and not (args.data_dir / "2d_images").is_dir():
        sys.exit(f"--data-dir {args.data_dir}: not a lung CT folder (2d_images/, 2d_masks/).")
    args.sizes = {m: args.image_size or (CPU_SIZE if cpu else FULL_SIZE[m]) for m in MODELS}
    args.batch_sizes = {m: args.batch_size or (CPU_BATCH if cpu else FULL_BATCH[m]) for m in MODELS}
    defaults = CPU_STEPS if cpu else FULL_STEPS
    args.warmup = defaults["warmup"] if args.warmup is None else args.warmup
    args.steps = args.steps or defaults["steps"]
    args.infer_steps = args.infer_steps or args.steps
    if args.num_workers is None:
        from medvision.data.screening import default_num_workers

        args.num_workers = default_num_workers()
    one_pass = (args.warmup + args.steps) * args.batch_sizes["unet"]
    # 80% are train slices; at least 20, so that every split has slices
    args.num_slices = args.num_slices or max(20, math.ceil(one_pass / 0.8) + 2)
    args.slice_size = args.slice_size or 2 * args.sizes["unet"]
    return args


# --- printing ------------------------------------------------------------------------------------
def size_line(args) -> str:
    """First line: the issue's sizes, or exactly what this run reduced."""
    reduced = [
        f"{NAMES[m]} {args.sizes[m]}x{args.sizes[m]} (full {FULL_SIZE[m]})"
        for m in args.models
        if args.sizes[m] < FULL_SIZE[m]
    ]
    reduced += [
        f"{NAMES[m]} batch {args.batch_sizes[m]} (full {FULL_BATCH[m]})"
        for m in args.models
        if args.batch_sizes[m] < FULL_BATCH[m]
    ]
    if args.steps < FULL_STEPS["steps"]:
        reduced.append(f"{args.steps} timed steps (full {FULL_STEPS['steps']})")
    full = ", ".join(
        f"{NAMES[m]} {args.sizes[m]}x{args.sizes[m]} batch {args.batch_sizes[m]}"
        for m in args.models
    )
    return machine.size_line(reduced, args.device, full)


def median(results: list[dict], *keys: str) -> float | None:
    """Median over rounds of ``result[keys[0]][keys[1]]...``; None where no round has it."""
    values = []
    for result in results:
        for key in keys:
            result = result.get(key) if isinstance(result, dict) else None
        if result is not None:
            values.append(result)
    return float(np.median(values)) if values else None


def table_rows(results: dict[Arm, list[dict]], args) -> list[dict]:
    """One row per arm: its settings and the medians over rounds, ratios to the plain arm."""
    plain_runs = {arm.pair(): runs for arm, runs in results.items() if arm.loop == "plain"}
    rows = []
    for arm, runs in results.items():
        row = {**arm._asdict(), "size": args.sizes[arm.model], "batch": args.batch_sizes[arm.model]}
        for kind in ("train", "infer"):
            mine = median(runs, kind, "images_per_s")
            ref = None
            if arm.loop != "plain" and arm.pair() in plain_runs:
                ref = median(plain_runs[arm.pair()], kind, "images_per_s")
            row[f"{kind}_images_per_s"], row[f"{kind}_vs_plain"] = mine, ratio(mine, ref)
        data_wait = median(runs, "train", "data_wait")
        row["data_wait_percent"] = None if data_wait is None else 100 * data_wait
        row["nvml_util_percent"] = median(runs, "train", "nvml_util")
        row["peak_mb"] = median(runs, "peak_mb")
        row["setup_s"], row["arm_s"] = median(runs, "setup_s"), median(runs, "arm_s")
        errors = [run["error"] for run in runs if "error" in run]
        row["error"] = errors[0] if errors else None
        rows.append(row)
    return rows


def print_table(results: dict[Arm, list[dict]], args) -> list[dict]:
    """One row per arm (medians over rounds), with the ratio to the matching plain arm; the
    arms that failed listed below it. Returns the rows (see :func:`table_rows`)."""
    rows = table_rows(results, args)
    table = TABLE if args.device == "cuda" else TABLE.without("NVML util %")
    print(table.markdown(rows))
    for row in rows:
        if row["error"]:
            print(f"\n{NAMES[row['model']]} {row['loop']} {row['data']}: {row['error']}")
    return rows


def print_rounds(results: dict[Arm, list[dict]]) -> None:
    """Training medvision/plain ratio of each pair in each round (arms run back to back)."""
    plain_runs = {arm.pair(): runs for arm, runs in results.items() if arm.loop == "plain"}
    rows = [
        {
            **arm._asdict(),
            "round": index,
            "train vs plain": ratio(*(median([run], "train", "images_per_s") for run in pair)),
        }
        for arm, runs in results.items()
        if arm.loop != "plain" and arm.pair() in plain_runs
        for index, pair in enumerate(zip(runs, plain_runs[arm.pair()], strict=True))
    ]
    print("\n" + ROUNDS.markdown(rows))


def print_header(args, workers_line: str) -> None:
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
    print(workers_line + "\n")


def data_line(args, matrix: list[Arm], work: Path) -> str:
    """Write the synthetic slices the data arms need (unless ``--data-dir``); their line."""
    if not any(arm.data != "memory" for arm in matrix):
        return "Data: memory batches only"
    source = str(args.data_dir)
    if args.data_dir is None:
        started = time.perf_counter()
        args.data_dir = synthetic_lung(
            work / "lung", args.num_slices, args.slice_size, args.distinct
        )
        source = (
            f"synthetic lung CT, {args.num_slices} slices stored at {args.slice_size}x"
            f"{args.slice_size} ({args.distinct} distinct, linked over; written in "
            f"{time.perf_counter() - started:.0f} s)"
        )
    return (
        f"Data arms: {source}; U-Net, precision {args.precisions[-1]}, {args.layouts[-1]}; "
        f"augmentation {args.augmentation}; {args.num_workers} loader workers"
    )


def main(argv=None) -> None:
    """Run every arm in its own process, ``--rounds`` times, and print the tables."""
    args = build_parser().parse_args(argv)
    if args.arm:
        spec = json.loads(args.arm)
        print_result(run_arm(Arm(**spec["arm"]), spec))
        return
    args = resolve(args)
    matrix = arms(args)
    with tempfile.TemporaryDirectory(prefix="medvision_throughput_") as tmp:
        work = Path(tmp)
        workers_line = data_line(args, matrix, work)

        def measure(arm: Arm, _round: int) -> dict:
            spec = arm_spec(arm, args, work)
            return run_arm_child(__file__, spec, args.arm_timeout, keep_going=True)

        rounds = alternate(matrix, measure, args.rounds, progress=True)
    results = {arm: [round_[arm] for round_ in rounds] for arm in matrix}
    print_header(args, workers_line)
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
