"""What every medvision LightningModule shares: stage dispatch, loss logging, optimizers."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable


class MedVisionModule(LightningModule):
    """Base for the task modules: subclasses implement ``step(batch, stage) -> loss``.

    ``training_step``, ``validation_step`` and ``test_step`` call ``step`` with the stage name
    (``train``, ``val``, ``test``). The optimizer and an optional LR scheduler are callables
    injected from YAML (``OptimizerCallable``); a scheduler that needs a metric (such as
    ``ReduceLROnPlateau``) watches ``lr_scheduler_monitor``.
    """

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.lr_scheduler_monitor = lr_scheduler_monitor

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "test")

    def log_loss(self, stage: str, loss: torch.Tensor, batch_size: int) -> None:
        """``<stage>/loss``: per step and per epoch in training, per epoch (all ranks) else.

        The epoch value is the mean of the per-batch losses weighted by batch size, summed over
        all processes under DDP (``sync_dist``), so every sample counts once. A loss with a
        batch-level term (the Dice part of ``bce_dice`` pools the batch) still depends on how
        samples are grouped into batches, so ``val/loss`` under DDP can differ from a
        single-process run; the ``val/*`` metrics (torchmetrics) do not.
        """
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
            sync_dist=not on_step,
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates: those that require gradients."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        optimizer = self.optimizer(self.trainable_parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.lr_scheduler_monitor},
        }
