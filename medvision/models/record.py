"""The preprocessing record: what turns a file into a network's input, and its output back.

Every checkpoint that medvision writes at fit time carries one :class:`Preprocessing` under
``checkpoint["medvision"]["preprocessing"]`` (a plain dict, :meth:`Preprocessing.to_dict`).
``medvision predict --ckpt_path CKPT`` (without ``--config``), :func:`medvision.load_model` and
``medvision export`` read it, so a checkpoint applies itself at the size, channels and
intensity scaling it was trained with. The exported files carry the same dict as JSON.

The steps it describes, for one 2D image (``docs/apply.md`` has them for non-Python users):

1. Decode the file to ``H x W`` or ``H x W x C`` as stored (any dtype).
2. Channels to ``in_channels``: an alpha channel is dropped; for 1 channel RGB becomes luma
   ``0.299 R + 0.587 G + 0.114 B`` (float32); for 3 channels gray is repeated.
3. Intensities to float32 in [0, 1]: clipped to ``intensity_window = [low, high]`` and scaled
   linearly, or without a window min-max scaled per image (a constant image becomes zeros).
4. Resize to ``image_size`` (height, width) with OpenCV's ``interpolation`` (``linear``:
   ``cv2.INTER_LINEAR``, segmentation; ``area``: ``cv2.INTER_AREA``, classification).
5. Layout ``N x C x H x W`` float32; the network (classifiers standardize with ``mean`` and
   ``std`` inside it: never apply them yourself), its logits divided by ``temperature`` (1
   unless the classifier was calibrated), then ``activation`` (sigmoid or softmax).
6. Segmentation: probabilities resized back to the original ``H x W`` (bilinear,
   ``align_corners=False``); binary (``num_classes`` 1, one sigmoid channel): foreground
   where above ``mask_threshold``; multi-class (``num_classes >= 2`` softmax channels): each
   pixel the index of its highest probability, 0 the background, ``class_names`` naming them.
   Classification: ``class_names[argmax]``, or for multi-label every label above its entry of
   ``thresholds``.

A model trained on volumes (``input: volume``) reads each 3D volume in canonical (RAS+)
orientation, scales it as a whole (``intensity_window``, or min-max over the volume), takes
its slices along ``slice_axis`` through steps 4 to 6, and writes the label volume back on the
input's own grid (see :mod:`medvision.data.nifti`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Key of medvision's own entry in a checkpoint dict.
RECORD_KEY = "medvision"
#: Version of the record's layout; a newer one is refused with a message to upgrade.
FORMAT_VERSION = 1
TASKS = ("segmentation", "classification")
#: What a model reads: 2D image files, or the slices of 3D volumes (NIfTI, DICOM series).
INPUTS = ("image", "volume")
INTERPOLATIONS = {"segmentation": "linear", "classification": "area"}


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn an image file into the network's input, and the output back.

    Args:
        task: ``segmentation`` (binary masks, or label maps with two or more
            ``class_names``) or ``classification``.
        image_size: ``(height, width)`` the network sees.
        in_channels: 1 (gray) or 3 (RGB).
        intensity_window: ``(low, high)`` clipped and scaled to [0, 1], the same for every
            image (a CT window in HU); ``None``: min-max scaled per image.
        class_names: The classes in the network's output order (``("lung",)`` for a binary
            segmenter, ``("background", "liver", "tumour")`` for label maps).
        network: ``{"class_path": ..., "init_args": {...}}`` of the LightningModule that
            rebuilds the network for prediction (``in_channels``, ``num_classes`` and
            ``class_names`` come from the fields above).
        multilabel: Classification with independent labels (sigmoid) instead of one class
            (softmax).
        thresholds: Multi-label: one decision threshold per label (tuned on validation).
        mask_threshold: Segmentation: foreground where the probability is above it.
        mean: Classification: per-channel mean the network subtracts from its [0, 1] input
            itself (part of the network and of exported files; for reference only).
        std: Likewise, the standard deviation it divides by.
        lesion_focus: ``{"mode": "crop"|"mask", "margin": float}`` when training images were
            cropped to (or masked by) a lesion mask before resizing; such a model needs those
            masks and its config to predict.
        temperature: Classification: ``T > 0`` the logits are divided by before the
            activation (temperature scaling, fitted on validation by ``calibrate``); 1 means
            uncalibrated, and a record without it (older checkpoints) means 1.
        input: What the model reads: ``image`` (2D files; older records) or ``volume`` (the 2D
            slices of 3D NIfTI volumes or DICOM series; segmentation only). A volume without
            ``intensity_window`` is min-max scaled as a whole, not slice by slice.
        slice_axis: ``volume``: the canonical (RAS+) axis slices are taken along (2: axial).
        version: The record's layout version (:data:`FORMAT_VERSION`).
    """

    task: str
    image_size: tuple[int, int]
    in_channels: int
    intensity_window: tuple[float, float] | None
    class_names: tuple[str, ...]
    network: Mapping[str, Any]
    multilabel: bool = False
    thresholds: tuple[float, ...] | None = None
    mask_threshold: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    lesion_focus: Mapping[str, Any] | None = None
    temperature: float = 1.0
    input: str = "image"
    slice_axis: int | None = None
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (height, width), got {self.image_size}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.thresholds is not None and len(self.thresholds) != len(self.class_names):
            raise ValueError(
                f"{len(self.thresholds)} thresholds for {len(self.class_names)} class_names"
            )
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {self.input!r}")
        if self.input == "volume" and (
            self.task != "segmentation" or self.slice_axis not in (0, 1, 2)
        ):
            raise ValueError(
                "input 'volume' needs task 'segmentation' and slice_axis 0, 1 or 2, got "
                f"task {self.task!r} and slice_axis {self.slice_axis!r}"
            )

    @property
    def interpolation(self) -> str:
        """OpenCV resize to ``image_size``: ``linear`` (segmentation) or ``area`` (classes)."""
        return INTERPOLATIONS[self.task]

    @property
    def num_classes(self) -> int:
        """Output channels: ``len(class_names)`` (1 for a binary segmenter)."""
        return len(self.class_names)

    @property
    def activation(self) -> str:
        """What turns logits into probabilities: ``sigmoid`` or ``softmax``."""
        if self.task == "classification" and not self.multilabel:
            return "softmax"
        if self.task == "segmentation" and self.num_classes > 1:
            return "softmax"
        return "sigmoid"

    def module_config(self, linked: bool = False) -> dict[str, Any]:
        """``{"class_path", "init_args"}`` of the LightningModule that predicts with it.

        Nothing is downloaded: the weights come from the checkpoint (``encoder_weights:
        null``, ``pretrained: false``).

        Args:
            linked: Also give ``in_channels``, ``num_classes`` and ``class_names`` (which the
                CLI links from the datamodule instead).
        """
        init = dict(self.network.get("init_args", {}))
        if self.task == "segmentation":
            init.update(encoder_weights=None, threshold=self.mask_threshold)
        else:
            init["pretrained"] = False
        if linked:
            init.update(
                in_channels=self.in_channels,
                num_classes=len(self.class_names),
                class_names=list(self.class_names),
            )
        return {"class_path": self.network["class_path"], "init_args": init}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists, no tuples), with ``interpolation``, ``activation`` and
        ``num_classes``."""
        record = _plain(dataclasses.asdict(self))
        record["interpolation"] = self.interpolation
        record["activation"] = self.activation
        record["num_classes"] = self.num_classes
        return record

    @classmethod
    def from_dict(
        cls, record: Mapping[str, Any], source: str | Path = "the record"
    ) -> Preprocessing:
        """The record of :meth:`to_dict` (or a checkpoint's entry), checked.

        Args:
            record: The dict.
            source: Named in errors (the checkpoint or JSON file it came from).

        Raises:
            ValueError: naming ``source`` for a newer layout, a missing or invalid field.
        """
        version = record.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{source}: preprocessing record version {version!r} is newer than this "
                f"medvision reads ({FORMAT_VERSION}); upgrade medvision."
            )
        names = {f.name for f in dataclasses.fields(cls)}
        required = ("task", "image_size", "in_channels", "class_names", "network")
        missing = [name for name in required if name not in record]
        if missing:
            raise ValueError(f"{source}: preprocessing record lacks {missing}")
        values = {key: value for key, value in record.items() if key in names}
        window = values.get("intensity_window")
        try:
            return cls(
                **{
                    **values,
                    "image_size": tuple(int(v) for v in values["image_size"]),
                    "intensity_window": None if window is None else tuple(float(v) for v in window),
                    "class_names": tuple(str(v) for v in values["class_names"]),
                    "thresholds": _floats(values.get("thresholds")),
                    "mean": _floats(values.get("mean")),
                    "std": _floats(values.get("std")),
                    "temperature": float(values.get("temperature", 1.0)),
                    "slice_axis": _int_or_none(values.get("slice_axis")),
                }
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: invalid preprocessing record ({error})") from None


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def _plain(value: Any) -> Any:
    """Tuples as lists and mappings as dicts, recursively: what JSON and YAML write back."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def record_of(checkpoint: Mapping) -> Preprocessing | None:
    """The :class:`Preprocessing` a loaded checkpoint carries, or None without one.

    Args:
        checkpoint: A loaded checkpoint or weights file (a dict).

    Raises:
        ValueError: for a record that is there but invalid or of a newer version.
    """
    entry = checkpoint.get(RECORD_KEY) if isinstance(checkpoint, Mapping) else None
    if not isinstance(entry, Mapping) or "preprocessing" not in entry:
        return None
    return Preprocessing.from_dict(entry["preprocessing"])


def store_record(checkpoint: dict, record: Preprocessing) -> None:
    """Write ``record`` into a checkpoint dict, replacing any record it holds.

    The one writer of ``checkpoint["medvision"]["preprocessing"]``: at save time
    (:meth:`~medvision.models.MedVisionModule.on_save_checkpoint`) and when calibration
    rewrites a saved checkpoint with a new record (``dataclasses.replace(record, ...)``).

    Args:
        checkpoint: A checkpoint dict (changed in place; its other ``medvision`` entries stay).
        record: The record, written as :meth:`Preprocessing.to_dict`.
    """
    checkpoint.setdefault(RECORD_KEY, {})["preprocessing"] = record.to_dict()


def require_record(checkpoint: Any, path: str | Path) -> Preprocessing:
    """The checkpoint's :class:`Preprocessing`; a clear error when it has none.

    Args:
        checkpoint: The loaded file.
        path: The file, named in errors.

    Raises:
        ValueError: naming ``path`` and the fix when the record is missing or invalid.
    """
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise ValueError(
            f"{path}: not a medvision checkpoint (no 'state_dict' entry; a file from another "
            "tool?). Use a best.ckpt or last.ckpt written by medvision fit, or a weights file "
            "of medvision export --format weights."
        )
    try:
        record = record_of(checkpoint)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if record is None:
        raise ValueError(
            f"{path}: holds no preprocessing record (checkpoint['{RECORD_KEY}']"
            "['preprocessing']): it was written by an older medvision or by another tool. "
            "Predict it with the config it was trained with: medvision predict --config "
            f"CONFIG --ckpt_path {path} --data.predict_dir DIR."
        )
    return record
