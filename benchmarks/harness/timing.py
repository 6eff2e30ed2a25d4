"""Timed windows of a training loop, timed loaders and NVML GPU utilization.

:class:`StepTimer` times images/s over the steps after a warm-up (``throughput.py``);
:class:`Window` times whole step cycles in wall and CPU time (``step_overhead.py``).

The GPU-busy figure is NVML's utilization (``nvidia-smi``'s "GPU-Util": the share of time in
which at least one kernel ran), sampled from a thread while the timed steps run. It needs the
``pynvml`` module (package ``nvidia-ml-py``, medvision's extra ``gpu``). CUDA events recorded
at a step's start and end are not used: they cannot see the GPU idle inside a step while the
host waits on a sync.
"""

from __future__ import annotations

import importlib.util
import math
import threading
import time
from collections.abc import Callable, Iterable

import numpy as np

#: the install hint printed where NVML utilization cannot be measured
NVML_HINT = 'pip install "medvision-lightning[gpu]" (nvidia-ml-py, the module pynvml)'


class TimedBatches:
    """``length`` batches from ``source`` (restarted when it runs out), timing each ``next()``.

    Args:
        source: a list of batch dicts or a DataLoader.
        length: how many batches to serve in all.
        clock: the wall clock (seconds).

    ``waits`` holds ``(start, seconds)`` of every batch request, a loader restart included.
    """

    def __init__(
        self, source: Iterable, length: int, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.source, self.length, self.clock = source, length, clock
        self.waits: list[tuple[float, float]] = []

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        iterator = iter(self.source)
        for _ in range(self.length):
            start = self.clock()
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(self.source)
                batch = next(iterator)
            self.waits.append((start, self.clock() - start))
            yield batch

    def wait_between(self, begin: float, end: float) -> float:
        """Seconds spent in ``next()`` calls that started between ``begin`` and ``end``."""
        return sum(seconds for start, seconds in self.waits if begin <= start < end)


def nvml_available() -> bool:
    """Whether NVML utilization can be read: a CUDA GPU and the ``pynvml`` module."""
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("pynvml") is not None


class UtilizationSampler:
    """NVML GPU utilization (percent) of the current CUDA device, every ``interval`` seconds.

    Args:
        interval: seconds between samples. NVML reports the busy share over its own last
            sample period (1/6 s to 1 s, by GPU model), so samples overlap and a window
            shorter than a second is poorly resolved.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import torch

        while not self._stop.wait(self.interval):
            self.samples.append(torch.cuda.utilization())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> float | None:
        """Stop sampling; the mean utilization in percent (None when nothing was sampled)."""
        self._stop.set()
        self._thread.join()
        return float(np.mean(self.samples)) if self.samples else None


class StepTimer:
    """The timed window of a training or inference loop that calls ``start`` and ``end``.

    ``start(num_images)`` at each step's start (batch loaded), ``end()`` at its end. Warm-up
    ends after ``warmup`` steps, or earlier once ``warmup_seconds`` have passed since the first
    step started (a time box for slow first steps: loader workers starting, autotuning). The
    window then runs from a device sync at the end of the last warm-up step (so it holds the
    loading of the first timed batch) to one after ``steps`` more steps; :attr:`done` says the
    loop may stop.

    Args:
        device: ``cuda`` (syncs, and NVML sampling when available) or ``cpu``.
        warmup: untimed steps at most.
        steps: timed steps.
        warmup_seconds: the warm-up's time box.
        clock: the wall clock (seconds).
    """

    def __init__(
        self,
        device: str,
        warmup: int,
        steps: int,
        warmup_seconds: float = math.inf,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.cuda = device == "cuda"
        self.warmup, self.steps, self.warmup_seconds = warmup, steps, warmup_seconds
        self.clock = clock
        self.index, self.images, self.timed = 0, 0, 0
        self.first = self.begin = self.finish = None
        self.warmup_steps = 0
        self.sampler = UtilizationSampler() if self.cuda and nvml_available() else None

    @property
    def done(self) -> bool:
        """Whether the window has closed."""
        return self.finish is not None

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def _open_window(self) -> None:
        self._sync()
        self.begin = self.clock()
        self.warmup_steps = self.index + (0 if self.index == 0 and self.warmup == 0 else 1)
        if self.sampler is not None:
            self.sampler.start()

    def start(self, num_images: int) -> None:
        if self.first is None:
            self.first = self.clock()
            if self.warmup == 0:
                self._open_window()
        if self.begin is not None and not self.done:
            self.images += num_images

    def end(self) -> None:
        if self.begin is None:
            boxed = self.clock() - self.first >= self.warmup_seconds
            if self.index == self.warmup - 1 or boxed:
                self._open_window()  # so the window holds the first timed batch's loading
        elif not self.done:
            self.timed += 1
            if self.timed == self.steps:
                self._sync()
                self.finish = self.clock()
        self.index += 1

    def result(self, batches: TimedBatches | None) -> dict:
        """Images/s over the window, warm-up steps run, data-wait share and NVML utilization.

        Args:
            batches: the loader, to read its waits (None: no data-wait share).

        Returns:
            ``images_per_s``, ``wall_s``, ``warmup_steps``; ``data_wait`` (fraction of the
            window spent in ``next()``) with ``batches``; ``nvml_util`` (percent) on a GPU
            with NVML.
        """
        if not self.done:
            raise RuntimeError(
                f"the loop ran {self.index} steps: the window of {self.steps} steps after "
                f"{self.warmup_steps or self.warmup} warm-up steps did not close"
            )
        wall = self.finish - self.begin
        out = {"images_per_s": self.images / wall, "wall_s": wall}
        out["warmup_steps"] = self.warmup_steps
        if batches is not None:
            out["data_wait"] = batches.wait_between(self.begin, self.finish) / wall
        if self.sampler is not None:
            out["nvml_util"] = self.sampler.stop()
        return out


class Window:
    """Wall and CPU time from the start of step ``warmup`` to the start of ``warmup + steps``.

    Call :meth:`at_step_start` at the start of every step: the window holds whole step cycles
    (the batch fetch, every hook and logger call) and leaves out start-up and what follows.

    Args:
        warmup: untimed steps.
        steps: timed steps.
        device: ``cuda`` (a device sync at both ends of the window) or ``cpu``.
        clock: the wall clock (seconds).
        cpu_clock: this process's CPU time (seconds, all its threads).
    """

    def __init__(
        self,
        warmup: int,
        steps: int,
        device: str,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.warmup, self.steps, self.cuda = warmup, steps, device == "cuda"
        self.clock, self.cpu_clock = clock, cpu_clock
        self.begin = self.end = None

    def at_step_start(self, index: int) -> bool:
        """Call at the start of step ``index``; True once the window is closed."""
        if index in (self.warmup, self.warmup + self.steps) and self.cuda:
            import torch

            torch.cuda.synchronize()
        if index == self.warmup:
            self.begin = (self.clock(), self.cpu_clock())
        elif index == self.warmup + self.steps:
            self.end = (self.clock(), self.cpu_clock())
        return self.end is not None

    def ms_per_step(self) -> dict[str, float]:
        """``{"wall": ms, "cpu": ms}`` per step over the window."""
        if self.end is None:
            raise RuntimeError(
                f"the window never closed: fewer than {self.warmup + self.steps} steps"
            )
        wall, cpu = (1000 * (b - a) / self.steps for a, b in zip(self.begin, self.end, strict=True))
        return {"wall": wall, "cpu": cpu}


def lightning_timers(train: StepTimer, infer: StepTimer | None = None):
    """A Lightning callback driving a training (and a predict) :class:`StepTimer`.

    It stops ``fit`` once the training window has closed.

    Args:
        train: the timer of the training steps.
        infer: the timer of the predict steps, or None.
    """
    from lightning.pytorch import Callback

    class Timers(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            train.start(len(batch["image"]))

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            train.end()
            trainer.should_stop = trainer.should_stop or train.done

        def on_predict_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            infer.start(len(batch["image"]))

        def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx, dl_idx=0):
            infer.end()

    return Timers()
