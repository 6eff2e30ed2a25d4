"""Checkpoint writing: straight to a temporary file beside the target, then renamed into place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from fsspec.utils import get_protocol
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medvision.data.io import write_atomically


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` that saves local checkpoints without an in-memory copy.

    Lightning serializes a checkpoint into a ``BytesIO`` buffer and then copies it to the file;
    for a U-Net with AdamW state (about 300 MB) that costs 0.2-0.5 s per save on a CPU machine,
    twice an epoch with a best and a last checkpoint. Here ``torch.save`` writes a hidden
    temporary file in the checkpoint folder, which is renamed over ``path`` once complete: a run
    killed mid-save leaves the previous checkpoint intact. Remote paths (``s3://``, ...) keep
    Lightning's own writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or get_protocol(str(path)) not in ("file", "local"):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        write_atomically(path, lambda tmp: torch.save(checkpoint, tmp))


def use_atomic_checkpoints(trainer: Trainer) -> None:
    """Give ``trainer`` an :class:`AtomicCheckpointIO` unless it was given another checkpoint IO."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
