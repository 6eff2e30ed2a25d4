"""``medvision export``: a checkpoint as ONNX, TorchScript or a slim weights file.

::

    medvision export --ckpt_path best.ckpt --format onnx --output lung_unet.onnx

Every exported file gets its preprocessing beside it, as ``<output>.json`` (and inside ONNX
files as the metadata property ``medvision_preprocessing``, inside TorchScript files as the
extra file ``medvision_preprocessing.json``), so anyone can reproduce the input without
Python (``docs/apply.md``). ONNX and TorchScript files take ``image``: float32
``N x in_channels x height x width`` in [0, 1] at the record's ``image_size`` (any ``N``),
prepared by steps 1-4 of :mod:`medvision.models.record`; they output ``probabilities``
(segmentation: sigmoid ``N x 1 x height x width``, or softmax ``N x K x height x width``
for label maps of K classes; classification: softmax, or sigmoid for multi-label, ``N x K``).
A classifier's standardization (``mean``/``std``) and its temperature (``temperature``,
when calibrated) are inside.
After writing, the file is run on random images and compared with PyTorch (ONNX: with
onnxruntime when installed); a difference above ``1e-4`` is an error.

``weights``: the network's weights and the record, without optimizer state or a GAN's extra
networks (a fraction of ``best.ckpt``); :func:`medvision.load_model` and ``medvision predict
--ckpt_path`` take it like a checkpoint.

``bundle``: a folder to share (:mod:`medvision.apply.bundle`): the weights as safetensors,
config.json, a model card and, with ``onnx=True`` (``--onnx``), ``model.onnx`` checked as
above; no pickle.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import lightning
import numpy as np
import torch
from torch import nn

import medvision
from medvision.apply.bundle import write_bundle
from medvision.apply.inference import Predictor, load_model
from medvision.models.record import RECORD_KEY, Preprocessing
from medvision.utils.files import write_atomically, write_text

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "weights", "bundle")
#: Largest difference allowed between the exported file's output and PyTorch's.
TOLERANCE = 1e-4
EXTRA_HINT = 'pip install "medvision-lightning[export]"'


class ExportedNetwork(nn.Module):
    """A trained network as exported: [0, 1] images in, probabilities out.

    Args:
        predictor: The loaded model (:func:`medvision.load_model`).
    """

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        record = predictor.preprocessing
        self.net = predictor.module.net
        self.activation = record.activation
        mean = predictor.module.input_mean if record.task == "classification" else None
        std = predictor.module.input_std if record.task == "classification" else None
        self.standardize = mean is not None
        self.register_buffer("mean", None if mean is None else mean.detach().clone())
        self.register_buffer("std", None if std is None else std.detach().clone())
        temperature = getattr(predictor.module, "temperature", None)  # a calibrated classifier
        self.register_buffer(
            "temperature", None if temperature is None else temperature.detach().clone()
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Probabilities of images ``N x C x H x W`` in [0, 1] (see the module docstring)."""
        if self.standardize:
            image = (image - self.mean) / self.std
        logits = self.net(image)
        if self.temperature is not None:
            logits = logits / self.temperature
        return logits.softmax(dim=1) if self.activation == "softmax" else logits.sigmoid()


def export(
    ckpt_path: str | Path,
    format: str,
    output: str | Path,
    check: bool = True,
    onnx: bool = False,
) -> dict[str, object]:
    """Write ``output`` in ``format`` and its preprocessing to ``<output>.json``.

    Args:
        ckpt_path: A medvision checkpoint or weights file.
        format: ``onnx``, ``torchscript``, ``weights`` or ``bundle``.
        output: The file to write (``bundle``: the folder); it must not exist.
        check: Run the written file on random images and compare with PyTorch.
        onnx: ``bundle``: also write ``model.onnx`` into it.

    Returns:
        What ``<output>.json`` holds: ``format``, ``file``, ``input``, ``output``,
        ``preprocessing`` and, when checked, ``max_difference``; for ``bundle`` its
        config.json (no ``<output>.json`` is written beside a bundle).

    Raises:
        ValueError: for an unknown format, an existing ``output``, or an exported file whose
            output differs from PyTorch's by more than :data:`TOLERANCE`.
        ImportError: naming the ``export`` extra when ONNX support is not installed.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown --format {format!r}: use one of {list(FORMATS)}")
    if onnx and format != "bundle":
        raise ValueError(f"--onnx adds model.onnx to a bundle: use --format onnx for {format}.")
    output = Path(output)
    if format == "bundle":
        return _export_bundle(ckpt_path, output, check, onnx)
    sidecar = output.with_name(output.name + ".json")
    for path in (output, sidecar):
        if path.exists():
            raise ValueError(f"{path} exists: remove it or give another --output.")
    predictor = load_model(ckpt_path)
    record = predictor.preprocessing
    network = ExportedNetwork(predictor).eval()
    description = describe(record, format, output)
    if format == "weights":
        write_weights(predictor, output)
    elif format == "onnx":
        _write_onnx(network, record, output)
    else:
        _write_torchscript(network, record, output)
    if check and format != "weights":
        description["max_difference"] = check_export(output, format, network, record)
    description["checkpoint"] = str(Path(ckpt_path).resolve())
    write_text(sidecar, json.dumps(description, indent=2))
    log.info("Exported %s as %s to %s (preprocessing in %s)", ckpt_path, format, output, sidecar)
    return description


def _export_bundle(ckpt_path, output: Path, check: bool, onnx: bool) -> dict[str, object]:
    """The bundle of :mod:`medvision.apply.bundle`; its ``model.onnx`` written and checked here."""
    predictor = load_model(ckpt_path)
    network = ExportedNetwork(predictor).eval()
    record = predictor.preprocessing

    def write_onnx(path: Path) -> dict[str, object]:
        _write_onnx(network, record, path)
        description = describe(record, "onnx", path)
        if check:
            description["max_difference"] = check_export(path, "onnx", network, record)
        return {k: v for k, v in description.items() if k != "preprocessing"}

    return write_bundle(predictor, output, ckpt_path, write_onnx if onnx else None)


def describe(record: Preprocessing, format: str, output: Path) -> dict[str, object]:
    """The ``<output>.json`` contents: the file's input and output, and the preprocessing.

    Args:
        record: The checkpoint's preprocessing record.
        format: The export format.
        output: The exported file.
    """
    height, width = record.image_size
    shape = ["N", record.num_classes]  # segmentation: 1 (binary) or K (label maps) channels
    if record.task == "segmentation":
        shape += [height, width]
    return {
        "format": format,
        "file": output.name,
        "medvision_version": medvision.__version__,
        "input": {
            "name": "image",
            "shape": ["N", record.in_channels, height, width],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "prepared_by": "steps 1-4 of the preprocessing (docs/apply.md)",
        },
        "output": {"name": "probabilities", "shape": shape, "activation": record.activation},
        "preprocessing": record.to_dict(),
    }


def write_weights(predictor: Predictor, output: Path) -> None:
    """The slim weights file: the predicting module's state dict and the record.

    Args:
        predictor: The loaded model.
        output: The file to write.
    """
    record = predictor.preprocessing
    module = record.module_config(linked=True)
    payload = {
        "state_dict": {
            k: v.detach().cpu().clone() for k, v in predictor.module.state_dict().items()
        },
        RECORD_KEY: {"preprocessing": record.to_dict()},
        # as LightningCLI saves them: load_from_checkpoint and --config runs read them
        "hyper_parameters": {"_class_path": module["class_path"], **module["init_args"]},
        "pytorch-lightning_version": lightning.__version__,
    }
    write_atomically(output, lambda tmp: torch.save(payload, tmp))


def _example(record: Preprocessing, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, record.in_channels, *record.image_size, generator=generator)


def _write_onnx(network: nn.Module, record: Preprocessing, output: Path) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as error:
        raise ImportError(f"ONNX export needs onnx and onnxscript: {EXTRA_HINT}") from error
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        program = torch.onnx.export(
            network,
            (_example(record),),
            dynamo=True,
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_shapes={"image": {0: batch}},
            verbose=False,
        )
    program.model.metadata_props["medvision_preprocessing"] = json.dumps(record.to_dict())
    write_atomically(output, lambda tmp: program.save(str(tmp)))


def _write_torchscript(network: nn.Module, record: Preprocessing, output: Path) -> None:
    with warnings.catch_warnings():  # PyTorch marks TorchScript deprecated; ONNX is the future
        warnings.simplefilter("ignore", category=FutureWarning)
        traced = torch.jit.trace(network, _example(record))
    extra = {"medvision_preprocessing.json": json.dumps(record.to_dict())}

    def save(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            torch.jit.save(traced, str(tmp), _extra_files=extra)

    write_atomically(output, save)


def run_exported(path: Path, format: str, images: torch.Tensor) -> np.ndarray:
    """The exported file's output for ``images`` (ONNX through onnxruntime).

    Args:
        path: The ONNX or TorchScript file.
        format: ``onnx`` or ``torchscript``.
        images: float32 ``N x C x H x W`` in [0, 1].

    Raises:
        ImportError: naming the ``export`` extra when onnxruntime is missing.
    """
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        with torch.inference_mode():
            return module(images).numpy()
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"running an ONNX file needs onnxruntime: {EXTRA_HINT}") from error
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"image": images.numpy()})[0]


def check_export(path: Path, format: str, network: nn.Module, record: Preprocessing) -> float:
    """The largest difference between the exported file and PyTorch on 3 random images.

    Args:
        path: The exported file.
        format: ``onnx`` or ``torchscript``.
        network: The :class:`ExportedNetwork` it was made from.
        record: Its preprocessing (the input shape).

    Returns:
        The difference, or NaN when onnxruntime is not installed (not checked).

    Raises:
        ValueError: naming ``path`` when the difference exceeds :data:`TOLERANCE`.
    """
    images = _example(record, batch=3, seed=1)
    try:
        exported = run_exported(path, format, images)
    except ImportError:
        log.warning("%s not checked against PyTorch: onnxruntime is not installed.", path)
        return float("nan")
    with torch.inference_mode():
        expected = network(images).numpy()
    difference = float(np.abs(exported - expected).max())
    if not difference <= TOLERANCE:
        raise ValueError(
            f"{path}: the exported network's output differs from PyTorch's by {difference:.2e} "
            f"(more than {TOLERANCE:g}); do not use it, and report the model and format."
        )
    log.info("%s matches PyTorch within %.1e on random images", path, difference)
    return difference
