"""Learning curves: the loss and the monitored metric of every epoch, drawn when fit ends."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from medvision.utils.files import write_atomically
from medvision.utils.runs import run_folder

log = logging.getLogger(__name__)

#: The epoch's training loss: a loss logged per step and per epoch, or per epoch only.
TRAIN_LOSS_KEYS = ("train/loss_epoch", "train/loss")
VAL_LOSS = "val/loss"


class LearningCurves(Callback):
    """``learning_curves.png`` in the run folder: the loss and the monitored metric per epoch.

    At the end of each training epoch it keeps, from the trainer's ``callback_metrics`` (what
    the module logged, whichever logger there is: CSV, W&B, or none with ``--trainer.logger
    false``), the epoch's training loss, and from the validation that ended in that epoch the
    validation loss and the metric the best checkpoint monitors (``--checkpoint.monitor``,
    such as ``val/dice``; its best epoch marked by ``--checkpoint.mode``). An epoch without
    validation has no validation point. The figure is written when training ends, and also
    when it is stopped (SIGTERM, Ctrl-C, a non-finite loss); the values are kept in
    ``last.ckpt``, so a resumed run draws all its epochs. The CLI adds one to every ``fit``
    (``--learning_curves.*``).

    Args:
        filename: The PNG's name in the run folder; None: draw nothing.
    """

    def __init__(self, filename: str | None = "learning_curves.png") -> None:
        self.filename = filename
        #: One dict per finished epoch: ``epoch``, ``train/loss``, ``val/loss``, the monitor.
        self.epochs: list[dict[str, float]] = []
        self._validation: dict[str, float] = {}
        self._monitor: str | None = None
        self._mode = "min"

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        best = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), None)
        if best is not None and best.monitor not in (VAL_LOSS, *TRAIN_LOSS_KEYS):
            self._monitor, self._mode = best.monitor, best.mode

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        keys = (VAL_LOSS, self._monitor) if self._monitor else (VAL_LOSS,)
        self._validation = _values(trainer, keys)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loss = next((k for k in TRAIN_LOSS_KEYS if k in trainer.callback_metrics), None)
        row = {"epoch": trainer.current_epoch}
        row |= {"train/loss": _values(trainer, (loss,))[loss]} if loss else {}
        self.epochs.append(row | self._validation)
        self._validation = {}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        try:
            self._write(trainer)
        except Exception as error:  # the run's own error is the one to show
            log.warning("No learning curves for the stopped run: %s", error)

    @rank_zero_only
    def _write(self, trainer: Trainer) -> None:
        if self.filename is None or not self.epochs:
            return
        path = run_folder(trainer) / self.filename
        figure = draw_learning_curves(self.epochs, self._monitor, self._mode, _run_name(path))
        write_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))
        log.info("Learning curves: %s", path)

    def state_dict(self) -> dict:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs = list(state_dict.get("epochs", []))


def _values(trainer: Trainer, keys) -> dict[str, float]:
    metrics = trainer.callback_metrics
    return {key: float(metrics[key]) for key in keys if key in metrics}


def _run_name(path: Path) -> str:
    return "/".join(path.parent.parts[-2:])


def draw_learning_curves(epochs: list[dict], monitor: str | None, mode: str, title: str):
    """The figure of :class:`LearningCurves`: losses on the left, the monitored metric right.

    Args:
        epochs: One dict per epoch: ``epoch`` and any of ``train/loss``, ``val/loss`` and
            ``monitor`` (a missing or NaN value is no point).
        monitor: The metric of the right panel (None: the loss panel alone).
        mode: ``max`` or ``min``: which of its values is marked as the best.
        title: The figure's title (the run).

    Returns:
        A matplotlib ``Figure`` (no pyplot state), 100 dpi.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = 2 if monitor else 1
    figure = Figure(figsize=(5.5 * panels, 4), dpi=100, layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for key, label in (("train/loss", "training"), (VAL_LOSS, "validation")):
        _plot(axes[0], epochs, key, label)
    axes[0].set(title="loss", xlabel="epoch", ylabel="loss")
    if axes[0].lines:
        axes[0].legend()
    if monitor:
        points = _plot(axes[1], epochs, monitor, monitor)
        if points:
            epoch, value = (max if mode == "max" else min)(points, key=lambda point: point[1])
            label = f"best {value:.4g} (epoch {epoch})"
            axes[1].plot(epoch, value, "*", markersize=14, color="tab:red", label=label)
            axes[1].legend()
        axes[1].set(title=f"{monitor} (best: {mode})", xlabel="epoch", ylabel=monitor)
    numbers = [row["epoch"] for row in epochs]
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
        ax.grid(alpha=0.3)
    figure.suptitle(f"{title}: {len(epochs)} epoch{'s' if len(epochs) > 1 else ''}")
    return figure


def _plot(ax, epochs: list[dict], key: str, label: str) -> list[tuple[int, float]]:
    points = [(row["epoch"], row[key]) for row in epochs if not math.isnan(row.get(key, math.nan))]
    if points:
        ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
    return points
