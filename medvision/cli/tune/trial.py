"""One trial: an ordinary ``medvision fit`` in ``<study>/trial_<k>/``, pruned by Optuna.

The trial's values are passed as ``--key=value`` arguments after the user's, so the run is
exactly the fit that ``medvision fit <args> --key=value`` would be (run folder, checkpoints,
loggers, the task's callbacks), with optuna-integration's Lightning pruning callback added.
Its value is the best value of the monitored metric (the ``checkpoint`` callback's best score);
its epochs are counted as they start.

Under DDP, Lightning starts the other processes once, running the same ``medvision tune``
command line; those processes follow rank 0 from trial to trial (:func:`follow_rank_zero`):
rank 0 names the first trial in :data:`TRIAL_VARIABLE` and each later one by a broadcast.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import optuna
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger
from optuna_integration import PyTorchLightningPruningCallback

from medvision.cli import MedVisionCLI
from medvision.cli.crossval import _in_process_cli
from medvision.cli.runs import fit_run_in
from medvision.cli.tune.search import Parameter, fit_arguments
from medvision.utils.imports import import_object

log = logging.getLogger(__name__)

#: Set by rank 0 for the DDP processes Lightning starts: the storage id of the first trial.
TRIAL_VARIABLE = "MEDVISION_TUNE_TRIAL"


@dataclass
class TrialPlan:
    """What every trial of one ``tune`` shares.

    Attributes:
        fit_args: The ``medvision fit`` arguments given to ``tune``.
        parameters: The searched parameters.
        output: The study's folder (trials go to ``trial_<k>`` inside).
        study_name: The study's name (the W&B group).
        monitor: The metric whose best value is the trial's value.
        mode: ``max`` or ``min``.
        config: The parsed ``fit`` config (its loggers and trainer).
        distributed: Whether trials run as several DDP processes.
    """

    fit_args: list[str]
    parameters: list[Parameter]
    output: Path
    study_name: str
    monitor: str
    mode: str
    config: Namespace
    distributed: bool = False


class TrialPruning(PyTorchLightningPruningCallback):
    """optuna-integration's pruning callback, which also records the epochs a trial ran.

    ``trial.user_attrs["epochs"]`` is the number of training epochs begun (a trial pruned at
    the validation of epoch 2 ran 3).

    Args:
        trial: The Optuna trial.
        monitor: The metric reported to the pruner after each validation (``val/dice``).
    """

    def __init__(self, trial: optuna.trial.Trial, monitor: str) -> None:
        super().__init__(trial, monitor)
        self.epochs = 0
        self.trainer: Trainer | None = None

    def on_fit_start(self, trainer: Trainer, pl_module) -> None:
        self.trainer = trainer
        super().on_fit_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: Trainer, pl_module) -> None:
        self.epochs += 1
        if trainer.is_global_zero:
            self._trial.set_user_attr("epochs", self.epochs)


class TrialCLI(MedVisionCLI):
    """``medvision fit`` in a folder chosen by ``tune``, with a pruning callback added.

    Args:
        folder: The trial's run folder (``<study>/trial_<k>``).
        pruning: The trial's :class:`TrialPruning`.
        args: The ``fit`` command line (``["fit", ...]``).
    """

    def __init__(self, folder: Path, pruning: TrialPruning, args: list[str]) -> None:
        self.trial_folder, self.pruning = folder, pruning
        super().__init__(args=args)

    def before_instantiate_classes(self) -> None:
        self.runs = fit_run_in(self.command_config, self.trial_folder)

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(self.pruning)
        return trainer


def trial_arguments(plan: TrialPlan, number: int, values: dict) -> list[str]:
    """The ``medvision fit`` command line of trial ``number`` with the given values.

    Args:
        plan: The study's shared settings.
        number: The trial's number.
        values: Its parameters (key to value).
    """
    return [
        "fit",
        *plan.fit_args,
        *fit_arguments(values),
        f"--checkpoint.monitor={plan.monitor}",
        f"--checkpoint.mode={plan.mode}",
        *wandb_arguments(plan.config, plan.study_name, number, values),
    ]


def wandb_arguments(config: Namespace, study: str, number: int, values: dict) -> list[str]:
    """``--trainer.logger`` giving W&B loggers ``group=<study>`` and the trial in their config.

    Args:
        config: The parsed ``fit`` config.
        study: The study's name.
        number: The trial's number.
        values: The trial's parameters.

    Returns:
        No argument when no W&B logger is configured.
    """
    loggers = config.trainer.get("logger")
    if loggers is None or isinstance(loggers, bool):
        return []
    specs = [
        entry.as_dict() for entry in ([loggers] if isinstance(loggers, Namespace) else loggers)
    ]
    wandb = [s for s in specs if issubclass(import_object(s["class_path"]), WandbLogger)]
    if not wandb:
        return []
    for spec in wandb:
        extra = {"study": study, "trial": number, "params": values}
        spec.setdefault("init_args", {}).update(group=study, config={"tune": extra})
    value = specs[0] if isinstance(loggers, Namespace) else specs
    return [f"--trainer.logger={json.dumps(value)}"]


def run_trial(trial: optuna.trial.Trial, plan: TrialPlan) -> float:
    """Train trial ``trial`` as a fit in ``<output>/trial_<number>``; its value.

    Args:
        trial: The Optuna trial (asked, running).
        plan: The study's shared settings.

    Returns:
        The monitored metric's best value.

    Raises:
        optuna.TrialPruned: The pruner stopped the trial.
        RuntimeError: The metric was never logged.
    """
    values = {parameter.key: parameter.suggest(trial) for parameter in plan.parameters}
    folder = plan.output / f"trial_{trial.number}"
    trial.set_user_attr("folder", str(folder))
    log.info("Trial %d in %s: %s", trial.number, folder, values)
    if plan.distributed:
        announce_trial(trial._trial_id)
    pruning = TrialPruning(trial, plan.monitor)
    try:
        with _in_process_cli():
            cli = TrialCLI(folder, pruning, trial_arguments(plan, trial.number, values))
        if cli.trainer.interrupted:
            raise KeyboardInterrupt(f"trial {trial.number} was interrupted")
        pruning.check_pruned()  # DDP: the prune decided on rank 0 (a no-op in one process)
        return best_value(cli.trainer, plan.monitor, trial.number)
    finally:
        keep_config(trial, folder)
        end_logger_runs(pruning.trainer)


def best_value(trainer: Trainer, monitor: str, number: int) -> float:
    """The best ``monitor`` value that the trial's checkpoint callback saw.

    Args:
        trainer: The trial's trainer after fit.
        monitor: The metric.
        number: The trial's number (for the message).

    Raises:
        RuntimeError: No checkpoint callback monitors ``monitor``, or it never saw a value.
    """
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None) == monitor and callback.best_model_score is not None:
            return float(callback.best_model_score)
    logged = ", ".join(sorted(k for k in trainer.callback_metrics if "/" in k)) or "none"
    raise RuntimeError(
        f"trial {number}: {monitor} was never logged, so the trial has no value; "
        f"give --monitor one of the logged metrics ({logged})"
    )


def keep_config(trial: optuna.trial.Trial, folder: Path) -> None:
    """Store the trial's resolved ``config.yaml`` in the study (for ``best.yaml`` on any
    machine that reaches the storage).

    Args:
        trial: The trial.
        folder: Its run folder.
    """
    path = folder / "config.yaml"
    if path.is_file():
        trial.set_user_attr("config", path.read_text())


def end_logger_runs(trainer: Trainer | None) -> None:
    """Finish the trial's W&B runs (also when it was pruned), as ``fit`` does at its end.

    Args:
        trainer: The trial's trainer (None: it was never built).
    """
    for logger in trainer.loggers if trainer is not None else ():
        end_run = getattr(logger, "end_run", None)
        if callable(end_run):
            end_run()


def is_distributed(config: Namespace) -> bool:
    """Whether the configured trainer runs several processes (DDP, more devices or nodes).

    Args:
        config: The parsed ``fit`` config.
    """
    trainer = config.trainer
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    several = (
        isinstance(devices, int)
        and devices > 1
        or isinstance(devices, list | str)
        and (str(devices).count(",") > 0 or str(devices) == "-1")
    )
    return several or nodes > 1 or "ddp" in str(trainer.get("strategy") or "")


def announce_trial(trial_id: int | None) -> None:
    """Rank 0 tells the other DDP processes which trial comes next (see :func:`follow_rank_zero`).

    Before the first DDP fit the processes do not exist yet: the trial goes into the
    environment (:data:`TRIAL_VARIABLE`), which the processes Lightning starts inherit. After
    it, rank 0 broadcasts each trial (None: no more trials) over the fit's process group, which
    Lightning keeps until the process exits.

    Args:
        trial_id: The next trial's storage id, or None when this worker is done.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list([trial_id], src=0)
    elif trial_id is not None:
        os.environ[TRIAL_VARIABLE] = str(trial_id)


def follow_rank_zero(study: optuna.Study, plan: TrialPlan) -> None:
    """A DDP process other than rank 0: run rank 0's trials, from the first to the last.

    Args:
        study: The study (loaded from the same storage as rank 0's).
        plan: The study's shared settings.
    """
    import torch.distributed as dist

    trial_id: int | None = int(os.environ[TRIAL_VARIABLE])
    while trial_id is not None:
        trial = optuna.trial.Trial(study, trial_id)
        values = study._storage.get_trial(trial_id).params
        folder = plan.output / f"trial_{trial.number}"
        pruning = TrialPruning(trial, plan.monitor)
        with _in_process_cli():
            TrialCLI(folder, pruning, trial_arguments(plan, trial.number, values))
        received = [None]
        dist.broadcast_object_list(received, src=0)
        trial_id = received[0]
