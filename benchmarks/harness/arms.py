"""Arms in alternating rounds, in-process or each in its own process, and their ratios.

An arm is one thing measured: medvision's loop or the plain PyTorch loop on the same model and
data, one checkout or another, one writer or another. Arms that are compared run back to back
in each round, so that the slow drifts of a shared machine's speed hit them alike; a ratio is
taken between arms of the same run, never against a figure from another run.
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

#: the prefix of the one line a child process prints its result on (JSON after it)
RESULT = "RESULT "


def alternate(
    arms: Sequence[Hashable],
    measure: Callable[[Hashable, int], object],
    rounds: int = 1,
    rotate: bool = False,
    progress: bool = False,
) -> list[dict]:
    """Measure every arm once per round, the arms back to back.

    Args:
        arms: the arms, in the order of the table (names, tuples, ...).
        measure: ``measure(arm, round_index)``: the arm's result in that round.
        rounds: how many rounds.
        rotate: start round ``r`` at arm ``r`` (modulo their number), so that no arm is
            always first.
        progress: print ``round R ARM: RESULT`` to stderr after each arm.

    Returns:
        One dict per round: ``{arm: result}`` in the order of ``arms``.
    """
    arms = list(arms)
    out = []
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
    """``value / reference``, or None when either is missing or the reference is 0.

    Args:
        value: the arm's figure (images/s, seconds).
        reference: the reference arm's figure from the same run.
    """
    if value is None or not reference:
        return None
    return value / reference


class Spread(NamedTuple):
    """Median, minimum and maximum of repeated measures.

    Args:
        median: the median.
        min: the smallest value.
        max: the largest value.
    """

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread | None:
        """The spread of ``values`` (Nones left out); None when no value is left.

        Args:
            values: the measures.
        """
        kept = [float(v) for v in values if v is not None]
        if not kept:
            return None
        return cls(float(np.median(kept)), min(kept), max(kept))


# --- arms in child processes ---------------------------------------------------------------------
class ChildFailed(SystemExit):
    """A child process failed or printed no result; uncaught, it ends the script with its
    message (a ``SystemExit``), and a script that goes on without that child catches it."""


def print_result(result: dict) -> None:
    """Print a child's result as its :data:`RESULT` line (read by :func:`child_result`).

    Args:
        result: JSON-able values.
    """
    print(RESULT + json.dumps(result), flush=True)


def child_result(
    cmd: list[str],
    what: str,
    timeout: float | None = None,
    env: dict | None = None,
    cwd: Path | None = None,
) -> dict:
    """Run a child process and return the JSON of its last :data:`RESULT` line.

    Args:
        cmd: the command.
        what: what it runs, for the error message (e.g. ``arm plain``).
        timeout: seconds before the child is stopped (None: no limit).
        env: its environment (default: this process's).
        cwd: its working folder (default: this process's).

    Returns:
        The decoded result.

    Raises:
        ChildFailed: with the child's stderr tail when it fails or prints no result.
        subprocess.TimeoutExpired: when it runs past ``timeout``.
    """
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise ChildFailed(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def run_arm_child(
    script: str | Path,
    spec: dict,
    timeout: float | None = None,
    keep_going: bool = False,
    env: dict | None = None,
) -> dict:
    """One arm in a fresh Python process (its own peak memory): ``script --arm SPEC``.

    The script's ``main`` sees ``--arm`` (a hidden option holding ``spec`` as JSON), measures
    that one arm and prints its result with :func:`print_result`.

    Args:
        script: the benchmark script (its ``__file__``).
        spec: everything the arm needs, JSON-able; ``spec["arm"]`` names it in messages.
        timeout: seconds before the child is stopped (None: no limit).
        keep_going: on failure or timeout, return ``{"error": why}`` instead of stopping.
        env: the child's environment (default: this process's).

    Returns:
        The child's result, with ``arm_s``: the process's wall time in seconds.

    Raises:
        ChildFailed: when the child fails and ``keep_going`` is False.
    """
    cmd = [sys.executable, str(Path(script).resolve()), "--arm", json.dumps(spec)]
    started = time.perf_counter()
    try:
        result = child_result(cmd, f"arm {spec.get('arm')}", timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        if not keep_going:
            raise
        result = {"error": f"stopped after {timeout:.0f} s (--arm-timeout)"}
    except ChildFailed as failure:
        if not keep_going:
            raise
        result = {"error": str(failure.code)[-2000:]}
    return {**result, "arm_s": time.perf_counter() - started}
