"""Samplers for imbalanced classes that keep working when training is spread over processes."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler


class WeightedClassSampler(DistributedSampler):
    """Draws samples with replacement so that every class is drawn equally often on average.

    Sample ``i`` of class ``c`` is drawn with probability proportional to ``1 / count(c)``, so
    each of the ``K`` classes present makes up ``1/K`` of the draws. An epoch is ``len(labels)``
    draws in all (rounded up to a multiple of ``num_replicas``).

    Under DDP each process (``rank`` of ``num_replicas``) takes its own share of one draw that
    every process makes alike from ``seed`` and the epoch (set by Lightning through
    ``set_epoch``), like ``DistributedSampler``. Being a ``DistributedSampler``, Lightning keeps
    it as it is instead of wrapping or replacing it.

    Args:
        labels: The class index of every training sample (``0..K-1``), in dataset order.
        num_replicas: Number of DDP processes; None: the initialized process group's size,
            or 1 without one.
        rank: This process's rank; None: the process group's, or 0 without one.
        seed: Seed of the draws (plus the epoch), the same on every process.
    """

    def __init__(
        self,
        labels: Sequence[int],
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        if len(labels) == 0:
            raise ValueError("WeightedClassSampler needs at least one label")
        if num_replicas is None and not torch.distributed.is_initialized():
            num_replicas, rank = 1, 0
        super().__init__(labels, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        labels_tensor = torch.as_tensor(list(labels), dtype=torch.long)
        counts = torch.bincount(labels_tensor)
        self.weights = 1.0 / counts[labels_tensor].double()
        self.num_samples = math.ceil(len(labels_tensor) / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(
            self.weights, self.total_size, replacement=True, generator=generator
        )
        return iter(draws[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
