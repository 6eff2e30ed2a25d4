"""The runs a report compares: resolved from folders or checkpoints, rebuilt, and tested.

A RUN is a study folder written by ``medvision-cv`` (folds, seeds or both: its metrics are the
runs' mean ± std, with the pooled test set's interval; its first run's best checkpoint is the
model shown), a run folder (``checkpoints/best.ckpt`` and the ``config.yaml`` LightningCLI saved
there or up to two folders above), or a checkpoint file. Its datamodule is rebuilt from the
saved config by :class:`~medvision.cli.MedVisionCLI`, exactly as ``medvision test`` would build
it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer

from medvision.cli.cv_summary import SUMMARY_CSV, study_results
from medvision.cli.runs import task_callbacks
from medvision.utils.files import read_csv

log = logging.getLogger(__name__)

#: Arguments that would download weights: ``load_from_checkpoint`` sets them to "nothing".
_NO_DOWNLOAD = {"encoder_weights": None, "pretrained": False, "pretrained_weights": None}


@dataclass
class Run:
    """One RUN argument, resolved: its model's checkpoint, its saved config and its metrics.

    Attributes:
        path: The RUN argument: a ``medvision-cv`` folder, a run folder or a checkpoint file.
        checkpoint: The checkpoint of the model shown (a study's first run's best).
        config_path: The ``config.yaml`` LightningCLI saved for that checkpoint's run.
        num_folds: The folds of a cross-validation; 1 for a run folder or checkpoint.
        num_seeds: The seeds of a study over seeds; 1 otherwise.
        members: A study's run folders (each holding the run's test files), in its order;
            empty for a single run.
        metrics: Each ``test/*`` key -> ``(mean, std)``; ``std`` is None for a single run.
        name: The run's label in the report (``--names``, else a model description).
        module: The model with the checkpoint's weights, in eval mode on the CPU; set by
            :func:`rebuild`.
        datamodule: The datamodule of the saved config, not set up; set by :func:`rebuild`.
        summary: For a run the report tested, when its test wrote it: ``test/<metric>`` ->
            its ``test_summary.csv`` row (value and 95% bootstrap interval); for a study, its
            pooled rows (:func:`~medvision.cli.compare.pooled.pooled_summary`).
        per_image: For a run the report tested, when its test wrote it: the rows of its
            ``test_per_image.csv``; else None.
        member_rows: For a study, when every run wrote it: each run's ``test_per_image.csv``
            rows, matched to one image order; else empty.
    """

    path: Path
    checkpoint: Path
    config_path: Path
    num_folds: int = 1
    num_seeds: int = 1
    members: list[Path] = field(default_factory=list)
    metrics: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    name: str = ""
    module: LightningModule | None = None
    datamodule: LightningDataModule | None = None
    summary: dict[str, dict] = field(default_factory=dict)
    per_image: list[dict] | None = None
    member_rows: list[list[dict]] = field(default_factory=list)

    @property
    def config(self) -> dict:
        """The run's saved LightningCLI config (``config.yaml``) as a dict."""
        return yaml.safe_load(self.config_path.read_text())

    @property
    def is_study(self) -> bool:
        """Whether this is a ``medvision-cv`` study of several runs (folds, seeds or both)."""
        return self.num_folds > 1 or self.num_seeds > 1

    @property
    def study(self) -> str:
        """``3 folds``, ``3 seeds`` or ``3 folds × 2 seeds``; empty for a single run."""
        parts = [f"{self.num_folds} folds"] if self.num_folds > 1 else []
        parts += [f"{self.num_seeds} seeds"] if self.num_seeds > 1 else []
        return " × ".join(parts)

    @property
    def kind(self) -> str:
        """``a cross-validation`` (folds, with or without seeds) or ``a study over seeds``."""
        return "a cross-validation" if self.num_folds > 1 else "a study over seeds"

    @property
    def image_rows(self) -> list[list[dict]]:
        """The per-image rows to compare on: each run's of a study, or the one run's; empty
        when there are none."""
        if self.is_study:
            return self.member_rows
        return [] if self.per_image is None else [self.per_image]

    @property
    def source(self) -> str:
        """Where the metrics come from, for the report."""
        if self.num_folds > 1 and self.num_seeds == 1:
            return f"{self.num_folds}-fold CV (cv_summary.csv)"
        if self.is_study:
            return f"{self.study} (cv_summary.csv)"
        return "tested by the report on its config's test split"


def find_config(folder: Path) -> Path:
    """``config.yaml`` in ``folder`` or up to two folders above it (W&B keeps it in save_dir).

    Args:
        folder: A run folder (for a checkpoint, the folder above its ``checkpoints/``).

    Raises:
        FileNotFoundError: when none of the three folders holds a ``config.yaml``.
    """
    for candidate in (folder, folder.parent, folder.parent.parent):
        if (candidate / "config.yaml").is_file():
            return candidate / "config.yaml"
    raise FileNotFoundError(
        f"no config.yaml in {folder} or the two folders above it. The report rebuilds the test "
        "data from the config LightningCLI saves in the run folder: give the run folder "
        "written by `medvision fit`, or a checkpoint inside it."
    )


def resolve_run(path: str | Path) -> Run:
    """A RUN argument (study folder, run folder or checkpoint file) as a :class:`Run`.

    Args:
        path: A ``medvision-cv`` folder (holding ``cv_summary.csv``), a run folder (holding
            ``checkpoints/best.ckpt``) or a checkpoint file.

    Returns:
        The run with its checkpoint and config and, for a study folder, its runs' metrics and
        folders; not rebuilt yet (see :func:`rebuild`).

    Raises:
        FileNotFoundError: when ``path``, a run folder's ``best.ckpt``, a study's run result
            or the ``config.yaml`` is missing.
        ValueError: when ``cv_summary.csv`` lists no metrics.
    """
    path = Path(path)
    if path.is_file():
        return Run(path, path, find_config(path.parent.parent))
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: give a run folder, a CV folder or a .ckpt")
    if (path / SUMMARY_CSV).is_file():
        return _study_run(path)
    checkpoint = path / "checkpoints" / "best.ckpt"
    if not checkpoint.is_file():
        found = sorted(p.name for p in path.glob("checkpoints/*.ckpt"))
        raise FileNotFoundError(
            f"{checkpoint} does not exist (checkpoints there: {found or 'none'}). Give the "
            f"checkpoint file instead, e.g. {path / 'checkpoints' / 'last.ckpt'}, or a CV "
            "folder holding cv_summary.csv."
        )
    return Run(path, checkpoint, find_config(path))


def _study_run(path: Path) -> Run:
    """A ``medvision-cv`` output folder: ``cv_summary.csv`` metrics, its runs' folders, and its
    first run's checkpoint."""
    rows = read_csv(path / SUMMARY_CSV)
    metrics = {r["metric"]: (float(r["mean"]), float(r["std"])) for r in rows}
    results = study_results(path)
    first = results[0]
    members = [path / result["run"] / result["log_dir"] for result in results]
    config = members[0] / "config.yaml"
    if not config.is_file():
        config = find_config(members[0])
    return Run(
        path,
        path / first["run"] / first["checkpoint"],
        config,
        num_folds=first.get("num_folds") or 1,
        num_seeds=len({r["seed"] for r in results if r["seed"] is not None}) or 1,
        members=members,
        metrics=metrics,
    )


def rebuild(run: Run, overrides: Sequence[str] = ()) -> None:
    """Build the run's module and datamodule as ``medvision test`` would, from its config.

    The saved ``config.yaml`` goes through :class:`~medvision.cli.MedVisionCLI` (links,
    checks and all), without downloading pretrained weights; the module then gets the
    checkpoint's weights and is put in eval mode on the CPU. Sets ``run.module`` and
    ``run.datamodule`` (not set up yet: see :func:`test_data`).

    Args:
        run: The run to rebuild.
        overrides: ``--data.*`` arguments applied on top (``--data.init_args.data_dir DIR``).
    """
    from medvision.cli import MedVisionCLI  # the CLI joins data and models: import on use
    from medvision.utils.checkpoints import load_checkpoint

    if not run.checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {run.checkpoint} of {run.path} does not exist")
    config = {key: run.config[key] for key in ("model", "data")}
    model_args = config["model"].get("init_args") or {}
    offline = [
        f"--model.init_args.{k}={json.dumps(v)}" for k, v in _NO_DOWNLOAD.items() if k in model_args
    ]
    args = ["--config", yaml.safe_dump(config), "--trainer.logger=false", *offline, *overrides]
    cli = MedVisionCLI(args=args, run=False)
    checkpoint = load_checkpoint(run.checkpoint)
    cli.model.load_state_dict(checkpoint["state_dict"])
    run.module, run.datamodule = cli.model.eval(), cli.datamodule


def test_data(run: Run) -> LightningDataModule:
    """The run's datamodule, set up for ``test`` (once); a missing data folder is named.

    Args:
        run: A run that :func:`rebuild` has built.
    """
    datamodule = run.datamodule
    if "test" not in getattr(datamodule, "datasets", {"test": None}):
        try:
            datamodule.prepare_data()
            datamodule.setup("test")
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"{error}\n(The test data of {run.path} is rebuilt from {run.config_path}; "
                "point it elsewhere with --data.init_args.data_dir DIR.)"
            ) from error
    return datamodule


def test_metrics(run: Run, datamodule: LightningDataModule, root: Path) -> dict:
    """``test/*`` metrics of the run's module on ``datamodule``'s test split (files under root).

    Args:
        run: A run that :func:`rebuild` has built.
        datamodule: Its datamodule, set up for ``test`` (see :func:`test_data`).
        root: The trainer's ``default_root_dir``, where the test writes its files
            (``test_per_image.csv``, ``test_summary.csv``, ...).

    Returns:
        Each ``test/*`` metric -> ``(value, None)``, as ``Run.metrics`` holds them.
    """
    trainer = Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=task_callbacks(run.module),
    )
    tested = trainer.test(run.module, datamodule=datamodule, verbose=False)[0]
    return {k: (float(v), None) for k, v in tested.items() if k.startswith("test/")}


def describe(module: LightningModule) -> str:
    """A short model name from its hyperparameters: ``Unet (resnet34)``, ``resnet18``.

    Args:
        module: A segmentation module (``arch`` and ``encoder_name`` hyperparameters) or a
            classifier (``model_name``); for any other, its class name is used.
    """
    hparams = module.hparams
    if "arch" in hparams:
        return f"{hparams['arch']} ({hparams.get('encoder_name')})"
    return str(hparams.get("model_name", type(module).__name__))


def default_names(runs: Sequence[Run]) -> list[str]:
    """Model descriptions; the RUN paths instead when two descriptions are the same.

    Args:
        runs: The rebuilt runs (``module`` set).

    Returns:
        One name per run, in the order of ``runs``.
    """
    names = [describe(run.module) for run in runs]
    return names if len(set(names)) == len(names) else [str(run.path) for run in runs]
