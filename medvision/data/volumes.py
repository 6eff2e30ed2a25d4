"""2D segmentation on the slices of 3D NIfTI volumes, split by volume.

Layouts (image and mask pair by name; the folder names and name prefixes are settings)::

    <data_dir>/images/case_001.nii.gz     <data_dir>/masks/case_001.nii.gz     (default)
    <data_dir>/imagesTr/lung_001.nii.gz   <data_dir>/labelsTr/lung_001.nii.gz  (Decathlon)
    <data_dir>/3d_images/IMG_0002.nii.gz  <data_dir>/3d_images/MASK_0002.nii.gz (Kaggle lungs)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from medvision.data.datamodule import MASK_CLASS_NAMES, MedVisionDataModule
from medvision.data.dicom_series import is_dicom_file
from medvision.data.nifti import canonical_shape, is_nifti, nifti_stem
from medvision.data.screening import BadFile, distinct_names, pair_by_key, scan_files
from medvision.data.transforms import (
    SegmentationAugmentation,
    batch_augmentation_for,
    segmentation_transform,
)
from medvision.data.volume_slices import VolumeSliceDataset, VolumeSlices, decode_volume
from medvision.utils.class_names import check_class_names
from medvision.utils.sizes import as_hw

log = logging.getLogger(__name__)
T = TypeVar("T")

_LAYOUT_HINT = (
    "Expected <data_dir>/<image_dirname>/*.nii[.gz] and <data_dir>/<mask_dirname>/*.nii[.gz] "
    "with matching names (after image_prefix/mask_prefix). Decathlon tasks: image_dirname "
    "imagesTr, mask_dirname labelsTr. Kaggle finding-lungs-in-ct-data: image_dirname and "
    "mask_dirname 3d_images, image_prefix IMG_, mask_prefix MASK_. To try medvision without "
    "data, run: medvision fit --config configs/quickstart_volumes.yaml"
)


class VolumeSliceDataModule(MedVisionDataModule):
    """Segmentation of 2D slices taken along ``axis`` of 3D NIfTI volumes: binary, or label maps.

    The CLI passes ``num_classes`` (the number of ``class_names``) and ``class_names`` to the
    model.

    Volumes are read with nibabel in the closest canonical orientation (RAS+; see
    :mod:`medvision.data.nifti`), each mask checked to share its image's shape and affine and
    to hold only the known labels (the file, the labels found and the fix named). Each volume is
    decoded once in ``setup`` and its slices kept in memory, resized to ``image_size`` (float16
    images, uint8 masks; setup refuses more than ``cache_limit_gb``); an epoch only augments.

    Splits are drawn over VOLUMES (:func:`~medvision.data.splits.split_indices` with the seed, or
    fold ``fold`` of ``num_folds``), so the slices of one volume are never on both sides.
    Samples: see :class:`VolumeSliceDataset`. Bad files are reported together, or left out
    with ``bad_files: exclude``.

    In ``medvision predict`` every slice of every volume is predicted, and
    :class:`medvision.apply.VolumePredictionWriter` writes each volume's mask as
    NIfTI on the input's grid, in the input's subfolder. Its checkpoints record
    ``input: volume`` and the slice axis, so ``medvision predict --ckpt_path CKPT
    --data.predict_dir DIR`` reads volumes without a config. ``batch_size``, ``num_workers``,
    ``seed`` and ``bad_files`` are :class:`~medvision.data.datamodule.MedVisionDataModule`'s.

    Args:
        data_dir: The folder holding ``<image_dirname>/`` and ``<mask_dirname>/``.
        image_dirname: The image volumes' folder in ``data_dir`` (Decathlon: ``imagesTr``).
        mask_dirname: The mask volumes' folder in ``data_dir`` (Decathlon: ``labelsTr``); may
            be ``image_dirname`` when the prefixes differ.
        image_prefix: Prefix of image file names before the key they pair by (Kaggle lungs:
            ``IMG_``).
        mask_prefix: Prefix of mask file names before the key (Kaggle lungs: ``MASK_``).
        axis: Canonical (RAS+) axis to take slices along: 0, 1 or 2 (2: axial).
        image_size: Size slices and masks are resized to: one side of a square, or
            ``[height, width]``, in pixels.
        in_channels: Channels of the image tensor: 1, or 3 (the slice repeated, for
            ImageNet encoders).
        augmentation: Training augmentation: ``none``, ``basic`` (flip, shift-scale-rotate)
            or ``elastic`` (``basic`` plus elastic deformation).
        intensity_window: ``[low, high]`` HU range clipped and scaled to [0, 1] (e.g.
            ``[-1000, 400]`` for lungs); null: each volume min-max scaled.
        empty_slice_fraction: Training split only: keep every slice with foreground and
            this seeded fraction, in [0, 1], of the empty ones; null: all slices.
        val_fraction: Fraction of the volumes drawn for validation, in [0, 1) (unused with
            ``num_folds``).
        test_fraction: Fraction of the volumes held out for testing, in [0, 1); the same for
            every fold.
        predict_dir: Folder of volumes for ``medvision predict`` (NIfTI files and DICOM
            series folders, at any depth; see :func:`find_predict_volumes`), or one with the
            training layout (then ``<image_dirname>`` is read and masks are not used).
        cache_limit_gb: Largest memory for the decoded slices of all splits, in GB;
            ``setup`` refuses more.
        gpu_augmentation: Augment training batches on the device instead of in the loader
            (as LungCTDataModule does); needs ``augmentation`` ``none`` or ``basic``, and
            binary masks.
        class_names: The default ``["foreground"]`` (one name) means binary masks, labels 0
            and 1; two or more names, background first (``[background, liver, tumour]``),
            mean label maps with labels ``0..len(class_names)-1``, kept as they are
            (multi-class segmentation).
    """

    def __init__(
        self,
        data_dir: str | Path = "data/volumes",
        image_dirname: str = "images",
        mask_dirname: str = "masks",
        image_prefix: str = "",
        mask_prefix: str = "",
        axis: int = 2,
        image_size: int | tuple[int, int] = 256,
        in_channels: int = 1,
        augmentation: SegmentationAugmentation = "basic",
        intensity_window: tuple[float, float] | None = None,
        empty_slice_fraction: float | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        predict_dir: str | Path | None = None,
        cache_limit_gb: float = 4.0,
        gpu_augmentation: bool = False,
        class_names: Sequence[str] = ("foreground",),
        **kwargs,
    ) -> None:
        super().__init__(data_dir, image_size, in_channels, augmentation, predict_dir, **kwargs)
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (a canonical RAS axis), got {axis}")
        if empty_slice_fraction is not None and not 0 <= empty_slice_fraction <= 1:
            raise ValueError(f"empty_slice_fraction must lie in [0, 1], got {empty_slice_fraction}")
        if image_dirname == mask_dirname and image_prefix == mask_prefix:
            raise ValueError(
                f"images and masks share the folder {image_dirname!r}: give them different "
                "prefixes (image_prefix, mask_prefix), e.g. IMG_ and MASK_."
            )
        self.image_dirname, self.mask_dirname = image_dirname, mask_dirname
        self.image_prefix, self.mask_prefix = image_prefix, mask_prefix
        self.axis = axis
        self.intensity_window = intensity_window
        self.empty_slice_fraction = empty_slice_fraction
        self.split = self._seeded_split(val_fraction, test_fraction)
        self.cache_limit_gb = cache_limit_gb
        self.predict_root: Path | None = None  # predict: the folder the volumes were found in
        self.class_names = check_class_names(class_names, names_hint=MASK_CLASS_NAMES)
        if gpu_augmentation and self.num_classes > 1:
            raise ValueError(
                "gpu_augmentation: true warps binary masks only; with label maps "
                f"({len(self.class_names)} class_names) set gpu_augmentation: false."
            )
        self.batch_augmentation = batch_augmentation_for(
            augmentation, True, gpu_augmentation, self.seed
        )
        # the model records class_names; loggers merge both hparams and need equal values
        self._save_hyperparameters(ignore=["class_names"])

    def _setup_splits(self) -> None:
        pairs, unpaired = find_volume_pairs(
            self.data_dir,
            self.image_dirname,
            self.mask_dirname,
            self.image_prefix,
            self.mask_prefix,
        )
        self._check_memory([image for image, _ in pairs], self.data_dir)
        indices = self.split.indices(len(pairs))

        def decode(pair: tuple[Path, Path], fraction: float | None, rng) -> VolumeSlices:
            return self._decode(*pair, fraction, rng)

        decoded, bad = self._decode_parts(list(enumerate(pairs)), decode, indices, _image_of)
        self._screen(unpaired + bad, "bad volume pairs", "Fix or remove these files.")
        self._fill_datasets(indices, decoded)
        log.info(
            "Volumes %s: %s",
            self.data_dir,
            ", ".join(
                f"{stage} {sum(i in decoded for i in idx)} volumes / "
                f"{len(self.datasets[stage])} slices"
                for stage, idx in indices.items()
            ),
        )

    def _decode_parts(
        self,
        items: list[tuple[int, T]],
        decode,
        indices: dict,
        name_of: Callable[[T], Path] | None = None,
    ) -> tuple[dict[int, VolumeSlices], list[BadFile]]:
        """Decode every ``(index, item)`` with ``decode(item, fraction, rng)`` in parallel
        (``fraction``: ``empty_slice_fraction`` for training items, else None; ``rng`` seeded
        from ``seed`` and the index): the decoded parts by index, and the items that failed
        as :class:`BadFile`, named by ``name_of(item)`` (default: the item)."""
        train = set(indices["train"].tolist())
        decoded: dict[int, VolumeSlices] = {}

        def decode_one(item: tuple[int, T]) -> None:
            index, thing = item
            fraction = self.empty_slice_fraction if index in train else None
            decoded[index] = decode(thing, fraction, np.random.default_rng([self.seed, index]))

        name = name_of or (lambda thing: thing)
        _, bad = scan_files(items, decode_one, lambda item: name(item[1]))
        return decoded, bad

    def _fill_datasets(self, indices: dict, decoded: dict[int, VolumeSlices]) -> None:
        """Each split's dataset from its decoded parts (augmented on the CPU for training,
        unless the batches are augmented on the device)."""
        for stage, idx in indices.items():
            parts = [decoded[i] for i in idx if i in decoded]
            on_cpu = stage == "train" and self.batch_augmentation is None
            self.datasets[stage] = self._dataset(parts, self.augmentation if on_cpu else "none")

    def describe_input(self) -> dict:
        """:meth:`MedVisionDataModule.describe_input`, with ``input: volume`` and the
        ``slice_axis``: a checkpoint of this datamodule predicts volumes by itself."""
        return {**super().describe_input(), "input": "volume", "slice_axis": self.axis}

    def _predict_dataset(self) -> VolumeSliceDataset:
        folder = self._predict_folder()
        if (folder / self.image_dirname).is_dir():
            folder = folder / self.image_dirname
        self.predict_root = folder
        volumes, strangers = find_predict_volumes(folder, self.image_prefix)
        if not volumes and not strangers:
            raise FileNotFoundError(
                f"{folder}: no NIfTI volumes (.nii, .nii.gz) or DICOM series folders to predict on."
            )
        volumes, clashes = distinct_names(volumes, folder)
        decoded: dict[Path, VolumeSlices] = {}

        def decode(path: Path) -> None:
            decoded[path] = self._decode(path, None)

        self._check_memory(volumes, folder)
        volumes = self._scan_predict(volumes, decode, earlier=strangers + clashes)
        log.info("Predicting on %d volumes from %s", len(volumes), folder)
        return self._dataset([decoded[p] for p in volumes], "none", masks=False)

    def _decode(self, image: Path, mask: Path | None, fraction=None, rng=None) -> VolumeSlices:
        return decode_volume(
            image,
            mask,
            self.axis,
            self.image_size,
            self.intensity_window,
            fraction,
            rng,
            self.num_classes,
        )

    def _dataset(self, parts, augmentation: str, masks: bool = True) -> VolumeSliceDataset:
        slices = VolumeSlices.concat(parts, as_hw(self.image_size), masks)
        augment = segmentation_transform(self.image_size, augmentation, resize=False)
        return VolumeSliceDataset(slices, augment, self.in_channels, self.num_classes)

    def _check_memory(self, images: list[Path], source: Path) -> None:
        """Refuse before decoding when all slices would exceed ``cache_limit_gb``."""
        count = 0
        for path in images:
            try:
                count += canonical_shape(path)[self.axis]
            except ValueError:  # reported with the other bad files when decoded
                continue
        self._refuse_over_memory(count, source)

    def _refuse_over_memory(self, count: int, source: Path) -> None:
        """Refuse ``count`` slices from ``source`` whose cache would exceed ``cache_limit_gb``."""
        height, width = as_hw(self.image_size)
        total = count * height * width * 3  # float16 image, uint8 mask
        if total > self.cache_limit_gb * 1e9:
            raise ValueError(
                f"{count} slices from {source} at {height}x{width} would take "
                f"{total / 1e9:.2f} GB of memory, above cache_limit_gb={self.cache_limit_gb:g}. "
                "Raise --data.init_args.cache_limit_gb if the machine has the memory, or lower "
                "image_size."
            )


def find_predict_volumes(folder: Path, prefix: str = "") -> tuple[list[Path], list[BadFile]]:
    """The volumes under ``folder`` at any depth: NIfTI files and DICOM series folders.

    A folder holding DICOM files (``*.dcm``, or any name with the ``DICM`` preamble) is one
    series, read as a volume (``folder`` itself too); a NIfTI file is one volume. Hidden files
    and folders are ignored.

    Args:
        folder: The folder to search.
        prefix: Only NIfTI names starting with it count (``IMG_`` of the Kaggle layout).

    Returns:
        ``(volumes, strangers)``: NIfTI files and series folders, sorted, and a
        :class:`~medvision.data.screening.BadFile` for every other file.
    """
    volumes: list[Path] = []
    strangers: list[BadFile] = []
    for directory, names, files in os.walk(folder):
        names[:] = sorted(n for n in names if not n.startswith("."))
        here = [Path(directory) / f for f in sorted(files) if not f.startswith(".")]
        others = [p for p in here if not is_nifti(p)]
        if any(is_dicom_file(p) for p in others):  # a series: its files are read together
            volumes.append(Path(directory))
        else:
            strangers += [
                BadFile(str(p), "not a NIfTI volume (.nii, .nii.gz) nor a DICOM series file.")
                for p in others
            ]
        volumes += [p for p in here if is_nifti(p) and p.name.startswith(prefix)]
    return sorted(volumes), strangers


def find_volume_pairs(
    data_dir: Path,
    image_dirname: str,
    mask_dirname: str,
    image_prefix: str = "",
    mask_prefix: str = "",
) -> tuple[list[tuple[Path, Path]], list[BadFile]]:
    """NIfTI images and their masks, and every file without its partner.

    ``<image_dirname>/<image_prefix><key>.nii[.gz]`` pairs with
    ``<mask_dirname>/<mask_prefix><key>.nii[.gz]``. Hidden files (e.g. the ``._*`` files of
    the Decathlon archives) are ignored.

    Args:
        data_dir: The dataset's root folder.
        image_dirname: The image volumes' folder in ``data_dir``.
        mask_dirname: The mask volumes' folder in ``data_dir``.
        image_prefix: Prefix of image file names before the key.
        mask_prefix: Prefix of mask file names before the key.

    Returns:
        ``(pairs, unpaired)``: ``(image, mask)`` pairs sorted by image name, and a
        :class:`~medvision.data.screening.BadFile` for every file without its partner.

    Raises:
        FileNotFoundError: when ``data_dir`` or one of the two folders is missing.
    """
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir {data_dir} does not exist. {_LAYOUT_HINT}")
    found = {}
    for role, dirname, prefix in (
        ("image", image_dirname, image_prefix),
        ("mask", mask_dirname, mask_prefix),
    ):
        folder = data_dir / dirname
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is missing. {_LAYOUT_HINT}")
        found[role] = {
            nifti_stem(p)[len(prefix) :]: p
            for p in sorted(folder.iterdir())
            if is_nifti(p) and p.name.startswith(prefix) and not p.name.startswith(".")
        }
    images, masks = found["image"], found["mask"]
    if not images:
        raise FileNotFoundError(
            f"{data_dir / image_dirname} holds no {image_prefix}*.nii[.gz] volumes. {_LAYOUT_HINT}"
        )
    pairs, unpaired = pair_by_key(
        list(images.items()),
        masks,
        lambda key: f"{mask_prefix}{key}.nii[.gz] in {data_dir / mask_dirname}",
        lambda key: f"{image_prefix}{key}.nii[.gz] in {data_dir / image_dirname}",
    )
    return sorted(pairs), unpaired


def _image_of(pair: tuple[Path, Path]) -> Path:
    return pair[0]


__all__ = ["VolumeSliceDataModule", "find_predict_volumes", "find_volume_pairs"]
