"""A volume model applied in Python: ``load_model(path).predict("ct.nii.gz")``.

A checkpoint whose record says ``input: volume`` (a model trained on the slices of 3D volumes)
predicts a NIfTI file or a DICOM series folder as ``medvision predict`` does: the volume read
in canonical orientation and scaled as a whole, every slice along the record's axis predicted
(with the same dataset, ``predict_step`` and test-time augmentation), the probabilities resized
to each slice's size and turned into labels, and the labels put back on the input's own grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from medvision.apply.tta import predict_with_tta
from medvision.data.nifti import assemble_slices, label_image
from medvision.data.transforms import segmentation_transform
from medvision.data.volume_slices import VolumeSliceDataset, decode_volume
from medvision.evaluation.label_maps import labels_at_size
from medvision.models.record import Preprocessing


@dataclass(frozen=True)
class VolumeResult:
    """One volume's segmentation, on the input's own grid.

    Args:
        labels: uint8 volume of the input's stored shape: 0/1 (binary), or each voxel's most
            probable class index (0 = background), as ``medvision predict`` writes it.
        mask: bool, the same shape: not background.
        image: ``labels`` as a ``nibabel`` image with the input's affine (qform and sform),
            ready for ``nibabel.save``.
        source: The NIfTI file or DICOM series folder.
        class_names: The classes of ``labels``.
    """

    labels: np.ndarray
    mask: np.ndarray
    image: object
    source: str
    class_names: tuple[str, ...] = ()


def predict_volumes(
    module,
    record: Preprocessing,
    paths: Sequence[str | Path],
    tta: str | None,
    threshold: float | None,
    batch_size: int,
    device: torch.device,
) -> list[VolumeResult]:
    """Segment whole volumes slice by slice, as the record of a volume model says.

    Args:
        module: The trained segmentation module, in eval mode on ``device``.
        record: Its record (``input: volume``).
        paths: NIfTI files (``.nii``, ``.nii.gz``) or DICOM series folders.
        tta: Test-time augmentation, or None.
        threshold: Binary models: the foreground threshold.
        batch_size: Slices per forward pass.
        device: Where the module runs.

    Returns:
        One :class:`VolumeResult` per path, in order.

    Raises:
        ValueError: naming a file that is not a readable 3D volume or series.
    """
    augment = segmentation_transform(record.image_size, "none", resize=False)
    results = []
    for path in paths:
        slices = decode_volume(
            Path(path),
            None,
            record.slice_axis,
            record.image_size,
            record.intensity_window,
            num_classes=record.num_classes,
        )
        dataset = VolumeSliceDataset(slices, augment, record.in_channels, record.num_classes)
        predicted: list[np.ndarray] = []
        for index, batch in enumerate(DataLoader(dataset, batch_size=batch_size)):
            batch["image"] = batch["image"].to(device)
            output = predict_with_tta(module, batch, index, tta)
            for probs, size in zip(output["probs"], output["original_size"], strict=True):
                height, width = (int(v) for v in size)
                predicted.append(labels_at_size(probs, (height, width), threshold))
        image = label_image(assemble_slices(predicted, record.slice_axis), path, str(path))
        labels = np.asanyarray(image.dataobj)
        results.append(VolumeResult(labels, labels > 0, image, str(path), record.class_names))
    return results
