"""Fixed cost per training step: medvision's Trainer against a plain PyTorch loop, tiny network.

    python benchmarks/step_overhead.py
    python benchmarks/step_overhead.py --arms medvision,noguard,nobar,bare,plain --rounds 5

A tiny network on small inputs (timm ``resnet10t`` at 32x32, batch 32, 1 channel, 4 classes,
random batches made once and kept in memory) makes a step cheap, so the costs that every step
pays whatever the model (callbacks, logging, progress bar, host syncs, batch transfer hooks)
show on a CPU as they do on a GPU, where the step itself is fast.

Arms (``--arms``; each trains the same network, optimizer and batches):

- ``medvision``: the Trainer and module that ``medvision.cli.MedVisionCLI`` builds from
  ``configs/resnet18_chestxray.yaml`` with ``model_name: resnet10t``: the callbacks the CLI
  adds (``NonFiniteGuard``, atomic checkpoint IO), the progress bar (on, as in the configs),
  ``LearningRateMonitor``, the CSV logger (``log_every_n_steps: 10``), ``ModelCheckpoint``
  and ``LastCheckpoint``, class weights ``auto``, and the datamodule's batch hooks (its loaders
  are replaced by the in-memory batches). The config's AdamW (lr 1e-3, weight decay 1e-4).
- ``noguard``: the same without ``NonFiniteGuard`` (its wait for the device in every step).
- ``nobar``: the same with ``--trainer.enable_progress_bar=false``.
- ``bare``: neither the guard nor the progress bar.
- ``plain``: a hand-written loop: standardize, forward, weighted cross-entropy,
  ``zero_grad``, ``backward``, ``step``; no Lightning, no host sync.

Each arm runs ``--warmup`` untimed steps, then ``--steps`` timed ones: the clock runs from the
start of step ``warmup`` to the start of step ``warmup + steps`` (with a device sync at both
ends on CUDA), so it holds whole step cycles (the batch fetch, every hook and logger call) and
leaves out start-up, validation and checkpointing at the epoch's end. On a CPU the tables
compare this process's CPU time per step (``--clock cpu``, one torch thread by default): on a
shared machine the wall time swings with the other jobs' load while the CPU time stays put;
the wall times are printed beside them. The arms alternate
within each of ``--rounds`` rounds (the order rotated by one each round). Printed: the
machine, a table per round, a table of medians per arm (ms/step, overhead over the plain
loop in microseconds, throughput ratio arm/plain) and one line beginning ``step overhead:``
for ``medvision`` against ``plain`` (target: throughput ratio >= 0.95).
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

ARMS = ("medvision", "noguard", "nobar", "bare", "plain")
#: what each Lightning arm leaves out of what the CLI builds
DROPS = {
    "medvision": "nothing",
    "noguard": "NonFiniteGuard",
    "nobar": "progress bar",
    "bare": "NonFiniteGuard and progress bar",
    "plain": "Lightning and medvision",
}
CONFIG = REPO / "configs/resnet18_chestxray.yaml"
MODEL = "resnet10t"
NUM_CLASSES, IN_CHANNELS = 4, 1  # what the synthetic chest X-ray folder gives
LR, WEIGHT_DECAY = 1e-3, 1e-4  # the config's AdamW
TARGET = 0.95
CLOCKS = {"cpu": "CPU time of this process", "wall": "wall time"}

#: medians per arm over rounds; overhead and ratio taken per round against ``plain``
TABLE = Table(
    "arm",
    Column("leaves out", "arm", DROPS.get),
    Column("ms/step", "ms", "{:.2f}"),
    Column("overhead vs plain (us/step)", "overhead_us", "{:+.0f}"),
    Column("throughput vs plain", "ratio", "{:.3f}"),
)


def make_batches(count: int, batch_size: int, size: int, device: str) -> list[dict]:
    """``count`` random batches like the chest X-ray loader's, each holding every class.

    Args:
        count: number of batches.
        batch_size: images per batch (at least :data:`NUM_CLASSES`).
        size: image side in pixels.
        device: ``cpu`` or ``cuda``.

    Returns:
        Dicts with ``image`` float32 ``B x 1 x size x size`` in [0, 1], ``label`` int64 ``B``
        in ``0..3``, ``path`` a list of ``B`` file names.
    """
    batches = plain.random_batches(
        count, batch_size, IN_CHANNELS, size, "label", device, NUM_CLASSES
    )
    for index, batch in enumerate(batches):
        batch["path"] = [f"batch{index}/image{i}.png" for i in range(batch_size)]
    return batches


# --- the medvision arms --------------------------------------------------------------------------
def cli_args(arm: str, spec: dict, root: Path) -> list[str]:
    """``MedVisionCLI`` arguments: the config with resnet10t, quick and writing into ``root``."""
    args = [
        "--config",
        str(CONFIG),
        f"--data.init_args.data_dir={spec['data_dir']}",
        "--data.init_args.num_workers=0",
        f"--model.init_args.model_name={MODEL}",
        f"--trainer.accelerator={spec['device']}",
        "--trainer.devices=1",
        f"--trainer.precision={spec['precision']}",
        f"--trainer.max_steps={spec['warmup'] + spec['steps'] + 1}",
        "--trainer.max_epochs=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
    ]
    if arm in ("nobar", "bare"):
        args.append("--trainer.enable_progress_bar=false")
    return args


def run_medvision(arm: str, spec: dict, batches: list[dict], root: Path) -> dict[str, float]:
    """ms/step of a Lightning arm: the CLI's trainer, model and datamodule, in-memory batches."""
    from lightning.pytorch import Callback

    from medvision.cli import MedVisionCLI
    from medvision.training import NonFiniteGuard

    window = Window(spec["warmup"], spec["steps"], spec["device"])

    class StepClock(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if window.at_step_start(batch_idx):
                trainer.should_stop = True

    cli = MedVisionCLI(args=cli_args(arm, spec, root), run=False)
    trainer, datamodule = cli.trainer, cli.datamodule
    if arm in ("noguard", "bare"):
        trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, NonFiniteGuard)]
    trainer.callbacks.insert(0, StepClock())
    train = TimedBatches(batches, spec["warmup"] + spec["steps"] + 1)
    datamodule.train_dataloader = lambda: train  # the datamodule's hooks stay
    datamodule.val_dataloader = lambda: TimedBatches(batches, 1)
    trainer.fit(cli.model, datamodule=datamodule)
    return window.ms_per_step()


# --- the plain loop ------------------------------------------------------------------------------
def run_plain(spec: dict, batches: list[dict]) -> dict[str, float]:
    """ms/step of the harness's plain loop on the same network, optimizer and batches."""
    device = spec["device"]
    torch.manual_seed(42)  # the config's seed_everything
    weight = torch.ones(NUM_CLASSES)  # class weights, as ``auto`` gives
    model = plain.classifier(MODEL, IN_CHANNELS, NUM_CLASSES, class_weight=weight)
    layout = torch.channels_last if device == "cuda" else torch.contiguous_format
    model.net.to(device, memory_format=layout).train()  # medvision's default layout on a GPU
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    window = Window(spec["warmup"], spec["steps"], device)
    for index, batch in enumerate(TimedBatches(batches, spec["warmup"] + spec["steps"] + 1)):
        if window.at_step_start(index):
            break
        image = batch["image"].contiguous(memory_format=layout)
        plain.train_step(model, optimizer, image, batch["label"], spec["precision"])
    return window.ms_per_step()


# --- rounds and tables ---------------------------------------------------------------------------
def run_rounds(args, data_dir: Path, work: Path) -> list[dict[str, dict[str, float]]]:
    """Wall and CPU ms/step of every arm in every round; arms alternate, the order rotating."""
    spec = {
        "device": args.device,
        "precision": args.precision,
        "warmup": args.warmup,
        "steps": args.steps,
        "data_dir": str(data_dir),
    }
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
        row = {"ms": float(np.median([r[arm] for r in rounds]))}
        if "plain" in rounds[0]:
            row["overhead_us"] = float(np.median([1000 * (r[arm] - r["plain"]) for r in rounds]))
            row["ratio"] = float(np.median([r["plain"] / r[arm] for r in rounds]))
        out[arm] = row
    return out


def report(rounds: list[dict[str, float]]) -> str:
    """The round tables, the arm table and the ``step overhead:`` line."""
    arms = list(rounds[0])
    per_round = Table("round", *(Column(f"{arm} ms/step", arm, "{:.2f}") for arm in arms))
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
        verdict = "meets" if mine["ratio"] >= TARGET else "below"
        lines.append(
            f"step overhead: medvision {mine['ms']:.2f} ms/step vs plain {ref['ms']:.2f} "
            f"ms/step: {mine['overhead_us']:+.0f} us/step, throughput ratio {mine['ratio']:.3f} "
            f"({verdict} the target >= {TARGET}; median of {len(rounds)} rounds)"
        )
    return "\n".join(lines)


def build_parser():
    """The command line of this benchmark."""
    parser = script_parser(__doc__)
    add = parser.add_argument
    add("--arms", type=comma_list(ARMS, "--arms"), default=list(ARMS))
    add("--rounds", type=at_least(1), default=5)
    add("--warmup", type=at_least(0), default=10, help="untimed steps per arm")
    add("--steps", type=at_least(1), default=50, help="timed steps per arm")
    add("--batch-size", type=at_least(NUM_CLASSES), default=32)
    add("--image-size", type=at_least(16), default=32)
    add("--distinct-batches", type=at_least(1), default=4, help="batches made, then cycled")
    add("--device", choices=["cpu", "cuda"], default="cpu")
    add("--precision", choices=["32", "bf16-mixed"], default="32")
    add(
        "--clock",
        choices=["cpu", "wall"],
        help="what the tables compare: this process's CPU time per step (default on a CPU: "
        "steady on a shared machine, where wall time swings with the other jobs) or wall time "
        "(default and only choice on a GPU, whose work CPU time does not see)",
    )
    add(
        "--threads",
        type=at_least(1),
        default=1,
        help="torch CPU threads (default 1: on a shared machine, more threads than free cores "
        "make every step wait on the others' barriers and the times swing by seconds)",
    )
    add("--csv", type=Path, help="also write the arm table to this CSV file")
    return parser


def measure(args) -> list:
    """The rounds of every arm, on synthetic data written to a temporary folder."""
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    from medvision.data.synthetic import write_chest_xray

    with tempfile.TemporaryDirectory(prefix="medvision_step_overhead_") as tmp:
        data_dir = Path(tmp) / "chest"  # the datamodule's classes; its images are not read
        write_chest_xray(data_dir, scale=0.25, size=32, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PossibleUserWarning)
            return run_rounds(args, data_dir, Path(tmp))


def main(argv: list[str] | None = None) -> None:
    """Run the rounds and print the machine, the tables and the ``step overhead:`` line."""
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and args.clock == "cpu":
        raise SystemExit("--clock cpu: CPU time does not see the GPU's work; use --clock wall.")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible; use --device cpu.")
    args.clock = args.clock or ("cpu" if args.device == "cpu" else "wall")
    loggers = {name: logging.getLogger(name) for name in ("lightning", "medvision")}
    saved = (torch.get_num_threads(), {name: lg.level for name, lg in loggers.items()})
    try:  # quiet and on args.threads threads, then as before (tests call main in-process)
        torch.set_num_threads(args.threads)
        loggers["lightning"].setLevel(logging.ERROR)
        loggers["medvision"].setLevel(logging.WARNING)
        rounds = measure(args)
    finally:
        torch.set_num_threads(saved[0])
        for name, level in saved[1].items():
            loggers[name].setLevel(level)
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
