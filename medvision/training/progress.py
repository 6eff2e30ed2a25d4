"""A progress bar that does not wait for the GPU at every step."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar, TQDMProgressBar

from medvision.utils.steps import EveryNSteps, read_interval

#: What the bar shows besides Lightning's progress-bar metrics: the training loss, of the
#: latest step and (from the end of the first epoch) of the last epoch.
LOSS_KEYS = ("train/loss_step", "train/loss_epoch")


class MedVisionProgressBar(TQDMProgressBar):
    """Lightning's TQDM progress bar, refreshed every ``log_every_n_steps`` steps.

    Lightning's bar refreshes at every batch and shows the progress-bar metrics, which a
    module logging its loss per step with ``prog_bar=True`` turns into numbers every step:
    on a GPU, each of those waits until the GPU has finished, and the GPU then idles. This
    bar moves its batch counter every ``refresh_rate`` batches (default: the trainer's
    ``log_every_n_steps``) and reads the training loss (``show``, from the metrics the module
    logs) only at the steps where Lightning logs, when the GPU is waited for anyway. The
    validation, test and predict bars are Lightning's, at the same ``refresh_rate``. The CLI
    uses this bar unless the config names another or ``enable_progress_bar`` is false.

    Args:
        refresh_rate: batches between updates of the counter (``None``: the trainer's
            ``log_every_n_steps``, or 50 when that is 0; 0 hides the bars).
        process_position: line offset of the bars (Lightning's ``TQDMProgressBar``).
        leave: keep each epoch's finished bar on screen.
        show: logged metrics shown after the progress-bar metrics, when logged.
    """

    def __init__(
        self,
        refresh_rate: int | None = None,
        process_position: int = 0,
        leave: bool = False,
        show: Sequence[str] = LOSS_KEYS,
    ) -> None:
        if refresh_rate is not None and refresh_rate < 0:
            raise ValueError(f"refresh_rate must be >= 0 or None, got {refresh_rate}")
        super().__init__(1 if refresh_rate is None else refresh_rate, process_position, leave)
        self._requested_rate = refresh_rate
        self.show = tuple(show)
        self._reads = EveryNSteps(read_interval(0))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        rate = self._requested_rate
        if rate is None:
            rate = read_interval(trainer.log_every_n_steps)
        self._refresh_rate = self._resolve_refresh_rate(rate)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        every = read_interval(trainer.log_every_n_steps)
        self._reads = EveryNSteps(every, start=trainer.global_step)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if bar.disable:
            return
        n = batch_idx + 1
        if self._should_update(n, bar.total):
            bar.n = n
            bar.refresh()
        if self._reads.due(trainer.global_step):
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict:
        """Lightning's progress-bar items, then the ``show`` metrics logged so far.

        Args:
            trainer: the running trainer.
            pl_module: the module being trained.

        Returns:
            Name -> value (numbers, the version string), as the bar shows them.
        """
        items = super().get_metrics(trainer, pl_module)
        logged = trainer.callback_metrics
        items.update({key: float(logged[key]) for key in self.show if key in logged})
        return items


def use_medvision_progress_bar(trainer: Trainer, given: Sequence[Callback]) -> None:
    """Swap the progress bar Lightning adds by default for a :class:`MedVisionProgressBar`.

    A bar listed in the configuration (in ``given``) is kept, and so is no bar at all
    (``enable_progress_bar: false``).

    Args:
        trainer: a trainer just built, before ``fit``.
        given: the callbacks the configuration listed.
    """
    for index, callback in enumerate(trainer.callbacks):
        if isinstance(callback, ProgressBar):
            default = type(callback) in (TQDMProgressBar, RichProgressBar)
            if default and not any(callback is c for c in given):
                trainer.callbacks[index] = MedVisionProgressBar()
            return
