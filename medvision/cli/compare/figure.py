"""The comparison figure: the same test images, one column per model, under a header row."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import default_collate

from medvision.cli.compare.runs import Run
from medvision.data.visualize import overlay, to_display
from medvision.evaluation.metrics import binarize, overlap_scores

#: Height of the figure's header row (column names), in pixels.
HEADER_PX = 24
#: Images smaller than this (pixels, height) are enlarged by a whole factor to at least this.
MIN_TILE_PX = 128
_CORRECT, _WRONG = (64, 200, 64), (230, 64, 64)


# ---------------------------------------------------------------------------------------------
# the figure
# ---------------------------------------------------------------------------------------------
def sample_batch(datamodule: LightningDataModule, num_images: int) -> dict:
    """``num_images`` test samples, evenly spaced over the test split, collated as one batch.

    Args:
        datamodule: A datamodule set up for ``test``.
        num_images: How many samples to take; all of them when the test split has fewer.

    Returns:
        The collated batch: ``image`` (``N x C x H x W``) and the dataset's other keys
        (``mask`` or ``label``, ``path``, ...).

    Raises:
        ValueError: when the test split is empty.
    """
    dataset = datamodule.test_dataloader().dataset
    if len(dataset) == 0:
        raise ValueError(f"{type(datamodule).__name__} has no test images to show")
    count = min(num_images, len(dataset))
    indices = np.unique(np.linspace(0, len(dataset) - 1, count).round().astype(int))
    return default_collate([dataset[int(i)] for i in indices])


def predict(module: LightningModule, batch: dict, name: str) -> dict:
    """The module's ``predict_step`` output on ``batch`` (channel count checked first).

    Args:
        module: A medvision segmentation or classification module, in eval mode.
        batch: A batch from :func:`sample_batch`.
        name: The run's name, for the error message.

    Returns:
        The batch's other keys and ``probs`` (``N x C x H x W``, in [0, 1]) for a segmenter,
        ``class_probs`` (``N x classes``) for a classifier.

    Raises:
        ValueError: when the module takes another number of input channels than ``batch``
            has.
    """
    channels = module.hparams.get("in_channels")
    if channels is not None and channels != batch["image"].shape[1]:
        raise ValueError(
            f"{name} takes {channels}-channel images but the first run's test images have "
            f"{batch['image'].shape[1]}: compare models trained on the same kind of data."
        )
    with torch.no_grad():
        return module.predict_step(batch, 0)


def _font(size: int = 13) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _scale(tile_height: int) -> int:
    return max(1, -(-MIN_TILE_PX // tile_height))


def _enlarge(array: np.ndarray, factor: int) -> np.ndarray:
    return array.repeat(factor, axis=0).repeat(factor, axis=1)


def _text_tile(shape: tuple[int, int], lines: Sequence[str], color=(255, 255, 255)) -> np.ndarray:
    tile = Image.new("RGB", (shape[1], shape[0]), (24, 24, 24))
    ImageDraw.Draw(tile).multiline_text((6, 6), "\n".join(lines), fill=color, font=_font())
    return np.asarray(tile)


def _label(text: str, tile: np.ndarray) -> np.ndarray:
    image = Image.fromarray(tile)
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((3, 3), text, font=_font(12))
    draw.rectangle(box, fill=(0, 0, 0))
    draw.text((3, 3), text, fill=(255, 255, 255), font=_font(12))
    return np.asarray(image)


def _image_rows(batch: dict, outputs: Sequence[dict], modules, truth_tile, model_tile) -> list:
    """Per image: the image (``rgb``, enlarged by ``factor``), ``truth_tile(rgb, i, factor)`` and
    ``model_tile(rgb, i, factor, output, module)`` for each model; tiles of one size."""
    factor = _scale(batch["image"].shape[-2])
    rows = []
    for i, image in enumerate(batch["image"]):
        rgb = _enlarge(to_display(image.float().numpy().transpose(1, 2, 0)), factor)
        models = zip(outputs, modules, strict=True)
        tiles = [model_tile(rgb, i, factor, output, module) for output, module in models]
        rows.append([rgb, truth_tile(rgb, i, factor), *tiles])
    return rows


def segmentation_rows(batch: dict, outputs: Sequence[dict], modules) -> list[list[np.ndarray]]:
    """Per image: image | truth | each model's mask (red; truth outlined green; Dice shown).

    Images lower than ``MIN_TILE_PX`` pixels are enlarged by a whole factor.

    Args:
        batch: The shown samples (:func:`sample_batch`): ``image`` (``N x C x H x W``) and
            ``mask`` (``N x 1 x H x W``, 0/1).
        outputs: Each model's :func:`predict` output on ``batch``, holding ``probs``.
        modules: The models, in the order of ``outputs``; each one's ``threshold`` binarizes
            its ``probs``.

    Returns:
        One row per image, each a list of uint8 RGB tiles (``H' x W' x 3``) of one size.
    """

    def truth(i: int, factor: int) -> np.ndarray:
        return _enlarge(batch["mask"][i, 0].numpy() > 0.5, factor)

    def truth_tile(rgb: np.ndarray, i: int, factor: int) -> np.ndarray:
        return overlay(rgb, truth(i, factor))

    def model_tile(rgb: np.ndarray, i: int, factor: int, output: dict, module) -> np.ndarray:
        pred = binarize(output["probs"][i, 0], module.threshold).numpy()
        dice, _ = overlap_scores(torch.from_numpy(pred)[None], batch["mask"][i, :1] > 0.5)
        masks = overlay(rgb, _enlarge(pred, factor), truth(i, factor))
        return _label(f"Dice {float(dice):.3f}", masks)

    return _image_rows(batch, outputs, modules, truth_tile, model_tile)


def _class_text(module: LightningModule, values: torch.Tensor, probs: bool) -> list[str]:
    """Predicted (``probs``) or true class names; multi-label: every label above threshold."""
    names = list(module.class_names)
    if getattr(module, "multilabel", False):
        cut = module.thresholds.cpu() if probs else 0.5
        return [n for n, on in zip(names, (values > cut).tolist(), strict=True) if on] or ["none"]
    if probs:
        best = int(values.argmax())
        return [names[best], f"p = {float(values[best]):.2f}"]
    return [names[int(values)]]


def classification_rows(batch: dict, outputs: Sequence[dict], modules) -> list[list[np.ndarray]]:
    """Per image: image | true label | each model's predicted label (green right, red wrong).

    Args:
        batch: The shown samples (:func:`sample_batch`): ``image`` (``N x C x H x W``) and
            ``label`` (``N`` class indices, or ``N x labels`` 0/1 for multi-label).
        outputs: Each model's :func:`predict` output on ``batch``, holding ``class_probs``
            (``N x classes``).
        modules: The models, in the order of ``outputs``: their ``class_names`` (the first
            model's name the truth) and, for multi-label, ``thresholds``.

    Returns:
        One row per image, each a list of uint8 RGB tiles (``H' x W' x 3``) of one size.
    """

    def truth(i: int) -> list[str]:
        return _class_text(modules[0], batch["label"][i], probs=False)

    def truth_tile(rgb: np.ndarray, i: int, factor: int) -> np.ndarray:
        return _text_tile(rgb.shape[:2], truth(i))

    def model_tile(rgb: np.ndarray, i: int, factor: int, output: dict, module) -> np.ndarray:
        predicted = _class_text(module, output["class_probs"][i], probs=True)
        multilabel = getattr(module, "multilabel", False)
        right = predicted == truth(i) if multilabel else predicted[0] == truth(i)[0]
        return _text_tile(rgb.shape[:2], predicted, _CORRECT if right else _WRONG)

    return _image_rows(batch, outputs, modules, truth_tile, model_tile)


def fit_title(title: str, width: int, font: ImageFont.ImageFont) -> str:
    """``title`` shortened from the left with "…" until it is at most ``width`` pixels wide.

    Run names are often paths, whose end (``unet_lung/version_3``) tells them apart; the full
    names are in the report's table.

    Args:
        title: A column title.
        width: The room for it, in pixels.
        font: The font it is drawn in.
    """
    if font.getlength(title) <= width:
        return title
    for start in range(1, len(title)):
        shown = "…" + title[start:]
        if font.getlength(shown) <= width:
            return shown
    return "…"


def compose_grid(rows: list[list[np.ndarray]], titles: Sequence[str]) -> np.ndarray:
    """Tiles of one size in a grid under a header row of column ``titles``; uint8 RGB.

    Size: ``HEADER_PX + rows * tile height`` by ``columns * tile width``.

    Args:
        rows: Rows of uint8 RGB tiles (``H x W x 3``), all of one size, as many in each row.
        titles: One title per column, shortened from the left to fit the tile width
            (:func:`fit_title`).
    """
    body = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    tile_width = rows[0][0].shape[1]
    header = Image.new("RGB", (body.shape[1], HEADER_PX), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    for column, title in enumerate(titles):
        shown = fit_title(title, tile_width - 8, _font())
        draw.text((column * tile_width + 4, 5), shown, fill=(0, 0, 0), font=_font())
    return np.concatenate([np.asarray(header), body], axis=0)


def comparison_figure(runs: Sequence[Run], datamodule: LightningDataModule, num_images: int):
    """The figure (uint8 RGB) and the shown images' paths, for a segmentation or classification.

    Args:
        runs: The rebuilt runs (``module`` and ``name`` set), one column each.
        datamodule: The first run's datamodule, set up for ``test``; its images are shown.
        num_images: How many test images (rows) to show.

    Returns:
        ``(figure, paths)``: the grid of :func:`compose_grid` (``H x W x 3`` uint8) and the
        shown images' file paths (empty when the dataset gives none).

    Raises:
        ValueError: when the data has masks but a run is not a segmenter, or labels but a
            run is not a classifier.
    """
    batch = sample_batch(datamodule, num_images)
    modules = [run.module for run in runs]
    outputs = [predict(run.module, batch, run.name) for run in runs]
    if "mask" in batch:
        if any("probs" not in output for output in outputs):
            raise ValueError("the first run's data has masks, but not every run is a segmenter")
        rows = segmentation_rows(batch, outputs, modules)
    else:
        if any("class_probs" not in output for output in outputs):
            raise ValueError("the first run's data has labels, but not every run is a classifier")
        rows = classification_rows(batch, outputs, modules)
    titles = ["image", "truth", *(run.name for run in runs)]
    return compose_grid(rows, titles), [str(p) for p in batch.get("path", [])]
