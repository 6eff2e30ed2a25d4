"""``medvision fit|validate|test|predict``: LightningCLI with datamodule -> model links.

Any LightningModule and LightningDataModule can be picked in YAML by ``class_path``. The
datamodule's ``in_channels``, ``num_classes`` and ``class_names`` are passed to the model when
both are built, so configs never repeat them.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pickle
import sys
import warnings

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from medvision import checkpoint_config
from medvision.callbacks import LoggedSaveConfigCallback, NonFiniteGuard, PredictionWriter
from medvision.checkpointing import load_checkpoint, use_atomic_checkpoints
from medvision.loggers import CSVLogger as ResumingCSVLogger
from medvision.runs import find_last_checkpoint, run_version

log = logging.getLogger(__name__)

#: Datamodule properties passed to the model's argument of the same name. A model without that
#: argument, or a datamodule without that property, simply skips the link.
LINKED_DATA_PROPERTIES = (
    "in_channels",
    "num_classes",
    "class_names",
    "feature_shape",
    "classifier_checkpoint",
)


class MedVisionCLI(LightningCLI):
    """LightningCLI in subclass mode for models and data, with medvision's links and writers.

    Adds ``--prediction_writer.output_dir`` (where ``predict`` writes masks or
    ``predictions.csv``, ``--output`` for short; default a new ``predictions/<timestamp>`` in the
    checkpoint's run folder) and ``--prediction_writer.tta`` (``--tta flip``). ``predict
    --ckpt_path CKPT`` needs no ``--config``: the checkpoint's preprocessing record gives the
    model and data (:mod:`medvision.checkpoint_config`). Checkpoints are written and
    read by :class:`~medvision.checkpointing.AtomicCheckpointIO` (atomic writes,
    ``weights_only`` reads) unless ``--trainer.plugins`` names another checkpoint IO. Every
    trainer gets a :class:`~medvision.callbacks.NonFiniteGuard` unless the config lists one.
    ``fit --ckpt_path last`` resumes from the newest ``checkpoints/last*.ckpt`` under the
    logger's ``save_dir`` (or ``default_root_dir``), and logs on in that checkpoint's version
    folder when the logger keeps what is there (:class:`medvision.loggers.CSVLogger`,
    TensorBoard; Lightning's own CSV logger starts a new version folder instead).
    """

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs) -> None:
        self._predict_plan = None  # issue 16: predict from the checkpoint's record
        kwargs.setdefault("save_config_callback", LoggedSaveConfigCallback)
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        for name in LINKED_DATA_PROPERTIES:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")

    def parse_arguments(self, parser, args: ArgsType) -> None:
        if args is None or isinstance(args, list | tuple):  # issue 16: see checkpoint_config
            args, self._predict_plan = checkpoint_config.plan_predict(
                list(sys.argv[1:] if args is None else args)
            )
        with warnings.catch_warnings():  # args= is how notebooks and tests drive the CLI
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        # before the --ckpt_path checkpoint's hyperparameters enter the config: a checkpoint
        # for other classes is refused by the module itself, naming them
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        self._requested = _requested_links(config.get("model"))
        plan = self._predict_plan
        if plan is not None and plan.from_record:  # the model is the record's, not the hparams'
            return
        try:
            super()._parse_ckpt_path()
        except (pickle.UnpicklingError, RuntimeError, EOFError):
            load_checkpoint(self.config[self.config.subcommand].ckpt_path)  # says what is wrong
            raise
        if plan is not None:  # parsing made a new config: fill that one
            checkpoint_config.fill_from_record(self.config[self.config.subcommand], plan)

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit" and self.config.fit.ckpt_path == "last":
            self._resume_from_last(self.config.fit)
        if self.subcommand == "predict":  # issue 16: results go to the writer's folder only
            self.config.predict.trainer.logger = False
            self.save_config_callback = None

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        for name, value in self._requested.items():
            found = getattr(self.datamodule, name, value)
            if found != value:
                raise ValueError(
                    f"model.init_args.{name}={value} disagrees with the data: "
                    f"{type(self.datamodule).__name__} has {name}={found}. Drop the setting: the "
                    f"CLI passes {name} from the datamodule to the model."
                )
        checkpoint_config.check_datamodule(self.datamodule, self._predict_plan)  # issue 16

    def _resume_from_last(self, config) -> None:
        """Point ``ckpt_path`` at the newest last checkpoint, and the logger at its folder."""
        logger = config.trainer.logger
        init = getattr(logger, "init_args", None)
        root = (
            getattr(init, "save_dir", None) or config.trainer.default_root_dir or "lightning_logs"
        )
        checkpoint = find_last_checkpoint(root)
        if checkpoint is None:
            log.warning(
                "--ckpt_path last: no checkpoints/last*.ckpt under %s; starting anew.", root
            )
            config.ckpt_path = None
            return
        config.ckpt_path = str(checkpoint)
        version = run_version(checkpoint)
        if version is not None and _logs_on_in_place(logger) and init.version is None:
            init.version = version  # log on in the checkpoint's run folder
            self.save_config_kwargs["overwrite"] = True  # its config.yaml is this run's
        log.info("Resuming from %s", checkpoint)

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)
        if not any(isinstance(c, NonFiniteGuard) for c in trainer.callbacks):
            trainer.callbacks.append(NonFiniteGuard())
        return trainer


def _requested_links(model_config) -> dict[str, object]:
    """Linked model arguments (``num_classes``, ``in_channels``) set to other than their default
    in the config or on the command line: the data decides them, so they must agree with it."""
    init = getattr(model_config, "init_args", None)
    class_path = getattr(model_config, "class_path", None)
    if init is None or class_path is None:
        return {}
    parameters = inspect.signature(_import(class_path)).parameters
    return {
        name: init[name]
        for name in ("num_classes", "in_channels")
        if name in parameters
        and init.get(name) is not None
        and init[name] != parameters[name].default
    }


def _import(class_path: str):
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _logs_on_in_place(logger_config) -> bool:
    """Whether the logger a ``class_path`` config names can continue an existing version folder
    without losing what is there: medvision's CSV logger and TensorBoard can, Lightning's CSV
    logger deletes the earlier ``metrics.csv``."""
    class_path = getattr(logger_config, "class_path", None)
    if class_path is None:
        return False
    logger_class = _import(class_path)
    if issubclass(logger_class, CSVLogger):
        return issubclass(logger_class, ResumingCSVLogger)
    return "version" in inspect.signature(logger_class).parameters


def main(args: ArgsType = None) -> None:
    """Entry point of the ``medvision`` command; ``main(["fit", "--config", ...])`` in Python.

    To keep the trained objects (in a notebook), use ``cli = MedVisionCLI(args=[...])`` and read
    ``cli.model``, ``cli.datamodule`` and ``cli.trainer``.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = sys.argv[1:] if args is None else args
    if isinstance(command, list | tuple) and list(command[:1]) == ["export"]:  # issue 16
        from medvision.export import main as export_main

        return export_main(list(command[1:]))
    try:
        cli = MedVisionCLI(args=args)
    except SIGTERMException:
        log.warning("Stopped by SIGTERM; exiting with status 143.")
        raise SystemExit(143) from None
    # predict goes on past unreadable inputs; the exit status still says that some failed
    failed = [f for c in cli.trainer.callbacks for f in getattr(c, "failures", ())]
    if failed:
        log.error("%d input files failed (first: %s); see failed.csv", len(failed), failed[0])
        raise SystemExit(1)


if __name__ == "__main__":
    main()
