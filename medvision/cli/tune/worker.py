"""A ``tune`` worker: trials until the study has ``--trials`` finished ones.

Finished means ``COMPLETE`` or ``PRUNED``; a ``FAIL``ed trial (its process was killed, or
its machine stopped sending heartbeats) does not count, and another trial takes its place.
Under the study's lock (:func:`~medvision.cli.tune.storage.study_lock`) a worker fails the
orphaned trials, counts, and asks for a new trial only while finished plus running trials are
fewer than asked for; when the rest are running in other workers it waits for them (one of
them may fail and leave a trial to run). So several workers, on one machine or many, never
run more trials than asked for, and trial numbers (given out by the storage) never repeat.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from medvision.cli.tune.storage import OWNER, fail_orphans, heartbeat, owner, study_lock
from medvision.cli.tune.trial import TrialPlan, announce_trial, run_trial

log = logging.getLogger(__name__)

#: Seconds between two looks at a study whose last trials run in other workers.
POLL_S = 5.0
PRUNERS = ("median", "hyperband", "none")


@dataclass
class Budget:
    """How much a worker may do.

    Attributes:
        trials: The study's total of finished (complete or pruned) trials.
        timeout: Seconds after which this worker starts no new trial (None: no limit).
    """

    trials: int
    timeout: float | None = None


def make_pruner(name: str, startup_trials: int, warmup_epochs: int, max_epochs: int | None):
    """The pruner of ``--pruner``: ``median`` (Optuna's ``MedianPruner``), ``hyperband`` or
    ``none``.

    Args:
        name: One of :data:`PRUNERS`.
        startup_trials: ``median``: trials that finish before any is pruned.
        warmup_epochs: ``median``: epochs of each trial that are never pruned.
        max_epochs: ``hyperband``: the most epochs a trial runs (None or -1: Optuna's ``auto``).
    """
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs
        )
    if name == "hyperband":
        top = max_epochs if max_epochs and max_epochs > 0 else "auto"
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=top)
    return optuna.pruners.NopPruner()


def load_study(name: str, storage, mode: str, monitor: str, sampler, pruner) -> optuna.Study:
    """The study ``name`` in ``storage``, created on first use; a study that optimizes another
    metric or direction is refused.

    Args:
        name: The study's name.
        storage: Its storage.
        mode: ``max`` or ``min``.
        monitor: The metric (kept in the study's user attributes).
        sampler: The Optuna sampler.
        pruner: The Optuna pruner.
    """
    direction = "maximize" if mode == "max" else "minimize"
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    known = study.user_attrs.get("monitor")
    if known is None:
        study.set_user_attr("monitor", monitor)
    elif known != monitor or study.direction.name.lower() != direction:
        was = "max" if study.direction.name == "MAXIMIZE" else "min"
        raise ValueError(
            f"study {name} optimizes {known} ({was}), not {monitor} ({mode}): give the same "
            "--monitor and --mode, or another --study"
        )
    return study


def counts(study: optuna.Study) -> dict[TrialState, int]:
    """How many of the study's trials are in each state.

    Args:
        study: The study.
    """
    found = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        found[trial.state] += 1
    return found


def optimize(study: optuna.Study, storage, plan: TrialPlan, budget: Budget) -> None:
    """Run trials in this process until the study holds ``budget.trials`` finished ones.

    Args:
        study: The study.
        storage: Its storage (for the lock and the heartbeat).
        plan: The trials' shared settings.
        budget: The study's total and this worker's time.
    """
    deadline = None if budget.timeout is None else time.monotonic() + budget.timeout
    waiting = False
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                log.info("--timeout %s s reached: no new trial started.", budget.timeout)
                return
            with study_lock(storage, plan.output, study.study_name):
                trial, finished, running = _next_trial(study, budget)
            if trial is None and finished >= budget.trials:
                log.info("Study %s has its %d finished trials.", study.study_name, finished)
                return
            if trial is None:
                if not waiting:
                    log.info("Waiting for %d trials running in other workers.", running)
                waiting = True
                time.sleep(POLL_S)
                continue
            waiting = False
            _run(study, storage, trial, plan)
    finally:
        if plan.distributed:
            announce_trial(None)  # the other DDP processes stop following


def _next_trial(study: optuna.Study, budget: Budget):
    """Under the lock: fail orphans, count, and ask for a trial if one is missing."""
    fail_orphans(study)
    found = counts(study)
    finished = found[TrialState.COMPLETE] + found[TrialState.PRUNED]
    running = found[TrialState.RUNNING]
    if finished + running >= budget.trials:
        return None, finished, running
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, OWNER, owner())
    return trial, finished, running


def _run(study: optuna.Study, storage, trial: optuna.trial.Trial, plan: TrialPlan) -> None:
    """Run one trial and tell the study how it ended (any exception: ``FAIL``, raised)."""
    with heartbeat(storage, trial._trial_id):
        try:
            value = run_trial(trial, plan)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            epochs = study._storage.get_trial(trial._trial_id).user_attrs.get("epochs")
            log.info("Trial %d pruned after %s epochs.", trial.number, epochs)
            return
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
    study.tell(trial, value)
    log.info("Trial %d finished: %s = %.4f.", trial.number, plan.monitor, value)
