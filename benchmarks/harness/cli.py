"""A benchmark's command line: its parser, option types and the command as typed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def script_parser(doc: str) -> argparse.ArgumentParser:
    """A script's parser whose ``--help`` prints ``doc`` (its module docstring) as written.

    Args:
        doc: the script's module docstring.
    """
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def comma_list(choices: Sequence[str], option: str) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated subset of ``choices``.

    Args:
        choices: the allowed values.
        option: the option's name, for the error message.

    Returns:
        The parser of one argument.
    """

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
    """An argparse type: an integer of at least ``minimum``.

    Args:
        minimum: the smallest value allowed.
    """

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated non-negative integers (``0,4,8``).

    Args:
        text: the option's value.
    """
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 0:
        raise ValueError(f"expected comma-separated integers >= 0, got {text!r}")
    return values


def switch_list(text: str) -> list[bool]:
    """An argparse type: a comma-separated subset of ``off,on``.

    Args:
        text: the option's value.
    """
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or set(values) - {"off", "on"}:
        raise ValueError(f"expected off, on or off,on; got {text!r}")
    return [v == "on" for v in values]


def script_command(script: str, argv: Sequence[str]) -> str:
    """``python benchmarks/<script> ARGS`` as typed (arguments with spaces quoted).

    Args:
        script: the script's file name in ``benchmarks/``.
        argv: its arguments.
    """
    return f"python benchmarks/{script} " + " ".join(a if " " not in a else repr(a) for a in argv)


def this_command(script: str, leave_out: Sequence[str] = (), arms: list[str] | None = None) -> str:
    """This process's command line as typed, less the flags in ``leave_out``.

    Args:
        script: the script's file name in ``benchmarks/``.
        leave_out: flags without a value that only print or write docs (``--write-docs``).
        arms: when given, ``--arms`` and its values are replaced by these (one arm's command).

    Returns:
        ``python benchmarks/<script> ...``.
    """
    argv = [a for a in sys.argv[1:] if a not in leave_out]
    if arms is not None:
        if "--arms" in argv:
            start = end = argv.index("--arms")
            while end + 1 < len(argv) and not argv[end + 1].startswith("--"):
                end += 1
            argv[start : end + 1] = []
        argv += ["--arms", *arms]
    return script_command(script, argv)
