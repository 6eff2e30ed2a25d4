"""What a datamodule's splits hold, for a run's record and a model card.

:func:`describe_data` gives, for a set-up datamodule, its class, its splits' sizes (images,
and for classifiers the images per class or the positives per label) and a fingerprint of its
file list; ``medvision fit`` writes it into ``run_info.json`` (``data``), and ``medvision
export --format bundle`` copies it into the model card. Only what the datasets already hold is
read: no file is opened.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: The splits described, in this order.
SPLITS = ("train", "val", "test")


def describe_data(datamodule) -> dict | None:
    """``{"datamodule", "splits", "fingerprint"}`` of a set-up datamodule; None without splits.

    Args:
        datamodule: A datamodule whose ``datasets`` dict holds its ``train``, ``val`` and
            ``test`` datasets (after ``setup``), and ``class_names``.

    Returns:
        ``datamodule``: its class path. ``splits``: per split present, ``images`` (samples)
        and, where the dataset holds labels, ``classes``: images per class name (single
        label) or positives per label (multi-label; unknown labels not counted).
        ``fingerprint``: ``sha256:<hex>`` of :func:`file_list` (None when the datasets name no
        files).
    """
    datasets = getattr(datamodule, "datasets", None)
    if not isinstance(datasets, Mapping):
        return None
    present = {split: datasets[split] for split in SPLITS if datasets.get(split) is not None}
    if not present:
        return None
    names = [str(name) for name in getattr(datamodule, "class_names", None) or ()]
    splits = {split: _split_counts(dataset, names) for split, dataset in present.items()}
    root = getattr(datamodule, "data_dir", None)
    lines = file_list(present, None if root is None else Path(root))
    return {
        "datamodule": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}",
        "splits": splits,
        "fingerprint": None if not lines else fingerprint(lines),
    }


def _split_counts(dataset, class_names: list[str]) -> dict:
    counts: dict = {"images": len(dataset)}
    labels = getattr(dataset, "labels", None)
    if labels is None or not class_names:
        return counts
    if getattr(dataset, "multilabel", False):
        positives = np.nansum(np.asarray(labels, dtype=np.float64), axis=0)
        if len(positives) == len(class_names):
            counts["classes"] = {n: int(p) for n, p in zip(class_names, positives, strict=True)}
        return counts
    found = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    if len(found) == len(class_names):
        counts["classes"] = {n: int(c) for n, c in zip(class_names, found, strict=True)}
    return counts


def file_list(datasets: Mapping, root: Path | None) -> list[str]:
    """One line per file of each split, ``<split> <path>``: the images (and masks) in sample
    order, paths relative to ``root`` when under it (no file is opened or looked at).

    Args:
        datasets: Split name -> dataset (``image_paths`` or ``paths``, and ``mask_paths``).
        root: The data folder (paths under it are written relative to it).
    """
    lines = []
    for split, dataset in datasets.items():
        files = list(getattr(dataset, "image_paths", None) or getattr(dataset, "paths", None) or [])
        files += list(getattr(dataset, "mask_paths", None) or [])
        for path in (Path(p) for p in files if isinstance(p, str | Path)):
            lines.append(f"{split} {_relative(path, root)}")
    return lines


def fingerprint(lines: list[str]) -> str:
    """``sha256:<hex>`` of ``lines`` joined by newlines: equal for the same files in the same
    splits and order (their names, not their contents).

    Args:
        lines: The lines of :func:`file_list`.
    """
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
        except ValueError:
            pass
    return path.as_posix()
