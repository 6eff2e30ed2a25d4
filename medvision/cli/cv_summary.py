"""A ``medvision-cv`` study on disk: its runs' names and results, and its summary tables.

A study is folds (``--folds K``), seeds (``--seeds N``) or both (K x N runs). Each run has a
folder named after it in the study's folder: ``fold_<i>``, ``seed_<s>`` or
``fold_<i>_seed_<s>``, holding the run's ``fold_result.json`` once it is trained and tested.
The summary (``cv_summary.csv`` and ``.md``) gives every test metric's mean and sample
standard deviation (n - 1) over all runs, and the runs' values; a study of folds and seeds
also gives each seed's cross-validation estimate (the mean over its folds, ``cv_seed_<s>``)
and their standard deviation over seeds (``std_cv``).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medvision.cli.console import cells_table
from medvision.utils.files import read_csv, write_csv, write_text

#: Written in each run's folder once the run is trained and tested; its presence skips the run.
FOLD_RESULT = "fold_result.json"
SUMMARY_CSV = "cv_summary.csv"
SUMMARY_MD = "cv_summary.md"

_RUN_NAME = re.compile(r"fold_(\d+)|seed_(\d+)|fold_(\d+)_seed_(\d+)")


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: a fold of k-fold cross-validation, a seed, or a fold with a seed.

    Attributes:
        fold: The validation fold (0-based), or None in a study without folds.
        num_folds: The study's number of folds, or None.
        seed: The run's ``seed_everything``, or None in a study without seeds.
    """

    fold: int | None = None
    num_folds: int | None = None
    seed: int | None = None

    @property
    def name(self) -> str:
        """The run's folder and column name: ``fold_<i>``, ``seed_<s>``, ``fold_<i>_seed_<s>``."""
        return run_name(self.fold, self.seed)

    @property
    def label(self) -> str:
        """The run for people: ``Fold 0/5``, ``Seed 1`` or ``Fold 0/5, seed 1``."""
        parts = [] if self.fold is None else [f"Fold {self.fold}/{self.num_folds}"]
        if self.seed is not None:
            parts.append(f"{'seed' if parts else 'Seed'} {self.seed}")
        return ", ".join(parts)

    def fit_args(self) -> list[str]:
        """The ``medvision fit`` arguments that make this run of the shared configuration."""
        args = []
        if self.fold is not None:
            args += [
                f"--data.init_args.num_folds={self.num_folds}",
                f"--data.init_args.fold={self.fold}",
            ]
        if self.seed is not None:
            args.append(f"--seed_everything={self.seed}")
        return args


def run_name(fold: int | None, seed: int | None) -> str:
    """``fold_<i>``, ``seed_<s>`` or ``fold_<i>_seed_<s>``.

    Args:
        fold: The fold, or None.
        seed: The seed, or None (at least one of the two is given).
    """
    parts = ([] if fold is None else [f"fold_{fold}"]) + ([] if seed is None else [f"seed_{seed}"])
    if not parts:
        raise ValueError("a study run has a fold, a seed or both")
    return "_".join(parts)


def is_run_name(name: str) -> bool:
    """Whether ``name`` (a summary column or a folder) names a run of a study.

    Args:
        name: A ``cv_summary.csv`` column or a folder name.
    """
    return _RUN_NAME.fullmatch(name) is not None


def study_plan(folds: int | None, seeds: Sequence[int] | None) -> list[StudyRun]:
    """The runs of a study, seed by seed, each seed's folds in order.

    Args:
        folds: The number of folds (at least 2), or None for the datamodule's own split.
        seeds: The seeds (distinct), or None to keep the config's ``seed_everything``.

    Returns:
        ``folds x seeds`` runs (a missing factor counts once).
    """
    fold_list = [None] if folds is None else list(range(folds))
    seed_list = [None] if seeds is None else list(seeds)
    return [StudyRun(fold, folds, seed) for seed in seed_list for fold in fold_list]


def describe_study(folds: int | None, seeds: Sequence[int] | None) -> str:
    """``3-fold cross-validation``, ``3 seeds (0, 1, 2)`` or both joined by `` x ``.

    Args:
        folds: The number of folds, or None.
        seeds: The seeds, or None.
    """
    parts = [] if folds is None else [f"{folds}-fold cross-validation"]
    if seeds is not None:
        parts.append(f"{len(seeds)} seeds ({', '.join(map(str, seeds))})")
    return " × ".join(parts)


def read_result(folder: Path) -> dict | None:
    """The run's ``fold_result.json`` in ``folder``, with its ``run`` name; None if absent.

    Results written before seeds existed lack ``seed`` and ``run``: they are filled in.

    Args:
        folder: The run's folder in the study.
    """
    path = folder / FOLD_RESULT
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    result.setdefault("seed", None)
    result.setdefault("run", run_name(result.get("fold"), result["seed"]))
    return result


def study_results(output: Path) -> list[dict]:
    """The results of the runs a study's ``cv_summary.csv`` lists, in its column order.

    Args:
        output: The study's folder.

    Raises:
        FileNotFoundError: when the summary, or a listed run's ``fold_result.json``, is missing.
    """
    rows = read_csv(output / SUMMARY_CSV)
    if not rows:
        raise ValueError(f"{output / SUMMARY_CSV} lists no metrics: rerun medvision-cv")
    results = []
    for name in (column for column in rows[0] if is_run_name(column)):
        result = read_result(output / name)
        if result is None:
            raise FileNotFoundError(
                f"{output / name / FOLD_RESULT} is missing: rerun medvision-cv to complete it"
            )
        results.append(result)
    return results


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), std


def summarize(results: Sequence[dict]) -> list[dict]:
    """Per test metric (sorted): mean and sample std (n - 1) over the runs, and the runs' values.

    A metric missing from a run counts as NaN there, which makes its mean and std NaN. Runs
    with both a fold and a seed also get, per seed, the mean over its folds (``cv_seed_<s>``,
    that seed's cross-validation estimate) and the sample std of those over the seeds
    (``std_cv``), placed before the runs' columns.

    Args:
        results: The runs' results (``run``, ``fold``, ``seed``, ``metrics``), at least two.

    Returns:
        One row per metric: ``{"metric", "mean", "std", [cv_seed_<s>..., "std_cv"],
        <run name>...}``.
    """
    keys = sorted(set().union(*(result["metrics"] for result in results)))
    crossed = all(r.get("fold") is not None and r.get("seed") is not None for r in results)
    seeds = list(dict.fromkeys(r["seed"] for r in results)) if crossed else []
    rows = []
    for key in keys:
        values = {r["run"]: r["metrics"].get(key, math.nan) for r in results}
        mean, std = _mean_std(list(values.values()))
        row = {"metric": key, "mean": mean, "std": std}
        if crossed:
            per_seed = {
                seed: statistics.fmean(values[r["run"]] for r in results if r["seed"] == seed)
                for seed in seeds
            }
            row.update({f"cv_seed_{seed}": value for seed, value in per_seed.items()})
            row["std_cv"] = _mean_std(list(per_seed.values()))[1]
        row.update(values)
        rows.append(row)
    return rows


def _shown_columns(row: dict) -> list[str]:
    """The columns a table shows after mean ± std: each seed's CV estimate (and their std) for
    folds x seeds, else each run's value."""
    grouped = [key for key in row if key.startswith("cv_seed_") or key == "std_cv"]
    return grouped or [key for key in row if is_run_name(key)]


def format_summary(rows: Sequence[dict], markdown: bool = False) -> str:
    """The summary rows as a table: metric | mean ± std | one column per run (or per seed).

    Args:
        rows: The rows of :func:`summarize`.
        markdown: A Markdown table instead of space-aligned plain text.
    """
    columns = _shown_columns(rows[0])
    header = ["metric", "mean ± std", *columns]
    body = [
        [r["metric"], f"{r['mean']:.4f} ± {r['std']:.4f}", *(f"{r[c]:.4f}" for c in columns)]
        for r in rows
    ]
    return cells_table(header, body, markdown)


def write_summary(output: Path, rows: Sequence[dict], name: str, study: str) -> tuple[Path, Path]:
    """Write ``cv_summary.csv`` (full precision) and ``cv_summary.md`` atomically.

    Args:
        output: The study's folder.
        rows: The rows of :func:`summarize`.
        name: The experiment's name, the Markdown page's title.
        study: What was run (:func:`describe_study`).

    Returns:
        The paths of the CSV and Markdown files.
    """
    csv_path, md_path = output / SUMMARY_CSV, output / SUMMARY_MD
    write_csv(csv_path, list(rows))
    runs = sum(is_run_name(key) for key in rows[0])
    grouped = "std_cv" in rows[0]
    text = (
        f"# {name}: {study}\n\n"
        f"Test metrics of each run's best checkpoint on the same test split; mean and std over "
        f"the {runs} runs, std being the sample standard deviation (n - 1)."
        + (
            " cv_seed_<s>: the mean over the folds of seed s (its cross-validation estimate); "
            "std_cv: their std over the seeds. Each run's value is in cv_summary.csv."
            if grouped
            else ""
        )
        + "\n\n"
        + format_summary(rows, markdown=True)
        + "\n"
    )
    write_text(md_path, text)
    return csv_path, md_path
