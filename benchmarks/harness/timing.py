"""Timed windows of a loop, timed loaders and NVML GPU utilization.

:class:`StepTimer` times images/s over the steps after a warm-up (``throughput.py``);
:class:`Window` times whole step cycles in wall and CPU time (``step_overhead.py``). The GPU
figure is NVML's utilization (``nvidia-smi``'s "GPU-Util": the share of time in which at least
one kernel ran), sampled from a thread over the timed steps; CUDA events would not see the GPU
idle inside a step while the host waits on a sync.
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
    """``length`` batches from ``source`` (a list or a loader, restarted when it runs out);
    ``waits`` holds ``(start, seconds)`` of every ``next()``, a restart included."""

    def __init__(self, source: Iterable, length: int, clock: Callable = time.perf_counter):
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


class UtilizationSampler(threading.Thread):
    """NVML GPU utilization (percent) of the current CUDA device, every ``interval`` seconds
    (NVML's own sample period is 1/6 s to 1 s by GPU model, so samples overlap)."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval, self.samples, self.halt = interval, [], threading.Event()

    def run(self) -> None:
        import torch

        while not self.halt.wait(self.interval):
            self.samples.append(torch.cuda.utilization())

    def stop(self) -> float | None:
        """Stop sampling; the mean utilization in percent (None when nothing was sampled)."""
        self.halt.set()
        self.join()
        return float(np.mean(self.samples)) if self.samples else None


class StepTimer:
    """The timed window of a loop that calls ``start(num_images)`` at each step's start (batch
    loaded) and ``end()`` at its end.

    Warm-up ends after ``warmup`` steps, or once ``warmup_seconds`` have passed since the first
    step started (a time box for slow first steps). The window then runs from a device sync (on
    ``cuda``, where NVML is sampled too) at the end of the last warm-up step, so that it holds
    the loading of the first timed batch, to one after ``steps`` more steps; :attr:`done` says
    the loop may stop.
    """

    def __init__(self, device, warmup, steps, warmup_seconds=math.inf, clock=time.perf_counter):
        self.cuda, self.clock = device == "cuda", clock
        self.warmup, self.steps, self.warmup_seconds = warmup, steps, warmup_seconds
        self.index = self.images = self.timed = self.warmup_steps = 0
        self.first = self.begin = self.finish = None
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
                self._open_window()
        elif not self.done:
            self.timed += 1
            if self.timed == self.steps:
                self._sync()
                self.finish = self.clock()
        self.index += 1

    def result(self, batches: TimedBatches | None) -> dict:
        """``images_per_s``, ``wall_s``, ``warmup_steps``; ``data_wait`` (share of the window
        spent in the ``batches``' ``next()``) given them; ``nvml_util`` (percent) on a GPU."""
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
    """Wall and CPU time (this process's, all threads) from the start of step ``warmup`` to
    the start of ``warmup + steps``: whole step cycles (the batch fetch, every hook and logger
    call), no start-up; a device sync at both ends on ``cuda``."""

    def __init__(self, warmup, steps, device, clock=time.perf_counter, cpu_clock=time.process_time):
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
    """A Lightning callback driving a training (and a predict) :class:`StepTimer`; it stops
    ``fit`` once the training window has closed."""
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
