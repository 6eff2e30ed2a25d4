"""When training may read values back from the device: every N optimizer steps, with the logs.

On a GPU, reading a tensor on the host (``.item()``, ``float()``, ``bool()``, printing) waits
until the GPU has finished all queued work, and the GPU then idles until the host queues more.
Lightning reads the values logged per step at every ``log_every_n_steps``-th optimizer step;
medvision's own per-step reads (the non-finite check, the loss on the progress bar, the
training metrics of a classifier) are moved to those same steps, so a training step waits for
the GPU at most once every ``log_every_n_steps`` steps.
"""

from __future__ import annotations

#: Steps between reads when the trainer logs nothing (``log_every_n_steps: 0``): Lightning's
#: default logging interval.
DEFAULT_EVERY_N_STEPS = 50


class EveryNSteps:
    """Says, step after step, whether a multiple of ``every`` optimizer steps has been reached.

    ``due(global_step)`` is true when a multiple of ``every`` lies in ``(last, global_step]``,
    ``last`` being the step of the previous call (or ``start``). Called in ``on_train_batch_end``
    with ``trainer.global_step`` (already counting the batch's optimizer step), it is true at
    the steps where Lightning logs (``global_step % log_every_n_steps == 0``), once per step
    even under gradient accumulation (where several batches share a step), and it misses no
    multiple when a batch takes several optimizer steps (manual optimization).

    Args:
        every: interval in optimizer steps, >= 1.
        start: the global step training starts (or resumes) from.
    """

    def __init__(self, every: int, start: int = 0) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self._last = start

    def due(self, global_step: int) -> bool:
        """Whether a multiple of ``every`` was reached since the previous call.

        Args:
            global_step: optimizer steps taken so far (``trainer.global_step``).

        Returns:
            True at most once per multiple of ``every``.
        """
        reached = global_step // self.every > self._last // self.every
        self._last = max(self._last, global_step)
        return reached


def read_interval(log_every_n_steps: int) -> int:
    """Steps between host reads for a trainer's ``log_every_n_steps`` (0: logging off).

    Args:
        log_every_n_steps: the trainer's ``log_every_n_steps``.

    Returns:
        ``log_every_n_steps``, or :data:`DEFAULT_EVERY_N_STEPS` when it is 0.
    """
    return log_every_n_steps if log_every_n_steps > 0 else DEFAULT_EVERY_N_STEPS
