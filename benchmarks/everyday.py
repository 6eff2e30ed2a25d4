"""Everyday costs, as whole processes: medvision's start-up and the size of its checkpoints.

    python benchmarks/everyday.py
    python benchmarks/everyday.py --baseline /work/baseline --runs 10

1. **Start-up.** The wall time, from start to exit, of fresh processes of
   ``medvision --help``, ``medvision fit --help`` and ``python -c "import medvision"``
   (``--commands``): ``--warmup`` untimed runs of each, then ``--runs`` timed ones, the
   commands in alternation (the order rotated by one each run); median, min and max.
2. **Checkpoint size.** ``medvision fit --config configs/quickstart.yaml`` for 1 epoch of 2
   training and 2 validation batches, into a temporary folder (its synthetic slices too); the
   sizes of the ``best.ckpt`` and ``last.ckpt`` it leaves, against the bytes of the tensors of
   the checkpoint's ``state_dict`` (the weights), as a ratio. ``--no-checkpoint`` skips it.

``--baseline PATH`` measures a second checkout in the same run: every command runs from that
checkout's folder with ``PYTHONPATH`` set to it (its ``medvision`` and its
``configs/quickstart.yaml``), the two checkouts alternating run by run, and the tables add
this checkout's median over the baseline's. The ``medvision`` command is the console script
beside this interpreter. Printed: the machine, the checkouts and the two tables;
``--write-docs`` puts them into docs/performance.md. Run it on a quiet machine: these are wall
times of whole processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.arms import Spread, alternate, print_result, ratio, run_arm_child
from harness.cli import at_least, comma_list, script_parser, this_command
from harness.machine import REPO, code_version, machine_line
from harness.tables import Column, Table, write_marked

DOCS = REPO / "docs/performance.md"
MARKERS = ("<!-- everyday:start -->", "<!-- everyday:end -->")
#: what is timed: name -> the command (``medvision``: the console script)
COMMANDS = {
    "medvision --help": ["medvision", "--help"],
    "medvision fit --help": ["medvision", "fit", "--help"],
    'python -c "import medvision"': ["python", "-c", "import medvision"],
}
SHORT = dict(zip(("help", "fit-help", "import"), COMMANDS, strict=True))
#: the quickstart fit whose checkpoints are weighed (paths added per run)
QUICKSTART = [
    "fit",
    "--config",
    "configs/quickstart.yaml",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
]

TIMES = Table(
    "command",
    "checkout",
    Column("median (s)", "median", "{:.2f}"),
    Column("min (s)", "min", "{:.2f}"),
    Column("max (s)", "max", "{:.2f}"),
    Column("vs baseline", "vs_baseline", "{:.3f}"),
)
SIZES = Table(
    "checkout",
    "file",
    Column("size (MB)", "size_mb", "{:.1f}"),
    Column("state_dict tensors (MB)", "tensors_mb", "{:.1f}"),
    Column("size / tensors", "ratio", "{:.2f}"),
    Column("vs baseline", "vs_baseline", "{:.3f}"),
)


def checkout_env(checkout: Path) -> dict:
    """This process's environment with ``PYTHONPATH`` set to ``checkout``."""
    return {**os.environ, "PYTHONPATH": str(checkout)}


def medvision_script() -> str:
    """The ``medvision`` console script beside this interpreter (as users start it)."""
    script = Path(sys.executable).parent / "medvision"
    if not script.is_file():
        sys.exit(f"no medvision console script at {script}: pip install -e . in this venv")
    return str(script)


def command_line(name: str) -> list[str]:
    """The argv of a timed command (see :data:`COMMANDS`)."""
    program, *rest = COMMANDS[name]
    return [medvision_script() if program == "medvision" else sys.executable, *rest]


def timed_run(cmd: list[str], checkout: Path) -> float:
    """Seconds from start to exit of ``cmd`` run from ``checkout`` with it on ``PYTHONPATH``.

    Raises:
        SystemExit: naming the command and checkout when it exits non-zero.
    """
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=checkout, env=checkout_env(checkout), capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(
            f"{' '.join(cmd)} in {checkout} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return seconds


def check_imports(checkouts: dict[str, Path]) -> None:
    """Stop unless ``PYTHONPATH=<checkout>`` makes Python import that checkout's medvision."""
    for checkout in checkouts.values():
        proc = subprocess.run(
            [sys.executable, "-c", "import medvision; print(medvision.__file__)"],
            cwd=checkout,
            env=checkout_env(checkout),
            capture_output=True,
            text=True,
        )
        found = Path(proc.stdout.strip() or ".").resolve()
        if proc.returncode != 0 or checkout.resolve() not in found.parents:
            sys.exit(
                f"PYTHONPATH={checkout} imports medvision from {found} ({proc.stderr[-500:]}); "
                "give the root of a medvision checkout"
            )


def time_commands(checkouts: dict[str, Path], commands: list[str], args) -> list[dict]:
    """Every command in every checkout: ``--warmup`` untimed runs, then ``--runs`` timed ones."""
    arms = [(name, label) for name in commands for label in checkouts]

    def run(arm: tuple[str, str], _index: int) -> float:
        name, label = arm
        return timed_run(command_line(name), checkouts[label])

    alternate(arms, run, args.warmup, rotate=True)
    rounds = alternate(arms, run, args.runs, rotate=True)
    rows = []
    for name, label in arms:
        spread = Spread.of(r[(name, label)] for r in rounds)
        rows.append({"command": name, "checkout": label, **spread._asdict()})
    return with_ratios(rows, "median", ("command",))


def with_ratios(rows: list[dict], key: str, same: tuple[str, ...]) -> list[dict]:
    """Each ``this`` row's ``key`` over the ``baseline`` row's with the same ``same`` fields."""
    baseline = {tuple(r[f] for f in same): r[key] for r in rows if r["checkout"] == "baseline"}
    for row in rows:
        if row["checkout"] == "this":
            row["vs_baseline"] = ratio(row[key], baseline.get(tuple(row[f] for f in same)))
    return rows


def tensor_bytes(path: Path) -> int:
    """Bytes of the tensors of a Lightning checkpoint's ``state_dict`` (numel x element size).

    Args:
        path: a ``.ckpt`` file.
    """
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["state_dict"]
    return sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t))


def checkpoint_rows(label: str, checkout: Path, work: Path) -> list[dict]:
    """Fit the quickstart in ``checkout`` into ``work``; its two checkpoints weighed."""
    run_dir, log = work / label / "run", work / f"{label}_fit.log"
    data = f"--data.init_args.data_dir={work / label / 'data'}"
    cmd = [medvision_script(), *QUICKSTART, data, f"--trainer.default_root_dir={run_dir}"]
    with open(log, "w") as handle:
        proc = subprocess.run(
            cmd, cwd=checkout, env=checkout_env(checkout), stdout=handle, stderr=subprocess.STDOUT
        )
    if proc.returncode != 0:
        sys.exit(f"the quickstart fit in {checkout} failed (exit {proc.returncode}), see {log}")
    rows = []
    for name in ("best.ckpt", "last.ckpt"):
        found = sorted(run_dir.rglob(name))
        if len(found) != 1:
            sys.exit(f"{run_dir}: expected one {name} after the quickstart fit, found {found}")
        # loaded in a child with the checkout's medvision, in case the checkpoint pickles it
        weights = run_arm_child(__file__, {"arm": str(found[0])}, env=checkout_env(checkout))
        size = found[0].stat().st_size
        rows.append({"checkout": label, "file": name, "size_mb": size / 2**20})
        rows[-1] |= {"tensors_mb": weights["bytes"] / 2**20, "ratio": size / weights["bytes"]}
    return rows


def header(checkouts: dict[str, Path], args) -> str:
    """The machine, the checkouts and how the commands were run."""
    named = "; ".join(
        f"{label}: {path} ({code_version(path)})" for label, path in checkouts.items()
    )
    return (
        f"Machine: {machine_line()}\n"
        f"Checkouts: {named}\n"
        f"Start-up: wall time of whole processes, {args.warmup} untimed + {args.runs} timed "
        "runs of each command, commands and checkouts alternating"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark."""
    parser = script_parser(__doc__)
    add = parser.add_argument
    add("--baseline", type=Path, help="a second checkout to measure in the same run")
    add("--runs", type=at_least(1), default=10, help="timed runs of each command")
    add("--warmup", type=at_least(0), default=1, help="untimed runs of each command first")
    add(
        "--commands",
        type=comma_list(tuple(SHORT), "--commands"),
        default=list(SHORT),
        help=f"a subset of {','.join(SHORT)}",
    )
    add("--no-checkpoint", action="store_true", help="skip the quickstart fit")
    add("--csv", type=Path, help="also write the start-up table to this CSV file")
    add("--write-docs", action="store_true", help=f"put the tables into {DOCS.name}")
    add("--arm", help=argparse.SUPPRESS)  # internal: the tensor bytes of one checkpoint
    return parser


def main(argv: list[str] | None = None) -> None:
    """Time the commands, weigh the checkpoints, print the tables."""
    args = build_parser().parse_args(argv)
    if args.arm:
        return print_result({"bytes": tensor_bytes(Path(json.loads(args.arm)["arm"]))})
    checkouts = {"this": REPO}
    if args.baseline is not None:
        if not (args.baseline / "medvision").is_dir():
            sys.exit(f"--baseline {args.baseline}: not a medvision checkout (no medvision/)")
        checkouts["baseline"] = args.baseline.resolve()
    check_imports(checkouts)
    times = time_commands(checkouts, [SHORT[c] for c in args.commands], args)
    sizes = []
    if not args.no_checkpoint:
        with tempfile.TemporaryDirectory(prefix="medvision_everyday_") as tmp:
            for label, checkout in checkouts.items():
                sizes += checkpoint_rows(label, checkout, Path(tmp))
        with_ratios(sizes, "size_mb", ("file",))
    drop = () if args.baseline else ("vs baseline",)
    tables = [TIMES.without(*drop).markdown(times)]
    tables += [SIZES.without(*drop).markdown(sizes)] if sizes else []
    text = "\n\n".join([f"```\n{header(checkouts, args)}\n```", *tables])
    print(text)
    if args.csv:
        TIMES.write_csv(args.csv, times)
    if args.write_docs:
        command = this_command("everyday.py", leave_out=("--write-docs",))
        write_marked(DOCS, *MARKERS, f"```\n{command}\n```\n\n{text}")
        print(f"Written to {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    main()
