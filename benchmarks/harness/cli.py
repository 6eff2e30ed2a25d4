"""A benchmark's command line: its parser with the options several scripts share, option types,
and the command as typed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def comma_list(choices: Sequence[str], option: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated subset of ``choices`` (``option`` names it)."""

    def parse(text: str) -> list[str]:
        values = [value.strip() for value in text.split(",") if value.strip()]
        unknown = [value for value in values if value not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(
                f"{option}: {unknown or text!r} not among {', '.join(choices)}"
            )
        return values

    return parse


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        if int(text) < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return int(text)

    return parse


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated non-negative integers (``0,4,8``)."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 0:
        raise ValueError(f"expected comma-separated integers >= 0, got {text!r}")
    return values


def switch_list(text: str) -> list[bool]:
    """An argparse type: a comma-separated subset of ``off,on``."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or set(values) - {"off", "on"}:
        raise ValueError(f"expected off, on or off,on; got {text!r}")
    return [v == "on" for v in values]


#: options several scripts take: name -> ``add_argument`` keywords (the default is the script's)
SHARED = {
    "data_dir": {"type": Path, "help": "the data folder"},
    "out": {"type": Path, "help": "the output folder"},
    "rounds": {"type": at_least(1), "help": "repeat the arms in alternation"},
    "num_workers": {"type": int, "help": "loader workers"},
    "epochs": {"type": int, "help": "max epochs"},
    "batch_size": {"type": int, "help": "batch size"},
    "limit_train_batches": {"type": int, "help": "train on this many batches per epoch"},
    "csv": {"type": Path, "help": "also write the table to this CSV file"},
    "json": {"type": Path, "help": "also write the table's rows to this JSON file"},
    "write_docs": {"action": "store_true", "help": "put the table into its docs page"},
    "arm": {"help": argparse.SUPPRESS},  # internal: measure one arm, print its RESULT line
}


def script_parser(doc: str, **shared) -> argparse.ArgumentParser:
    """A script's parser, whose ``--help`` prints ``doc`` as written, with the :data:`SHARED`
    options named in ``shared`` and their defaults (``rounds=5``; a flag: ``write_docs=True``)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name, default in shared.items():
        options = dict(SHARED[name])
        if "action" not in options and default is not True:
            options["default"] = default
        parser.add_argument("--" + name.replace("_", "-"), **options)
    return parser


def this_command(script: str, leave_out: Sequence[str] = (), arms: list[str] | None = None) -> str:
    """This process's command line as typed (``python benchmarks/<script> ...``), less the
    flags in ``leave_out``; with ``arms``, its ``--arms`` values replaced by these."""
    argv = [a for a in sys.argv[1:] if a not in leave_out]
    if arms is not None and "--arms" in argv:
        start = end = argv.index("--arms")
        while end + 1 < len(argv) and not argv[end + 1].startswith("--"):
            end += 1
        del argv[start : end + 1]
    argv += ["--arms", *arms] if arms is not None else []
    return f"python benchmarks/{script} " + " ".join(a if " " not in a else repr(a) for a in argv)
