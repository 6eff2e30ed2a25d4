"""A bundle's ``model.onnx`` run by onnxruntime, behind the same pre- and post-processing.

``medvision predict --runtime onnx`` and ``medvision.load_model(DIR, runtime="onnx")`` read
the images as the record says (the datasets and transforms of the torch runtime), run
:class:`OnnxModule` instead of the PyTorch network, and turn its probabilities into masks or
classes with the same writers and result types: only the forward pass changes. The file takes
``image`` (float32 ``N x C x H x W`` in [0, 1]) and gives ``probabilities`` (see
:mod:`medvision.apply.export`); onnxruntime runs it on the CPU with as many threads as torch.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningModule

from medvision.apply.tta import PROBABILITIES
from medvision.models.record import Preprocessing

log = logging.getLogger(__name__)

INPUT, OUTPUT = "image", "probabilities"
EXPORT_EXTRA = 'pip install "medvision-lightning[export]"'


def onnx_session(path: Path, record: Preprocessing, sha256: str | None = None):
    """An onnxruntime session of ``path`` on the CPU, checked against the record.

    Args:
        path: The ONNX file (a bundle's ``model.onnx``).
        record: The bundle's preprocessing record: the input the file must take.
        sha256: The file's digest as config.json records it (None: not checked).

    Returns:
        ``onnxruntime.InferenceSession`` with ``intra_op_num_threads`` = torch's threads.

    Raises:
        ImportError: naming the ``export`` extra when onnxruntime is not installed.
        ValueError: naming ``path`` when it is missing, damaged, not ONNX, or takes another
            input than the record's channels and image size.
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"runtime onnx needs onnxruntime: {EXPORT_EXTRA}") from error
    if not path.is_file():
        raise ValueError(
            f"{path} is missing: the bundle has no ONNX file. Export it with --onnx "
            "(medvision export --format bundle --onnx), or use the torch runtime."
        )
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(
            f"{path}: damaged or replaced (its sha256 differs from the one config.json "
            "records); download or export the bundle again."
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail / InvalidProtobuf / ...
        reason = str(error).splitlines()[0][:200]
        raise ValueError(
            f"{path}: not a readable ONNX model ({reason}); export the bundle again."
        ) from None
    check_io(session, record, path)
    return session


def check_io(session, record: Preprocessing, path: Path) -> None:
    """Refuse an ONNX file whose input or output is not the record's.

    Args:
        session: The onnxruntime session.
        record: The preprocessing record.
        path: The file, named in the message.

    Raises:
        ValueError: one line naming the file, both sizes and the fix.
    """
    inputs = {node.name: node.shape for node in session.get_inputs()}
    outputs = [node.name for node in session.get_outputs()]
    if INPUT not in inputs or OUTPUT not in outputs:
        raise ValueError(
            f"{path}: takes {sorted(inputs)} and gives {outputs}, not {INPUT!r} and {OUTPUT!r}: "
            "not a medvision export; export the bundle again."
        )
    expected = [record.in_channels, *record.image_size]
    found = list(inputs[INPUT][1:])
    if found != expected:
        raise ValueError(
            f"{path}: takes images of {' x '.join(map(str, found))} (channels x height x width) "
            f"but config.json records in_channels {record.in_channels} and image_size "
            f"{list(record.image_size)}: the two files are of different models; export the "
            "bundle again."
        )


def check_onnx_input(given: Preprocessing, record: Preprocessing, path: Path) -> None:
    """Refuse to feed an ONNX file images of another size or channels than its record's
    (``medvision predict --runtime onnx --data.image_size ...``).

    Args:
        given: The preprocessing the predict run applies (overrides included).
        record: The bundle's record, whose input the file takes.
        path: The ONNX file, named in the message.

    Raises:
        ValueError: naming the file, the setting, both values and the fix.
    """
    for key in ("image_size", "in_channels"):
        wanted, trained = getattr(given, key), getattr(record, key)
        if wanted != trained:
            shown = list(trained) if isinstance(trained, tuple) else trained
            asked = list(wanted) if isinstance(wanted, tuple) else wanted
            raise ValueError(
                f"--runtime onnx runs {path}, which takes {key}={shown}, not {asked}: drop "
                f"--data.{key}, or predict with --runtime torch."
            )


def run_on_the_cpu(trainer) -> None:
    """Set a predict run's accelerator to the CPU, where onnxruntime runs.

    Args:
        trainer: The ``trainer`` group of a parsed ``medvision predict`` config (changed).

    Raises:
        ValueError: for an accelerator other than ``auto`` or ``cpu``, naming the option.
    """
    if trainer.get("accelerator") not in (None, "auto", "cpu"):
        raise ValueError(
            "--runtime onnx runs onnxruntime on the CPU, not --trainer.accelerator "
            f"{trainer.accelerator}: drop one of the two."
        )
    trainer.accelerator = "cpu"


class OnnxModule(LightningModule):
    """An ONNX file in the place of a trained module: its ``predict_step`` gives what the
    torch module's gives (``probs`` ``N x K x H x W`` or ``class_probs`` ``N x K``, with the
    batch's other keys), so test-time augmentation, the writers and :class:`Predictor
    <medvision.apply.inference.Predictor>` work unchanged.

    Args:
        session: An onnxruntime session of :func:`onnx_session`.
        record: The preprocessing record (task, classes, thresholds).
        source: The ONNX file.
    """

    def __init__(self, session, record: Preprocessing, source: Path) -> None:
        super().__init__()
        self.session = session
        self.source = source
        self.task = record.task
        self.class_names = list(record.class_names)
        self.multilabel = record.multilabel
        self.threshold = record.mask_threshold
        thresholds = torch.tensor(record.thresholds or (), dtype=torch.float32)
        self.register_buffer("thresholds", thresholds, persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Probabilities of images ``N x C x H x W`` in [0, 1], on the images' device."""
        array = np.ascontiguousarray(image.detach().float().cpu().numpy())
        probabilities = self.session.run([OUTPUT], {INPUT: array})[0]
        return torch.from_numpy(probabilities).to(image.device)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        output = {k: v for k, v in batch.items() if k not in ("image", "features")}
        output[PROBABILITIES[self.task]] = self(batch["image"])
        return output


def onnx_module(folder: Path, record: Preprocessing, config: dict, name: str) -> OnnxModule:
    """The :class:`OnnxModule` of a bundle's ONNX file.

    Args:
        folder: The bundle folder.
        record: Its record.
        config: Its config.json (the file's sha256).
        name: The ONNX file's name in the folder.
    """
    digest = (config.get("files") or {}).get(name, {}).get("sha256")
    path = folder / name
    module = OnnxModule(onnx_session(path, record, digest), record, path)
    log.info("Running %s with onnxruntime (%d threads)", path, torch.get_num_threads())
    return module.eval()
