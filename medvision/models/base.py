"""What every medvision LightningModule shares: stage dispatch, loss logging, optimizers,
memory layout (``channels_last``) and ``torch.compile``."""

from __future__ import annotations

import logging
import shutil
import sys

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from medvision.models.record import FORMAT_VERSION, RECORD_KEY, Preprocessing, store_record

log = logging.getLogger(__name__)


class MedVisionModule(LightningModule):
    """Base for the task modules: subclasses implement ``step(batch, stage) -> loss``.

    ``training_step``, ``validation_step`` and ``test_step`` call ``step`` with the stage name
    (``train``, ``val``, ``test``).

    The channels-last memory layout (NHWC) is one that tensor cores run faster, above all
    under mixed precision. Where the platform cannot compile, fit stops at the start with an
    error saying what is missing.

    Args:
        optimizer: The optimizer, a callable injected from YAML (``OptimizerCallable``: a
            class path with ``init_args``); Adam by default.
        lr_scheduler: An optional LR scheduler, likewise (``LRSchedulerCallable``); None:
            none.
        lr_scheduler_monitor: The metric a scheduler that needs one (such as
            ``ReduceLROnPlateau``) watches.
        channels_last: Store the weights and pass the images in the channels-last layout;
            None: on when the trainer runs on a CUDA GPU, off elsewhere; True/False force it.
        compile: True wraps the networks in ``torch.compile`` (in place, so checkpoints keep
            their keys); a dict is passed to it as keyword arguments
            (``{mode: max-autotune}``, ``{backend: eager}``); False: not compiled.
    """

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_monitor: str = "val/loss",
        channels_last: bool | None = None,
        compile: bool | dict = False,
    ) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.lr_scheduler_monitor = lr_scheduler_monitor
        self.channels_last = channels_last
        self.compile_options = _compile_options(compile)
        self._memory_format = torch.contiguous_format

    #: The task (``segmentation`` or ``classification``): the record's ``task``, and what
    #: decides the callbacks the CLI adds (the test report, calibration).
    task: str = ""
    #: State-dict key prefixes used in training only (a GAN's networks): a checkpoint records
    #: them, and a module without those keys (the plain predictor) loads it without them.
    training_only_state: tuple[str, ...] = ()

    def describe_output(self) -> dict:
        """The model's side of the preprocessing record (:mod:`medvision.models.record`).

        Returns:
            ``task``, the network to rebuild (``network``) and what turns outputs into results
            (``mask_threshold``; ``multilabel``, ``thresholds``, ``mean``/``std``).
        """
        raise NotImplementedError

    def preprocessing(self) -> Preprocessing | None:
        """This model's :class:`~medvision.models.record.Preprocessing` with its trainer's data.

        The datamodule describes the input side (its ``describe_input()``), the model the rest.
        None when the model has no trainer or its datamodule cannot describe its input.
        """
        datamodule = getattr(self._trainer, "datamodule", None)
        describe = getattr(datamodule, "describe_input", None)
        if describe is None:
            return None
        record = {**describe(), **self.describe_output(), "version": FORMAT_VERSION}
        return Preprocessing.from_dict(record, type(self).__name__)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Write the preprocessing record into ``checkpoint["medvision"]`` (and what is
        training-only); without a describing datamodule, warn once and write none."""
        record = self.preprocessing()
        if record is None:
            if not getattr(self, "_warned_no_record", False):
                log.warning(
                    "The checkpoint gets no preprocessing record: the datamodule has no "
                    "describe_input(). Predict it with its config (--config)."
                )
                self._warned_no_record = True
            return
        store_record(checkpoint, record)
        if self.training_only_state:
            checkpoint[RECORD_KEY]["training_only"] = list(self.training_only_state)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Leave out the checkpoint's training-only weights that this module does not have
        (a rebalancer's GAN, when its classifier is loaded to predict). When ``fit`` resumes
        from it: refuse a weights-only checkpoint (``best.ckpt``) with the fix, and warn when
        its cosine schedule (restored as saved) anneals over another number of epochs than
        this run's ``max_epochs``."""
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == TrainerFn.FITTING:
            _check_resumable(checkpoint, trainer.ckpt_path)
            _warn_resumed_cosine(checkpoint.get("lr_schedulers", ()), trainer)
        prefixes = tuple(checkpoint.get(RECORD_KEY, {}).get("training_only", ()))
        state = checkpoint.get("state_dict")
        if not prefixes or state is None:
            return
        own = self.state_dict().keys()
        for key in [k for k in state if k.startswith(prefixes) and k not in own]:
            del state[key]

    def networks(self) -> list[nn.Module]:
        """The networks that ``channels_last`` and ``compile`` apply to (default: ``net``)."""
        return [self.net]

    def configure_model(self) -> None:
        """Apply ``channels_last`` and ``compile`` once the trainer's accelerator is known."""
        trainer = self._trainer
        on_cuda = trainer is not None and isinstance(trainer.accelerator, CUDAAccelerator)
        use_channels_last = on_cuda if self.channels_last is None else self.channels_last
        if use_channels_last and self._memory_format is not torch.channels_last:
            self._memory_format = torch.channels_last
            for net in self.networks():
                net.to(memory_format=torch.channels_last)
            log.info("Weights and images in channels_last memory layout")
        if self.compile_options is not None and not getattr(self, "_compiled", False):
            check_compile_supported(self.compile_options, on_cuda)
            for net in self.networks():
                net.compile(**self.compile_options)
            self._compiled = True
            log.info("Networks compiled with torch.compile(%s)", self.compile_options)

    def to_memory_format(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` in the networks' memory layout (channels-last when that is on)."""
        if image.ndim == 4 and self._memory_format is torch.channels_last:
            return image.contiguous(memory_format=torch.channels_last)
        return image

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

        The training loss is not a progress-bar metric: Lightning turns those into numbers at
        every step, which on a GPU waits for it. medvision's progress bar
        (:class:`~medvision.training.MedVisionProgressBar`) shows it every
        ``log_every_n_steps`` steps instead.
        """
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=not on_step,
            batch_size=batch_size,
            sync_dist=not on_step,
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates: those that require gradients."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        """The ``optimizer`` over :meth:`trainable_parameters`, with the ``lr_scheduler`` (per
        epoch) when there is one; a ``CosineAnnealingLR`` anneals over the run
        (:func:`follow_max_epochs`)."""
        optimizer = self.optimizer(self.trainable_parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        if self._trainer is not None:
            follow_max_epochs(scheduler, self._trainer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.lr_scheduler_monitor},
        }


def follow_max_epochs(scheduler, trainer) -> None:
    """Make a ``CosineAnnealingLR`` anneal over the run: its ``T_max`` becomes
    ``trainer.max_epochs``.

    A config's ``T_max: 40  # = trainer.max_epochs`` would otherwise keep annealing over 40
    epochs in a run shortened with ``--trainer.max_epochs 2`` (the rate barely moves) or go
    back up in one lengthened past 40. A changed ``T_max`` is logged with both numbers. Runs
    bounded by ``max_steps`` keep their ``T_max``, and so does a resumed run (its schedule
    is the checkpoint's); other schedulers are left alone.

    Args:
        scheduler: The scheduler just built (changed in place).
        trainer: The trainer that fits with it (its ``max_epochs``, ``max_steps`` and
            ``ckpt_path``).
    """
    epochs = trainer.max_epochs
    if not isinstance(scheduler, CosineAnnealingLR) or scheduler.T_max == epochs:
        return
    if trainer.max_steps != -1 or not epochs or epochs < 1 or trainer.ckpt_path is not None:
        return
    log.warning(
        "CosineAnnealingLR: T_max %d -> %d, to follow trainer.max_epochs: the learning rate "
        "anneals to eta_min by the end of this run. (For a cosine longer than the run, use "
        "CosineAnnealingWarmRestarts with T_0.)",
        scheduler.T_max,
        epochs,
    )
    scheduler.T_max = epochs


def _warn_resumed_cosine(states, trainer) -> None:
    """Warn when a resumed ``CosineAnnealingLR`` (a saved state with ``T_max`` and
    ``eta_min``) anneals over another number of epochs than ``trainer.max_epochs``."""
    epochs = trainer.max_epochs
    for state in states:
        if not (isinstance(state, dict) and {"T_max", "eta_min"} <= state.keys()):
            continue
        if trainer.max_steps == -1 and epochs and epochs > 0 and state["T_max"] != epochs:
            log.warning(
                "The resumed CosineAnnealingLR keeps its T_max %d from the checkpoint, and "
                "this run's trainer.max_epochs is %d: the learning rate follows the schedule "
                "the run started with, not the new length.",
                state["T_max"],
                epochs,
            )


def _check_resumable(checkpoint: dict, path) -> None:
    if "optimizer_states" not in checkpoint:
        raise ValueError(
            f"{path}: holds the weights only (no optimizer state; best.ckpt is saved so), so "
            "fit cannot resume from it. Resume with --ckpt_path last (the run's last.ckpt), or "
            "test / predict / export this checkpoint."
        )


def _compile_options(compile: bool | dict) -> dict | None:
    if compile is False or compile is None:
        return None
    if compile is True:
        return {}
    if isinstance(compile, dict):
        return dict(compile)
    raise ValueError(f"compile must be true, false or a dict of torch.compile options: {compile!r}")


def check_compile_supported(options: dict, on_cuda: bool) -> None:
    """Raise a ``RuntimeError`` naming what is missing when ``torch.compile`` cannot run here.

    Checked before training starts: TorchDynamo's support for this Python, and for the default
    ``inductor`` backend, Triton on a CUDA GPU or a C++ compiler on a CPU.

    Args:
        options: The ``torch.compile`` keyword arguments (its ``backend`` is checked).
        on_cuda: Whether the trainer runs on a CUDA GPU.

    Raises:
        RuntimeError: naming what is missing and how to train without compiling.
    """
    fix = "Set model.init_args.compile: false to train without compiling."
    if not torch._dynamo.is_dynamo_supported():
        raise RuntimeError(
            f"torch.compile is not supported with Python {sys.version.split()[0]} and torch "
            f"{torch.__version__} on {sys.platform}. {fix}"
        )
    if options.get("backend", "inductor") != "inductor":
        return
    if on_cuda:
        from torch.utils._triton import has_triton

        if not has_triton():
            raise RuntimeError(
                "torch.compile (inductor backend) needs Triton on a CUDA GPU, and it is not "
                f"installed or does not support this GPU: pip install triton. {fix}"
            )
    elif not any(shutil.which(name) for name in ("g++", "c++", "clang++", "cl")):
        raise RuntimeError(
            "torch.compile (inductor backend) on a CPU needs a C++ compiler (g++, clang++ or "
            f"MSVC's cl) on the PATH, and none was found. Install one, or set "
            f"model.init_args.compile: {{backend: eager}} to check the graph without code "
            f"generation. {fix}"
        )
