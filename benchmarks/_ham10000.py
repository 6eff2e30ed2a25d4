"""What the two HAM10000 benchmarks share: their options, the data check, the docs page."""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness.cli import script_parser
from harness.machine import DATA, REPO

DOCS = REPO / "docs/ham10000.md"
#: options that only print or write docs: left out of the command recorded with a result
PRINT_ONLY = ("--write-docs", "--report", "--reuse-fit")


def ham_parser(doc: str, epochs: str, batch: str):
    """The options both take (``--epochs`` and ``--batch-size`` default to the config's).

    Args:
        doc: the script's docstring.
        epochs: help of ``--epochs``.
        batch: help of ``--batch-size``.
    """
    parser = script_parser(
        doc, data_dir=DATA / "ham10000", num_workers=2, limit_train_batches=None, out=None
    )
    add = parser.add_argument
    add("--epochs", type=int, help=epochs)
    add("--batch-size", type=int, help=batch)
    add("--image-size", type=int, nargs=2, default=[192, 256], metavar=("H", "W"))
    add("--report", action="store_true", help="run nothing: print the table of the run in --out")
    add("--write-docs", action="store_true", help=f"put the table into {DOCS.relative_to(REPO)}")
    return parser


def prepare(args, prefix: str) -> Path:
    """Check ``--data-dir`` (resolved in place); the output folder (created).

    Args:
        args: the parsed options.
        prefix: the name prefix of a new temporary output folder.
    """
    args.data_dir = args.data_dir.resolve()
    if not (args.data_dir / "HAM10000_metadata.csv").is_file():
        folder = "(images/, masks/, HAM10000_metadata.csv)"
        raise SystemExit(f"{args.data_dir} is not a HAM10000 folder {folder}")
    if (args.report or getattr(args, "reuse_fit", False)) and args.out is None:
        raise SystemExit("--report and --reuse-fit need --out, the folder of a finished run")
    out = (args.out or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


def limit_args(limit: int | None) -> list[str]:
    """``--trainer.limit_train_batches`` when a limit is given."""
    return [] if limit is None else [f"--trainer.limit_train_batches={limit}"]
