"""The README's test command, timed: how long a user waits for ``pytest``, against a baseline.

    python benchmarks/suite_time.py
    python benchmarks/suite_time.py --baseline ../medvision-e177d25 --write-docs

Runs, one after the other, each as a whole ``pytest -q -p no:cacheprovider`` process with
``PYTHONPATH`` set to its checkout: the baseline's whole suite in the baseline (``--baseline``),
then in this checkout the test files that the baseline also has (the same files, today's
version of them: the "today's tests" row), then this checkout's whole suite. Each row has the
counts pytest printed, the wall time and the CPU time of the process and its children, and
this checkout's wall time over the baseline's. A failed test stops nothing but shows in its
row. Run it on a quiet machine: it takes about as long as the suites do.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from harness.arms import ratio
from harness.cli import script_parser, this_command
from harness.machine import REPO, code_version, machine_line
from harness.tables import Column, Table, publish

DOCS = REPO / "docs/performance.md"
MARKERS = "<!-- suite:start -->", "<!-- suite:end -->"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
COUNTED = ("passed", "skipped", "failed", "errors")
TABLE = Table(
    "checkout",
    "tests run",
    *(Column(word) for word in COUNTED),
    Column("wall (min)", "wall_min", "{:.1f}"),
    Column("CPU (min)", "cpu_min", "{:.1f}"),
    Column("wall vs baseline", "vs_baseline", "{:.2f}"),
)


def counts(output: str) -> dict[str, int]:
    """The counts of pytest's last summary line (``3 passed, 1 skipped in 9.1s``)."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    if not lines:
        sys.exit(f"pytest printed no summary line:\n{output[-2000:]}")
    found = dict((word, int(n)) for n, word in re.findall(r"(\d+) (\w+)", lines[-1]))
    found["errors"] = found.pop("error", found.get("errors", 0))
    return {word: found.get(word, 0) for word in COUNTED}


def timed_pytest(checkout: Path, files: list[str]) -> dict:
    """Wall and CPU minutes and the counts of ``pytest FILES`` run in ``checkout``."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([*PYTEST, *files], cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**counts(proc.stdout + proc.stderr), "wall_min": wall / 60, "cpu_min": cpu / 60}


def test_files(checkout: Path) -> set[str]:
    """The ``tests/test_*.py`` files of a checkout, relative to it."""
    return {str(p.relative_to(checkout)) for p in (checkout / "tests").glob("test_*.py")}


def build_parser():
    """The command line of this benchmark."""
    parser = script_parser(__doc__, write_docs=True)
    parser.add_argument("--baseline", type=Path, help="a second checkout whose suite is timed")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Time the suites, print the table (``--write-docs``: into docs/performance.md)."""
    args = build_parser().parse_args(argv)
    rows = []
    if args.baseline is not None:
        baseline = args.baseline.resolve()
        if not (baseline / "medvision").is_dir() or not test_files(baseline):
            sys.exit(f"--baseline {args.baseline}: not a medvision checkout with tests/")
        rows.append({"checkout": "baseline", "tests run": "its whole suite"})
        rows[-1] |= timed_pytest(baseline, [])
        shared = sorted(test_files(baseline) & test_files(REPO))
        rows.append({"checkout": "this", "tests run": f"the baseline's {len(shared)} test files"})
        rows[-1] |= timed_pytest(REPO, shared)
    rows.append({"checkout": "this", "tests run": "its whole suite"} | timed_pytest(REPO, []))
    for row in rows[1:] if args.baseline else []:
        row["vs_baseline"] = ratio(row["wall_min"], rows[0]["wall_min"])
    names = f"this: {code_version(REPO)}"
    names += f"; baseline: {code_version(baseline)}" if args.baseline else ""
    header = f"```\nMachine: {machine_line()}\nCheckouts: {names}\n```"
    table = TABLE.without(*(() if args.baseline else ("wall vs baseline",))).markdown(rows)
    command = this_command("suite_time.py", leave_out=("--write-docs",))
    publish(f"{header}\n\n{table}", DOCS if args.write_docs else None, MARKERS, command)


if __name__ == "__main__":
    main()
