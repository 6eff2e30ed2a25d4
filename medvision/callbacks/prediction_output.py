"""Where ``predict`` writes, and the list of input files it could not use (``failed.csv``)."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Trainer

from medvision.data.screening import BadFile
from medvision.files import write_csv

log = logging.getLogger(__name__)


def prediction_root(output_dir: Path | None, trainer: Trainer) -> Path:
    """Where predictions go: ``output_dir``, else ``<default_root_dir>/predictions``."""
    return output_dir or Path(trainer.default_root_dir) / "predictions"


def report_failures(trainer: Trainer, root: Path, own: list[BadFile]) -> list[BadFile]:
    """The datamodule's ``predict_failures`` plus ``own``, written to ``root/failed.csv``.

    Without failures a ``failed.csv`` left by an earlier run in ``root`` is removed, so the
    folder never lists files that this run predicted. Returns the failures.
    """
    failures = [*getattr(trainer.datamodule, "predict_failures", ()), *own]
    name = "failed.csv" if trainer.world_size == 1 else f"failed.rank{trainer.global_rank}.csv"
    if not failures:
        (root / name).unlink(missing_ok=True)
        return []
    rows = [{"file": f.path, "problem": f.problem} for f in failures]
    write_csv(root / name, rows, ["file", "problem"])
    log.warning("%d input files were not predicted; listed in %s", len(failures), root / name)
    return failures
