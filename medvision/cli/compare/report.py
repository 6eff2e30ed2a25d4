"""The report: metric tables per run, per-class tables, the figure, and a W&B copy."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

from medvision.cli.compare.figure import comparison_figure
from medvision.cli.compare.paired import format_difference, read_test_files
from medvision.cli.compare.pooled import (
    POOLED_COLUMNS,
    aligned_rows,
    pooled_differences,
    pooled_summary,
)
from medvision.cli.compare.runs import (
    Run,
    default_names,
    describe,
    rebuild,
    resolve_run,
    test_data,
    test_metrics,
)
from medvision.evaluation.summary import BOOTSTRAP_SAMPLES, PER_IMAGE_CSV, format_interval
from medvision.utils.files import read_csv, save_png, write_csv, write_text
from medvision.utils.imports import import_object

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def _cell(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def metrics_table(runs: Sequence[Run]) -> list[list[str]]:
    """Rows ``[metric, cell per run]`` of every overall ``test/<metric>`` (per-class ones out).

    A cell is ``value [ci_low, ci_high]`` where the run's ``test_summary.csv`` has the metric
    (its 95% bootstrap interval), else the value. For a study (folds, seeds or both) it is
    ``mean ± std`` over its runs (from ``cv_summary.csv``), followed by ``[ci_low, ci_high]``,
    the 95% bootstrap interval of the pooled test set
    (:func:`~medvision.cli.compare.pooled.pooled_summary`), where every run wrote its per-image
    results.

    Args:
        runs: The tested or cross-validated runs, one column each.
    """
    keys = {k for run in runs for k in (*run.metrics, *run.summary) if k.count("/") == 1}
    return [[key, *(_run_cell(run, key) for run in runs)] for key in sorted(keys)]


def _run_cell(run: Run, key: str) -> str:
    row = run.summary.get(key)
    if not run.is_study:
        return _cell(run.metrics.get(key)) if row is None else format_interval(row)
    spread = run.metrics.get(key)
    if spread is None and row is not None:  # not logged by the runs: the pooled rows' own
        spread = (float(row["value"]), float(row["std"]))
    if row is None:
        return _cell(spread)
    return f"{_cell(spread)} [{float(row['ci_low']):.4f}, {float(row['ci_high']):.4f}]"


def paired_section(runs: Sequence[Run], num_samples: int = BOOTSTRAP_SAMPLES) -> list[str]:
    """The report's paired comparison: each run minus the first, on the same test images.

    A study (folds, seeds or both) counts as the mean over its runs, on each resample.

    Args:
        runs: The runs; the first is the reference.
        num_samples: Bootstrap resamples.

    Returns:
        Markdown parts (a heading, an explanation, a table or why there is none).
    """
    base = runs[0]
    parts = [f"## Paired difference vs {base.name}"]
    if not base.image_rows:
        reason = f"is {base.kind} without" if base.is_study else "wrote no"
        return [
            *parts,
            f"Not computed: {base.name} {reason} per-image results (no {PER_IMAGE_CSV}).",
        ]
    columns, notes = {}, []
    for run in runs[1:]:
        if not run.image_rows:
            kind = run.kind if run.is_study else "a run"
            notes.append(f"{run.name}: no per-image results ({kind}), left out.")
            continue
        try:
            names = (_member_names(base), _member_names(run))
            columns[run.name] = pooled_differences(
                base.image_rows, run.image_rows, names, num_samples
            )
        except ValueError as error:
            log.warning("No paired comparison: %s", error)
            notes.append(f"{run.name}: not compared. {error}")
    images = len(base.image_rows[0])
    parts.append(
        f"Each run's metric minus {base.name}'s on the same {images} test images (a study's: the "
        f"mean over its runs), with its 95% paired bootstrap interval ({num_samples} resamples "
        "of the images, every model scored on each resample); * marks an interval that "
        "excludes 0, a difference at the 5% level."
    )
    if columns:
        keys = sorted({k for values in columns.values() for k in values})
        rows = [["metric", *(f"{name} − {base.name}" for name in columns)]]
        rows += [[k, *(format_difference(v.get(k)) for v in columns.values())] for k in keys]
        parts.append(markdown_table(rows))
    return parts + notes


def _member_names(run: Run) -> list[str]:
    """The names of a run's per-image row sets, for messages: ``A`` or ``A (seed_1)``."""
    if not run.is_study:
        return [run.name]
    return [f"{run.name} ({member.parent.name})" for member in run.members]


_PER_CLASS_NAMES = {
    "f1_per_class": "f1",
    "f1_per_label": "f1",
    "auroc_per_label": "auroc",
    "ece_per_label": "ece",
}


def per_class_table(run: Run) -> list[list[str]]:
    """Rows ``[class, precision, recall, f1]`` (what the run logged per class); header first.

    Read from ``test/<metric>/<class>`` keys; empty for a segmenter.

    Args:
        run: A tested or cross-validated run; its module's ``class_names`` order the rows.
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
    preferred = ["precision", "recall", "f1", "auroc", "ece"]
    columns.sort(key=lambda c: (preferred.index(c) if c in preferred else len(preferred), c))
    order = list(getattr(run.module, "class_names", None) or per_class)
    return [
        ["class", *columns],
        *([name, *(per_class[name].get(c, "–") for c in columns)] for name in order),
    ]


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (header first) as a Markdown table.

    Args:
        rows: The rows of cells, the header first; each cell is written with ``str``.
    """
    lines = [rows[0], ["---"] * len(rows[0]), *rows[1:]]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def report_markdown(
    runs: Sequence[Run],
    figure: str,
    image_paths: Sequence[str],
    num_samples: int = BOOTSTRAP_SAMPLES,
) -> str:
    """The report: runs, test metrics (with intervals), the paired differences against the
    first run, per-class tables (classifiers) and the figure.

    Args:
        runs: The named, rebuilt runs with their metrics; the first is the reference.
        figure: The figure's path, relative to the report (``comparison.png``).
        image_paths: The files of the images shown in the figure, named under it.
        num_samples: Bootstrap resamples of the paired differences.

    Returns:
        The Markdown text, ending in a newline.
    """
    run_rows = [["name", "run", "model", "checkpoint shown", "metrics"]]
    run_rows += [
        [r.name, str(r.path), describe(r.module), str(r.checkpoint), r.source] for r in runs
    ]
    names = [f"{r.name} ({r.study})" if r.is_study else r.name for r in runs]
    legend = "value [95% bootstrap interval over the test images] where a run's test wrote one"
    if any(r.is_study for r in runs):
        legend += (
            "; for a study (folds, seeds or both): mean ± std of its runs' test metrics (sample "
            "std, n - 1: the run-to-run spread), then [the 95% bootstrap interval of the pooled "
            "test set: the mean over the runs of each run's metric, recomputed on resamples of "
            "the shared test images from the runs' test_per_image.csv, every run on the same "
            "resample: the test-set uncertainty]; no interval where a run lacks per-image results"
        )
    parts = [
        "# Model comparison",
        markdown_table(run_rows),
        "## Test metrics",
        legend + ".",
        markdown_table([["metric", *names], *metrics_table(runs)]),
    ]
    if len(runs) > 1:
        parts += paired_section(runs, num_samples)
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
    """The W&B project of the first run that logged to W&B; None if none did.

    Args:
        runs: The runs; the ``trainer.logger`` of their saved configs is read (a W&B logger
            without a project counts as ``medvision``).
    """
    for run in runs:
        loggers = run.config.get("trainer", {}).get("logger")
        for spec in loggers if isinstance(loggers, list) else [loggers]:
            if isinstance(spec, dict) and issubclass(
                import_object(spec["class_path"]), WandbLogger
            ):
                return (spec.get("init_args") or {}).get("project") or "medvision"
    return None


def log_to_wandb(runs: Sequence[Run], figure: Path, project: str, output: Path) -> None:
    """The metrics and per-class tables (``wandb.Table``) and the figure, in one W&B run.

    The run is offline when ``WANDB_MODE=offline`` or no W&B API key is configured.

    Args:
        runs: The named runs with their metrics.
        figure: The comparison figure's PNG file.
        project: The W&B project to log to.
        output: The report's folder; W&B keeps its own files under it.
    """
    import wandb

    from medvision.training.loggers import wandb_api_key_configured

    offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_configured()
    run = wandb.init(
        project=project,
        job_type="report",
        dir=str(output),
        mode="offline" if offline else "online",
        config={"runs": {r.name: str(r.path) for r in runs}},
    )
    data = [
        [r.name, key, mean, std, *_interval(r, key), r.num_folds, r.num_seeds]
        for r in runs
        for key, (mean, std) in r.metrics.items()
    ]
    columns = ["run", "metric", "mean", "std", "ci_low", "ci_high", "folds", "seeds"]
    tables = {"report/metrics": wandb.Table(columns=columns, data=data)}
    for r in runs:
        table = per_class_table(r)
        if table:
            tables[f"report/per_class/{r.name}"] = wandb.Table(columns=table[0], data=table[1:])
    run.log({**tables, "report/comparison": wandb.Image(str(figure))})
    run.finish()
    log.info("Report logged to W&B project %s%s", project, " (offline)" if offline else "")


def _interval(run: Run, key: str) -> tuple[float | None, float | None]:
    row = run.summary.get(key)
    return (None, None) if row is None else (float(row["ci_low"]), float(row["ci_high"]))


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
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
) -> Path:
    """Compare the runs at ``paths``: writes ``output/report.md`` and ``output/comparison.png``.

    A run folder or checkpoint is tested on its config's test split, writing its test files
    under ``output/evaluation/run_<i>``. A study's runs' per-image results are pooled
    (:func:`pool_study`), written to ``output/evaluation/run_<i>/pooled_summary.csv``.

    Args:
        paths: The RUN arguments: ``medvision-cv`` folders, run folders or checkpoint files.
        output: The report's folder.
        names: One label per run (default: model descriptions).
        num_images: Test images (rows) in the figure.
        data_overrides: ``--data.*`` arguments applied to every run's data config.
        wandb: True logs to W&B, False never, None when a run logged to W&B.
        bootstrap_samples: Resamples of the paired differences and the pooled intervals.

    Returns:
        The report's path, ``output/report.md``.

    Raises:
        ValueError: when ``names`` does not give one name per run.
    """
    if names and len(names) != len(paths):
        raise ValueError(f"--names gives {len(names)} names for {len(paths)} runs")
    output = Path(output)
    runs = [resolve_run(path) for path in paths]
    for run in runs:
        rebuild(run, data_overrides)
    for run, name in zip(runs, names or default_names(runs), strict=True):
        run.name = name
    for i, run in enumerate(runs):
        folder = output / "evaluation" / f"run_{i}"
        if run.is_study:
            pool_study(run, folder, bootstrap_samples)
        else:  # a run folder or checkpoint: test it on its own data config
            run.metrics = test_metrics(run, test_data(run), folder)
            run.summary, run.per_image = read_test_files(folder)
    figure, image_paths = comparison_figure(runs, test_data(runs[0]), num_images)
    save_png(output / "comparison.png", figure)
    markdown = report_markdown(runs, "comparison.png", image_paths, bootstrap_samples)
    write_text(output / "report.md", markdown)
    project = wandb_project(runs)
    if wandb or (wandb is None and project is not None):
        log_to_wandb(runs, output / "comparison.png", project or "medvision", output)
    return output / "report.md"


def pool_study(run: Run, folder: Path, num_samples: int = BOOTSTRAP_SAMPLES) -> None:
    """Read a study's runs' ``test_per_image.csv`` and pool them: sets ``run.member_rows``
    and ``run.summary`` (the pooled rows), and writes ``folder/pooled_summary.csv``.

    A run without the file, or runs tested on different images, leave the study without
    pooled results (warned, naming the file or the images).

    Args:
        run: A resolved study (``run.members`` set).
        folder: Where the pooled summary is written.
        num_samples: Bootstrap resamples of the pooled intervals.
    """
    missing = [m / PER_IMAGE_CSV for m in run.members if not (m / PER_IMAGE_CSV).is_file()]
    if missing:
        log.warning(
            "%s: no pooled interval, %d of its runs have no %s (e.g. %s)",
            run.path,
            len(missing),
            PER_IMAGE_CSV,
            missing[0],
        )
        return
    try:
        per_run = [read_csv(member / PER_IMAGE_CSV) for member in run.members]
        run.member_rows = aligned_rows(per_run, _member_names(run))
    except ValueError as error:
        log.warning("%s: no pooled interval: %s", run.path, error)
        return
    run.summary = pooled_summary(run.member_rows, num_samples)
    write_csv(folder / "pooled_summary.csv", list(run.summary.values()), list(POOLED_COLUMNS))
