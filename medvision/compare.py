"""``medvision-report``: several trained runs side by side, in one Markdown report and one figure.

    medvision-report runs/unet_lung/cv runs/fcn_lung/cv --names U-Net FCN --output runs/report

A RUN is one of:

- a cross-validation folder written by ``medvision-cv`` (``cv_summary.csv`` and ``fold_<i>/``):
  its metrics are the folds' mean ± std from ``cv_summary.csv``; fold 0's best checkpoint is
  the model shown in the figure;
- a run folder (``runs/unet_lung/logs/version_0``: ``checkpoints/best.ckpt`` and the
  ``config.yaml`` LightningCLI saved there or up to two folders above);
- a checkpoint file (its ``config.yaml`` is looked for from the folder above ``checkpoints/``).

A run folder or checkpoint is tested here, on the test split of its own saved data config. The
report ``<output>/report.md`` has a table of every ``test/*`` metric per run, per-class (or
per-label) tables for classifiers, and ``<output>/comparison.png``: the same ``--num-images``
test images of the first run's data (rows) as image | truth | one column per model. With
``--wandb``, or when a run logged to W&B, the tables and the figure also go to a W&B run.
``--data.*`` arguments (``--data.init_args.data_dir DIR``) override every run's data config.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import default_collate

from medvision.crossval import FOLD_RESULT, SUMMARY_CSV
from medvision.files import save_png, write_atomically
from medvision.metrics import binarize, overlap_scores
from medvision.visualize import overlay, to_display

log = logging.getLogger(__name__)

#: Height of the figure's header row (column names), in pixels.
HEADER_PX = 24
#: Images smaller than this (pixels, height) are enlarged by a whole factor to at least this.
MIN_TILE_PX = 128
#: Arguments that would download weights: ``load_from_checkpoint`` sets them to "nothing".
_NO_DOWNLOAD = {"encoder_weights": None, "pretrained": False, "pretrained_weights": None}
_CORRECT, _WRONG = (64, 200, 64), (230, 64, 64)


@dataclass
class Run:
    """One RUN argument, resolved: its model's checkpoint, its saved config and its metrics.

    ``metrics`` maps each ``test/*`` key to ``(mean, std)``; ``std`` is None for a single run.
    """

    path: Path
    checkpoint: Path
    config_path: Path
    num_folds: int = 1
    metrics: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    name: str = ""
    module: LightningModule | None = None

    @property
    def config(self) -> dict:
        """The run's saved LightningCLI config (``config.yaml``) as a dict."""
        return yaml.safe_load(self.config_path.read_text())

    @property
    def source(self) -> str:
        """Where the metrics come from, for the report."""
        if self.num_folds > 1:
            return f"{self.num_folds}-fold CV (cv_summary.csv)"
        return "tested by the report on its config's test split"


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def find_config(folder: Path) -> Path:
    """``config.yaml`` in ``folder`` or up to two folders above it (W&B keeps it in save_dir)."""
    for candidate in (folder, folder.parent, folder.parent.parent):
        if (candidate / "config.yaml").is_file():
            return candidate / "config.yaml"
    raise FileNotFoundError(
        f"no config.yaml in {folder} or the two folders above it. The report rebuilds the test "
        "data from the config LightningCLI saves in the run folder: give the run folder "
        "written by `medvision fit`, or a checkpoint inside it."
    )


def resolve_run(path: str | Path) -> Run:
    """A RUN argument (CV folder, run folder or checkpoint file) as a :class:`Run`."""
    path = Path(path)
    if path.is_file():
        return Run(path, path, find_config(path.parent.parent))
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: give a run folder, a CV folder or a .ckpt")
    if (path / SUMMARY_CSV).is_file():
        return _cv_run(path)
    checkpoint = path / "checkpoints" / "best.ckpt"
    if not checkpoint.is_file():
        found = sorted(p.name for p in path.glob("checkpoints/*.ckpt"))
        raise FileNotFoundError(
            f"{checkpoint} does not exist (checkpoints there: {found or 'none'}). Give the "
            f"checkpoint file instead, e.g. {path / 'checkpoints' / 'last.ckpt'}, or a CV "
            "folder holding cv_summary.csv."
        )
    return Run(path, checkpoint, find_config(path))


def _cv_run(path: Path) -> Run:
    """A ``medvision-cv`` output folder: ``cv_summary.csv`` metrics, fold 0's checkpoint."""
    with open(path / SUMMARY_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path / SUMMARY_CSV} lists no metrics: rerun medvision-cv")
    num_folds = sum(key.startswith("fold_") for key in rows[0])
    metrics = {r["metric"]: (float(r["mean"]), float(r["std"])) for r in rows}
    result_path = path / "fold_0" / FOLD_RESULT
    if not result_path.is_file():
        raise FileNotFoundError(f"{result_path} is missing: rerun medvision-cv to complete it")
    result = json.loads(result_path.read_text())
    fold_dir = result_path.parent
    config = fold_dir / result["log_dir"] / "config.yaml"
    if not config.is_file():
        config = find_config(fold_dir / result["log_dir"])
    return Run(path, fold_dir / result["checkpoint"], config, num_folds, metrics)


def build_datamodule(run: Run, overrides: Sequence[str] = ()) -> LightningDataModule:
    """The run's datamodule from its saved config (``--data.*`` ``overrides`` applied), set up."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    parsed = parser.parse_args([f"--data={json.dumps(run.config['data'])}", *overrides])
    datamodule = parser.instantiate_classes(parsed).data
    try:
        datamodule.prepare_data()
        datamodule.setup("test")
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error}\n(The test data of {run.path} is rebuilt from {run.config_path}; point it "
            "elsewhere with --data.init_args.data_dir DIR.)"
        ) from error
    return datamodule


def load_module(run: Run) -> LightningModule:
    """The run's trained module, on the CPU, with the class named in its config; no downloads."""
    if not run.checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {run.checkpoint} of {run.path} does not exist")
    cls = _import(run.config["model"]["class_path"])
    params = inspect.signature(cls.__init__).parameters
    offline = {k: v for k, v in _NO_DOWNLOAD.items() if k in params}
    module = cls.load_from_checkpoint(run.checkpoint, map_location="cpu", **offline)
    return module.eval()


def test_metrics(run: Run, datamodule: LightningDataModule, root: Path) -> dict:
    """``test/*`` metrics of the run's module on ``datamodule``'s test split (files under root)."""
    trainer = Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    tested = trainer.test(run.module, datamodule=datamodule, verbose=False)[0]
    return {k: (float(v), None) for k, v in tested.items() if k.startswith("test/")}


def describe(module: LightningModule) -> str:
    """A short model name from its hyperparameters: ``Unet (resnet34)``, ``resnet18``."""
    hparams = module.hparams
    if "arch" in hparams:
        return f"{hparams['arch']} ({hparams.get('encoder_name')})"
    return str(hparams.get("model_name", type(module).__name__))


def default_names(runs: Sequence[Run]) -> list[str]:
    """Model descriptions; the RUN paths instead when two descriptions are the same."""
    names = [describe(run.module) for run in runs]
    return names if len(set(names)) == len(names) else [str(run.path) for run in runs]


# ---------------------------------------------------------------------------------------------
# the figure
# ---------------------------------------------------------------------------------------------
def sample_batch(datamodule: LightningDataModule, num_images: int) -> dict:
    """``num_images`` test samples, evenly spaced over the test split, collated as one batch."""
    dataset = datamodule.test_dataloader().dataset
    if len(dataset) == 0:
        raise ValueError(f"{type(datamodule).__name__} has no test images to show")
    count = min(num_images, len(dataset))
    indices = np.unique(np.linspace(0, len(dataset) - 1, count).round().astype(int))
    return default_collate([dataset[int(i)] for i in indices])


def predict(module: LightningModule, batch: dict, name: str) -> dict:
    """The module's ``predict_step`` output on ``batch`` (channel count checked first)."""
    channels = module.hparams.get("in_channels")
    if channels is not None and channels != batch["image"].shape[1]:
        raise ValueError(
            f"{name} takes {channels}-channel images but the first run's test images have "
            f"{batch['image'].shape[1]}: compare models trained on the same kind of data."
        )
    with torch.no_grad():
        return module.predict_step(batch, 0)


def _font(size: int = 13) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _scale(tile_height: int) -> int:
    return max(1, -(-MIN_TILE_PX // tile_height))


def _enlarge(array: np.ndarray, factor: int) -> np.ndarray:
    return array.repeat(factor, axis=0).repeat(factor, axis=1)


def _text_tile(shape: tuple[int, int], lines: Sequence[str], color=(255, 255, 255)) -> np.ndarray:
    tile = Image.new("RGB", (shape[1], shape[0]), (24, 24, 24))
    ImageDraw.Draw(tile).multiline_text((6, 6), "\n".join(lines), fill=color, font=_font())
    return np.asarray(tile)


def _label(text: str, tile: np.ndarray) -> np.ndarray:
    image = Image.fromarray(tile)
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((3, 3), text, font=_font(12))
    draw.rectangle(box, fill=(0, 0, 0))
    draw.text((3, 3), text, fill=(255, 255, 255), font=_font(12))
    return np.asarray(image)


def segmentation_rows(batch: dict, outputs: Sequence[dict], modules) -> list[list[np.ndarray]]:
    """Per image: image | truth | each model's mask (red; truth outlined green; Dice shown)."""
    factor = _scale(batch["image"].shape[-2])
    rows = []
    for i, image in enumerate(batch["image"]):
        rgb = _enlarge(to_display(image.float().numpy().transpose(1, 2, 0)), factor)
        truth = _enlarge(batch["mask"][i, 0].numpy() > 0.5, factor)
        row = [rgb, overlay(rgb, truth)]
        for output, module in zip(outputs, modules, strict=True):
            pred = binarize(output["probs"][i, 0], module.threshold).numpy()
            dice, _ = overlap_scores(torch.from_numpy(pred)[None], batch["mask"][i, :1] > 0.5)
            row.append(
                _label(f"Dice {float(dice):.3f}", overlay(rgb, _enlarge(pred, factor), truth))
            )
        rows.append(row)
    return rows


def _class_text(module: LightningModule, values: torch.Tensor, probs: bool) -> list[str]:
    """Predicted (``probs``) or true class names; multi-label: every label above threshold."""
    names = list(module.class_names)
    if getattr(module, "multilabel", False):
        cut = module.thresholds.cpu() if probs else 0.5
        return [n for n, on in zip(names, (values > cut).tolist(), strict=True) if on] or ["none"]
    if probs:
        best = int(values.argmax())
        return [names[best], f"p = {float(values[best]):.2f}"]
    return [names[int(values)]]


def classification_rows(batch: dict, outputs: Sequence[dict], modules) -> list[list[np.ndarray]]:
    """Per image: image | true label | each model's predicted label (green right, red wrong)."""
    factor = _scale(batch["image"].shape[-2])
    rows = []
    for i, image in enumerate(batch["image"]):
        rgb = _enlarge(to_display(image.float().numpy().transpose(1, 2, 0)), factor)
        truth = _class_text(modules[0], batch["label"][i], probs=False)
        row = [rgb, _text_tile(rgb.shape[:2], truth)]
        for output, module in zip(outputs, modules, strict=True):
            predicted = _class_text(module, output["class_probs"][i], probs=True)
            multilabel = getattr(module, "multilabel", False)
            right = predicted == truth if multilabel else predicted[0] == truth[0]
            row.append(_text_tile(rgb.shape[:2], predicted, _CORRECT if right else _WRONG))
        rows.append(row)
    return rows


def compose_grid(rows: list[list[np.ndarray]], titles: Sequence[str]) -> np.ndarray:
    """Tiles of one size in a grid under a header row of column ``titles``; uint8 RGB.

    Size: ``HEADER_PX + rows * tile height`` by ``columns * tile width``.
    """
    body = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    tile_width = rows[0][0].shape[1]
    header = Image.new("RGB", (body.shape[1], HEADER_PX), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    for column, title in enumerate(titles):
        draw.text((column * tile_width + 4, 5), title, fill=(0, 0, 0), font=_font())
    return np.concatenate([np.asarray(header), body], axis=0)


def comparison_figure(runs: Sequence[Run], datamodule: LightningDataModule, num_images: int):
    """The figure (uint8 RGB) and the shown images' paths, for a segmentation or classification."""
    batch = sample_batch(datamodule, num_images)
    modules = [run.module for run in runs]
    outputs = [predict(run.module, batch, run.name) for run in runs]
    if "mask" in batch:
        if any("probs" not in output for output in outputs):
            raise ValueError("the first run's data has masks, but not every run is a segmenter")
        rows = segmentation_rows(batch, outputs, modules)
    else:
        if any("class_probs" not in output for output in outputs):
            raise ValueError("the first run's data has labels, but not every run is a classifier")
        rows = classification_rows(batch, outputs, modules)
    titles = ["image", "truth", *(run.name for run in runs)]
    return compose_grid(rows, titles), [str(p) for p in batch.get("path", [])]


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def _cell(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def metrics_table(runs: Sequence[Run]) -> list[list[str]]:
    """Rows ``[metric, cell per run]`` of every overall ``test/<metric>`` (per-class ones out)."""
    keys = sorted({k for run in runs for k in run.metrics if k.count("/") == 1})
    return [[key, *(_cell(run.metrics.get(key)) for run in runs)] for key in keys]


_PER_CLASS_NAMES = {"f1_per_class": "f1", "f1_per_label": "f1", "auroc_per_label": "auroc"}


def per_class_table(run: Run) -> list[list[str]]:
    """Rows ``[class, precision, recall, f1]`` (what the run logged per class); header first.

    Read from ``test/<metric>/<class>`` keys; empty for a segmenter.
    """
    per_class: dict[str, dict[str, str]] = {}
    columns: list[str] = []
    for key in sorted(run.metrics):
        parts = key.split("/", 2)
        if len(parts) != 3 or parts[0] != "test":
            continue
        column = _PER_CLASS_NAMES.get(parts[1], parts[1])
        columns += [] if column in columns else [column]
        per_class.setdefault(parts[2], {})[column] = _cell(run.metrics[key])
    if not per_class:
        return []
    preferred = ["precision", "recall", "f1", "auroc"]
    columns.sort(key=lambda c: (preferred.index(c) if c in preferred else len(preferred), c))
    order = list(getattr(run.module, "class_names", None) or per_class)
    return [
        ["class", *columns],
        *([name, *(per_class[name].get(c, "–") for c in columns)] for name in order),
    ]


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (header first) as a Markdown table."""
    lines = [rows[0], ["---"] * len(rows[0]), *rows[1:]]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def report_markdown(runs: Sequence[Run], figure: str, image_paths: Sequence[str]) -> str:
    """The report: runs, test metrics, per-class tables (classifiers) and the figure."""
    run_rows = [["name", "run", "model", "checkpoint shown", "metrics"]]
    run_rows += [
        [r.name, str(r.path), describe(r.module), str(r.checkpoint), r.source] for r in runs
    ]
    names = [f"{r.name} ({r.num_folds} folds)" if r.num_folds > 1 else r.name for r in runs]
    parts = [
        "# Model comparison",
        markdown_table(run_rows),
        "## Test metrics",
        "mean ± std over folds (sample std, n - 1) where a run is a cross-validation.",
        markdown_table([["metric", *names], *metrics_table(runs)]),
    ]
    for run in runs:
        table = per_class_table(run)
        if table:
            parts += [f"## Per class: {run.name}", markdown_table(table)]
    shown = ", ".join(Path(p).name for p in image_paths)
    parts += [
        "## Predictions on the same test images",
        f"![comparison]({figure})",
        f"Rows: test images of {runs[0].path} ({shown}). Columns: image | truth | each model "
        "(segmentation: predicted mask in red, true outline in green; classification: "
        "predicted label, green when right).",
    ]
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# W&B
# ---------------------------------------------------------------------------------------------
def wandb_project(runs: Sequence[Run]) -> str | None:
    """The W&B project of the first run that logged to W&B; None if none did."""
    for run in runs:
        loggers = run.config.get("trainer", {}).get("logger")
        for spec in loggers if isinstance(loggers, list) else [loggers]:
            if isinstance(spec, dict) and issubclass(_import(spec["class_path"]), WandbLogger):
                return (spec.get("init_args") or {}).get("project") or "medvision"
    return None


def log_to_wandb(runs: Sequence[Run], figure: Path, project: str, output: Path) -> None:
    """The metrics and per-class tables (``wandb.Table``) and the figure, in one W&B run."""
    import wandb

    from medvision.loggers import wandb_api_key_configured

    offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_configured()
    run = wandb.init(
        project=project,
        job_type="report",
        dir=str(output),
        mode="offline" if offline else "online",
        config={"runs": {r.name: str(r.path) for r in runs}},
    )
    data = [
        [r.name, key, mean, std, r.num_folds]
        for r in runs
        for key, (mean, std) in r.metrics.items()
    ]
    tables = {
        "report/metrics": wandb.Table(columns=["run", "metric", "mean", "std", "folds"], data=data)
    }
    for r in runs:
        table = per_class_table(r)
        if table:
            tables[f"report/per_class/{r.name}"] = wandb.Table(columns=table[0], data=table[1:])
    run.log({**tables, "report/comparison": wandb.Image(str(figure))})
    run.finish()
    log.info("Report logged to W&B project %s%s", project, " (offline)" if offline else "")


# ---------------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------------
def write_report(
    paths: Sequence[str | Path],
    output: str | Path,
    names: Sequence[str] | None = None,
    num_images: int = 4,
    data_overrides: Sequence[str] = (),
    wandb: bool | None = None,
) -> Path:
    """Compare the runs at ``paths``: writes ``output/report.md`` and ``output/comparison.png``.

    ``names`` label the runs (default: model descriptions); ``data_overrides`` are
    ``--data.*`` arguments applied to every run's data config. ``wandb``: True logs to W&B,
    False never, None when a run logged to W&B. Returns the report's path.
    """
    if names and len(names) != len(paths):
        raise ValueError(f"--names gives {len(names)} names for {len(paths)} runs")
    output = Path(output)
    runs = [resolve_run(path) for path in paths]
    for run in runs:
        run.module = load_module(run)
    for run, name in zip(runs, names or default_names(runs), strict=True):
        run.name = name
    first_data = build_datamodule(runs[0], data_overrides)
    for i, run in enumerate(runs):
        if run.num_folds == 1:  # a run folder or checkpoint: test it on its own data config
            datamodule = first_data if i == 0 else build_datamodule(run, data_overrides)
            run.metrics = test_metrics(run, datamodule, output / "evaluation" / f"run_{i}")
    figure, image_paths = comparison_figure(runs, first_data, num_images)
    save_png(output / "comparison.png", figure)
    text = report_markdown(runs, "comparison.png", image_paths)
    write_atomically(output / "report.md", lambda tmp: tmp.write_text(text))
    project = wandb_project(runs)
    if wandb or (wandb is None and project is not None):
        log_to_wandb(runs, output / "comparison.png", project or "medvision", output)
    return output / "report.md"


def split_data_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(other arguments, --data.* arguments with their values)`` of a command line."""
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
    """Entry point of ``medvision-report RUN [RUN ...] --output DIR [options] [--data.* ...]``."""
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
    )
    print(report.read_text())
    print(f"Report: {report}; figure: {report.parent / 'comparison.png'}")


if __name__ == "__main__":
    main()
