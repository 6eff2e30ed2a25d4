"""Run folders: where a run's checkpoints, logs, config and reports live, and finding them again."""

from __future__ import annotations

import re
from pathlib import Path

from lightning.pytorch import Trainer


def run_folder(trainer: Trainer) -> Path:
    """This run's own folder, the one that holds its ``checkpoints/``.

    ``<save_dir>/<name>/<version>`` of the first logger, as Lightning's ``ModelCheckpoint``
    builds it (``logs/version_3`` for the CSV logger, ``<project>/<run id>`` for W&B), or
    ``default_root_dir`` without a logger.
    """
    if not trainer.loggers or trainer.loggers[0].save_dir is None:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir) / str(logger.name) / version


_VERSION_FOLDER = re.compile(r"^version_(\d+)$")


def find_last_checkpoint(*roots: str | Path) -> Path | None:
    """The newest ``last*.ckpt`` in a ``checkpoints/`` folder anywhere under ``roots``, or None."""
    found = {
        path.resolve()
        for root in roots
        if root is not None and Path(root).is_dir()
        for path in Path(root).rglob("checkpoints/last*.ckpt")
        if path.is_file()
    }
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def run_version(checkpoint: Path) -> int | None:
    """``K`` when ``checkpoint`` lies in ``.../version_K/checkpoints/``, else None."""
    match = _VERSION_FOLDER.match(checkpoint.parent.parent.name)
    return int(match.group(1)) if match else None
