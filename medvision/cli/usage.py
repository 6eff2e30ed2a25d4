"""What ``medvision --help`` says: the commands, the description, examples (no imports).

Shared by the light front door (:mod:`medvision.cli.entry`) and the LightningCLI parsers
(:mod:`medvision.cli.commands`), so both describe the commands in the same words.
"""

from __future__ import annotations

import textwrap

#: The commands of ``medvision`` and what each does (``medvision --help`` lists them).
COMMANDS = {
    "fit": "Train a model from a config, validating every epoch, in a new run folder "
    "<default_root_dir>/version_<N>/ (checkpoints, metrics, config).",
    "validate": "Evaluate a checkpoint on the validation split; the metrics go into a new "
    "folder of its run (validate/, then validate-<date-time>/).",
    "test": "Evaluate a checkpoint on the test split: metrics, per-image and per-class reports "
    "with 95% intervals, in a new folder of its run (test/, then test-<date-time>/).",
    "predict": "Apply a checkpoint to a folder of images: masks and overlays (segmentation) or "
    "predictions.csv (classification), in a new predictions/<date-time>/ folder.",
    "export": "Write a checkpoint as ONNX, TorchScript or a slim weights file, with its "
    "preprocessing beside it in <output>.json.",
    "tune": "Search the hyperparameters of a fit with Optuna: each trial a fit in "
    "runs/<study>/trial_<k>/, then trials.csv, best.yaml and plots (docs/tuning.md).",
}

DESCRIPTION = """\
medvision: train, test and apply 2D medical image models (segmentation and classification)
from YAML configs, on a CPU or GPUs, logging to CSV or Weights & Biases."""

EXAMPLES = """\
examples:
  medvision fit --config configs/quickstart.yaml
  medvision fit --config configs/unet_lung.yaml --data.data_dir DATA --trainer.default_root_dir RUNS
  medvision test --config configs/unet_lung.yaml --ckpt_path RUNS/version_0/checkpoints/best.ckpt
  medvision predict --ckpt_path RUNS/version_0/checkpoints/best.ckpt --data.predict_dir IMAGES
  medvision export --ckpt_path RUNS/version_0/checkpoints/best.ckpt --format onnx --output m.onnx

help on one class: medvision fit --model.help SegmentationModule, --data.help LungCTDataModule
companion commands: medvision-cv (k-fold cross-validation of any fit), medvision-report
(several runs side by side). --debug (or MEDVISION_DEBUG=1) shows whole tracebacks."""

USAGE = f"usage: medvision [-h] [--version] {{{','.join(COMMANDS)}}} ..."


def help_text() -> str:
    """What ``medvision --help`` prints: the description, the commands, examples."""
    width = max(len(name) for name in COMMANDS) + 2
    commands = "\n".join(
        _hanging(f"  {name:<{width}}", text, indent=width + 2) for name, text in COMMANDS.items()
    )
    return (
        f"{USAGE}\n\n{DESCRIPTION}\n\ncommands (medvision COMMAND --help lists a command's "
        f"options):\n{commands}\n\n{EXAMPLES}\n\noptions:\n  -h, --help  show this help and "
        "exit\n  --version   show medvision's version and exit\n"
    )


def _hanging(head: str, text: str, indent: int, width: int = 96) -> str:
    """``head`` then ``text`` wrapped at ``width``, later lines indented by ``indent``."""
    return textwrap.fill(
        text, width, initial_indent=head, subsequent_indent=" " * indent, break_on_hyphens=False
    )
