"""What a classifier keeps besides its network: its temperature and its test predictions.

- The temperature (temperature scaling, :mod:`medvision.evaluation.calibration`) is a scalar
  buffer of
  :class:`~medvision.models.ClassificationModule`, 1 unless calibrated. Checkpoints written
  before it existed lack the entry: :func:`add_temperature` registers a load hook that reads
  them as 1. A multi-label model's decision thresholds are probabilities, so they move with the
  temperature (:func:`thresholds_at_temperature`) to keep every decision as it was.
- :class:`ClassifierTestCollector` keeps the test split's probabilities, targets and files,
  batch by batch on the device, and gathers them from every process at the end (for per-image
  files, calibration error and bootstrap intervals).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from medvision.evaluation.calibration import expected_calibration_error, per_label_ece

log = logging.getLogger(__name__)

TEMPERATURE = "temperature"


def add_temperature(module: nn.Module) -> None:
    """Give ``module`` a ``temperature`` buffer (1.0) that older checkpoints load as 1.0.

    Args:
        module: The classifier (its state dict gets the key ``temperature``).
    """
    module.register_buffer(TEMPERATURE, torch.ones(()))
    module.register_load_state_dict_pre_hook(_fill_missing_temperature)


def _fill_missing_temperature(module, state_dict, prefix, *args) -> None:
    key = prefix + TEMPERATURE
    if key not in state_dict:
        state_dict[key] = torch.ones(())


def thresholds_at_temperature(thresholds: torch.Tensor, old: float, new: float) -> torch.Tensor:
    """Probability thresholds that make the same decisions after the temperature changes.

    A label is positive where ``sigmoid(z / old) > t``, i.e. where the logit ``z`` exceeds
    ``old * logit(t)``; at ``new`` that logit is the probability ``sigmoid(old / new * logit(t))``.

    Args:
        thresholds: ``K`` thresholds in [0, 1] at temperature ``old``.
        old: The temperature they were chosen at.
        new: The temperature they are for.

    Returns:
        ``K`` thresholds (0 and 1 stay 0 and 1).
    """
    logits = torch.logit(thresholds.double())
    return torch.sigmoid(logits * (old / new)).to(thresholds.dtype)


@dataclass
class ClassifierTestResults:
    """A classifier's predictions on the whole test split, on the CPU, in the loader's order.

    Attributes:
        probs: float32 ``N x K`` probabilities (softmax, or sigmoid per label), calibrated.
        target: int64 ``N`` classes, or for multi-label ``N x K`` 0/1 with -1 where unknown.
        paths: ``N`` image files (``<item i>`` where batches name none).
        multilabel: Whether ``target`` is ``N x K``.
    """

    probs: torch.Tensor
    target: torch.Tensor
    paths: list[str]
    multilabel: bool

    @property
    def known(self) -> torch.Tensor:
        """Multi-label: ``N x K`` bool, where the label is known."""
        return self.target >= 0

    def ece(self, class_names: list[str]) -> dict[str, float]:
        """The expected calibration error (15 bins) to log.

        Args:
            class_names: The classes (labels), in output order.

        Returns:
            ``{"test/ece": top-label ECE}``; multi-label: the mean over labels with any known
            entry, and ``test/ece_per_label/<label>`` (NaN for a label never known).
        """
        if not self.multilabel:
            return {"test/ece": expected_calibration_error(self.probs, self.target)}
        per_label = per_label_ece(self.probs, self.target.clamp(min=0), self.known)
        values = {
            f"test/ece_per_label/{name}": float(value)
            for name, value in zip(class_names, per_label, strict=True)
        }
        known = [v for v in values.values() if not math.isnan(v)]
        values["test/ece"] = sum(known) / len(known) if known else float("nan")
        return values


class ClassifierTestCollector:
    """Test batches kept on their device until the epoch ends, then gathered."""

    def __init__(self) -> None:
        self._parts: list[tuple[torch.Tensor, torch.Tensor, list[str]]] = []

    def reset(self) -> None:
        """Forget the batches kept so far (at the start of a test epoch)."""
        self._parts = []

    def add(self, probs: torch.Tensor, target: torch.Tensor, paths) -> None:
        """Keep one batch.

        Args:
            probs: ``B x K`` probabilities (detached).
            target: ``B`` classes, or ``B x K`` targets with -1 where unknown.
            paths: ``B`` files, or None when the batch names none.
        """
        start = sum(len(p[0]) for p in self._parts)
        names = list(paths) if paths is not None else [None] * len(probs)
        names = [str(n) if n is not None else f"<item {start + i}>" for i, n in enumerate(names)]
        self._parts.append((probs.detach(), target.detach(), names))

    def results(self, multilabel: bool) -> ClassifierTestResults | None:
        """All processes' batches, in rank order (None when there were none).

        Args:
            multilabel: Whether the targets are ``N x K``.
        """
        local = (
            (
                torch.cat([p[0] for p in self._parts]).float().cpu(),
                torch.cat([p[1] for p in self._parts]).long().cpu(),
                [name for p in self._parts for name in p[2]],
            )
            if self._parts
            else None
        )
        parts = [local]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
        parts = [p for p in parts if p is not None]
        if not parts:
            return None
        return ClassifierTestResults(
            torch.cat([p[0] for p in parts]),
            torch.cat([p[1] for p in parts]),
            [name for p in parts for name in p[2]],
            multilabel,
        )
