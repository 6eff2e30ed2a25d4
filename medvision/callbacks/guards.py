"""Stopping training at a NaN or infinite loss or gradient, naming the step, files, checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient (see :class:`NonFiniteGuard`)."""


class NonFiniteGuard(Callback):
    """Stops training at a NaN or infinite loss or gradient, saying where and what to do.

    Before each optimizer step, the losses of its backward passes and the gradients (not
    under a ``16-mixed`` gradient scaler, which skips overflowing steps itself) are checked
    together, in one wait for the GPU per step. The
    error names the epoch, step and batch, the batch's files (the samples' ``path``) and the
    newest checkpoint saved so far, from which to resume after fixing the cause. With
    ``max_skipped`` above 0, up to that many such steps are skipped instead (their gradients
    are dropped, so the optimizer leaves the weights alone), each logged with its files and
    counted in ``train/skipped_steps``; one more stops the run. The CLI adds this callback to
    every ``fit`` unless the config lists one.
    """

    def __init__(self, max_skipped: int = 0) -> None:
        if max_skipped < 0:
            raise ValueError(f"max_skipped must be >= 0, got {max_skipped}")
        self.max_skipped = max_skipped
        self.skipped = 0
        self._files: list[str] = []
        self._batch_idx = -1
        self._losses: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module, batch, batch_idx: int) -> None:
        paths = batch.get("path") if isinstance(batch, dict) else None
        self._files = [str(p) for p in paths] if paths is not None else []
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: Trainer, pl_module, loss: torch.Tensor) -> None:
        # kept on the device: the check waits for the GPU once per step, before the update
        self._losses.append(loss.detach())

    def on_before_optimizer_step(self, trainer: Trainer, pl_module, optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        losses, self._losses = self._losses, []
        check_grads = not _scales_gradients(trainer)
        fault = _non_finite(losses, params if check_grads else [])
        if fault is None:
            return
        self.skipped += 1
        if self.skipped > self.max_skipped:
            raise NonFiniteError(self._message(trainer, fault))
        for param in params:
            param.grad = None  # the optimizer skips parameters without a gradient
        log.warning(
            "Skipped a step (%d of at most %d): %s",
            self.skipped,
            self.max_skipped,
            self._where(trainer, fault),
        )
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)

    def _where(self, trainer: Trainer, fault: str) -> str:
        files = ", ".join(self._files[:8]) + (" ..." if len(self._files) > 8 else "")
        return (
            f"{fault} at epoch {trainer.current_epoch}, step {trainer.global_step}, batch "
            f"{self._batch_idx} (files: {files or 'not known'})"
        )

    def _message(self, trainer: Trainer, fault: str) -> str:
        checkpoint = _newest_checkpoint(trainer)
        resume = (
            f"The last good checkpoint is {checkpoint}; resume from it with --ckpt_path "
            f"{checkpoint}"
            if checkpoint
            else "No checkpoint was saved before this step"
        )
        return (
            f"Training stopped: {self._where(trainer, fault)}. {resume} after fixing the cause: "
            "check those files, lower the learning rate, or use 32-bit precision. "
            "NonFiniteGuard(max_skipped=N) skips up to N such steps instead."
        )


def _scales_gradients(trainer: Trainer) -> bool:
    return getattr(trainer.precision_plugin, "scaler", None) is not None


def _non_finite(losses: list[torch.Tensor], params: list[torch.Tensor]) -> str | None:
    """What is NaN or infinite among the step's losses and the gradients, in one device sync."""
    grads = [p.grad for p in params if p.grad is not None]
    values = [loss.float().flatten() for loss in losses]
    if grads:
        values.append(torch.stack(torch._foreach_norm(grads)).float())
    if not values or bool(torch.isfinite(torch.cat(values)).all()):
        return None
    for loss in losses:
        if not torch.isfinite(loss).all():
            return f"the loss is {loss.float().flatten()[0].item()}"
    return "a gradient is NaN or infinite"


def _newest_checkpoint(trainer: Trainer) -> str | None:
    paths = {
        path
        for callback in trainer.checkpoint_callbacks
        for path in (
            getattr(callback, "best_model_path", ""),
            getattr(callback, "last_model_path", ""),
        )
        if path and Path(path).is_file()
    }
    return max(paths, key=lambda p: Path(p).stat().st_mtime, default=None)
