"""WeightedClassSampler: equal class shares, one process or several (DDP on 2 CPU processes)."""

import json
from collections import Counter
from pathlib import Path

import lightning as L
import pytest

from medvision.data import ChestXrayDataModule
from medvision.data.samplers import WeightedClassSampler
from medvision.models import ClassificationModule

LABELS = [0] * 700 + [1] * 250 + [2] * 50  # class 2 is rare: 5% of the data


def class_shares(sampler: WeightedClassSampler, labels: list[int], epochs: int) -> dict:
    counts = Counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        counts.update(labels[i] for i in sampler)
    total = sum(counts.values())
    return {label: count / total for label, count in counts.items()}


def test_rare_class_share_is_within_ten_percent_of_the_target():
    shares = class_shares(WeightedClassSampler(LABELS, seed=0), LABELS, epochs=20)
    for label in (0, 1, 2):
        assert shares[label] == pytest.approx(1 / 3, rel=0.10)


def test_epoch_length_and_repeatability():
    sampler = WeightedClassSampler(LABELS, seed=5)
    first = list(sampler)
    assert len(first) == len(sampler) == len(LABELS)
    assert first == list(WeightedClassSampler(LABELS, seed=5))
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_each_rank_draws_its_own_share_of_one_draw():
    ranks = [WeightedClassSampler(LABELS, num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    draws = [list(s) for s in ranks]
    assert len(draws[0]) == len(draws[1]) == len(LABELS) // 2
    whole = WeightedClassSampler(LABELS, num_replicas=1, rank=0, seed=1)
    whole.num_samples = whole.total_size = len(LABELS)
    interleaved = [i for pair in zip(*draws, strict=True) for i in pair]
    assert interleaved == list(whole)


class RecordDraws(L.Callback):
    """Writes, per rank, the sampler type and the image paths drawn in each epoch."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.draws: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.draws.setdefault(trainer.current_epoch, []).extend(batch["path"])

    def on_train_end(self, trainer, pl_module) -> None:
        record = {
            "sampler": type(trainer.train_dataloader.sampler).__name__,
            "draws": self.draws,
        }
        path = self.folder / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record))


@pytest.mark.slow
def test_weighted_sampler_under_ddp_on_two_cpu_processes(chest_dir, tmp_path, monkeypatch):
    # an earlier in-process DDP run leaves its port in MASTER_PORT (and maybe still bound)
    for var in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    dm = ChestXrayDataModule(
        chest_dir, image_size=16, sampler="weighted", batch_size=8, num_workers=0, seed=7
    )
    model = ClassificationModule("cnn5", in_channels=1, num_classes=4, class_names=dm.class_names)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=6,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[RecordDraws(tmp_path)],
    )
    trainer.fit(model, datamodule=dm)

    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["sampler"] for r in records] == ["WeightedClassSampler"] * 2  # not replaced
    dm.setup("fit")
    paths = [str(p) for p in dm.datasets["train"].image_paths]
    labels = dm.datasets["train"].labels
    drawn = Counter()
    for epoch in range(6):
        for rank, record in enumerate(records):
            expected = WeightedClassSampler(labels, num_replicas=2, rank=rank, seed=7)
            expected.set_epoch(epoch)
            assert record["draws"][str(epoch)] == [paths[i] for i in expected]
            drawn.update(labels[paths.index(p)] for p in record["draws"][str(epoch)])
    rare = dm.class_names.index("TUBERCULOSIS")  # 4 of 46 training images
    share = drawn[rare] / sum(drawn.values())
    assert share == pytest.approx(1 / 4, rel=0.10)
