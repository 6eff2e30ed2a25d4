"""What the two HAM10000 benchmarks share: their common options, the data check, the command.

``ham10000_segmentation.py`` (the U-Net, scored on held-out lesions) and
``ham10000_classification.py`` (the diagnosis arms) both write into ``docs/ham10000.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness import cli
from harness.machine import REPO

DOCS = REPO / "docs/ham10000.md"
#: options that only print or write docs: left out of the command recorded with a result
PRINT_ONLY = ("--write-docs", "--report", "--reuse-fit")


def add_shared_options(parser: argparse.ArgumentParser, epochs: str, batch: str) -> None:
    """The options both benchmarks take: data, size, loader, reduced training, output.

    Args:
        parser: the script's parser.
        epochs: help text of ``--epochs`` (its default).
        batch: help text of ``--batch-size`` (its default).
    """
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared/data/ham10000")
    parser.add_argument("--epochs", type=int, default=None, help=epochs)
    parser.add_argument("--image-size", type=int, nargs=2, default=[192, 256], metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=None, help=batch)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument(
        "--limit-train-batches",
        type=int,
        default=None,
        help="train on this many batches per epoch (a quick estimate)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: a new temporary folder")
    parser.add_argument(
        "--report",
        action="store_true",
        help="run nothing: print (and with --write-docs write) the table of the finished run "
        "in --out, from its result.json",
    )
    parser.add_argument(
        "--write-docs", action="store_true", help=f"put the table into {DOCS.relative_to(REPO)}"
    )


def prepare(args: argparse.Namespace, prefix: str) -> Path:
    """Check ``--data-dir`` (resolved in place) and return the output folder (created).

    Args:
        args: the parsed options (``data_dir``, ``out``, ``report``, optional ``reuse_fit``).
        prefix: the name prefix of a new temporary output folder.

    Returns:
        ``--out`` resolved, or a new temporary folder.
    """
    args.data_dir = args.data_dir.resolve()
    if not (args.data_dir / "HAM10000_metadata.csv").is_file():
        sys.exit(
            f"{args.data_dir} is not a HAM10000 folder (images/, masks/, HAM10000_metadata.csv)"
        )
    if (args.report or getattr(args, "reuse_fit", False)) and args.out is None:
        sys.exit("--report and --reuse-fit need --out, the folder of a finished run")
    out = (args.out or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


def limit_args(limit_train_batches: int | None) -> list[str]:
    """``--trainer.limit_train_batches`` when a limit is given."""
    if limit_train_batches is None:
        return []
    return [f"--trainer.limit_train_batches={limit_train_batches}"]


def this_command(script: str, arms: list[str] | None = None) -> str:
    """This script's command line as typed, less the options in :data:`PRINT_ONLY`.

    Args:
        script: the script's file name in ``benchmarks/``.
        arms: when given, ``--arms`` and its values are replaced by these (one arm's command).
    """
    return cli.this_command(script, PRINT_ONLY, arms)
