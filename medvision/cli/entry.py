"""The ``medvision`` command's front door: help, version and the choice of command, kept light.

``medvision``, ``medvision --help`` and ``medvision --version`` answer from this module alone,
without importing torch or Lightning (a fraction of a second instead of several seconds). A
command imports what it needs: ``export`` its own parser (:mod:`medvision.cli.export`), the
others the LightningCLI (:mod:`medvision.cli.commands`), which also answers a command's
``--help``.
"""

from __future__ import annotations

import difflib
import logging
import sys

from medvision.cli.usage import COMMANDS, help_text


def _unknown_command(word: str) -> None:
    """One line naming the closest command; exit status 2."""
    from medvision.cli.console import setup_logging

    setup_logging()
    close = difflib.get_close_matches(word, COMMANDS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    logging.getLogger(__name__).error(
        "unknown command %r%s. The commands: %s (medvision --help describes them).",
        word,
        hint,
        ", ".join(COMMANDS),
    )
    raise SystemExit(2)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``medvision`` command; ``main(["fit", "--config", ...])`` in Python.

    ``medvision`` alone prints the help (exit status 2: no command given), ``--help`` prints it
    (status 0), ``--version`` the version; an unknown command ends with one line naming the
    closest one (status 2). ``export`` runs :func:`medvision.cli.export.main`, the other
    commands run :func:`medvision.cli.commands.main`: a configuration or input error ends with
    its one useful line on stderr and exit status 2 (``--debug`` or ``MEDVISION_DEBUG=1``: the
    whole traceback).

    Args:
        args: The command's arguments; ``sys.argv[1:]`` when None.
    """
    args = list(sys.argv[1:] if args is None else args)
    words = [a for a in args if a != "--debug"]
    first = words[0] if words else None
    if first in (None, "-h", "--help"):
        sys.stdout.write(help_text())
        raise SystemExit(0 if first else 2)
    if first == "--version":
        from medvision import __version__

        sys.stdout.write(f"medvision {__version__}\n")
        return
    if first == "export":
        from medvision.cli.export import main as export_main

        rest = list(args)
        rest.remove("export")
        export_main(rest)
        return
    if not first.startswith("-") and first not in COMMANDS:
        _unknown_command(first)
    from medvision.cli.commands import main as run_command

    run_command(args)
