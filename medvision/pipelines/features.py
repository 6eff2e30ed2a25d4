"""Feature maps of an image datamodule, extracted once by a trained classifier and cached.

The rebalancing study retrains only a classifier's head; every arm (plain, class-weighted,
weighted sampler, feature GAN) reads the same cached features, so images are decoded and the
extractor run once, not once per arm and epoch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from medvision.data.datamodule import MedVisionDataModule
from medvision.models.classification import load_classifier
from medvision.utils.files import write_atomically
from medvision.utils.sizes import as_hw

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class FeatureDataset(Dataset):
    """In-memory feature maps with class labels: samples ``{"features": C x h x w, "label"}``.

    Samples also carry ``path``. Arguments of different lengths raise ``ValueError``.

    Args:
        features: ``N x C x h x w`` feature maps (stored as given, e.g. float16; returned as
            float32).
        labels: ``N`` class indices.
        paths: The ``N`` images they came from.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, paths: list[str]) -> None:
        if not (len(features) == len(labels) == len(paths)):
            raise ValueError("features, labels and paths differ in length")
        self.features, self.paths = features, paths
        self.labels = [int(v) for v in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {
            "features": self.features[index].float(),
            "label": torch.tensor(self.labels[index]),
            "path": self.paths[index],
        }


class FeatureDataModule(MedVisionDataModule):
    """Serves the feature maps a trained classifier makes of another datamodule's splits.

    Each split (train, val, and test when ``data`` has one) goes once through
    ``forward_features`` of the classifier, with the validation transform (resize, no
    augmentation) for every split, and is cached as ``<cache_dir>/<split>.pt``. A cache is
    reused only when the checkpoint file, the split's images and labels and the transform are
    unchanged.

    Exposes the image datamodule's ``class_names``, ``in_channels`` and ``class_counts``, plus
    ``feature_shape`` (``C, h, w``) and ``classifier_checkpoint``, which the CLI links to the
    model. ``predict`` serves ``data``'s images: a head trained on features then predicts from
    images through the whole classifier.

    Args:
        data: Any single-label image datamodule of medvision (chest X-ray folders, HAM10000,
            ...), as ``class_path``/``init_args``.
        classifier_checkpoint: A :class:`~medvision.models.ClassificationModule` checkpoint
            trained on ``data``, the feature extractor.
        cache_dir: Folder of the cached features; null: ``features_<checkpoint name>`` beside
            the checkpoint.
        sampler: ``weighted`` draws training features class-balanced (DDP-aware); ``none``
            shuffles.
        seed: Seed of the weighted sampler (whose draws also follow ``seed_everything``).
        predict_dir: Folder of images for ``medvision predict``, given to ``data`` (or set it
            on ``data``).
        batch_size: Samples per batch (feature maps; images in predict), per process.
        num_workers: DataLoader worker processes.
        extract_batch_size: Images per batch while extracting the features.
    """

    def __init__(
        self,
        data: LightningDataModule,
        classifier_checkpoint: str | Path,
        cache_dir: str | Path | None = None,
        sampler: Literal["none", "weighted"] = "none",
        seed: int = 0,
        predict_dir: str | Path | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        extract_batch_size: int = 64,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if sampler not in ("none", "weighted"):
            raise ValueError(f"sampler must be 'none' or 'weighted', got {sampler!r}")
        self.data = data
        self.checkpoint_path = Path(classifier_checkpoint)
        if not self.checkpoint_path.is_file():
            raise FileNotFoundError(
                f"classifier_checkpoint {self.checkpoint_path} does not exist. Train the "
                "feature extractor first (medvision fit with a classification config) and give "
                "its best.ckpt."
            )
        self.cache_dir = (
            Path(cache_dir)
            if cache_dir is not None
            else self.checkpoint_path.parent / f"features_{self.checkpoint_path.stem}"
        )
        self.sampler, self.seed = sampler, seed
        if predict_dir is not None:
            self.data.predict_dir = Path(predict_dir)
        self.extract_batch_size = extract_batch_size
        self._feature_shape: tuple[int, int, int] | None = None
        self._prepared: dict[str, dict] | None = None  # what prepare_data found or made

    @property
    def classifier_checkpoint(self) -> str:
        """The extractor's checkpoint, as a string (it goes into the model's hyperparameters)."""
        return str(self.checkpoint_path)

    @property
    def class_names(self) -> list[str]:
        return list(self.data.class_names)

    @property
    def in_channels(self) -> int:
        return self.data.in_channels

    def describe_input(self) -> dict:
        """The image datamodule's :meth:`~MedVisionDataModule.describe_input`: a head trained on
        features predicts from images through the whole classifier."""
        return self.data.describe_input()

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of the classifier's feature maps at the image datamodule's size."""
        if self._feature_shape is None:
            classifier = load_classifier(self.checkpoint_path)
            height, width = as_hw(self.data.image_size)
            with torch.no_grad():
                probe = torch.zeros(1, self.in_channels, height, width)
                self._feature_shape = tuple(classifier.eval().forward_features(probe).shape[1:])
        return self._feature_shape

    def prepare_data(self) -> None:
        """Extract and cache the features of every split (once per machine, not per process)."""
        self._prepared = self._load_caches(extract=True)

    def _setup_splits(self) -> None:
        # in one process (a notebook, or one device) a missing cache is made here; under DDP
        # only prepare_data (local rank 0) extracts, and the other ranks read its files
        trainer = getattr(self, "trainer", None)
        caches = self._prepared or self._load_caches(
            extract=trainer is None or trainer.world_size == 1
        )
        for split, cached in caches.items():
            self.datasets[split] = FeatureDataset(
                cached["features"], cached["labels"], cached["paths"]
            )
        counts = Counter(self.datasets["train"].labels)
        self._class_counts = {name: counts[i] for i, name in enumerate(self.class_names)}

    def _load_caches(self, extract: bool) -> dict[str, dict]:
        """Every split's up-to-date cache, extracting the missing or stale ones if ``extract``."""
        self.data.prepare_data()
        self.data.setup("fit")
        fingerprints = {s: self._fingerprint(s) for s in SPLITS if s in self.data.datasets}
        caches = {s: self._cached(s, key) for s, key in fingerprints.items()}
        stale = [s for s, cached in caches.items() if cached is None]
        if stale and not extract:
            raise RuntimeError(
                f"no up-to-date feature cache for {stale} in {self.cache_dir}: prepare_data() "
                "makes it (the Trainer calls it before setup)."
            )
        if stale:
            device = self._device()
            classifier = load_classifier(self.checkpoint_path).to(device).eval()
            for split in stale:
                caches[split] = self._extract(split, fingerprints[split], classifier, device)
        return caches

    def _predict_dataset(self) -> Dataset:
        self.data.setup("predict")
        self.predict_failures = self.data.predict_failures  # unreadable inputs, for failed.csv
        return self.data.datasets["predict"]

    def train_dataloader(self) -> DataLoader:
        if self.sampler == "weighted":
            return self._weighted_train_loader(self.seed)
        return super().train_dataloader()

    # -- the cache ------------------------------------------------------------------------
    def _split_source(self, split: str) -> Dataset:
        """The split's images with the validation transform (no augmentation)."""
        dataset = copy.copy(self.data.datasets[split])
        dataset.transform = self.data.datasets["val"].transform
        if getattr(dataset, "multilabel", False):
            raise ValueError(
                "FeatureDataModule needs single-label data; "
                f"{type(self.data).__name__} gives multi-label targets."
            )
        return dataset

    def _fingerprint(self, split: str) -> str:
        dataset = self._split_source(split)
        stat = self.checkpoint_path.stat()
        key = {
            "checkpoint": str(self.checkpoint_path.resolve()),
            "checkpoint_size": stat.st_size,
            "checkpoint_mtime_ns": stat.st_mtime_ns,
            "images": [str(p) for p in dataset.image_paths],
            "labels": list(dataset.labels),
            "transform": repr(dataset.transform),
        }
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def _cached(self, split: str, fingerprint: str) -> dict | None:
        path = self.cache_dir / f"{split}.pt"
        if not path.is_file():
            return None
        cached = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if cached.get("fingerprint") != fingerprint:
            log.info("feature cache %s is out of date (checkpoint or split changed)", path)
            return None
        return cached

    def _extract(self, split: str, fingerprint: str, classifier, device: torch.device) -> dict:
        dataset = self._split_source(split)
        loader = DataLoader(
            dataset, batch_size=self.extract_batch_size, num_workers=self.data.num_workers
        )
        features, labels, paths = [], [], []
        with torch.no_grad():
            for batch in loader:
                maps = classifier.forward_features(batch["image"].to(device))
                features.append(maps.half().cpu())
                labels.append(batch["label"])
                paths += batch["path"]
        payload = {
            "fingerprint": fingerprint,
            "features": torch.cat(features),
            "labels": torch.cat(labels),
            "paths": paths,
        }
        path = self.cache_dir / f"{split}.pt"
        write_atomically(path, lambda tmp: torch.save(payload, tmp))
        log.info(
            "cached %s features of %d %s images in %s",
            tuple(payload["features"].shape[1:]),
            len(paths),
            split,
            path,
        )
        return payload

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
