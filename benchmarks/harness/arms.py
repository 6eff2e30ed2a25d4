"""Arms in alternating rounds, in-process or each in its own process; ratios and spreads.

Arms that are compared run back to back in each round, so that the slow drifts of a shared
machine's speed hit them alike; a ratio is taken between arms of the same run, never against
a figure from another run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

RESULT = "RESULT "  # the prefix of the line a child process prints its result on, as JSON


def alternate(
    arms: Sequence[Hashable], measure: Callable, rounds=1, rotate=False, progress=False
) -> list[dict]:
    """``measure(arm, round_index)`` of every arm in each of ``rounds`` rounds, back to back.

    ``rotate`` starts round ``r`` at arm ``r`` (no arm always first); ``progress`` prints each
    result to stderr. Returns one ``{arm: result}`` per round, in the order of ``arms``.
    """
    arms, out = list(arms), []
    for index in range(rounds):
        shift = index % len(arms) if rotate else 0
        results = {}
        for arm in arms[shift:] + arms[:shift]:
            results[arm] = measure(arm, index)
            if progress:
                text = json.dumps(results[arm], default=str)
                print(f"round {index} {arm}: {text}", file=sys.stderr, flush=True)
        out.append({arm: results[arm] for arm in arms})
    return out


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, None when either is missing or the reference is 0."""
    return None if value is None or not reference else value / reference


class Spread(NamedTuple):
    """Median, minimum and maximum of repeated measures."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread | None:
        """The spread of ``values`` (Nones left out); None when none is left."""
        kept = [float(v) for v in values if v is not None]
        return cls(float(np.median(kept)), min(kept), max(kept)) if kept else None


class ChildFailed(SystemExit):
    """A child process failed or printed no result (uncaught, it ends the script)."""


def print_result(result: dict) -> None:
    """Print a child's result as its :data:`RESULT` line."""
    print(RESULT + json.dumps(result), flush=True)


def child_result(cmd: list[str], what: str, timeout: float | None = None, env=None) -> dict:
    """Run ``cmd``; the JSON of its last :data:`RESULT` line. Raises :class:`ChildFailed`
    (naming ``what``, with the stderr tail) or ``subprocess.TimeoutExpired``."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise ChildFailed(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def run_arm_child(script, spec: dict, timeout=None, keep_going=False, env=None) -> dict:
    """One arm in a fresh process (its own peak memory): ``script --arm SPEC``, whose ``main``
    measures the arm ``spec`` (JSON) names and prints :func:`print_result`.

    Returns its result with ``arm_s``, the process's wall time; with ``keep_going`` a failure
    or a stop after ``timeout`` seconds gives ``{"error": why}`` instead of ending the script.
    """
    cmd = [sys.executable, str(Path(script).resolve()), "--arm", json.dumps(spec, default=str)]
    started = time.perf_counter()
    try:
        result = child_result(cmd, f"arm {spec.get('arm')}", timeout, env)
    except subprocess.TimeoutExpired:
        if not keep_going:
            raise
        result = {"error": f"stopped after {timeout:.0f} s (--arm-timeout)"}
    except ChildFailed as failure:
        if not keep_going:
            raise
        result = {"error": str(failure.code)[-2000:]}
    return {**result, "arm_s": time.perf_counter() - started}
