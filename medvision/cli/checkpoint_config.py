"""``medvision predict`` from a checkpoint's own preprocessing record, and checks against it.

Without ``--config``, ``medvision predict --ckpt_path CKPT --data.predict_dir DIR`` gets its
model and datamodule from CKPT's record (:mod:`medvision.models.record`): the network's
LightningModule and an :class:`~medvision.data.ImageFolderPredictDataModule` at the size,
channels, intensity scaling and classes the model was trained with. With ``--config``, the
config's datamodule must agree with the record (``image_size``, ``in_channels``,
``intensity_window``, ``class_names``): a disagreement is refused in one line naming both
values, unless the option was given on the command line (a deliberate override, logged).
``--output DIR``, ``--tta NAME`` and ``--cam METHOD`` are short for
``--prediction_writer.output_dir``, ``--prediction_writer.tta`` and ``--prediction_writer.cam``;
``--cam`` on a segmentation checkpoint is refused here, before anything is built.

:class:`MedVisionCLI <medvision.cli.MedVisionCLI>` calls the hooks here; nothing else does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvision.apply.explanations import check_cam
from medvision.apply.tta import check_tta
from medvision.models.record import Preprocessing, record_of, require_record
from medvision.utils.checkpoints import load_checkpoint
from medvision.utils.sizes import as_hw

log = logging.getLogger(__name__)

#: The datamodule's input settings that must match the checkpoint's record.
CHECKED = ("image_size", "in_channels", "intensity_window", "class_names")
#: Predict's shorthands -> the options they stand for.
SHORTHANDS = {
    "--output": "--prediction_writer.output_dir",
    "--tta": "--prediction_writer.tta",
    "--cam": "--prediction_writer.cam",
}
PREDICT_DATAMODULE = "medvision.data.ImageFolderPredictDataModule"


@dataclass
class PredictPlan:
    """What ``medvision predict`` was asked, as far as the checkpoint is concerned.

    Args:
        checkpoint: The ``--ckpt_path`` file.
        record: Its preprocessing record (None for an older checkpoint).
        from_record: True when model and datamodule come from the record (no ``--config``).
        explicit: The checked settings given on the command line (deliberate overrides).
        configs: The ``--config`` files, for messages.
        trained_data: An older checkpoint's ``datamodule_hyper_parameters``.
    """

    checkpoint: Path
    record: Preprocessing | None
    from_record: bool
    explicit: set[str] = field(default_factory=set)
    configs: list[str] = field(default_factory=list)
    trained_data: dict[str, Any] = field(default_factory=dict)


def plan_predict(args: list[str]) -> tuple[list[str], PredictPlan | None]:
    """``medvision predict`` arguments completed from the checkpoint, and the plan.

    Expands the shorthands; without ``--config``, puts the record's model and datamodule
    first (the user's own ``--data.*`` and ``--model.*`` still apply on top).

    Args:
        args: The command line after ``medvision`` (``["predict", ...]``); other
            subcommands pass unchanged.

    Returns:
        The arguments to parse, and the plan (None when not predicting from a checkpoint).

    Raises:
        ValueError: naming the checkpoint for one without a record (and no ``--config``), or
            one that cannot be read; naming ``--tta`` for an unknown augmentation.
        FileNotFoundError: for a ``--ckpt_path`` that does not exist.
    """
    if not args or args[0] != "predict":
        return args, None
    args = _expand_shorthands(args)
    checkpoint = _option_value(args, "--ckpt_path")
    if checkpoint is None:
        return args, None
    checkpoint = Path(checkpoint)
    configs = [value for name, value in _options(args) if name in ("--config", "-c")]
    explicit = {name.rsplit(".", 1)[-1] for name, _ in _options(args) if name.startswith("--data.")}
    explicit &= set(CHECKED)
    if configs:
        loaded = load_checkpoint(checkpoint, mmap=True)
        record = record_of(loaded) if isinstance(loaded, dict) else None
        trained = dict(loaded.get("datamodule_hyper_parameters", {})) if record is None else {}
        _check_cam_task(args, record, checkpoint)
        return args, PredictPlan(checkpoint, record, False, explicit, configs, trained)
    record = require_record(load_checkpoint(checkpoint, mmap=True), checkpoint)
    _check_cam_task(args, record, checkpoint)
    if record.lesion_focus is not None:
        raise ValueError(
            f"{checkpoint}: was trained on images cropped to lesion masks "
            f"(lesion_focus {dict(record.lesion_focus)}), which a folder of images alone does "
            "not give. Predict with its config and the masks: medvision predict --config "
            f"CONFIG --ckpt_path {checkpoint} --data.predict_dir DIR."
        )
    given = {name for name, _ in _options(args)}
    front = []
    if "--model" not in given:
        front.append(f"--model={json.dumps(record.module_config())}")
    if "--data" not in given:
        front.append(f"--data={json.dumps(_data_config(record))}")
    return [args[0], *front, *args[1:]], PredictPlan(checkpoint, record, True, explicit)


def _check_cam_task(args: list[str], record: Preprocessing | None, checkpoint: Path) -> None:
    """``--cam`` explains classifiers: refuse it for a segmentation checkpoint."""
    cam = _option_value(args, SHORTHANDS["--cam"])
    if cam not in (None, "null") and record is not None and record.task != "classification":
        raise ValueError(
            f"--cam explains classifiers only, and {checkpoint} is a {record.task} model: its "
            "masks/ and overlays/ already show where it looks. Drop --cam."
        )


def _data_config(record: Preprocessing) -> dict:
    """An :class:`~medvision.data.ImageFolderPredictDataModule` config from the record."""
    return {
        "class_path": PREDICT_DATAMODULE,
        "init_args": {
            "task": record.task,
            "class_names": list(record.class_names),
            "image_size": list(record.image_size),
            "in_channels": record.in_channels,
            "intensity_window": None
            if record.intensity_window is None
            else list(record.intensity_window),
            "multilabel": record.multilabel,
        },
    }


def fill_from_record(config, plan: PredictPlan | None) -> None:
    """With ``--config``: a datamodule's unset ``class_names`` taken from the record.

    A folder datamodule then predicts without its training folders (which it would read the
    classes from).

    Args:
        config: The parsed ``predict`` config (a jsonargparse ``Namespace``).
        plan: The plan of :func:`plan_predict`.
    """
    if plan is None or plan.from_record or plan.record is None:
        return
    init = getattr(config.get("data"), "init_args", None)
    if init is not None and "class_names" in init and init["class_names"] is None:
        init["class_names"] = list(plan.record.class_names)


def check_datamodule(datamodule, plan: PredictPlan | None) -> None:
    """Refuse a datamodule whose input settings disagree with what the model was trained on.

    A setting given on the command line is a deliberate override: logged as a warning. An
    older checkpoint without a record is compared with its ``datamodule_hyper_parameters``
    (when it has them), with a warning that it has no record.

    Args:
        datamodule: The instantiated datamodule.
        plan: The plan of :func:`plan_predict` (nothing is checked when None).

    Raises:
        ValueError: one line naming the setting, both values and the fixes.
    """
    if plan is None:
        return
    if plan.record is None:
        log.warning(
            "%s holds no preprocessing record (an older medvision checkpoint): predicting "
            "with the config's preprocessing. Retrain, or re-save it with medvision export "
            "--format weights from a current run, to carry its own.",
            plan.checkpoint,
        )
    trained = _trained_values(plan)
    described = getattr(datamodule, "describe_input", None)
    if described is None or not trained:
        return
    given = described()
    for key in CHECKED:
        if key not in trained or _same(key, given[key], trained[key]):
            continue
        if key in plan.explicit and key != "class_names":  # other classes: wrong labels
            log.warning(
                "Predicting with %s=%s as given on the command line, although %s was trained "
                "with %s=%s.",
                key,
                given[key],
                plan.checkpoint,
                key,
                trained[key],
            )
            continue
        source = " ".join(f"--config {c}" for c in plan.configs) or "the command line"
        if key == "class_names":
            raise ValueError(
                f"{source} gives class_names={given[key]} but {plan.checkpoint} was trained "
                f"on classes {trained[key]}, in that order: other classes would mislabel every "
                "prediction. Leave class_names out (they come from the checkpoint)."
            )
        raise ValueError(
            f"{source} gives {key}={given[key]} but {plan.checkpoint} was trained with "
            f"{key}={trained[key]}: drop --config to predict with the checkpoint's own "
            f"preprocessing, or give --data.{key} on the command line to override it."
        )


def _trained_values(plan: PredictPlan) -> dict[str, Any]:
    if plan.record is not None:
        record = plan.record
        return {
            "image_size": list(record.image_size),
            "in_channels": record.in_channels,
            "intensity_window": None
            if record.intensity_window is None
            else list(record.intensity_window),
            "class_names": list(record.class_names),
        }
    hparams = plan.trained_data
    found = {}
    if hparams.get("image_size") is not None:
        found["image_size"] = list(as_hw(hparams["image_size"]))
    for key in ("in_channels", "intensity_window"):
        if key in hparams:
            found[key] = hparams[key]
    return found


def _same(key: str, given: Any, trained: Any) -> bool:
    if key == "image_size":
        return list(as_hw(given)) == list(as_hw(trained))
    if key == "intensity_window" and given is not None and trained is not None:
        return [float(v) for v in given] == [float(v) for v in trained]
    if key == "class_names":
        return list(given) == list(trained)
    return given == trained


def _expand_shorthands(args: list[str]) -> list[str]:
    """``--output X`` / ``--tta X`` (also ``=X``) as the writer's options; the TTA checked."""
    expanded, index = [args[0]], 1
    while index < len(args):
        name, equals, value = args[index].partition("=")
        if name in SHORTHANDS:
            if not equals:
                if index + 1 >= len(args):
                    raise ValueError(f"{name} needs a value")
                index += 1
                value = args[index]
            if name == "--tta":
                check_tta(value)
            if name == "--cam":
                check_cam(value)
            expanded.append(f"{SHORTHANDS[name]}={value}")
        else:
            expanded.append(args[index])
        index += 1
    return expanded


def _options(args: list[str]):
    """``(name, value)`` of each ``--name value`` / ``--name=value`` / ``-c value``."""
    for index, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if not name.startswith("-"):
            continue
        if equals:
            yield name, value
        elif index + 1 < len(args) and not args[index + 1].startswith("-"):
            yield name, args[index + 1]
        else:
            yield name, None


def _option_value(args: list[str], option: str) -> str | None:
    values = [value for name, value in _options(args) if name == option]
    return values[-1] if values else None
