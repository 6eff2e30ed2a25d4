"""Segment-then-classify: a lesion segmenter's masks focus a classifier on the lesion.

Step 1, :func:`predict_lesion_masks`, runs a trained :class:`SegmentationModule` checkpoint
over the images once and stores one 0/255 mask PNG per image at its original size (the same
files ``medvision predict`` writes). Step 2, :class:`~medvision.data.lesion_focus.LesionFocus`,
crops each image to its lesion (or blacks out the background) before the classifier's resize
and augmentation. :class:`HAM10000LesionCropDataModule` wires both: ``lesion_segmenter``,
``lesion_mask_dir`` and ``lesion_focus``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medvision.data.datasets import SegmentationDataset
from medvision.data.ham10000 import HAM10000DataModule
from medvision.data.ham10000_metadata import read_metadata_rows
from medvision.data.transforms import segmentation_transform
from medvision.evaluation.metrics import binarize
from medvision.models import SegmentationModule
from medvision.utils.checkpoints import load_checkpoint
from medvision.utils.files import save_png

log = logging.getLogger(__name__)


def segmenter_image_size(checkpoint: dict, path: Path) -> tuple[int, int] | int:
    """The ``image_size`` the segmenter was trained at, from its datamodule's saved hparams.

    Args:
        checkpoint: The loaded checkpoint dict (``datamodule_hyper_parameters``).
        path: Its file, named by the ``ValueError`` raised when the size is not recorded.
    """
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
    in ``out_dir`` are kept, so an interrupted run resumes.

    Args:
        checkpoint_path: A :class:`~medvision.models.SegmentationModule` checkpoint.
        image_paths: The images to segment.
        out_dir: Where the masks go, one ``<image stem>.png`` each.
        image_size: Size the segmenter runs at; None: the one it was trained at.
        batch_size: Images per forward pass.
        device: Where to run; None: CUDA if available, else the CPU.

    Returns:
        How many masks were written.
    """
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


class HAM10000LesionCropDataModule(HAM10000DataModule):
    """:class:`~medvision.data.HAM10000DataModule` whose lesion masks a segmenter predicts first.

    Segment-then-classify in one config: ``prepare_data`` runs :func:`predict_lesion_masks`
    with the ``lesion_segmenter`` checkpoint over every image of the metadata (and of
    ``predict_dir``) that has no mask in ``lesion_mask_dir`` yet, then the classifier trains on
    the images cropped to their lesion (``lesion_focus: crop``) or with the background blacked
    out (``mask``), as :class:`~medvision.data.HAM10000DataModule` describes.

    Args:
        lesion_segmenter: A :class:`~medvision.models.SegmentationModule` checkpoint trained on
            lesion masks (``configs/unet_ham10000.yaml``). ``None``: the masks must already be
            in ``lesion_mask_dir``.
        **kwargs: :class:`~medvision.data.HAM10000DataModule`'s arguments; ``task`` must be
            ``classification`` and ``lesion_focus`` ``crop`` or ``mask``.
    """

    def __init__(self, *args, lesion_segmenter: str | Path | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lesion_segmenter = None if lesion_segmenter is None else Path(lesion_segmenter)

    def prepare_data(self) -> None:
        if self.lesion_segmenter is None or self.focus is None:
            return
        records, _ = read_metadata_rows(self.data_dir / self.metadata_filename)
        images = [image for _, image, _ in self._locate(records)[0]]  # setup reports the rest
        if self.predict_dir is not None:
            images += self._predict_images()
        written = predict_lesion_masks(self.lesion_segmenter, images, self.focus.mask_dir)
        log.info("Lesion masks: %d predicted, %d already there", written, len(images) - written)
