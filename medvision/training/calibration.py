"""Temperature scaling at the end of ``fit``, stored in every checkpoint the run saved.

Why at the end of ``fit`` and per checkpoint: the temperature belongs to a set of weights.
``best.ckpt`` was written epochs before the run ended, with other weights than ``last.ckpt``
and the module in memory, so each checkpoint gets the temperature fitted on the validation
logits of its own weights, and is rewritten in place (atomically, through the trainer's
checkpoint IO) with it: ``test``, ``predict``, ``load_model`` and ``export`` of either file then
apply the right one. Fitting inside ``fit`` (rather than a separate command) needs nothing but
``--model.calibrate true``: the trainer, the validation loader and the checkpoint list are at
hand.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import Callback, LightningModule, Trainer

from medvision.evaluation.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    per_label_ece,
)
from medvision.models.classifier_outputs import TEMPERATURE, thresholds_at_temperature
from medvision.models.record import record_of, store_record
from medvision.utils.files import write_text
from medvision.utils.runs import run_folder

log = logging.getLogger(__name__)

#: What the run folder gets: each checkpoint's temperature, validation NLL and ECE.
CALIBRATION_JSON = "calibration.json"


def empty_validation_error(datamodule) -> ValueError:
    """The error for ``calibrate`` without validation images, naming the option and the fix.

    Args:
        datamodule: The run's datamodule (or None).
    """
    name = type(datamodule).__name__ if datamodule is not None else "the data"
    options = inspect.signature(type(datamodule)).parameters if datamodule is not None else {}
    split = (
        "--data.init_args.val_fraction 0.1" if "val_fraction" in options else "a validation split"
    )
    return ValueError(
        f"--model.calibrate true fits the temperature on the validation split, but {name} has "
        f"no validation images. Give it one ({split}) or set --model.calibrate false."
    )


class TemperatureCalibration(Callback):
    """Fit the temperature of a classifier on the validation split when training ends.

    For each checkpoint the run's checkpoint callbacks saved (best, top-k, last), the
    checkpoint's weights are run over the whole validation loader (every batch, whatever
    ``limit_val_batches`` says), :func:`~medvision.evaluation.calibration.fit_temperature` fits
    ``T``
    on the logits, and the file is rewritten with ``T`` in its ``temperature`` entry and its
    preprocessing record (a multi-label model's thresholds move so that its decisions stay
    the same). The module in memory keeps the last weights with their own ``T``. The log and
    ``calibration.json`` in the run folder give, per checkpoint, ``T`` and the validation NLL
    and ECE (15 bins) before and after. The CLI adds it when the classifier's ``calibrate``
    is true (:func:`medvision.cli.runs.task_callbacks`); a run
    without validation images stops before training with an error saying how to add them.
    """

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datasets = getattr(trainer.datamodule, "datasets", None)
        if isinstance(datasets, dict) and len(datasets.get("val") or ()) == 0:
            raise empty_validation_error(trainer.datamodule)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loader = _validation_loader(trainer)
        current = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        own = self._fit(trainer, pl_module, loader)
        paths = trainer.strategy.broadcast(_checkpoint_files(trainer))
        results = {}
        for path in paths:
            checkpoint = trainer.strategy.checkpoint_io.load_checkpoint(path)
            state = checkpoint["state_dict"]
            if _same_weights(state, current):
                result = own
            else:
                pl_module.load_state_dict(state)
                result = self._fit(trainer, pl_module, loader)
            if trainer.is_global_zero:
                _store(checkpoint, result["temperature"], pl_module.multilabel)
                trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, path)
            results[Path(path).name] = result
        pl_module.load_state_dict(current)
        pl_module.set_temperature(own["temperature"])
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            self._report(trainer, results or {"module in memory": own})

    def _fit(self, trainer: Trainer, pl_module, loader) -> dict:
        logits, labels, known = _validation_logits(trainer, pl_module, loader)
        multilabel = pl_module.multilabel
        temperature = fit_temperature(logits, labels, multilabel, known)
        result = {"temperature": temperature, "num_images": len(logits)}
        for when, t in (("before", 1.0), ("after", temperature)):
            result[f"val_nll_{when}"] = negative_log_likelihood(
                logits, labels, t, multilabel, known
            )
            result[f"val_ece_{when}"] = _ece(logits / t, labels, known, multilabel)
        return result

    def _report(self, trainer: Trainer, results: dict[str, dict]) -> None:
        for name, r in results.items():
            log.info(
                "Temperature scaling of %s on %d validation images: T = %.4g, val NLL %.4f -> "
                "%.4f, val ECE %.4f -> %.4f",
                name,
                r["num_images"],
                r["temperature"],
                r["val_nll_before"],
                r["val_nll_after"],
                r["val_ece_before"],
                r["val_ece_after"],
            )
        folder = run_folder(trainer)
        write_text(folder / CALIBRATION_JSON, json.dumps(results, indent=1))
        best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor), "")
        shown = results.get(Path(best).name) if best else next(iter(results.values()))
        if shown is not None:
            metrics = {f"calibration/{k}": v for k, v in shown.items() if k != "num_images"}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)


def _validation_loader(trainer: Trainer):
    loader = trainer.val_dataloaders
    if isinstance(loader, list | tuple):
        loader = loader[0] if loader else None
    if loader is None and trainer.datamodule is not None:
        loader = trainer.datamodule.val_dataloader()
    if loader is None:
        raise empty_validation_error(trainer.datamodule)
    return loader


def _validation_logits(trainer: Trainer, pl_module, loader):
    """Raw logits, labels and known-label masks of the whole validation split (all ranks)."""
    was_training = pl_module.training
    pl_module.eval()
    parts: list[tuple] = []
    try:
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            for batch in loader:
                batch = move_data_to_device(batch, pl_module.device)
                mask = batch.get("label_mask")
                parts.append(
                    (
                        pl_module.logits(batch).float().cpu(),
                        batch["label"].cpu(),
                        None if mask is None else mask.cpu(),
                    )
                )
    finally:
        pl_module.train(was_training)
    gathered = [parts]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, parts)
    parts = [part for rank in gathered for part in rank]
    if not parts:
        raise empty_validation_error(trainer.datamodule)
    logits = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    known = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
    return logits, labels, known


def _ece(logits: torch.Tensor, labels, known, multilabel: bool) -> float:
    if not multilabel:
        return expected_calibration_error(logits.softmax(dim=1), labels)
    values = [v for v in per_label_ece(logits.sigmoid(), labels, known).tolist()]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def _checkpoint_files(trainer: Trainer) -> list[str]:
    """The run's checkpoint files (best, top-k, last), each once."""
    found: list[str] = []
    for callback in trainer.checkpoint_callbacks:
        candidates = [
            getattr(callback, "best_model_path", ""),
            getattr(callback, "last_model_path", ""),
            *getattr(callback, "best_k_models", {}),
        ]
        found += [str(Path(p).resolve()) for p in candidates if p and Path(p).is_file()]
    return list(dict.fromkeys(found))


def _same_weights(state: dict, current: dict) -> bool:
    keys = set(current) - {TEMPERATURE}
    if set(state) - {TEMPERATURE} != keys:
        return False
    return all(torch.equal(state[k].cpu(), current[k].cpu()) for k in keys)


def _store(checkpoint: dict, temperature: float, multilabel: bool) -> None:
    """Write ``temperature`` into a loaded checkpoint: its state dict and its record.

    A multi-label model's thresholds move with it (:func:`thresholds_at_temperature`), in the
    state dict and, the same numbers, in the record: the checkpoint's ``Preprocessing`` with
    the new values (``dataclasses.replace``), stored whole by :func:`store_record`.
    """
    state = checkpoint["state_dict"]
    old = float(state.get(TEMPERATURE, torch.ones(())))
    state[TEMPERATURE] = torch.tensor(float(temperature))
    moved = multilabel and "thresholds" in state
    if moved:
        state["thresholds"] = thresholds_at_temperature(state["thresholds"], old, temperature)
    record = record_of(checkpoint)
    if record is None:
        return
    thresholds = tuple(state["thresholds"].tolist()) if moved else record.thresholds
    calibrated = dataclasses.replace(record, temperature=float(temperature), thresholds=thresholds)
    store_record(checkpoint, calibrated)
