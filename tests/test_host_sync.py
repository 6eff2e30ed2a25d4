"""Training steps read device values on the host at most once every ``log_every_n_steps`` steps.

On a GPU each such read (``.item()``, ``float()``, ``bool()``, ``.cpu()``, printing, and ops
whose output size depends on the data: ``nonzero``, ``unique``, ``bincount``, boolean-mask
indexing) waits until the GPU has finished, and the GPU idles meanwhile (with reads at every
step, an H200 was 58-81% busy: issue 19). CI has no GPU, so these tests count the reads on the
CPU while the CLI's trainer fits the shipped configs with every callback they list, plus the
progress bar, ``LearningRateMonitor`` and ``EpochTimer``, and allow them only at the steps where
Lightning logs (reads there cost one wait, shared by all). Not counted: reads while the data
loader runs (CPU tensors, in worker processes on a GPU machine), torch optimizers' step counts
(kept on the CPU unless ``capturable`` or ``fused``), and torchmetrics' logits check, which reads
on a CPU only (``torch.where`` on a GPU). Host-to-device copies of Python numbers are not seen.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import LearningRateMonitor
from torch.utils._python_dispatch import TorchDispatchMode

from medvision.cli import MedVisionCLI
from medvision.training import EpochTimer, MedVisionProgressBar, NonFiniteGuard
from medvision.training.checkpointing import LastCheckpoint
from medvision.utils.steps import EveryNSteps

from .conftest import CONFIGS

aten = torch.ops.aten
#: aten ops that make the host wait for a CUDA device (the scalar read behind ``item()``,
#: ``float()``, ``bool()``, ``int()`` and formatting, and ops with data-dependent sizes).
WAITING_OPS = {
    aten._local_scalar_dense.default,
    aten.nonzero.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.bincount.default,
    aten.masked_select.default,
    aten.equal.default,
    aten.repeat_interleave.Tensor,
}
#: Tensor methods that copy to the host without dispatching an op on a CPU tensor.
COPYING_METHODS = ("cpu", "tolist", "numpy")
#: (file, function) whose reads are not the training loop's (see the module docstring).
EXEMPT = (
    ("torch/utils/data/dataloader.py", None),
    ("torch/optim/optimizer.py", "_get_value"),
    ("torchmetrics/utilities/compute.py", "normalize_logits_if_needed"),
)
LOG_EVERY = 3


class HostReads(TorchDispatchMode, Callback):
    """Counts host reads per training step, from ``on_train_batch_start`` to the next one
    (Lightning's logging after the batch included), closed by validation or the epoch's end.

    Insert it first among the trainer's callbacks, and run ``fit`` inside ``with reads:``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.step: int | None = None
        self.reads: dict[int, list[str]] = defaultdict(list)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.step = trainer.global_step

    def on_validation_start(self, trainer, pl_module) -> None:
        self.step = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.step = None

    def record(self, what: str) -> None:
        if self.step is None:
            return
        frames, frame = [], sys._getframe(2)
        while frame is not None:
            path, name = frame.f_code.co_filename.replace("\\", "/"), frame.f_code.co_name
            if any(path.endswith(f) and fn in (None, name) for f, fn in EXEMPT):
                return
            if "/torch/" not in path and "/tests/" not in path:
                frames.append(f"{Path(path).parent.name}/{Path(path).name}:{frame.f_lineno}")
            frame = frame.f_back
        self.reads[self.step].append(f"{what} at {' <- '.join(frames[:4])}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in WAITING_OPS or (func is aten.index.Tensor and _bool_index(args)):
            self.record(func.__name__)
        return func(*args, **(kwargs or {}))

    def patch_methods(self, monkeypatch) -> None:
        for name in COPYING_METHODS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _name=name, _original=original, **kwargs):
                self.record(_name)
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def _bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else []
    return any(i is not None and i.dtype == torch.bool for i in indices)


def fit_counting_reads(args: list[str], monkeypatch) -> tuple[HostReads, int]:
    """Build the trainer as ``medvision fit`` does, add the callbacks every run may have, fit
    with the progress bar on, and return the reads and the number of training steps."""
    cli = MedVisionCLI(args=args, run=False)
    trainer = cli.trainer
    assert isinstance(trainer.progress_bar_callback, MedVisionProgressBar)
    assert any(isinstance(c, NonFiniteGuard) for c in trainer.callbacks)
    (last,) = [c for c in trainer.callbacks if isinstance(c, LastCheckpoint)]
    last.step_interval = 2 * LOG_EVERY  # a step checkpoint inside the counted steps
    trainer.callbacks.append(EpochTimer())
    if not any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks):
        trainer.callbacks.append(LearningRateMonitor())
    reads = HostReads()
    trainer.callbacks.insert(0, reads)
    reads.patch_methods(monkeypatch)
    with reads:
        trainer.fit(cli.model, datamodule=cli.datamodule)
    return reads, trainer.global_step


def assert_reads_only_where_lightning_logs(reads: HostReads, steps: int) -> None:
    logging_steps = {s for s in range(steps) if (s + 1) % LOG_EVERY == 0}
    elsewhere = {s: r for s, r in reads.reads.items() if s not in logging_steps}
    assert not elsewhere, "host reads outside the logging steps:\n" + "\n".join(
        f"step {s}: {len(r)} reads, e.g. {sorted(set(r))[:6]}" for s, r in sorted(elsewhere.items())
    )
    # the counter works: Lightning itself reads the logged loss at each logging step
    assert set(reads.reads) == logging_steps


def common_args(root: Path) -> list[str]:
    return [
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.accelerator=cpu",
        f"--trainer.log_every_n_steps={LOG_EVERY}",
        "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=4",
        "--data.init_args.image_size=32",
    ]


@pytest.mark.slow
def test_segmentation_training_reads_the_device_once_per_logging_interval(tmp_path, monkeypatch):
    args = [
        "--config",
        str(CONFIGS / "quickstart.yaml"),
        f"--data.init_args.data_dir={tmp_path / 'slices'}",
        "--data.init_args.num_slices=40",
        "--data.init_args.slice_size=32",
        "--model.init_args.encoder_name=resnet18",
        '--model.init_args.arch_kwargs={"encoder_depth": 3, "decoder_channels": [16, 8, 8]}',
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=6",
        *common_args(tmp_path),
    ]
    reads, steps = fit_counting_reads(args, monkeypatch)
    assert steps == 6
    assert_reads_only_where_lightning_logs(reads, steps)


@pytest.mark.slow
def test_classification_training_reads_the_device_once_per_logging_interval(
    tmp_path, monkeypatch, chest_dir
):
    args = [
        "--config",
        str(CONFIGS / "resnet18_chestxray_aug.yaml"),
        f"--data.init_args.data_dir={chest_dir}",
        "--model.init_args.model_name=resnet10t",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=4",  # epochs end between logging steps
        *common_args(tmp_path),
    ]
    reads, steps = fit_counting_reads(args, monkeypatch)
    assert steps == 8
    assert_reads_only_where_lightning_logs(reads, steps)


def test_every_n_steps_is_due_once_per_multiple_reached():
    interval = EveryNSteps(3)
    steps = [1, 2, 3, 3, 4, 5, 6, 8, 10, 11]  # 3 twice: gradient accumulation; 8 -> 10 skips 9
    assert [s for s in steps if interval.due(s)] == [3, 6, 10]
    resumed = EveryNSteps(3, start=7)
    assert [s for s in (8, 9, 10, 12) if resumed.due(s)] == [9, 12]
