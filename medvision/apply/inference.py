"""A trained model that applies itself in Python: ``medvision.load_model(path).predict(x)``.

The checkpoint's preprocessing record (:mod:`medvision.models.record`) says how to read,
scale and resize each image and how to turn the network's output into a result, so one call
does what ``medvision predict --ckpt_path CKPT`` does, with the same datasets, transforms,
``predict_step`` and resizing back: a mask is identical to the one the CLI writes, and
probabilities agree to float precision.

Example::

    import medvision

    model = medvision.load_model("runs/unet_lung/version_0/checkpoints/best.ckpt")
    result = model.predict("slice.tif")  # SegmentationResult
    result.mask  # bool H x W at the image's own size
    result.labels  # uint8 H x W: 0/1, or class indices of a multi-class model

A classifier also explains itself: ``model.explain("xray.png").overlay`` is a Grad-CAM heat
map over the image (:meth:`Predictor.explain`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from medvision.apply.bundle import ONNX, check_runtime, open_model, weights_file
from medvision.apply.explanations import CamExplainer, Explanation
from medvision.apply.onnx_runtime import onnx_module
from medvision.apply.prediction import probabilities_at_size
from medvision.apply.tta import check_tta, predict_with_tta
from medvision.apply.volume_inference import VolumeResult, predict_volumes
from medvision.data.io import read_image
from medvision.data.predict_folder import ArrayImageDataset, predict_dataset, predict_transform
from medvision.evaluation.label_maps import labels_from_probabilities
from medvision.models.record import Preprocessing
from medvision.utils.imports import import_object

log = logging.getLogger(__name__)

#: What :meth:`Predictor.predict` takes: a file, an array, or a list of either.
ImageInput = str | Path | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class SegmentationResult:
    """One image's segmentation, binary or multi-class.

    Args:
        mask: bool ``H x W`` at the input's own size: foreground where ``probabilities`` is
            above the threshold (binary), or where the class is not the background (label
            maps).
        probabilities: float32, resized (bilinear) from the network's size to the input's:
            ``H x W`` foreground probabilities (binary), or ``K x H x W`` softmax
            probabilities in the order of ``class_names`` (multi-class).
        source: The file, or ``<array N>`` for the N-th array given.
        labels: uint8 ``H x W``: 0/1 (binary), or each pixel's most probable class index
            (multi-class; 0 = background), as ``medvision predict`` writes to ``masks/``.
        class_names: The classes of ``labels`` (one name for a binary model).
    """

    mask: np.ndarray
    probabilities: np.ndarray
    source: str
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClassificationResult:
    """One image's classification.

    Args:
        probabilities: float32 ``K``, in the order of ``class_names`` (softmax, or for
            multi-label an independent sigmoid per label).
        class_names: The classes.
        label: Single-label: the most probable class. Multi-label: the labels above their
            thresholds, joined by ``|`` (``""`` for none), as ``predictions.csv`` writes them.
        labels: The predicted classes as a list (one for single-label, any number otherwise).
        source: The file, or ``<array N>`` for the N-th array given.
    """

    probabilities: np.ndarray
    class_names: tuple[str, ...]
    label: str
    labels: tuple[str, ...]
    source: str

    def as_dict(self) -> dict[str, float]:
        """Class name -> probability."""
        return dict(zip(self.class_names, self.probabilities.tolist(), strict=True))


class Predictor:
    """A trained medvision model in eval mode with its preprocessing (see :func:`load_model`).

    Args:
        module: The LightningModule (``SegmentationModule`` or ``ClassificationModule``).
        preprocessing: Its record.
        device: Where it runs.
        source: The file (or bundle folder) it came from.
        runtime: ``torch``, or ``onnx``: ``module`` is then an
            :class:`~medvision.apply.onnx_runtime.OnnxModule` running the bundle's ONNX file.

    Attributes:
        module: The LightningModule, in eval mode, on ``device``.
        preprocessing: The :class:`~medvision.models.record.Preprocessing` record.
    """

    def __init__(
        self,
        module,
        preprocessing: Preprocessing,
        device: torch.device,
        source: Path,
        runtime: str = "torch",
    ) -> None:
        self.module = module
        self.preprocessing = preprocessing
        self.device = device
        self.source = source
        self.runtime = runtime

    @property
    def task(self) -> str:
        """``segmentation`` or ``classification``."""
        return self.preprocessing.task

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes, in the output's order."""
        return self.preprocessing.class_names

    def __repr__(self) -> str:
        record = self.preprocessing
        return (
            f"Predictor({self.source}: {record.task}, {record.network['class_path']}, "
            f"image_size={list(record.image_size)}, in_channels={record.in_channels}, "
            f"classes={list(record.class_names)}, device={self.device}, runtime={self.runtime})"
        )

    @torch.inference_mode()
    def predict(
        self,
        x: ImageInput | Sequence[ImageInput],
        tta: str | None = None,
        batch_size: int = 16,
        threshold: float | None = None,
    ) -> SegmentationResult | ClassificationResult | VolumeResult | list:
        """Predict one image or many, prepared as the checkpoint's record says.

        Args:
            x: An image file (png, jpg, tif, bmp; any size and dtype), a numpy array or tensor
                holding one decoded image (raw intensities ``H x W`` or ``H x W x C``,
                channels last, as reading the file gives: the record's channel conversion,
                intensity scaling and resize are applied), or a list of files or arrays. A
                volume model (record ``input: volume``) takes NIfTI files or DICOM series
                folders instead, and gives a
                :class:`~medvision.apply.volume_inference.VolumeResult` each (labels on the
                input's grid, as ``medvision predict`` writes them).
            tta: Test-time augmentation (:data:`medvision.apply.tta.TTA_NAMES`), or None.
            batch_size: Images per forward pass.
            threshold: Segmentation: the mask threshold (default: the record's
                ``mask_threshold``).

        Returns:
            For one image a :class:`SegmentationResult` or :class:`ClassificationResult`, for
            a list one per image in the same order.

        Raises:
            ValueError: naming the file or array that cannot be read, or the unknown ``tta``.
        """
        check_tta(tta)
        single = not isinstance(x, list | tuple)
        items = [x] if single else list(x)
        if not items:
            return []
        threshold = self.preprocessing.mask_threshold if threshold is None else threshold
        if self.preprocessing.input == "volume":
            volumes = self._volumes(items)
            record, device = self.preprocessing, self.device
            results = predict_volumes(
                self.module, record, volumes, tta, threshold, batch_size, device
            )
            return results[0] if single else results
        dataset = self._dataset(items)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=0)
        results: list = []
        for index, batch in enumerate(loader):
            batch["image"] = batch["image"].to(self.device)
            output = predict_with_tta(self.module, batch, index, tta)
            results += self._results(output, threshold)
        return results[0] if single else results

    def explain(
        self,
        x: ImageInput | Sequence[ImageInput],
        target_layer: str | None = None,
        class_index: int | str | None = None,
        method: str = "hirescam",
        batch_size: int = 16,
    ) -> Explanation | list[Explanation]:
        """Heat maps of where a classifier found the evidence for a class (Grad-CAM family).

        Each image is prepared as in :meth:`predict`; the heat map is computed at the
        network's input size with pytorch-grad-cam and resized to the image's own size.

        Args:
            x: An image file, an array or tensor holding one decoded image, or a list of
                either (as :meth:`predict` takes them).
            target_layer: The layer to explain, a name in ``module.net.named_modules()``
                (``layer4`` of a ResNet); None: the last spatial feature map.
            class_index: The class to explain (index or name); None: each image's predicted
                class (multi-label: its most probable label).
            method: ``hirescam`` (default; identical to Grad-CAM for timm's classifiers,
                faithful for ``cnn5``/``vgg_leaky``) or ``gradcam``.
            batch_size: Images per forward and backward pass.

        Returns:
            For one image an :class:`~medvision.apply.explanations.Explanation`
            (``heat_map`` float32 ``H x W`` in [0, 1], ``overlay`` uint8 ``H x W x 3``, the
            class, layer and method), for a list one per image.

        Raises:
            ValueError: for a segmentation model (which cannot be explained: its
                probabilities show where it looks), an unknown method, layer or class (naming
                the argument and the fix), or an unreadable input.
            ImportError: naming the ``trust`` extra when pytorch-grad-cam is missing.
        """
        if self.runtime != "torch":
            raise ValueError(
                f"explain needs the network's layers and gradients: load {self.source} with "
                "runtime='torch' (the default) to explain it."
            )
        explainer = CamExplainer(self.module, method, target_layer, class_index)
        single = not isinstance(x, list | tuple)
        items = [x] if single else list(x)
        if not items:
            return []
        loader = DataLoader(self._dataset(items), batch_size=batch_size, num_workers=0)
        results: list[Explanation] = []
        for batch in loader:
            start = len(results)
            originals = [
                read_image(item) if isinstance(item, str | Path) else _as_array(item)
                for item in items[start : start + len(batch["image"])]
            ]
            images = batch["image"].to(self.device)
            results += explainer.explain(images, originals, [str(p) for p in batch["path"]])
        return results[0] if single else results

    def _volumes(self, items: list) -> list[Path]:
        if not all(isinstance(item, str | Path) for item in items):
            kinds = sorted({type(item).__name__ for item in items})
            raise ValueError(
                f"{self.source} segments volumes: predict takes NIfTI files (.nii, .nii.gz) or "
                f"DICOM series folders, not {kinds}."
            )
        return [Path(item) for item in items]

    def _dataset(self, items: list):
        record = self.preprocessing
        if all(isinstance(item, str | Path) for item in items):
            window = record.intensity_window if record.task == "segmentation" else None
            return predict_dataset(
                record.task, [Path(p) for p in items], record.image_size, record.in_channels, window
            )
        if all(isinstance(item, np.ndarray | torch.Tensor) for item in items):
            arrays = [_as_array(item) for item in items]
            return ArrayImageDataset(
                arrays,
                predict_transform(record.task, record.image_size),
                record.in_channels,
                record.intensity_window if record.task == "segmentation" else None,
            )
        kinds = sorted({type(item).__name__ for item in items})
        raise ValueError(
            f"predict takes file paths or arrays (numpy or torch), one kind per call; got {kinds}."
        )

    def _results(self, output: dict, threshold: float) -> list:
        if self.task == "segmentation":
            results = []
            for i, source in enumerate(output["path"]):
                size = tuple(int(v) for v in output["original_size"][i])
                probs = probabilities_at_size(output["probs"][i], size)[0].cpu()
                labels = labels_from_probabilities(probs[None], threshold)[0].numpy()
                labels = labels.astype(np.uint8)
                maps = probs[0] if len(probs) == 1 else probs
                results.append(
                    SegmentationResult(labels > 0, maps.numpy(), source, labels, self.class_names)
                )
            return results
        probs = output["class_probs"].float().cpu()
        names = self.class_names
        results = []
        for i, source in enumerate(output["path"]):
            if self.preprocessing.multilabel:
                chosen = probs[i] > self.module.thresholds.cpu()
                labels = tuple(n for n, keep in zip(names, chosen.tolist(), strict=True) if keep)
            else:
                labels = (names[int(probs[i].argmax())],)
            results.append(
                ClassificationResult(probs[i].numpy(), names, "|".join(labels), labels, source)
            )
        return results


def _as_array(item: np.ndarray | torch.Tensor) -> np.ndarray:
    return item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item


def load_model(
    path: str | Path, device: str | torch.device = "cpu", runtime: str = "torch"
) -> Predictor:
    """A trained model from a checkpoint, a weights file or a bundle, ready to predict.

    A checkpoint is read with ``weights_only`` loading (no code in it can run); a bundle
    (:mod:`medvision.apply.bundle`) from its JSON and safetensors files alone. The network its
    preprocessing record names is rebuilt and given the weights; nothing is downloaded (but a
    Hub repo id not yet in the cache, see below) and no training data or config is needed.
    Training-only parts (optimizer state, a rebalancer's GAN) are left out.

    Args:
        path: A ``best.ckpt``/``last.ckpt`` of ``medvision fit``, a weights file of
            ``medvision export --format weights``, a bundle folder of ``--format bundle``, or
            the Hugging Face Hub repo id (``owner/name``) of a bundle, resolved by
            ``huggingface_hub`` (from its cache alone with ``HF_HUB_OFFLINE=1``).
        device: ``cpu``, ``cuda``, ``cuda:1``, ...; never changed silently.
        runtime: ``torch``, or ``onnx``: run a bundle's ``model.onnx`` with onnxruntime on
            the CPU, with the same preparation of the images and the same results.

    Returns:
        A :class:`Predictor` in eval mode.

    Raises:
        FileNotFoundError: for a missing file, folder or cached repo.
        ValueError: naming the file, for one that is truncated or damaged, from another tool
            or a newer medvision, without a preprocessing record (older medvision: predict
            with its config instead), whose weights do not fit the network, or an ONNX file
            whose input disagrees with the record; ``onnx`` for a checkpoint file or a GPU.
        RuntimeError: for a CUDA device on a machine without one.
    """
    device = torch.device(device)
    check_runtime(runtime)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"load_model({str(path)!r}, device={str(device)!r}): no CUDA GPU is available "
            "here; use device='cpu'."
        )
    if runtime == "onnx" and device.type != "cpu":
        raise ValueError(
            f"load_model({str(path)!r}, runtime='onnx') runs onnxruntime on the CPU: use "
            "device='cpu', or runtime='torch' on the GPU."
        )
    opened = open_model(path, runtime)
    record = opened.record
    if record.lesion_focus is not None:
        raise ValueError(
            f"{path}: was trained on images cropped to lesion masks (lesion_focus "
            f"{dict(record.lesion_focus)}); predict it with its config and the masks: "
            f"medvision predict --config CONFIG --ckpt_path {path} --data.predict_dir DIR."
        )
    if runtime == "onnx":
        module = onnx_module(opened.bundle, record, opened.config, ONNX)
    else:
        module = build_module(record)
        load_weights(module, opened.checkpoint, weights_file(opened.source))
        module.eval().to(device)
    log.info("Loaded %s (%s, %s runtime) on %s", opened.source, record.task, runtime, device)
    return Predictor(module, record, device, opened.source, runtime)


def build_module(record: Preprocessing):
    """The LightningModule a record's ``network`` names, with fresh weights.

    Args:
        record: The preprocessing record.

    Returns:
        The module (in training mode; load weights with :func:`load_weights`).
    """
    config = record.module_config(linked=True)
    module_class = import_object(config["class_path"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*class_names not given.*")
        return module_class(**config["init_args"])


def load_weights(
    module, checkpoint: dict, path: Path, built_from: str = "the network its record names"
) -> None:
    """Load a checkpoint's ``state_dict`` into ``module``, without its training-only parts.

    The module's ``on_load_checkpoint`` sees the checkpoint's ``hyper_parameters`` (a
    multi-class segmenter refuses other classes there, naming them).

    Args:
        module: A module of :func:`build_module` (or one built from a config).
        checkpoint: The loaded file (``state_dict`` and the ``medvision`` entry).
        path: The file, named in errors.
        built_from: What ``module`` was built from, for the message when weights do not fit.

    Raises:
        ValueError: naming ``path`` when keys are missing or shapes differ.
    """
    loaded = {"state_dict": dict(checkpoint["state_dict"])}
    for key in ("medvision", "hyper_parameters"):
        if key in checkpoint:
            loaded[key] = checkpoint[key]
    module.on_load_checkpoint(loaded)
    try:
        module.load_state_dict(loaded["state_dict"], strict=True)
    except RuntimeError:
        raise ValueError(
            f"{path}: its weights do not fit {built_from} "
            f"({_misfit(module.state_dict(), loaded['state_dict'])}). The file may be damaged or "
            "edited; use the checkpoint medvision fit wrote."
        ) from None


def _misfit(expected: dict, given: dict) -> str:
    """How ``given`` differs from the ``expected`` state dict: keys missing, unexpected, or of
    another shape, a few of each named."""

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} {list(given[k].shape)} for {list(expected[k].shape)}"
        for k in expected
        if k in given and hasattr(given[k], "shape") and given[k].shape != expected[k].shape
    ]
    parts = [("missing", missing), ("unexpected", unexpected), ("other shapes", shapes)]
    return "; ".join(f"{name}: {few(keys)}" for name, keys in parts if keys) or "other values"
