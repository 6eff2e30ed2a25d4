"""Fixed cost per training step: medvision's Trainer against a plain PyTorch loop, tiny network.

    python benchmarks/step_overhead.py
    python benchmarks/step_overhead.py --arms medvision,noguard,nobar,bare,plain --rounds 5

timm ``resnet10t`` at 32x32, batch 32, 1 channel, 4 classes, on random batches kept in memory:
the step is cheap, so the costs every step pays (callbacks, logging, progress bar, host syncs,
batch hooks) show on a CPU as they would on a GPU. ``medvision``: the Trainer, module and
datamodule hooks MedVisionCLI builds from configs/resnet18_chestxray.yaml with that model;
``noguard``, ``nobar``, ``bare``: the same less NonFiniteGuard, the progress bar, or both;
``plain``: a hand-written loop. After ``--warmup`` steps the clock runs over ``--steps`` whole
step cycles; the arms alternate in each of ``--rounds`` rounds. Printed: ms/step per round,
medians per arm (overhead over plain, throughput ratio), and a ``step overhead:`` line (target:
ratio >= 0.95). On a CPU the tables compare this process's CPU time (steady on a shared machine).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from harness import plain
from harness.arms import alternate
from harness.cli import at_least, comma_list, script_parser
from harness.machine import REPO, machine_line
from harness.tables import Column, Table
from harness.timing import TimedBatches, Window

#: each arm, and what it leaves out of what the CLI builds
ARMS = {
    "medvision": "nothing",
    "noguard": "NonFiniteGuard",
    "nobar": "progress bar",
    "bare": "NonFiniteGuard and progress bar",
    "plain": "Lightning and medvision",
}
CONFIG = REPO / "configs/resnet18_chestxray.yaml"
MODEL, NUM_CLASSES, IN_CHANNELS = "resnet10t", 4, 1  # what the synthetic chest X-rays give
LR, WEIGHT_DECAY, TARGET = 1e-3, 1e-4, 0.95  # the config's AdamW
CLOCKS = {"cpu": "CPU time of this process", "wall": "wall time"}
#: medians per arm over rounds; overhead and ratio taken per round against ``plain``
TABLE = Table(
    "arm",
    Column("leaves out", "arm", ARMS.get),
    Column("ms/step", "ms", "{:.2f}"),
    Column("overhead vs plain (us/step)", "overhead_us", "{:+.0f}"),
    Column("throughput vs plain", "ratio", "{:.3f}"),
)


def make_batches(count: int, batch_size: int, size: int, device: str) -> list[dict]:
    """``count`` random batches like the chest X-ray loader's (each class in each, file names)."""
    batches = plain.random_batches(
        count, batch_size, IN_CHANNELS, size, "label", device, NUM_CLASSES
    )
    for index, batch in enumerate(batches):
        batch["path"] = [f"batch{index}/image{i}.png" for i in range(batch_size)]
    return batches


def run_medvision(arm: str, spec: dict, batches: list[dict], root: Path) -> dict[str, float]:
    """ms/step of a Lightning arm: the CLI's trainer, model and datamodule, in-memory batches."""
    from lightning.pytorch import Callback

    from medvision.cli import MedVisionCLI
    from medvision.training import NonFiniteGuard

    window, steps = Window(spec["warmup"], spec["steps"], spec["device"]), spec["total"]

    class StepClock(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            trainer.should_stop = trainer.should_stop or window.at_step_start(batch_idx)

    args = [
        *("--config", str(CONFIG), f"--data.init_args.data_dir={spec['data_dir']}"),
        *("--data.init_args.num_workers=0", f"--model.init_args.model_name={MODEL}"),
        *(f"--trainer.accelerator={spec['device']}", "--trainer.devices=1"),
        *(f"--trainer.precision={spec['precision']}", f"--trainer.max_steps={steps}"),
        *("--trainer.max_epochs=1", "--trainer.num_sanity_val_steps=0"),
        *("--trainer.enable_model_summary=false", f"--trainer.default_root_dir={root}"),
        f"--trainer.logger.init_args.save_dir={root}",
    ]
    if arm in ("nobar", "bare"):
        args.append("--trainer.enable_progress_bar=false")
    cli = MedVisionCLI(args=args, run=False)
    trainer, datamodule = cli.trainer, cli.datamodule
    if arm in ("noguard", "bare"):
        trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, NonFiniteGuard)]
    trainer.callbacks.insert(0, StepClock())
    datamodule.train_dataloader = lambda: TimedBatches(batches, steps)  # its hooks stay
    datamodule.val_dataloader = lambda: TimedBatches(batches, 1)
    trainer.fit(cli.model, datamodule=datamodule)
    return window.ms_per_step()


def run_plain(spec: dict, batches: list[dict]) -> dict[str, float]:
    """ms/step of the harness's plain loop on the same network, optimizer and batches."""
    device = spec["device"]
    torch.manual_seed(42)  # the config's seed_everything
    model = plain.classifier(MODEL, IN_CHANNELS, NUM_CLASSES, class_weight=torch.ones(NUM_CLASSES))
    layout = torch.channels_last if device == "cuda" else torch.contiguous_format  # medvision's
    model.net.to(device, memory_format=layout).train()
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    window = Window(spec["warmup"], spec["steps"], device)
    for index, batch in enumerate(TimedBatches(batches, spec["total"])):
        if window.at_step_start(index):
            break
        image = batch["image"].contiguous(memory_format=layout)
        plain.train_step(model, optimizer, image, batch["label"], spec["precision"])
    return window.ms_per_step()


def run_rounds(args, data_dir: Path, work: Path) -> list[dict[str, dict[str, float]]]:
    """Wall and CPU ms/step of every arm in every round; arms alternate, the order rotating."""
    spec = {"device": args.device, "precision": args.precision, "data_dir": str(data_dir)}
    spec |= {"warmup": args.warmup, "steps": args.steps, "total": args.warmup + args.steps + 1}
    batches = make_batches(args.distinct_batches, args.batch_size, args.image_size, args.device)

    def measure(arm: str, index: int) -> dict[str, float]:
        if arm == "plain":
            return run_plain(spec, batches)
        return run_medvision(arm, spec, batches, work / f"r{index}_{arm}")

    return alternate(args.arms, measure, args.rounds, rotate=True)


def summarize(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per arm: median ms/step, and against ``plain`` (when it ran) the median over rounds of
    the per-round overhead (microseconds per step) and throughput ratio (plain ms / arm ms)."""
    out = {}
    for arm in rounds[0]:
        out[arm] = {"ms": float(np.median([r[arm] for r in rounds]))}
        if "plain" in rounds[0]:
            overhead = [1000 * (r[arm] - r["plain"]) for r in rounds]
            ratios = [r["plain"] / r[arm] for r in rounds]
            out[arm] |= {
                "overhead_us": float(np.median(overhead)),
                "ratio": float(np.median(ratios)),
            }
    return out


def report(rounds: list[dict[str, float]]) -> str:
    """The round tables, the arm table and the ``step overhead:`` line."""
    per_round = Table("round", *(Column(f"{arm} ms/step", arm, "{:.2f}") for arm in rounds[0]))
    summary = summarize(rounds)
    lines = [
        per_round.markdown({"round": index, **times} for index, times in enumerate(rounds)),
        "",
        TABLE.markdown({"arm": arm, **row} for arm, row in summary.items()),
        "",
        "Medians over rounds; overhead and ratio are per round (arms back to back).",
    ]
    if "plain" in summary and "medvision" in summary:
        mine, ref = summary["medvision"], summary["plain"]
        lines.append(
            f"step overhead: medvision {mine['ms']:.2f} ms/step vs plain {ref['ms']:.2f} "
            f"ms/step: {mine['overhead_us']:+.0f} us/step, throughput ratio {mine['ratio']:.3f} "
            f"({'meets' if mine['ratio'] >= TARGET else 'below'} the target >= {TARGET}; "
            f"median of {len(rounds)} rounds)"
        )
    return "\n".join(lines)


def build_parser():
    """The command line of this benchmark."""
    parser = script_parser(__doc__, rounds=5, csv=None)
    add = parser.add_argument
    add("--arms", type=comma_list(tuple(ARMS), "--arms"), default=list(ARMS))
    add("--warmup", type=at_least(0), default=10, help="untimed steps per arm")
    add("--steps", type=at_least(1), default=50, help="timed steps per arm")
    add("--batch-size", type=at_least(NUM_CLASSES), default=32)
    add("--image-size", type=at_least(16), default=32)
    add("--distinct-batches", type=at_least(1), default=4, help="batches made, then cycled")
    add("--device", choices=["cpu", "cuda"], default="cpu")
    add("--precision", choices=["32", "bf16-mixed"], default="32")
    clock = "what the tables compare (default: cpu on a CPU, wall on a GPU, whose work CPU time "
    add("--clock", choices=["cpu", "wall"], help=clock + "does not see)")
    threads = "torch CPU threads (1: more threads than free cores make the times swing)"
    add("--threads", type=at_least(1), default=1, help=threads)
    return parser


def measure(args) -> list:
    """The rounds of every arm, on synthetic data written to a temporary folder, quietly and on
    ``--threads`` threads (restored after: tests call ``main`` in-process)."""
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    from medvision.data.synthetic import write_chest_xray

    loggers = {name: logging.getLogger(name) for name in ("lightning", "medvision")}
    saved = torch.get_num_threads(), {name: lg.level for name, lg in loggers.items()}
    try:
        torch.set_num_threads(args.threads)
        loggers["lightning"].setLevel(logging.ERROR)
        loggers["medvision"].setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="medvision_step_overhead_") as tmp:
            data_dir = Path(tmp) / "chest"  # the datamodule's classes; its images are not read
            write_chest_xray(data_dir, scale=0.25, size=32, seed=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PossibleUserWarning)
                return run_rounds(args, data_dir, Path(tmp))
    finally:
        torch.set_num_threads(saved[0])
        for name, level in saved[1].items():
            loggers[name].setLevel(level)


def main(argv: list[str] | None = None) -> None:
    """Run the rounds and print the machine, the tables and the ``step overhead:`` line."""
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and args.clock == "cpu":
        raise SystemExit("--clock cpu: CPU time does not see the GPU's work; use --clock wall.")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible; use --device cpu.")
    args.clock = args.clock or ("cpu" if args.device == "cpu" else "wall")
    rounds = measure(args)
    print(f"Machine: {machine_line()}; device used: {args.device}")
    print(
        f"Settings: {MODEL}, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
        f"{IN_CHANNELS} channel, {NUM_CLASSES} classes, AdamW, precision {args.precision}; "
        f"{args.warmup} warm-up + {args.steps} timed steps per arm; {args.rounds} rounds; "
        f"{args.threads} torch thread(s); clock: {CLOCKS[args.clock]}\n"
    )
    timed = [{arm: r[arm][args.clock] for arm in r} for r in rounds]
    print(report(timed))
    other = "wall" if args.clock == "cpu" else "cpu"
    medians = {arm: np.median([r[arm][other] for r in rounds]) for arm in rounds[0]}
    print(
        f"For comparison, {CLOCKS[other]} (median ms/step): "
        + ", ".join(f"{arm} {ms:.2f}" for arm, ms in medians.items())
    )
    if args.csv:
        TABLE.write_csv(args.csv, [{"arm": a, **row} for a, row in summarize(timed).items()])


if __name__ == "__main__":
    main()
