"""A callback for the kill-and-resume test, importable by a ``medvision fit`` subprocess."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch import Callback


class StepMarker(Callback):
    """Touches ``<folder>/step_<global_step>`` after each training batch, then waits ``pause``
    seconds, so a test can send a signal at a known step while the epoch is under way."""

    def __init__(self, folder: str, pause: float = 0.3) -> None:
        self.folder = Path(folder)
        self.pause = pause

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"step_{trainer.global_step}").touch()
        time.sleep(self.pause)
