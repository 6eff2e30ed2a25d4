"""``medvision predict``: a checkpoint applies itself, or a config is checked against it.

Without ``--config``, ``medvision predict --ckpt_path CKPT --data.predict_dir DIR`` takes its
model and datamodule from CKPT's preprocessing record (:mod:`medvision.models.record`), set as
the defaults of the predict command's parser before it parses (:func:`record_defaults`): the
network's LightningModule, and the datamodule of the record's input kind
(:data:`PREDICT_DATAMODULES`: 2D image files, or NIfTI volumes and DICOM series) at the size,
channels, intensity scaling and classes the model was trained with. Any option still applies
on top; a checked setting (:data:`CHECKED`) given on the command line is a deliberate
override, logged.

With ``--config``, the config's datamodule must agree with the record: a setting the config
gives that disagrees is refused in one line naming both values, unless given on the command
line (an override, logged); one the config leaves unset is the record's (never the
datamodule's default). A checkpoint without a record (an older medvision) predicts with its
config and a warning.

``--output``, ``--tta``, ``--cam``, ``--output_format`` are short for the
``--prediction_writer.*`` options, checked (with a non-empty output folder, ``--cam`` on a
segmenter, a format the model cannot write) before the model loads. ``--ckpt_path`` may name a
bundle (:mod:`medvision.apply.bundle`), and ``--runtime onnx`` runs its ``model.onnx``.
:meth:`PredictRequest.prepare` loads the weights (as :func:`medvision.load_model` does: no
training state, so Lightning restores no callbacks), hands the record to the
:class:`~medvision.apply.PredictionWriter` (which picks its writer from it) and wraps the
model with the predict-time options (:class:`~medvision.apply.tta.PredictionModule`).

:class:`MedVisionCLI <medvision.cli.MedVisionCLI>` calls the hooks here; nothing else does.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvision.apply import onnx_runtime
from medvision.apply.bundle import ONNX, bundle_folder, check_runtime, open_model, weights_file
from medvision.apply.explanations import check_cam
from medvision.apply.inference import load_weights
from medvision.apply.prediction import PredictionWriter
from medvision.apply.prediction_output import check_output_folder
from medvision.apply.seg_writer import check_output_format, parse_output_format
from medvision.apply.tta import PredictionModule, check_tta
from medvision.models.record import (
    FORMAT_VERSION,
    Preprocessing,
    record_of,
    require_record,
)
from medvision.utils.checkpoints import load_checkpoint
from medvision.utils.sizes import as_hw

log = logging.getLogger(__name__)

#: The datamodule's input settings that must match the checkpoint's record.
CHECKED = ("image_size", "in_channels", "intensity_window", "class_names")
#: The datamodule that reads each input kind of the record, predicting without a config.
PREDICT_DATAMODULES = {
    "image": "medvision.data.ImageFolderPredictDataModule",
    "volume": "medvision.data.volumes.VolumeSliceDataModule",
}
#: Predict's shorthands -> the ``prediction_writer`` options they stand for.
SHORTHANDS = {"output": "output_dir", "tta": "tta", "cam": "cam", "output_format": "output_format"}


def add_predict_arguments(parser) -> None:
    """The predict command's own options: the shorthands of :data:`SHORTHANDS`; no seeding.

    Args:
        parser: The ``predict`` subcommand's parser.
    """
    shorthand_help = {
        "output": "Short for --prediction_writer.output_dir: a new or empty folder.",
        "tta": "Short for --prediction_writer.tta: test-time augmentation (flip).",
        "cam": "Short for --prediction_writer.cam: heat maps of a classifier (gradcam, hirescam).",
        "output_format": "Short for --prediction_writer.output_format: seg, nifti, png, or "
        "several (seg,nifti).",
    }
    for name, text in shorthand_help.items():
        parser.add_argument(f"--{name}", type=str | None, default=None, help=text)
    onnx = "torch, or onnx: run a bundle's model.onnx with onnxruntime on the CPU."
    parser.add_argument("--runtime", type=str, default="torch", help=onnx)
    parser.set_defaults(seed_everything=False)  # nothing random to seed


def record_defaults(record: Preprocessing) -> dict[str, Any]:
    """The model and datamodule that predict as ``record`` says, as parser defaults.

    Args:
        record: The checkpoint's preprocessing record.

    Returns:
        ``{"model": {class_path, init_args}, "data": {class_path, init_args}}``.
    """
    init = {
        "image_size": record.image_size,
        "in_channels": record.in_channels,
        "intensity_window": record.intensity_window,
        "class_names": list(record.class_names),
    }
    if record.input == "volume":
        init["axis"] = record.slice_axis
    else:
        init.update(task=record.task, multilabel=record.multilabel)
    data = {"class_path": PREDICT_DATAMODULES[record.input], "init_args": init}
    return {"model": record.module_config(), "data": data}


@dataclass
class PredictRequest:
    """What ``medvision predict`` was asked, as far as the checkpoint is concerned.

    Args:
        checkpoint: The ``--ckpt_path`` file, or None (a config's untrained model).
        loaded: The checkpoint, memory-mapped (read once: record and weights).
        record: Its preprocessing record (None for an older checkpoint).
        from_record: True when model and datamodule come from the record (no ``--config``).
        explicit: The checked settings given on the command line (deliberate overrides).
        configs: The ``--config`` files, for messages.
        runtime: ``torch``, or ``onnx`` (``--runtime``): a bundle's ONNX file predicts.
        onnx: The :class:`~medvision.apply.onnx_runtime.OnnxModule` of ``--runtime onnx``.
    """

    checkpoint: Path | None = None
    loaded: Mapping | None = None
    record: Preprocessing | None = None
    from_record: bool = False
    explicit: set[str] = field(default_factory=set)
    configs: list[str] = field(default_factory=list)
    runtime: str = "torch"
    onnx: onnx_runtime.OnnxModule | None = None

    @classmethod
    def before_parsing(cls, args: list[str], parser) -> PredictRequest:
        """Read the command line's checkpoint; without ``--config``, its record becomes the
        defaults of ``parser`` (the ``predict`` subcommand's).

        jsonargparse parses a whole command line or nothing (it has no ``parse_known_args``),
        and without ``--config`` the model is unknown until the record is read: argparse
        picks the few options needed first out of ``args``.

        Args:
            args: The command line (``["predict", ...]``).
            parser: The ``predict`` subcommand's parser.

        Raises:
            ValueError: an unknown ``--tta`` or ``--cam``, a non-empty ``--output``; a
                checkpoint without a record (and no ``--config``), unreadable, trained on
                lesion crops, or a segmenter asked for ``--cam``.
            FileNotFoundError: for a ``--ckpt_path`` that does not exist.
        """
        peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        peek.add_argument("--ckpt_path")
        peek.add_argument("-c", "--config", action="append", default=[])
        peek.add_argument("--runtime", default="torch")
        for name in SHORTHANDS:
            peek.add_argument(f"--{name}")
        for key in CHECKED:
            peek.add_argument(f"--data.{key}", f"--data.init_args.{key}", dest=key)
        known, _ = peek.parse_known_args(args[1:])
        check_options(known.tta, known.cam, known.output, known.runtime)
        formats = parse_output_format(known.output_format)
        explicit = {key for key in CHECKED if getattr(known, key) is not None}
        request = cls(explicit=explicit, configs=list(known.config), runtime=known.runtime)
        if known.ckpt_path is None:
            return request
        request.read(Path(known.ckpt_path))
        if not request.configs:
            request.from_record = True
            request.record = request.record or require_record(request.loaded, request.checkpoint)
            request.check_cam(known.cam)
            refuse_lesion_focus(request.record, request.checkpoint)
            check_output_format(formats, request.record)
            parser.set_defaults(record_defaults(request.record))
        return request

    def read(self, checkpoint: Path) -> None:
        """Load ``checkpoint`` (memory-mapped) and its record, if it has one; a bundle's
        config.json and weights, or with ``--runtime onnx`` its ONNX file.

        Args:
            checkpoint: The ``--ckpt_path`` file, bundle folder or Hub repo id.
        """
        folder = bundle_folder(checkpoint, self.runtime)
        if folder is not None or self.runtime == "onnx":
            opened = open_model(checkpoint if folder is None else folder, self.runtime)
            self.checkpoint, self.loaded, self.record = folder, opened.checkpoint, opened.record
            if self.runtime == "onnx":
                self.onnx = onnx_runtime.onnx_module(folder, opened.record, opened.config, ONNX)
            return
        self.checkpoint = checkpoint
        self.loaded = load_checkpoint(checkpoint, mmap=True)
        if not isinstance(self.loaded, Mapping) or "state_dict" not in self.loaded:
            require_record(self.loaded, checkpoint)  # says: not a medvision checkpoint
        try:
            self.record = record_of(self.loaded)
        except ValueError as error:
            raise ValueError(f"{checkpoint}: {error}") from None

    def after_parsing(self, config, given: Callable[[], Any] | None = None) -> None:
        """Check the parsed ``predict`` config before anything is built; complete it.

        The shorthands go to ``prediction_writer``; the options are checked; with a config,
        the checked settings it leaves unset are the record's. Without one, ``ckpt_path`` is
        cleared now: the model is the record's, and Lightning would parse the checkpoint's
        training hyperparameters over it (``encoder_weights: imagenet``: a download). With a
        config it is, as LightningCLI does, so that the config's model is the checkpoint's.

        Args:
            config: The parsed config of ``predict`` (a jsonargparse ``Namespace``).
            given: Returns that config parsed without defaults (what the user gave).
        """
        writer = config.prediction_writer
        for short, option in SHORTHANDS.items():
            value = config.get(short)
            if value is not None and writer.get(option) not in (None, value):
                raise ValueError(
                    f"--{short} {value} and --prediction_writer.{option} {writer[option]} "
                    "disagree: give one of them."
                )
            if value is not None:
                writer[option] = value
        self.runtime = config.get("runtime") or "torch"
        check_options(writer.tta, writer.cam, writer.output_dir, self.runtime)
        if self.runtime == "onnx":
            onnx_runtime.run_on_the_cpu(config.trainer)
        if self.checkpoint is None and config.get("ckpt_path"):  # from a config file
            self.read(Path(config.ckpt_path))
        self.check_cam(writer.cam)
        if not self.from_record and self.record is not None and given is not None:
            self._fill_from_record(config, given())
        if self.from_record:
            config.ckpt_path = None

    def before_instantiation(self, config) -> None:
        """Clear ``ckpt_path`` of the ``predict`` config: the weights are loaded by
        :meth:`prepare` (as :func:`medvision.load_model` loads them), not by Lightning, which
        would restore training state and warn about the callbacks that wrote it.

        Args:
            config: The parsed config of ``predict``.
        """
        config.ckpt_path = None

    def check_cam(self, cam: str | None) -> None:
        """``--cam`` explains classifiers: refuse it for a segmentation checkpoint.

        Args:
            cam: The ``--cam`` method asked for, or None.
        """
        record = self.record
        if cam is not None and record is not None and record.task != "classification":
            raise ValueError(
                f"--cam explains classifiers only, and {self.checkpoint} is a {record.task} "
                "model: its masks/ and overlays/ already show where it looks. Drop --cam."
            )

    def _fill_from_record(self, config, given) -> None:
        """The checked settings the config leaves at the datamodule's defaults: the record's."""
        init = getattr(config.get("data"), "init_args", None)
        given_init = getattr(given.get("data"), "init_args", None) or {}
        if init is None:
            return
        for key, value in _trained_values(self.record, {}).items():
            if key in init and key not in given_init and not _same(key, init[key], value):
                log.info(
                    "%s=%s, as %s was trained (the config leaves it unset)",
                    key,
                    _shown(value),
                    self.checkpoint,
                )
                init[key] = list(value) if key == "class_names" else value

    def check_datamodule(self, datamodule) -> None:
        """Refuse a datamodule whose input settings disagree with what the model was trained on.

        A setting given on the command line (every difference, without ``--config``) is a
        deliberate override: logged as a warning; other classes are refused even then. An
        older checkpoint without a record is compared with its
        ``datamodule_hyper_parameters`` (when it has them), with a warning that it has no
        record.

        Args:
            datamodule: The instantiated datamodule.

        Raises:
            ValueError: one line naming the setting, both values and the fixes.
        """
        if self.checkpoint is None:
            return
        if self.record is None:
            log.warning(
                "%s holds no preprocessing record (an older medvision checkpoint): predicting "
                "with the config's preprocessing. Retrain, or re-save it with medvision export "
                "--format weights from a current run, to carry its own.",
                self.checkpoint,
            )
        hparams = self.loaded.get("datamodule_hyper_parameters") if self.record is None else None
        trained = _trained_values(self.record, hparams or {})
        described = getattr(datamodule, "describe_input", None)
        if described is None or not trained:
            return
        given = described()
        for key in CHECKED:
            if key in trained and not _same(key, given[key], trained[key]):
                self._disagreement(key, given[key], trained[key])

    def _disagreement(self, key: str, given: Any, trained: Any) -> None:
        explicit = self.from_record or key in self.explicit
        if explicit and key != "class_names":  # other classes: wrong labels
            log.warning(
                "Predicting with %s=%s as given on the command line, although %s was trained "
                "with %s=%s.",
                key,
                _shown(given),
                self.checkpoint,
                key,
                _shown(trained),
            )
            return
        source = " ".join(f"--config {c}" for c in self.configs) or "the command line"
        if key == "class_names":
            raise ValueError(
                f"{source} gives class_names={list(given)} but {self.checkpoint} was trained "
                f"on classes {list(trained)}, in that order: other classes would mislabel every "
                "prediction. Leave class_names out (they come from the checkpoint)."
            )
        raise ValueError(
            f"{source} gives {key}={_shown(given)} but {self.checkpoint} was trained with "
            f"{key}={_shown(trained)}: drop --config to predict with the checkpoint's own "
            f"preprocessing, or give --data.{key} on the command line to override it."
        )

    def prepare(self, model, datamodule, writer: PredictionWriter) -> PredictionModule:
        """The model as it predicts: its checkpoint's weights, the writer told the record.

        Args:
            model: The instantiated LightningModule (the record's, or the config's).
            datamodule: The instantiated datamodule (describes the input it prepares).
            writer: The command's :class:`~medvision.apply.PredictionWriter`.

        Returns:
            The model wrapped with the writer's ``tta``; with ``--runtime onnx`` the bundle's
            ONNX file in the model's place.
        """
        if self.onnx is not None:
            record = self._record_of_run(model, datamodule)
            onnx_runtime.check_onnx_input(record, self.record, self.onnx.source)
            writer.use(record, self.onnx, self.checkpoint)
            return PredictionModule(self.onnx, writer.tta)
        if self.loaded is not None:
            built_from = (
                "the network its record names" if self.from_record else "the config's model"
            )
            load_weights(model, self.loaded, weights_file(self.checkpoint), built_from)
        writer.use(self._record_of_run(model, datamodule), model, self.checkpoint)
        return PredictionModule(model, writer.tta)

    def _record_of_run(self, model, datamodule) -> Preprocessing:
        """The preprocessing this run applies: the datamodule's input side (overrides
        included) and the model's output side; the checkpoint's record when they cannot say."""
        describe_input = getattr(datamodule, "describe_input", None)
        describe_output = getattr(model, "describe_output", None)
        if callable(describe_input) and callable(describe_output):
            record = {**describe_input(), **describe_output(), "version": FORMAT_VERSION}
            return Preprocessing.from_dict(record, type(model).__name__)
        if self.record is not None:
            return self.record
        raise ValueError(
            f"predict cannot tell what {type(model).__name__} reads and writes: "
            f"{type(datamodule).__name__} has no describe_input() (or the model no "
            "describe_output()) and the checkpoint has no preprocessing record. Predict with a "
            "medvision datamodule and model, or a checkpoint written by medvision fit."
        )


def check_options(
    tta: str | None, cam: str | None, output: str | None, runtime: str = "torch"
) -> None:
    """Refuse an unknown ``--tta``, ``--cam`` or ``--runtime`` (``--cam`` needs torch), or a
    non-empty ``--output`` folder.

    Args:
        tta: The test-time augmentation asked for.
        cam: The explanation method asked for.
        output: The output folder asked for.
        runtime: The runtime asked for.

    Raises:
        ValueError: naming the option, the value and the fix.
    """
    check_tta(tta)
    check_cam(cam)
    if check_runtime(runtime) != "torch" and cam is not None:
        raise ValueError("--cam needs the network's layers and gradients: drop --runtime onnx.")
    if output is not None:
        check_output_folder(output)


def refuse_lesion_focus(record: Preprocessing, checkpoint: Path) -> None:
    """A model trained on lesion crops needs its lesion masks: refuse it without a config.

    Args:
        record: The checkpoint's record.
        checkpoint: The checkpoint, named in the message.
    """
    if record.lesion_focus is not None:
        raise ValueError(
            f"{checkpoint}: was trained on images cropped to lesion masks "
            f"(lesion_focus {dict(record.lesion_focus)}), which a folder of images alone does "
            "not give. Predict with its config and the masks: medvision predict --config "
            f"CONFIG --ckpt_path {checkpoint} --data.predict_dir DIR."
        )


def _trained_values(record: Preprocessing | None, hparams: Mapping) -> dict[str, Any]:
    """The checked settings the model was trained with: its record's, or for an older
    checkpoint its ``datamodule_hyper_parameters``' (those it has)."""
    if record is not None:
        return {
            "image_size": record.image_size,
            "in_channels": record.in_channels,
            "intensity_window": record.intensity_window,
            "class_names": record.class_names,
        }
    found = {}
    if hparams.get("image_size") is not None:
        found["image_size"] = as_hw(hparams["image_size"])
    for key in ("in_channels", "intensity_window"):
        if key in hparams:
            found[key] = hparams[key]
    return found


def _same(key: str, given: Any, trained: Any) -> bool:
    if key == "image_size":
        return as_hw(given) == as_hw(trained)
    if key in ("intensity_window", "class_names") and given is not None and trained is not None:
        cast = float if key == "intensity_window" else str
        return [cast(v) for v in given] == [cast(v) for v in trained]
    return given == trained


def _shown(value: Any) -> Any:
    """Sizes and windows as lists in messages (``image_size=[64, 64]``)."""
    return list(value) if isinstance(value, tuple) else value
