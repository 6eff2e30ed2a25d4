"""What a study leaves in its folder: the trials table, ``best.yaml`` and Optuna's plots.

Written at the end of ``medvision tune`` and by ``medvision tune --study NAME --summary`` at
any time, from the storage alone (so any machine that reaches a shared study can write them):

- ``trials.csv``: number, state, one column per parameter, value, epochs, duration_s, folder;
- ``best.yaml``: the best complete trial's resolved config, whose ``default_root_dir`` is
  ``<study>/best``, so ``medvision fit --config best.yaml`` trains it again there;
- ``optimization_history.png``, ``param_importances.png``, ``parallel_coordinate.png`` and
  ``intermediate_values.png`` (each trial's monitored metric per epoch: where pruning cut).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from medvision.cli.console import cells_table
from medvision.cli.tune.search import short_names
from medvision.utils.files import write_atomically, write_csv, write_text

log = logging.getLogger(__name__)

TRIALS_CSV, BEST_YAML = "trials.csv", "best.yaml"
PLOTS = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
    "intermediate_values": "plot_intermediate_values",
}


def trial_rows(study: optuna.Study) -> list[dict]:
    """One row per trial, in number order: ``number``, ``state``, each parameter by its key,
    ``value`` (the best monitored value; a pruned trial's last reported one), ``epochs``,
    ``duration_s`` and ``folder``. Missing entries are ``""``.

    Args:
        study: The study.
    """
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    keys = list(dict.fromkeys(key for trial in trials for key in trial.params))
    rows = []
    for trial in trials:
        duration = trial.duration.total_seconds() if trial.duration is not None else ""
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                **{key: trial.params.get(key, "") for key in keys},
                "value": "" if trial.value is None else trial.value,
                "epochs": trial.user_attrs.get("epochs", ""),
                "duration_s": "" if duration == "" else round(duration, 1),
                "folder": trial.user_attrs.get("folder", ""),
            }
        )
    return rows


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The trials as a table: parameters by their short names, values to 4 digits.

    Args:
        rows: What :func:`trial_rows` returned (at least one).
        markdown: A Markdown table instead of aligned plain text.
    """
    columns = [c for c in rows[0] if c != "folder"]
    fixed = {"number", "state", "value", "epochs", "duration_s"}
    names = short_names([c for c in columns if c not in fixed])
    header = [names.get(c, c) for c in columns]
    body = [[_cell(row[c], c) for c in columns] for row in rows]
    return cells_table(header, body, markdown)


def _cell(value, column: str) -> str:
    if not isinstance(value, float):
        return str(value)
    if column == "duration_s":
        return f"{value:.1f}"
    return f"{value:.4f}" if column == "value" else f"{value:.4g}"


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None while no trial has completed.

    Args:
        study: The study.
    """
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def best_config(trial: FrozenTrial, output: Path) -> str:
    """The trial's resolved config as ``best.yaml`` text: training anew in ``<output>/best``.

    The loggers' run-specific settings (``version``, ``name``) are dropped: ``fit`` points them
    at its new run folder.

    Args:
        trial: A complete trial whose config was stored (``user_attrs["config"]``).
        output: The study's folder.

    Raises:
        RuntimeError: The trial has no stored config.
    """
    text = trial.user_attrs.get("config")
    if text is None:
        raise RuntimeError(f"trial {trial.number} stored no config: its fit wrote no config.yaml")
    config = yaml.safe_load(text)
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(output / "best")
    loggers = trainer.get("logger")
    for entry in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(entry, dict):
            for key in ("version", "name"):
                (entry.get("init_args") or {}).pop(key, None)
    head = (
        f"# medvision tune: trial {trial.number} of study {output.name}, value {trial.value}\n"
        f"# train it again: medvision fit --config {output / BEST_YAML}\n"
    )
    return head + yaml.safe_dump(config, sort_keys=False)


def write_plots(study: optuna.Study, output: Path) -> list[Path]:
    """Optuna's matplotlib plots of the study as PNG files in ``output``.

    A plot Optuna cannot draw yet (parameter importances before two complete trials) is left
    out with a warning that says why.

    Args:
        study: The study.
        output: The folder.

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    for name, function in PLOTS.items():
        path = output / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.filterwarnings("ignore", "Attempting to set identical low and high")
                axes = getattr(optuna_plots, function)(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            log.warning("%s not drawn: %s", path.name, error)
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        write_atomically(path, lambda tmp, data=buffer.getvalue(): tmp.write_bytes(data))
        written.append(path)
    return written


def write_summary(study: optuna.Study, output: Path) -> str:
    """Write ``trials.csv``, ``best.yaml`` and the plots into ``output``; the printed table.

    Args:
        study: The study.
        output: The study's folder.

    Returns:
        The trials table with the best trial under it (empty when the study has no trial).
    """
    rows = trial_rows(study)
    if not rows:
        log.warning("Study %s has no trials yet.", study.study_name)
        return ""
    write_csv(output / TRIALS_CSV, rows)
    best = best_trial(study)
    lines = [format_table(rows), ""]
    if best is None:
        lines.append("No trial has completed yet: no best.yaml.")
    else:
        write_text(output / BEST_YAML, best_config(best, output))
        monitor = study.user_attrs.get("monitor", "value")
        lines.append(f"Best: trial {best.number}, {monitor} = {best.value:.4f}, {best.params}")
        lines.append(f"  medvision fit --config {output / BEST_YAML}")
    plots = write_plots(study, output)
    lines.append(f"Table: {output / TRIALS_CSV}; plots: {', '.join(p.name for p in plots)}")
    return "\n".join(lines)
