"""``medvision-report``: several trained runs side by side, in one Markdown report and one figure.

    medvision-report runs/unet_lung/cv runs/fcn_lung/cv --names U-Net FCN --output runs/report

A RUN is one of:

- a study folder written by ``medvision-cv`` (``cv_summary.csv`` and one folder per run:
  ``fold_<i>/``, ``seed_<s>/`` or ``fold_<i>_seed_<s>/``): its metrics are the runs' mean ± std
  from ``cv_summary.csv`` (the run-to-run spread), each with the 95% bootstrap interval of the
  pooled test set (the mean over the runs of each run's metric, on resamples of the shared test
  images, from the runs' ``test_per_image.csv``: the test-set uncertainty); its first run's
  best checkpoint is the model shown in the figure;
- a run folder (``runs/unet_lung/version_0``: ``checkpoints/best.ckpt`` and the
  ``config.yaml`` LightningCLI saved there or up to two folders above);
- a checkpoint file (its ``config.yaml`` is looked for from the folder above ``checkpoints/``).

A run folder or checkpoint is tested here, on the test split of its own saved data config. The
report ``<output>/report.md`` has a table of every ``test/*`` metric per run (with its 95%
bootstrap interval where the run's test wrote ``test_summary.csv``), the paired bootstrap
difference of each later run (a study: the mean over its runs) against the first on the same
test images (from the runs' ``test_per_image.csv``), per-class (or per-label) tables for
classifiers, and ``<output>/comparison.png``: the same ``--num-images`` test images of the first
run's data (rows) as image | truth | one column per model. With
``--wandb``, or when a run logged to W&B, the tables and the figure also go to a W&B run.
``--data.*`` arguments (``--data.init_args.data_dir DIR``) override every run's data config.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from medvision.cli.compare.figure import HEADER_PX
from medvision.cli.compare.report import write_report
from medvision.cli.compare.runs import resolve_run
from medvision.evaluation.summary import BOOTSTRAP_SAMPLES

__all__ = ["HEADER_PX", "main", "resolve_run", "split_data_overrides", "write_report"]


def split_data_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(other arguments, --data.* arguments with their values)`` of a command line.

    A ``--data.*`` argument takes the next argument as its value unless it is written
    ``--data.<key>=<value>``, comes last, or is followed by another ``--`` option.

    Args:
        args: The command line without the program name.

    Returns:
        The other arguments and the ``--data.*`` arguments, each in command-line order.
    """
    rest: list[str] = []
    data: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--data."):
            rest.append(arg)
        elif "=" in arg or i + 1 == len(args) or args[i + 1].startswith("--"):
            data.append(arg)
        else:
            data += [arg, args[i + 1]]
            i += 1
        i += 1
    return rest, data


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``medvision-report RUN [RUN ...] --output DIR [options] [--data.* ...]``.

    Args:
        args: The command line without the program name; None reads ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(
        prog="medvision-report",
        allow_abbrev=False,
        description="Compare trained runs (run folders, medvision-cv folders or checkpoints) in "
        "one Markdown report with a metrics table and a figure of predictions on the same test "
        "images. --data.* arguments override every run's data config.",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, CV folders or .ckpt")
    parser.add_argument("--output", type=Path, required=True, help="folder for report.md/png")
    parser.add_argument("--names", nargs="+", help="one label per run (default: model names)")
    parser.add_argument("--num-images", type=int, default=4, help="test images in the figure")
    parser.add_argument(
        "--bootstrap-samples",
        type=int,
        default=BOOTSTRAP_SAMPLES,
        help="bootstrap resamples of the paired differences and of the pooled intervals of "
        "medvision-cv studies (default %(default)s)",
    )
    parser.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log the tables and figure to W&B (default: when a run logged to W&B)",
    )
    rest, data_overrides = split_data_overrides(sys.argv[1:] if args is None else list(args))
    options = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = write_report(
        options.runs,
        options.output,
        options.names,
        options.num_images,
        data_overrides,
        options.wandb,
        options.bootstrap_samples,
    )
    print(report.read_text())
    print(f"Report: {report}; figure: {report.parent / 'comparison.png'}")
