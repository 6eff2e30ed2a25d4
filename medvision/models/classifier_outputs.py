"""What a classifier keeps besides its network: its temperature.

- The temperature (temperature scaling, :mod:`medvision.evaluation.calibration`) is a scalar
  buffer of
  :class:`~medvision.models.ClassificationModule`, 1 unless calibrated. Checkpoints written
  before it existed lack the entry: :func:`add_temperature` registers a load hook that reads
  them as 1. A multi-label model's decision thresholds are probabilities, so they move with the
  temperature (:func:`thresholds_at_temperature`) to keep every decision as it was.

The test split's predictions are kept by the test report
(:class:`medvision.evaluation.ClassificationTestReport`), not by the module.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

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
