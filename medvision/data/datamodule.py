"""The LightningDataModule every medvision datamodule builds on: loaders, input checks, links."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from medvision.data.datasets import SegmentationDataset, segmentation_dataset
from medvision.data.samplers import WeightedClassSampler
from medvision.data.screening import (
    BadFile,
    BadFiles,
    default_num_workers,
    problem_report,
    scan_files,
)
from medvision.data.splits import Split
from medvision.data.transforms import BatchSegmentationAugmentation
from medvision.utils.files import write_csv
from medvision.utils.runs import run_folder
from medvision.utils.sizes import as_hw

T = TypeVar("T")

log = logging.getLogger(__name__)


def _known_after_setup(counts: dict[str, int] | None, name: str) -> dict[str, int]:
    if counts is None:
        raise RuntimeError(f"{name} is known after setup('fit')")
    return dict(counts)


def stream_offset(seed: int) -> int:
    """What the data's own random streams add to ``seed``: 0 when the run seeds nothing, else a
    number drawn from ``seed`` and the run's ``seed_everything`` (which Lightning keeps in
    ``PL_GLOBAL_SEED``, inherited by every DDP process).

    The streams (the weighted sampler's draws, the device augmentation) thus follow both seeds:
    runs of another ``seed_everything`` on the same split draw their batches differently
    (``medvision-cv --seeds``).

    Args:
        seed: The datamodule's ``seed``.
    """
    trained = os.environ.get("PL_GLOBAL_SEED")
    if trained is None:
        return 0
    return int(np.random.SeedSequence([seed, int(trained)]).generate_state(1)[0])


#: What a segmentation datamodule's ``class_names`` must be (see
#: :func:`medvision.utils.class_names.check_class_names`).
MASK_CLASS_NAMES = (
    "one name for binary masks, or one per label value of a label map with the background "
    "(label 0) first, e.g. [background, liver, tumour]."
)


class MedVisionDataModule(L.LightningDataModule):
    """Loader plumbing and input checks shared by medvision's datamodules.

    Subclasses define ``class_names``, fill ``self.datasets`` (keys ``train``, ``val``,
    ``test``, ``predict``) in ``setup``, and set ``self._class_counts`` for classification.
    Loaders pin memory on CUDA machines and keep workers alive between epochs; under DDP the
    val and test loaders give each sample to exactly one process (no padding repeats).

    Bad input files found in ``setup`` (see :meth:`_screen`) stop the run with one error that
    lists them all (``bad_files: error``), or with ``bad_files: exclude`` are left out: a
    warning lists them, :attr:`excluded_files` holds them, and ``excluded_files.csv`` (``file``,
    ``problem``) is written to the run folder (the trainer's log folder, which holds
    ``checkpoints/``; nothing is written when no trainer is attached). In ``predict`` a bad
    file never stops the others: it is left out, warned about and kept in
    :attr:`predict_failures` (which the prediction writer puts in ``failed.csv``).

    A subclass lists the options whose default, type or description are its own and passes
    the others on in ``**kwargs`` (``super().__init__(data_dir, image_size, in_channels,
    augmentation, predict_dir, **kwargs)``): jsonargparse follows the call, so
    ``--data.help`` and the YAML show them as the subclass's options, with this class's types,
    defaults and descriptions. Its ``_save_hyperparameters`` saves them with its own.

    When a subclass sets :attr:`batch_augmentation` (a
    :class:`~medvision.data.transforms.BatchSegmentationAugmentation`), training batches get
    it in :meth:`on_after_batch_transfer`, on the device, after the transfer; its random stream
    restarts at ``setup("fit")`` from its seed plus the process's global rank.

    Args:
        data_dir: The dataset's root folder; null keeps the subclass's class attribute.
        image_size: Size images (and masks) are resized to: one side of a square, or
            ``[height, width]``, in pixels; null keeps the class attribute.
        in_channels: Channels of the image tensors, 1 (grayscale) or 3 (RGB); files are
            converted to it. null keeps the class attribute.
        augmentation: Name of the training augmentation preset (see
            :mod:`medvision.data.transforms`); ``none`` for no augmentation.
        predict_dir: Folder of images for ``medvision predict``; null: none (predict refuses).
        batch_size: Samples per batch, per process.
        num_workers: DataLoader worker processes; null: one per usable CPU core, at most 8.
        bad_files: What an unreadable or inconsistent input file does: ``error`` stops the
            run listing them all; ``exclude`` leaves them out and lists them.
        seed: Seed of the data split (or of the folds), of the augmentation streams and of
            what a datamodule subsamples (``max_per_class``, the empty slices kept). The
            streams (the weighted sampler's draws, the device augmentation) also follow the run's
            ``seed_everything`` (:func:`stream_offset`), so that runs of another seed on the
            same split draw differently.
        num_folds: Split the data that is not held out for testing into this many folds for
            cross-validation (at least 2); null: one split by ``val_fraction``.
        fold: With ``num_folds``, the fold (0-based) that is the validation set.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        image_size: int | tuple[int, int] | None = None,
        in_channels: int | None = None,
        augmentation: str = "none",
        predict_dir: str | Path | None = None,
        batch_size: int = 16,
        num_workers: int | None = None,
        bad_files: BadFiles = "error",
        seed: int = 42,
        num_folds: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__()
        if bad_files not in ("error", "exclude"):
            raise ValueError(f"bad_files must be 'error' or 'exclude', got {bad_files!r}")
        if in_channels is not None and in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if data_dir is not None:
            self.data_dir = Path(data_dir)
        if image_size is not None:
            self.image_size = image_size
        if in_channels is not None:
            self.in_channels = in_channels
        self.augmentation = augmentation
        self.seed = seed
        self.predict_dir = None if predict_dir is None else Path(predict_dir)
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.bad_files = bad_files
        self.num_folds, self.fold = num_folds, fold
        self.datasets: dict[str, Dataset] = {}
        self.excluded_files: list[BadFile] = []
        self.predict_failures: list[BadFile] = []
        self._class_counts: dict[str, int] | None = None
        self._known_counts: dict[str, int] | None = None
        self.batch_augmentation: BatchSegmentationAugmentation | None = None
        loader = dict(batch_size=batch_size, num_workers=num_workers, bad_files=bad_files)
        split = dict(seed=seed, num_folds=num_folds, fold=fold)
        self._shared_options = {"predict_dir": predict_dir, **loader, **split}

    def _seeded_split(self, val_fraction: float, test_fraction: float = 0.0) -> Split:
        """The seeded (or k-fold) :class:`~medvision.data.splits.Split` of this datamodule."""
        return Split(val_fraction, test_fraction, self.seed, self.num_folds, self.fold)

    def _share(self, **options) -> None:
        """Record options that an intermediate base class took from ``**kwargs``, so that
        :meth:`_save_hyperparameters` saves them too."""
        self._shared_options.update(options)

    def _save_hyperparameters(self, ignore: Sequence[str] = ()) -> None:
        """Lightning's ``save_hyperparameters()`` for the calling ``__init__``, and the options
        of this class it passed on in ``**kwargs`` (``seed``, ``predict_dir``, ``batch_size``,
        ``num_workers``, ``bad_files``, ``num_folds``, ``fold``), also at their defaults."""
        self.save_hyperparameters(self._shared_options)
        self.save_hyperparameters(ignore=list(ignore), frame=inspect.currentframe().f_back)

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(class_names)``."""
        return len(self.class_names)

    @property
    def class_counts(self) -> dict[str, int]:
        """Training images per class name (positives per label if multi-label); after ``setup``."""
        return _known_after_setup(self._class_counts, "class_counts")

    @property
    def known_counts(self) -> dict[str, int]:
        """Multi-label: training images whose label is known (not ignored), per label."""
        return _known_after_setup(self._known_counts, "known_counts")

    def describe_input(self) -> dict:
        """How this datamodule turns a file into a sample: what a checkpoint must record.

        Read by the model when it saves a checkpoint (see :mod:`medvision.models.record`).
        Returns ``image_size`` (``[height, width]``), ``in_channels``, ``intensity_window``
        (``[low, high]``, or None for per-image min-max scaling), ``class_names`` and
        ``lesion_focus`` (None unless images are cropped to a lesion first).
        """
        window = getattr(self, "intensity_window", None)
        return {
            "image_size": list(as_hw(self.image_size)),
            "in_channels": int(self.in_channels),
            "intensity_window": None if window is None else [float(v) for v in window],
            "class_names": [str(name) for name in self.class_names],
            "lesion_focus": None,
        }

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            self.datasets["predict"] = self._predict_dataset()
        elif "train" not in self.datasets:
            self._setup_splits()
        if stage == "fit" and self.batch_augmentation is not None:
            rank = self.trainer.global_rank if self.trainer else 0
            self.batch_augmentation.reseed(stream_offset(self.seed) + rank)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Run :attr:`batch_augmentation` on a training batch's ``image`` and ``mask``.

        Lightning calls this on the device the batch was moved to. Batches of validation,
        test, predict and the sanity check, and every batch when no augmentation is set,
        pass unchanged.
        """
        trainer = self.trainer
        if self.batch_augmentation is None or trainer is None or not trainer.training:
            return batch
        batch = dict(batch)
        batch["image"], batch["mask"] = self.batch_augmentation(batch["image"], batch["mask"])
        return batch

    #: How to give this datamodule a test split (said when ``test`` finds none).
    test_split_hint = "Set --data.init_args.test_fraction above 0."

    def _setup_splits(self) -> None:
        """Fill ``self.datasets`` with ``train``, ``val`` (and ``test``) splits."""
        raise NotImplementedError

    def _predict_dataset(self) -> Dataset:
        """The dataset of ``predict_dir``."""
        raise NotImplementedError

    def _segmentation_dataset(
        self, images, masks, augmentation: str, cache: bool = False, **options
    ) -> SegmentationDataset:
        """:func:`~medvision.data.datasets.segmentation_dataset` of these files as this
        datamodule reads them: its ``image_size``, ``in_channels``, ``intensity_window`` (if
        any), ``num_classes`` and ``cache_limit_gb``; ``options`` add to them."""
        return segmentation_dataset(
            images,
            masks,
            self.image_size,
            augmentation,
            cache=cache,
            cache_limit_gb=self.cache_limit_gb,
            in_channels=self.in_channels,
            intensity_window=getattr(self, "intensity_window", None),
            num_classes=self.num_classes,
            **options,
        )

    def _screen(self, bad: Sequence[BadFile], what: str, fix: str) -> None:
        """Act on the bad files one ``setup`` found, as ``bad_files`` says.

        ``error``: one ``ValueError`` listing every file with its problem, then ``fix``.
        ``exclude``: the caller leaves them out; here they are warned about, kept in
        :attr:`excluded_files` and written to ``excluded_files.csv`` in the run folder.
        """
        if not bad:
            return
        bad = sorted(bad, key=lambda b: b.path)
        if self.bad_files == "error":
            raise ValueError(
                problem_report(
                    [str(b) for b in bad],
                    what,
                    f"{fix} Or set bad_files: exclude (--data.init_args.bad_files exclude) to "
                    "train without them; they are then listed in excluded_files.csv.",
                )
            )
        self.excluded_files += bad
        path = self._excluded_files_csv()
        log.warning(
            "%s\nThey are excluded (bad_files: exclude)%s.",
            problem_report([str(b) for b in bad], what, fix, max_listed=len(bad)),
            f" and listed in {path}" if path else "",
        )

    def _excluded_files_csv(self) -> Path | None:
        """Write :attr:`excluded_files` to the run folder; its path, or None without a trainer."""
        trainer = self.trainer
        if trainer is None:
            return None
        path = run_folder(trainer) / "excluded_files.csv"
        if trainer.is_global_zero:
            rows = [{"file": b.path, "problem": b.problem} for b in self.excluded_files]
            write_csv(path, rows, ["file", "problem"])
        return path

    def _scan_predict(
        self,
        items: Sequence[T],
        check: Callable[[T], object],
        path_of: Callable[[T], Path] = Path,
        earlier: Sequence[BadFile] = (),
    ) -> list[T]:
        """The items of ``predict_dir`` that ``check`` accepts; the others are failures.

        Each bad file (and each of the ``earlier`` ones the caller found, such as an image
        without its mask) is warned about and kept in :attr:`predict_failures`; predict goes on
        with the rest. If nothing is left, one error lists them all.
        """
        good, bad = scan_files(items, check, path_of)
        failures = sorted([*earlier, *bad], key=lambda b: b.path)
        if failures and not good:
            raise ValueError(
                problem_report(
                    [str(b) for b in failures],
                    f"files in {self._predict_folder()} that cannot be predicted, and no other",
                    "Fix or replace them.",
                )
            )
        for failure in failures:
            log.warning("Not predicted: %s", failure)
        self.predict_failures = failures
        return good

    def _predict_folder(self) -> Path:
        """``self.predict_dir``, checked to be given and to exist."""
        folder = getattr(self, "predict_dir", None)
        if folder is None:
            raise ValueError("predict needs a folder of images: pass --data.predict_dir DIR")
        if not folder.is_dir():
            raise FileNotFoundError(f"predict_dir {folder} does not exist or is not a folder.")
        return folder

    def _predict_inputs(self, items: list[tuple], folder: Path, truth: str | None = None):
        """Log how many images predict reads from ``folder`` and ``truth``, what scores them;
        the images of the ``(image, truth)`` items, and their truths (None without ``truth``)."""
        scored = f" {truth}" if truth else ""
        log.info("Predicting on %d images from %s%s", len(items), folder, scored)
        truths = None if truth is None else [known for _, known in items]
        return [image for image, _ in items], truths

    def _loader(self, stage: str, shuffle: bool = False, sampler=None) -> DataLoader:
        if stage not in self.datasets:
            raise RuntimeError(f"no {stage} dataset: call setup() for this stage first")
        return DataLoader(
            self.datasets[stage],
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0 and stage != "predict",
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def _weighted_train_loader(self, seed: int) -> DataLoader:
        """Training loader drawing classes equally often, one share per DDP process."""
        trainer = self.trainer
        sampler = WeightedClassSampler(
            self.datasets["train"].labels,
            num_replicas=trainer.world_size if trainer else None,
            rank=trainer.global_rank if trainer else None,
            seed=seed + stream_offset(seed),
        )
        return self._loader("train", sampler=sampler)

    def _evaluation_sampler(self, stage: str) -> DistributedSampler | None:
        """Under DDP, a sampler giving each ``stage`` sample to exactly one process; else None.

        Lightning's default for val/test pads every process to the same count by repeating
        samples, which counts those samples twice in the metrics. This one does not pad, so
        processes may differ by one sample; being a ``DistributedSampler``, Lightning keeps it.
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        return UnrepeatedDistributedSampler(
            self.datasets[stage],
            num_replicas=trainer.world_size,
            rank=trainer.global_rank,
            shuffle=False,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", sampler=self._evaluation_sampler("val"))

    def test_dataloader(self) -> DataLoader:
        test = self.datasets.get("test")
        if self.datasets and (test is None or len(test) == 0):
            splits = ", ".join(f"{name} ({len(data)})" for name, data in self.datasets.items())
            raise ValueError(
                f"{type(self).__name__} has no test images (its splits: {splits}). "
                f"{self.test_split_hint}"
            )
        if test is not None:
            self._warn_if_it_chose_the_checkpoint(test)
        return self._loader("test", sampler=self._evaluation_sampler("test"))

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the data: the validation files that selected it."""
        validation = self.datasets.get("val")
        if validation is None:
            return {}
        return {"validation_files": sorted(str(Path(p).resolve()) for p in files_of(validation))}

    def load_state_dict(self, state_dict: dict) -> None:
        self._selection_files = set(state_dict.get("validation_files", ()))

    def _warn_if_it_chose_the_checkpoint(self, test: Dataset) -> None:
        """Warn when test images are validation images that selected the tested checkpoint."""
        chosen_on = getattr(self, "_selection_files", set())
        shared = [p for p in files_of(test) if str(Path(p).resolve()) in chosen_on]
        if shared:
            log.warning(
                "%d of the %d test images were validation images of the run that chose this "
                "checkpoint (first: %s): the test score is optimistic. Test on images the run "
                "never saw.",
                len(shared),
                len(test),
                shared[0],
            )

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")


def files_of(dataset: Dataset) -> list:
    """The files a dataset's samples come from (``image_paths``, else ``paths``), in order.

    Args:
        dataset: A medvision dataset.
    """
    return list(getattr(dataset, "image_paths", None) or getattr(dataset, "paths", None) or [])
