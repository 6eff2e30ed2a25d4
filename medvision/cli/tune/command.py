"""``medvision tune``: the command line, the checks before the first trial, the run."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ArgumentError, Namespace

from medvision.cli.console import parse_error_summary, user_error
from medvision.cli.crossval import experiment_name, parse_fit_config

log = logging.getLogger(__name__)

EXAMPLES = """\
examples:
  medvision tune --config configs/unet_lung.yaml --search search.yaml --trials 30 \\
      --data.init_args.data_dir DATA
  medvision tune --config configs/unet_lung.yaml --search search.yaml --study lung \\
      --storage postgresql://USER:PASSWORD@HOST/optuna     (the same line on every machine)
  medvision tune --study lung --summary                    (table, best.yaml, plots now)

search.yaml maps fit options to ranges:
  model.init_args.optimizer.init_args.lr: {float: [1.0e-4, 1.0e-2], log: true}
  model.init_args.encoder_name: {choice: [resnet18, resnet34]}
  data.init_args.batch_size: {int: [8, 32], step: 8}
Every other argument goes to medvision fit. See docs/tuning.md."""


def build_parser() -> argparse.ArgumentParser:
    """The options of ``medvision tune`` (the rest of the command line goes to ``fit``)."""
    parser = argparse.ArgumentParser(
        prog="medvision tune",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search hyperparameters of any `medvision fit` with Optuna: each trial is "
        "a fit run in <output>/trial_<k>/, unpromising ones are pruned, and the study lives "
        "in a storage that several workers may share.",
        epilog=EXAMPLES,
    )
    add = parser.add_argument
    add("--search", type=Path, help="YAML file: fit option -> range (see below)")
    add("--trials", type=int, default=20, help="the study's total of finished trials (20)")
    add("--timeout", type=float, help="seconds after which this worker starts no new trial")
    add("--study", help="the study's name (default: <first config's stem>_tune)")
    add(
        "--storage",
        help="postgresql://, mysql:// or sqlite:/// URL (default: a journal file "
        "in the study's folder)",
    )
    add("--output", type=Path, help="the study's folder (default: runs/<study>)")
    add("--monitor", help="the metric to optimize (default: the config's checkpoint.monitor)")
    add("--mode", choices=("max", "min"), help="maximize or minimize --monitor")
    add("--pruner", choices=("median", "hyperband", "none"), default="median")
    add("--startup-trials", type=int, default=5, help="median: finished trials before pruning")
    add("--warmup-epochs", type=int, default=0, help="median: epochs never pruned (0)")
    add("--seed", type=int, help="seed of the sampler (TPE), for a repeatable search")
    add(
        "--summary",
        action="store_true",
        help="write and print the table, best.yaml and plots of the study, and train nothing",
    )
    return parser


def main(args: Sequence[str] | None = None, debug: bool = False) -> None:
    """Entry point of ``medvision tune`` (``medvision.cli.main`` hands it the arguments).

    An input error ends with one line on stderr and exit status 2 (``debug``: raised).

    Args:
        args: The arguments after ``tune``.
        debug: Raise errors with their traceback instead.
    """
    options, fit_args = build_parser().parse_known_args(args)
    try:
        text = tune(options, fit_args)
    except ArgumentError as error:
        if debug:
            raise
        log.error("%s", parse_error_summary(str(error), "fit"))
        raise SystemExit(2) from None
    except (ValueError, FileNotFoundError, TypeError, KeyError, RuntimeError, ImportError) as error:
        if debug:
            raise
        # a message raised "from None" is the whole story; else the innermost error's line
        log.error("%s", str(error) if error.__suppress_context__ else user_error(error))
        log.error("(medvision tune --debug shows the whole traceback)")
        raise SystemExit(2) from None
    if text:
        print(text)


def tune(options: argparse.Namespace, fit_args: list[str]) -> str:
    """Run (or summarize) the study that ``options`` name; the summary table.

    Args:
        options: The parsed ``tune`` options.
        fit_args: The ``medvision fit`` arguments.
    """
    _require_optuna()
    from medvision.cli.tune import storage as storages
    from medvision.cli.tune.search import check_keys, read_search
    from medvision.cli.tune.summary import write_summary

    name = options.study or _default_study(fit_args)
    output = options.output or Path("runs") / name
    if options.summary:
        if options.storage is None and not (output / storages.JOURNAL).is_file():
            raise ValueError(
                f"no study at {output / storages.JOURNAL}: give --study (or --output) and "
                "--storage as when it ran"
            )
        store = storages.open_storage(options.storage, output)
        return write_summary(_existing_study(name, store, output), output)
    if options.search is None:
        raise ValueError("medvision tune needs --search FILE (or --summary)")
    if options.trials < 1:
        raise ValueError(f"--trials must be at least 1, got {options.trials}")
    parameters = read_search(options.search)
    config = parse_fit_config(fit_args)
    check_keys(parameters, config, options.search)
    monitor, mode = _objective(config, options.monitor, options.mode)
    check_values(parameters, fit_args, options.search)
    store = storages.open_storage(options.storage, output)
    return _run(options, fit_args, parameters, config, name, output, store, monitor, mode)


def _run(options, fit_args, parameters, config, name, output, store, monitor, mode) -> str:
    import optuna

    from medvision.cli.tune.storage import RDBStorage
    from medvision.cli.tune.summary import write_summary
    from medvision.cli.tune.trial import (
        TRIAL_VARIABLE,
        TrialPlan,
        follow_rank_zero,
        is_distributed,
    )
    from medvision.cli.tune.worker import Budget, load_study, make_pruner, optimize

    distributed = is_distributed(config)
    if distributed and not isinstance(store, RDBStorage):
        raise ValueError(
            "DDP trials need --storage with a database URL (sqlite:///..., postgresql://...): "
            "optuna-integration's Lightning pruning callback supports only RDB storages in DDP"
        )
    pruner = make_pruner(
        options.pruner, options.startup_trials, options.warmup_epochs, config.trainer.max_epochs
    )
    sampler = optuna.samplers.TPESampler(seed=options.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # medvision logs each trial itself
    study = load_study(name, store, mode, monitor, sampler, pruner)
    plan = TrialPlan(list(fit_args), parameters, output, name, monitor, mode, config, distributed)
    if distributed and os.environ.get("LOCAL_RANK", "0") != "0" and TRIAL_VARIABLE in os.environ:
        follow_rank_zero(study, plan)  # a DDP process that Lightning started for rank 0
        return ""
    optimize(study, store, plan, Budget(options.trials, options.timeout))
    return write_summary(study, output)


def _require_optuna() -> None:
    try:
        import optuna  # noqa: F401
        import optuna_integration  # noqa: F401
    except ModuleNotFoundError as error:
        raise ImportError(
            f"medvision tune needs {error.name}: pip install 'medvision-lightning[tune]'"
        ) from None


def _default_study(fit_args: list[str]) -> str:
    if not any(a in ("--config", "-c") or a.startswith("--config=") for a in fit_args):
        raise ValueError("give --study NAME (or a --config, whose stem names the study)")
    return f"{experiment_name(fit_args, Path('.'))}_tune"


def _existing_study(name: str, store, output: Path):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        from medvision.cli.tune.storage import JOURNAL, RDBStorage

        where = "the --storage database" if isinstance(store, RDBStorage) else output / JOURNAL
        raise ValueError(
            f"no study {name} in {where}: give its --study, --output and --storage as when it ran"
        ) from None


def _objective(config: Namespace, monitor: str | None, mode: str | None) -> tuple[str, str]:
    """The monitored metric and its mode: the options, else the config's ``checkpoint``."""
    checkpoint = config.get("checkpoint") or Namespace()
    configured = checkpoint.get("monitor")
    monitor = monitor or configured
    if monitor is None:
        raise ValueError("give --monitor (e.g. val/dice) and --mode: the config monitors nothing")
    if mode is None:
        if monitor != configured:
            raise ValueError(f"--monitor {monitor}: give --mode max or --mode min")
        mode = checkpoint.get("mode") or "min"
    return monitor, mode


def check_values(parameters, fit_args: list[str], search: Path) -> None:
    """Parse the fit config with each edge of every range (bounds, choices): a value the
    option does not take is refused now, naming the key, not in some later trial.

    Args:
        parameters: The search's parameters (:class:`~medvision.cli.tune.search.Parameter`).
        fit_args: The ``medvision fit`` arguments.
        search: The search file, for the message.

    Raises:
        ValueError: The first value refused, in one line naming the file and the key.
    """
    from medvision.cli.tune.search import fit_arguments

    rounds = max(len(parameter.corners()) for parameter in parameters)
    for index in range(rounds):
        values = {p.key: p.corners()[min(index, len(p.corners()) - 1)] for p in parameters}
        try:
            parse_fit_config([*fit_args, *fit_arguments(values)])
        except ArgumentError as error:
            raise ValueError(f"{search}: {parse_error_summary(str(error), 'fit')}") from None
