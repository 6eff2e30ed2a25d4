"""What the ``medvision`` commands print: log lines beside progress bars, less noise, short errors.

- :func:`setup_logging` sends log records through ``tqdm.write``, which clears the progress
  bar's line first, so a log line never lands glued to a bar.
- :func:`quiet_lightning` filters, once and centrally, Lightning messages that say nothing to
  a medvision user (the LitLogger advert, a pytree deprecation, the "dirpath has changed"
  warning that every resumed or re-tested run triggers).
- :func:`user_error` turns a configuration error into its one useful line: the innermost
  exception of a chain, without jsonargparse's ``Namespace(...)`` dumps. ``--debug`` (or
  ``MEDVISION_DEBUG=1``) shows the whole traceback instead.
- :func:`parse_error_lines` does the same for a command-line error, and
  :func:`closest_options` names the option a typo was meant to be.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import sys
import warnings
from pathlib import Path

from tqdm import tqdm

from medvision.utils.imports import import_object

#: Lightning log messages (substrings) dropped by :func:`quiet_lightning`.
NOISE_MESSAGES = ("litlogger",)
#: Lightning warnings (regular expressions on the message) ignored by :func:`quiet_lightning`.
NOISE_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The dirpath has changed from",
    r"LightningCLI's args parameter is intended",
)


class TqdmHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` with ``tqdm.write``, so progress bars are redrawn
    below the line instead of swallowing it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # as logging.StreamHandler: a broken log line must not stop a run
            self.handleError(record)


class _Formatter(logging.Formatter):
    """``LEVEL name: message`` for medvision and for warnings; Lightning's notes as they are."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO and not record.name.startswith("medvision"):
            return record.getMessage()
        return super().format(record)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(noise in message for noise in NOISE_MESSAGES)


def setup_logging(level: int = logging.INFO) -> None:
    """Log ``level`` and above to stderr through :class:`TqdmHandler`, one line per record.

    Args:
        level: The lowest level shown.
    """
    handler = TqdmHandler()
    handler.setFormatter(_Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_DropNoise())
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, TqdmHandler)] + [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings too go through the handler, never onto a bar
    for name in ("lightning.pytorch", "lightning.fabric"):  # they may have their own handler
        lightning_logger = logging.getLogger(name)
        if lightning_logger.handlers:
            lightning_logger.handlers = [handler]


def quiet_lightning() -> None:
    """Drop the log messages in :data:`NOISE_MESSAGES` and the warnings in
    :data:`NOISE_WARNINGS`, for the rest of the process."""
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropNoise) for f in handler.filters):
                handler.addFilter(_DropNoise())


def debugging(args: list[str] | None) -> bool:
    """Whether the user asked for whole tracebacks: ``--debug`` or ``MEDVISION_DEBUG=1``.

    Args:
        args: The command's arguments (``sys.argv[1:]`` when None).
    """
    args = sys.argv[1:] if args is None else args
    return "--debug" in args or os.environ.get("MEDVISION_DEBUG", "") not in ("", "0")


_NAMESPACE_DUMP = re.compile(r"\s*Namespace\(.*", re.DOTALL)


def user_error(error: BaseException) -> str:
    """The one useful line of a configuration error: the innermost message of its chain.

    jsonargparse wraps the error a class raised while being built in several layers (with the
    whole parsed ``Namespace``); the innermost exception is the one that says what is wrong.

    Args:
        error: The exception that stopped the command.
    """
    innermost = error
    seen = {id(error)}
    while True:
        cause = innermost.__cause__ or innermost.__context__
        if cause is None or id(cause) in seen:
            break
        seen.add(id(cause))
        innermost = cause
    message = _NAMESPACE_DUMP.sub("", str(innermost)).strip() or type(innermost).__name__
    return message.splitlines()[0] if len(message.splitlines()) == 1 else message


def parse_error_summary(message: str, subcommand: str = "fit") -> str:
    """jsonargparse's multi-line "does not validate" message as one line and its fix.

    Args:
        message: The text of the ``ArgumentError``.
        subcommand: The command given (for the help hint).
    """
    key_match = re.search(r'Parser key "([^"]+)"', message)
    key = key_match.group(1) if key_match else None
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    problem = next(
        (i for i, line in enumerate(lines) if line.startswith("- Problem with given class_path")),
        None,
    )
    if key and problem is not None and problem + 1 < len(lines):
        class_path = re.search(r"'([^']+)'", lines[problem]).group(1)
        short = class_path.rpartition(".")[2]
        detail = lines[problem + 1]
        inner = re.match(r'Parser key "([^"]+)":', detail)
        if inner and problem + 2 < len(lines):  # a bad value of one of the class's options
            return f"--{key}.init_args.{inner.group(1)}: {lines[problem + 2]}"
        return (
            f"--{key}: {detail} by {short}{_closest_init_arg(detail, class_path)}. Its options: "
            f"medvision {subcommand} --{key}.help {short}"
        )
    ambiguous = re.search(r"Multiple subclasses with name (\w+)\. .*?: (.+?)\.?$", message, re.M)
    if key and ambiguous:  # --trainer.logger WandbLogger given in a YAML file
        name, paths = ambiguous.groups()
        return f"--{key}: {name} names several classes ({paths}); give the class path."
    given = next((line for line in lines if line.startswith("Given value:")), None)
    expected = [m.group(1) for m in re.finditer(r"Expected an? <class '([^']+)'>", message)]
    if key and given and expected:
        value = given.removeprefix("Given value:").strip()
        wanted = " or ".join(t for t in expected if t != "NoneType") or "null"
        return f"--{key}: {value!r} is not a valid {wanted}."
    return lines[0] if lines else message


_MISSING_CONFIG = re.compile(r'Parser key "config": File does not exist: \'(.+)\'')


def parse_error_lines(message: str, subcommand: str = "fit") -> list[str]:
    """What a command-line error shows: its one line (:func:`parse_error_summary`), and where
    to look for the right option, unless the error is a ``--config`` file that does not exist.

    Args:
        message: The text of the ``ArgumentError``.
        subcommand: The command given (for the help hint).
    """
    missing = _MISSING_CONFIG.search(message)
    if missing:
        path = Path(missing.group(1))
        siblings = [p.name for p in path.parent.glob("*.y*ml")] if path.parent.is_dir() else []
        close = difflib.get_close_matches(path.name, siblings, n=1)
        hint = f" (did you mean {path.parent / close[0]}?)" if close else ""
        return [f"--config {path}: the file does not exist{hint}."]
    return [
        parse_error_summary(message, subcommand),
        f"(medvision {subcommand} --help lists every option)",
    ]


def closest_options(message: str, options: list[str]) -> str:
    """`` (did you mean --x?)`` for each unknown option an ``unrecognized arguments`` error
    names that is close to one of ``options``; empty for any other error.

    Args:
        message: The text of the ``ArgumentError``.
        options: The parser's option strings (``--trainer.max_epochs``, ...).
    """
    found = re.match(r"unrecognized arguments: (.*)", message, re.IGNORECASE)
    if not found:
        return ""
    unknown = [word.split("=", 1)[0] for word in found.group(1).split() if word.startswith("-")]
    meant = []
    for option in unknown:
        close = difflib.get_close_matches(option, options, n=1, cutoff=0.75)
        if close:
            meant.append(close[0])
    return f" (did you mean {', '.join(meant)}?)" if meant else ""


def init_parameters(cls: type) -> list[str]:
    """The ``__init__`` parameters of ``cls`` and of the base classes its ``**kwargs`` reach
    (as jsonargparse offers them): ``seed`` of a datamodule is ``MedVisionDataModule``'s."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return [name for name in dict.fromkeys(names) if name != "self"]


def _closest_init_arg(detail: str, class_path: str) -> str:
    """`` (did you mean x?)`` when ``detail`` is "Option 'y' is not accepted" by the class."""
    found = re.match(r"Option '(\w+)' is not accepted", detail)
    if not found:
        return ""
    try:
        parameters = init_parameters(import_object(class_path))
    except (ValueError, TypeError):
        return ""
    close = difflib.get_close_matches(found.group(1), parameters, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def cells_table(header: list[str], body: list[list[str]], markdown: bool = False) -> str:
    """Text cells as a table: Markdown (``| a | b |``), or columns padded to their widest cell.

    Args:
        header: The column titles.
        body: One list of cells per row, as many as ``header``.
        markdown: A Markdown table instead of padded text.
    """
    if markdown:
        lines = [header, ["---"] * len(header), *body]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *body]
    )
