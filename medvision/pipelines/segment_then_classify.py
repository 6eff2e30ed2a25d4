"""Segment-then-classify: a lesion segmenter's masks focus a classifier on the lesion.

Step 1, :func:`predict_lesion_masks`, runs a trained :class:`SegmentationModule` checkpoint
over the images once and stores one 0/255 mask PNG per image at its original size (the same
files ``medvision predict`` writes). Step 2, :class:`~medvision.data.lesion_focus.LesionFocus`,
crops each image to its lesion (or blacks out the background) before the classifier's resize
and augmentation. The HAM10000 datamodule wires both: ``lesion_segmenter``,
``lesion_mask_dir`` and ``lesion_focus``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medvision.checkpointing import load_checkpoint
from medvision.data.base import SegmentationDataset
from medvision.data.io import save_png
from medvision.data.transforms import segmentation_transform
from medvision.metrics import binarize

log = logging.getLogger(__name__)


def segmenter_image_size(checkpoint: dict, path: Path) -> tuple[int, int] | int:
    """The ``image_size`` the segmenter was trained at, from its datamodule's saved hparams."""
    size = checkpoint.get("datamodule_hyper_parameters", {}).get("image_size")
    if size is None:
        raise ValueError(
            f"{path}: the checkpoint does not record its datamodule's image_size; it was not "
            "trained through medvision fit. Give lesion_segmenter_image_size."
        )
    return size


@torch.inference_mode()
def predict_lesion_masks(
    checkpoint_path: str | Path,
    image_paths: list[Path],
    out_dir: str | Path,
    image_size: int | tuple[int, int] | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> int:
    """Write ``out_dir/<stem>.png`` (0/255, original size) for every image that lacks one.

    The segmenter runs at the ``image_size`` it was trained at (or the one given) and its
    probabilities are resized back before thresholding at its own ``threshold``. Masks already
    in ``out_dir`` are kept, so an interrupted run resumes. Returns how many were written.
    """
    from medvision.models import SegmentationModule  # models import data; avoid a cycle

    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    todo = [p for p in image_paths if not (out_dir / f"{p.stem}.png").is_file()]
    if not todo:
        return 0
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if image_size is None:
        checkpoint = load_checkpoint(checkpoint_path)
        image_size = segmenter_image_size(checkpoint, checkpoint_path)
    model = SegmentationModule.load_from_checkpoint(checkpoint_path, map_location=device).eval()
    dataset = SegmentationDataset(
        todo, None, segmentation_transform(image_size, "none"), model.hparams.in_channels
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    log.info(
        "Segmenting %d lesions with %s on %s into %s", len(todo), checkpoint_path, device, out_dir
    )
    for batch in loader:
        probs = model(batch["image"].to(device)).sigmoid().float()
        for i, path in enumerate(batch["path"]):
            size = tuple(int(v) for v in batch["original_size"][i])
            full = F.interpolate(probs[i : i + 1], size=size, mode="bilinear", align_corners=False)
            mask = binarize(full, model.threshold)[0, 0].cpu().numpy()
            save_png(out_dir / f"{Path(path).stem}.png", mask.astype(np.uint8) * 255)
    return len(todo)
