"""Stopping training at a NaN or infinite loss or gradient, naming the step, files, checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

from medvision.utils.steps import EveryNSteps, read_interval

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient (see :class:`NonFiniteGuard`)."""


@dataclass
class _Step:
    """One optimizer step as the guard saw it: where it was, and its check, still on the device."""

    epoch: int
    step: int
    batch_idx: int
    files: list[str]
    losses: list[torch.Tensor]
    finite: torch.Tensor | None  # 0-dim bool on the device; None: nothing to check


class NonFiniteGuard(Callback):
    """Stops training at a NaN or infinite loss or gradient, saying where and what to do.

    Before each optimizer step, the losses of its backward passes and the gradients (not
    under a ``16-mixed`` gradient scaler, which skips overflowing steps itself) are checked on
    the device, without waiting for it. The results are read back every
    ``check_every_n_steps`` optimizer steps (default: the trainer's ``log_every_n_steps``, the
    steps where Lightning reads the logged values anyway; 50 when logging is off), and always
    before a checkpoint is written, before validation and at the end of each epoch and of
    training. So a GPU is waited for once per interval rather than at every step.

    A bad step stops the run with an error naming its epoch, step and batch, the batch's files
    (the samples' ``path``) and the newest checkpoint, from which to resume after fixing the
    cause. Found at a later check, the weights have been updated with it since and are
    unusable, but no checkpoint holds them: a checkpoint is only written after a check found
    every step before it finite, so the newest one predates the bad step. Once a bad step is
    found, no checkpoint is written at all (a ``last.ckpt`` on Ctrl-C or SIGTERM included).
    ``check_every_n_steps: 1`` reads every step, and stops before the bad step is applied.

    With ``max_skipped`` above 0, up to that many such steps are skipped instead (their
    gradients are dropped, so the optimizer leaves the weights alone), each logged with its
    files and counted in ``train/skipped_steps``; one more stops the run. Skipping is decided
    before the optimizer step, so it reads the check at every step (``check_every_n_steps``
    must then be 1 or unset). The CLI adds this callback to every ``fit`` unless the config
    lists one.

    Args:
        max_skipped: non-finite steps to skip before stopping (0: stop at the first).
        check_every_n_steps: optimizer steps between reads of the check (``None``: the
            trainer's ``log_every_n_steps``; 1: every step).
    """

    def __init__(self, max_skipped: int = 0, check_every_n_steps: int | None = None) -> None:
        if max_skipped < 0:
            raise ValueError(f"max_skipped must be >= 0, got {max_skipped}")
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        if max_skipped > 0 and check_every_n_steps not in (None, 1):
            raise ValueError(
                f"NonFiniteGuard(max_skipped={max_skipped}) decides at each step whether to skip "
                f"it, so it checks every step: leave check_every_n_steps unset or set it to 1 "
                f"(got {check_every_n_steps})."
            )
        self.max_skipped = max_skipped
        self.check_every_n_steps = check_every_n_steps
        self.skipped = 0
        self._files: list[str] = []
        self._batch_idx = -1
        self._losses: list[torch.Tensor] = []
        self._pending: list[_Step] = []
        self._checks = EveryNSteps(1)
        self._failure: str | None = None

    @property
    def every_step(self) -> bool:
        """Whether the check is read at every step (``check_every_n_steps: 1`` or skipping)."""
        return self.max_skipped > 0 or self.check_every_n_steps == 1

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        self._pending, self._losses, self._failure = [], [], None

    def on_train_start(self, trainer: Trainer, pl_module) -> None:
        every = self.check_every_n_steps or read_interval(trainer.log_every_n_steps)
        self._checks = EveryNSteps(1 if self.every_step else every, start=trainer.global_step)

    def on_train_batch_start(self, trainer: Trainer, pl_module, batch, batch_idx: int) -> None:
        paths = batch.get("path") if isinstance(batch, dict) else None
        self._files = [str(p) for p in paths] if paths is not None else []
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: Trainer, pl_module, loss: torch.Tensor) -> None:
        self._losses.append(loss.detach())

    def on_before_optimizer_step(self, trainer: Trainer, pl_module, optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        losses, self._losses = self._losses, []
        grads = [] if _scales_gradients(trainer) else [p.grad for p in params if p.grad is not None]
        step = _Step(
            trainer.current_epoch,
            trainer.global_step,
            self._batch_idx,
            self._files,
            losses,
            _all_finite(losses, grads),
        )
        if self.every_step:
            self._decide(trainer, pl_module, step, params)
        elif step.finite is not None:
            self._pending.append(step)

    def on_train_batch_end(self, trainer: Trainer, pl_module, *args) -> None:
        if self._checks.due(trainer.global_step):
            self.check(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module) -> None:
        self.check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module) -> None:
        self.check(trainer)

    def on_train_end(self, trainer: Trainer, pl_module) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer: Trainer, pl_module, checkpoint: dict) -> None:
        self.check(trainer)  # before the file is written: a bad state is never saved

    def on_exception(self, trainer: Trainer, pl_module, exception: BaseException) -> None:
        """Say so when another error follows a bad step not yet checked (NaN weights break
        metrics, for one); later checkpoints are then refused."""
        if isinstance(exception, NonFiniteError):
            return
        try:
            self.check(trainer)
        except NonFiniteError as error:
            log.error("%s", error)
            if hasattr(exception, "add_note"):  # Python 3.11+
                exception.add_note(f"It followed a non-finite training step: {error}")
        except RuntimeError:  # the device is unusable (a CUDA error): nothing more to say
            pass

    def check(self, trainer: Trainer) -> None:
        """Read the checks of the steps since the last read, in one wait for the device.

        Args:
            trainer: the trainer, for the error's checkpoint and current step.

        Raises:
            NonFiniteError: when a step since the last check (or before) was not finite.
        """
        if self._failure is not None:
            raise NonFiniteError(self._failure)
        if not self._pending:
            return
        steps, self._pending = self._pending, []
        finite = torch.stack([step.finite for step in steps]).tolist()
        if all(finite):
            return
        bad = steps[finite.index(False)]
        self._failure = self._message(trainer, bad, _fault(bad.losses), applied=True)
        raise NonFiniteError(self._failure)

    def _decide(self, trainer: Trainer, pl_module, step: _Step, params: list) -> None:
        """Stop or skip at this very step when it is not finite (one read per step)."""
        if step.finite is None or bool(step.finite):
            return
        fault = _fault(step.losses)
        self.skipped += 1
        if self.skipped > self.max_skipped:
            self._failure = self._message(trainer, step, fault, applied=False)
            raise NonFiniteError(self._failure)
        for param in params:
            param.grad = None  # the optimizer skips parameters without a gradient
        log.warning(
            "Skipped a step (%d of at most %d): %s",
            self.skipped,
            self.max_skipped,
            _where(step, fault),
        )
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)

    def _message(self, trainer: Trainer, step: _Step, fault: str, applied: bool) -> str:
        checkpoint = _newest_checkpoint(trainer)
        resume = (
            f"The last good checkpoint is {checkpoint}; resume from it with --ckpt_path "
            f"{checkpoint}"
            if checkpoint
            else "No checkpoint was saved before this step"
        )
        found = ""
        if applied:
            found = (
                f" Found after step {trainer.global_step - 1}: the weights in memory have been "
                "updated with it and are not saved (NonFiniteGuard(check_every_n_steps=1) "
                "checks every step, and stops before a bad step is applied)."
            )
        return (
            f"Training stopped: {_where(step, fault)}.{found} {resume} after fixing the cause: "
            "check those files, lower the learning rate, or use 32-bit precision. "
            "NonFiniteGuard(max_skipped=N) skips up to N such steps instead."
        )


def _where(step: _Step, fault: str) -> str:
    files = ", ".join(step.files[:8]) + (" ..." if len(step.files) > 8 else "")
    return (
        f"{fault} at epoch {step.epoch}, step {step.step}, batch {step.batch_idx} "
        f"(files: {files or 'not known'})"
    )


def _scales_gradients(trainer: Trainer) -> bool:
    return getattr(trainer.precision_plugin, "scaler", None) is not None


def _all_finite(losses: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor | None:
    """Whether the losses and gradients are all finite, as a 0-dim bool tensor on their device
    (no wait for it); None when there is nothing to check."""
    values = [loss.float().flatten() for loss in losses]
    if grads:
        values.append(torch.stack(torch._foreach_norm(grads)).float())
    if not values:
        return None
    return torch.isfinite(torch.cat(values)).all()


def _fault(losses: list[torch.Tensor]) -> str:
    """What was not finite in a bad step: a loss (named with its value) or a gradient."""
    for loss in losses:
        if not torch.isfinite(loss).all():
            return f"the loss is {loss.float().flatten()[0].item()}"
    return "a gradient is NaN or infinite"


def _newest_checkpoint(trainer: Trainer) -> str | None:
    """The newest checkpoint file the trainer's checkpoint callbacks wrote (a callback names
    its next file before writing it, which a failed check then prevents: files only count)."""
    paths = {
        path
        for callback in trainer.checkpoint_callbacks
        for path in (
            getattr(callback, "best_model_path", ""),
            getattr(callback, "last_model_path", ""),
            *getattr(callback, "best_k_models", {}),
        )
        if path and Path(path).is_file()
    }
    return max(paths, key=lambda p: Path(p).stat().st_mtime, default=None)
