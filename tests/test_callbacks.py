"""Callbacks not covered by the CLI tests: the epoch timer."""

import json
import time

from lightning.pytorch.callbacks import ModelCheckpoint

from medvision.cli import MedVisionCLI
from medvision.training import EpochTimer

from .conftest import unet_run_args

SAVE_SECONDS = 0.3


class SlowCheckpoint(ModelCheckpoint):
    """A checkpoint callback that takes at least SAVE_SECONDS at every epoch end."""

    def on_train_epoch_end(self, trainer, pl_module):
        time.sleep(SAVE_SECONDS)
        super().on_train_epoch_end(trainer, pl_module)


def test_epoch_timer_counts_checkpoint_saving(tmp_path, lung_dir):
    args = unet_run_args(
        tmp_path, lung_dir, "--trainer.max_epochs=2", "--trainer.limit_train_batches=1"
    )
    cli = MedVisionCLI(args=args, run=False)
    timer = EpochTimer()
    # Lightning runs checkpoint callbacks after all others: the slow save comes after the timer's
    # on_train_epoch_end, and must still be inside the epoch's time
    cli.trainer.callbacks += [timer, SlowCheckpoint(dirpath=tmp_path / "slow")]
    cli.trainer.fit(cli.model, cli.datamodule)

    written = json.loads((tmp_path / "version_0/epoch_times.json").read_text())
    assert written == timer.epochs and [e["epoch"] for e in written] == [0, 1]
    assert all(e["wall_s"] >= SAVE_SECONDS and e["cpu_s"] > 0 for e in written)
