"""Everyday costs, as whole processes: medvision's start-up and the size of its checkpoints.

    python benchmarks/everyday.py
    python benchmarks/everyday.py --baseline ../medvision-e177d25 --runs 10

Start-up: the wall time of fresh processes of ``medvision --help``, ``medvision fit --help``
and ``python -c "import medvision"`` (``--commands``), ``--warmup`` untimed runs then
``--runs`` timed ones, alternating; median, min and max. Checkpoints: the ``best.ckpt`` and
``last.ckpt`` of a 2-batch quickstart fit against the bytes of their ``state_dict`` tensors
(``--no-checkpoint`` skips it). ``--baseline PATH`` measures a second checkout in the same run
(its folder, ``PYTHONPATH`` set to it), alternating, and adds this checkout's ratio to it.
``--write-docs`` puts the tables into docs/performance.md. Run it on a quiet machine.
"""

from __future__ import annotations

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
from harness.tables import Column, Table, publish

DOCS = REPO / "docs/performance.md"
MARKERS = "<!-- everyday:start -->", "<!-- everyday:end -->"
#: what is timed: short name -> (title, the command; ``medvision``: the console script)
COMMANDS = {
    "help": ("medvision --help", ["medvision", "--help"]),
    "fit-help": ("medvision fit --help", ["medvision", "fit", "--help"]),
    "import": ('python -c "import medvision"', ["python", "-c", "import medvision"]),
}
QUICKSTART = ["fit", "--config", "configs/quickstart.yaml", "--trainer.max_epochs=1"]
QUICKSTART += ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2"]
QUICKSTART += ["--trainer.enable_progress_bar=false"]
SPREAD = [Column(f"{key} (s)", key, "{:.2f}") for key in ("median", "min", "max")]
TIMES = Table("command", "checkout", *SPREAD, Column("vs baseline", "vs_baseline", "{:.3f}"))
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


def command_line(program: str, *rest: str) -> list[str]:
    """``medvision`` as the console script beside this interpreter (as users start it)."""
    script = Path(sys.executable).parent / "medvision"
    if program == "medvision" and not script.is_file():
        sys.exit(f"no medvision console script at {script}: pip install -e . in this venv")
    return [str(script) if program == "medvision" else sys.executable, *rest]


def timed_run(cmd: list[str], checkout: Path) -> float:
    """Seconds from start to exit of ``cmd`` run from ``checkout`` with it on ``PYTHONPATH``."""
    start = time.perf_counter()
    env = checkout_env(checkout)
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        why = f"(exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        sys.exit(f"{' '.join(cmd)} in {checkout} failed {why}")
    return time.perf_counter() - start


def check_imports(checkouts: dict[str, Path]) -> None:
    """Stop unless ``PYTHONPATH=<checkout>`` makes Python import that checkout's medvision."""
    for checkout in checkouts.values():
        code = [sys.executable, "-c", "import medvision; print(medvision.__file__)"]
        env = checkout_env(checkout)
        proc = subprocess.run(code, cwd=checkout, env=env, capture_output=True, text=True)
        found = Path(proc.stdout.strip() or ".").resolve()
        if proc.returncode != 0 or checkout.resolve() not in found.parents:
            sys.exit(
                f"PYTHONPATH={checkout} imports medvision from {found} ({proc.stderr[-500:]}); "
                "give the root of a medvision checkout"
            )


def time_commands(checkouts: dict[str, Path], commands: list[str], args) -> list[dict]:
    """Every command (title) in every checkout: ``--warmup`` untimed, ``--runs`` timed runs."""
    lines = {title: command_line(*cmd) for title, cmd in COMMANDS.values() if title in commands}
    arms = [(title, label) for title in commands for label in checkouts]

    def run(arm: tuple[str, str], _index: int) -> float:
        return timed_run(lines[arm[0]], checkouts[arm[1]])

    alternate(arms, run, args.warmup, rotate=True)
    rounds = alternate(arms, run, args.runs, rotate=True)
    spreads = {arm: Spread.of(r[arm] for r in rounds)._asdict() for arm in arms}
    rows = [{"command": arm[0], "checkout": arm[1], **spread} for arm, spread in spreads.items()]
    return with_ratios(rows, "median", "command")


def with_ratios(rows: list[dict], key: str, same: str) -> list[dict]:
    """Each ``this`` row's ``key`` over the ``baseline`` row's with the same ``same`` field."""
    baseline = {r[same]: r[key] for r in rows if r["checkout"] == "baseline"}
    for row in rows:
        if row["checkout"] == "this":
            row["vs_baseline"] = ratio(row[key], baseline.get(row[same]))
    return rows


def tensor_bytes(path: Path) -> int:
    """Bytes of the tensors of a Lightning checkpoint's ``state_dict`` (numel x element size)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["state_dict"]
    return sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t))


def checkpoint_rows(label: str, checkout: Path, work: Path) -> list[dict]:
    """Fit the quickstart in ``checkout`` into ``work``; its two checkpoints weighed."""
    run_dir, log = work / label / "run", work / f"{label}_fit.log"
    cmd = command_line("medvision", *QUICKSTART, f"--trainer.default_root_dir={run_dir}")
    cmd.append(f"--data.init_args.data_dir={work / label / 'data'}")
    with open(log, "w") as handle:
        env = checkout_env(checkout)
        proc = subprocess.run(cmd, cwd=checkout, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"the quickstart fit in {checkout} failed (exit {proc.returncode}), see {log}")
    rows = []
    for name in ("best.ckpt", "last.ckpt"):
        found = sorted(run_dir.rglob(name))
        if len(found) != 1:
            sys.exit(f"{run_dir}: expected one {name} after the quickstart fit, found {found}")
        # weighed in a child with the checkout's medvision, in case the checkpoint pickles it
        weights = run_arm_child(__file__, {"arm": str(found[0])}, env=checkout_env(checkout))
        size = found[0].stat().st_size
        rows.append({"checkout": label, "file": name, "size_mb": size / 2**20})
        rows[-1] |= {"tensors_mb": weights["bytes"] / 2**20, "ratio": size / weights["bytes"]}
    return rows


def build_parser():
    """The command line of this benchmark."""
    parser = script_parser(__doc__, csv=None, write_docs=True, arm=True)
    add = parser.add_argument
    add("--baseline", type=Path, help="a second checkout to measure in the same run")
    add("--runs", type=at_least(1), default=10, help="timed runs of each command")
    add("--warmup", type=at_least(0), default=1, help="untimed runs of each command first")
    names = tuple(COMMANDS)
    add("--commands", type=comma_list(names, "--commands"), default=list(names), help="a subset")
    add("--no-checkpoint", action="store_true", help="skip the quickstart fit")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Time the commands, weigh the checkpoints, print the tables."""
    args = build_parser().parse_args(argv)
    if args.arm:  # the tensor bytes of one checkpoint
        return print_result({"bytes": tensor_bytes(Path(json.loads(args.arm)["arm"]))})
    checkouts = {"this": REPO}
    if args.baseline is not None:
        if not (args.baseline / "medvision").is_dir():
            sys.exit(f"--baseline {args.baseline}: not a medvision checkout (no medvision/)")
        checkouts["baseline"] = args.baseline.resolve()
    check_imports(checkouts)
    times = time_commands(checkouts, [COMMANDS[c][0] for c in args.commands], args)
    sizes = []
    if not args.no_checkpoint:
        with tempfile.TemporaryDirectory(prefix="medvision_everyday_") as tmp:
            for label, checkout in checkouts.items():
                sizes += checkpoint_rows(label, checkout, Path(tmp))
        with_ratios(sizes, "size_mb", "file")
    drop = () if args.baseline else ("vs baseline",)
    named = "; ".join(f"{label}: {code_version(path)}" for label, path in checkouts.items())
    header = (
        f"```\nMachine: {machine_line()}\nCheckouts: {named}\nStart-up: wall time of whole "
        f"processes, {args.warmup} untimed + {args.runs} timed runs of each command, commands "
        "and checkouts alternating\n```"
    )
    tables = [TIMES.without(*drop).markdown(times)]
    tables += [SIZES.without(*drop).markdown(sizes)] if sizes else []
    command = this_command("everyday.py", leave_out=("--write-docs",))
    publish("\n\n".join([header, *tables]), DOCS if args.write_docs else None, MARKERS, command)
    if args.csv:
        TIMES.write_csv(args.csv, times)


if __name__ == "__main__":
    main()
