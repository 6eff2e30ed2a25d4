"""``medvision export``: the command line of :func:`medvision.apply.export.export`.

::

    medvision export --ckpt_path best.ckpt --format onnx --output lung_unet.onnx

Errors are as in the other commands: a wrong option, a missing checkpoint or an existing
output ends with one line naming it and exit status 2 (``--debug`` or ``MEDVISION_DEBUG=1``:
the whole traceback). ``--help`` answers without importing torch.
"""

from __future__ import annotations

import argparse
import logging
import sys

from medvision.cli.console import debugging, setup_logging, user_error

log = logging.getLogger(__name__)

#: The formats of :data:`medvision.apply.export.FORMATS` (kept equal by a test), here so that
#: ``--help`` needs no torch.
FORMATS = ("onnx", "torchscript", "weights", "bundle")


class _Parser(argparse.ArgumentParser):
    """argparse that raises its errors (one line in :func:`main`) instead of exiting."""

    def error(self, message: str):
        raise argparse.ArgumentError(None, message)


def build_parser() -> argparse.ArgumentParser:
    """The ``medvision export`` argument parser."""
    parser = _Parser(
        prog="medvision export",
        description="Export a medvision checkpoint as ONNX, TorchScript or a slim weights "
        "file, with its preprocessing beside it (<output>.json), or as a bundle: a folder with "
        "safetensors weights, config.json and a model card (README.md). The exported network "
        "is run on random images and compared with PyTorch (--no-check skips that).",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--ckpt_path", required=True, help="a checkpoint of a fit (best.ckpt, last.ckpt)"
    )
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument(
        "--output", required=True, help="the file, or a bundle's folder, to write (must not exist)"
    )
    parser.add_argument(
        "--no-check", dest="check", action="store_false", help="skip comparing with PyTorch"
    )
    parser.add_argument("--onnx", action="store_true", help="bundle: also write model.onnx")
    parser.add_argument("--debug", action="store_true", help="show whole tracebacks on errors")
    return parser


def main(args: list[str] | None = None) -> None:
    """``medvision export ...``.

    Args:
        args: The command line after the word ``export``; None reads ``sys.argv[2:]``.
    """
    args = list(sys.argv[2:] if args is None else args)
    setup_logging()
    try:
        options = build_parser().parse_args(args)
    except argparse.ArgumentError as error:
        log.error("%s", error)
        log.error("(medvision export --help lists every option)")
        raise SystemExit(2) from None
    debug = options.debug or debugging(args)
    for name in ("onnxscript", "onnx_ir"):  # the exporter's pass-by-pass notes
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from medvision.apply.export import export

        export(options.ckpt_path, options.format, options.output, options.check, options.onnx)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        if debug:
            raise
        log.error("%s", user_error(error))
        log.error("(medvision export --debug shows the whole traceback)")
        raise SystemExit(2) from None
