"""``medvision fit|validate|test|predict``: LightningCLI with medvision's runs and links.

Any LightningModule and LightningDataModule can be picked in YAML by ``class_path`` (or by
short name: ``--model SegmentationModule``). The datamodule's ``in_channels``,
``num_classes`` and ``class_names`` are passed to the model when both are built, so configs
never repeat them. Every ``fit`` gets a run folder of its own (see :mod:`medvision.utils.runs`), a
best and a last checkpoint (``--checkpoint.*``, ``--last_checkpoint.*``), a CSV logger unless
the config names another, and a NaN/inf guard. ``medvision`` itself (help, version, the choice
of command) is :mod:`medvision.cli.entry`, which imports this module only for these commands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap
from pathlib import Path

from jsonargparse import ArgumentError, DefaultHelpFormatter
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from medvision.apply.prediction import PredictionWriter
from medvision.cli.console import (
    closest_options,
    debugging,
    parse_error_lines,
    quiet_lightning,
    setup_logging,
    user_error,
)
from medvision.cli.predict import PredictRequest, add_predict_arguments
from medvision.cli.runs import (
    DEFAULT_LOGGER,
    add_missing_callbacks,
    check_linked_values,
    drop_learning_rate_monitors,
    logger_class_paths,
    one_batch_limits,
    point_checkpoints,
    requested_links,
    run_summary,
    runs_for,
    task_callbacks,
)
from medvision.cli.usage import COMMANDS, DESCRIPTION, EXAMPLES
from medvision.training.checkpointing import LastCheckpoint, use_atomic_checkpoints
from medvision.training.curves import LearningCurves
from medvision.training.guards import NonFiniteGuard
from medvision.training.loggers import DeferredLoggers
from medvision.training.progress import use_medvision_progress_bar
from medvision.training.run_config import LoggedSaveConfigCallback
from medvision.utils.checkpoints import load_checkpoint

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

#: Packages whose exported classes ``--model X`` / ``--data X`` may name by short class name:
#: their lazy name tables (``__all__``) are the one registry of medvision's classes.
CLASS_PACKAGES = ("medvision.models", "medvision.data", "medvision.pipelines")


def import_exported_classes() -> None:
    """Import every class the packages of :data:`CLASS_PACKAGES` export (their ``__all__``)."""
    for name in CLASS_PACKAGES:
        package = importlib.import_module(name)
        for exported in package.__all__:
            getattr(package, exported)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's lines and examples kept as written."""


def parser_kwargs() -> dict:
    """The parsers' descriptions; errors raised, not printed (see :func:`main`); each
    subcommand's parser told its name (:class:`MedVisionParser`); no abbreviations (argparse
    would take ``--trainer.max_epoch`` for ``--trainer.max_epochs``)."""
    common = {"exit_on_error": False, "allow_abbrev": False}
    return {
        "description": f"{DESCRIPTION}\n\n{EXAMPLES}",
        "formatter_class": HelpFormatter,
        **common,
        **{
            name: {"description": textwrap.fill(COMMANDS[name], 88), "command": name, **common}
            for name in LightningCLI.subcommands()
        },
    }


class MedVisionParser(LightningArgumentParser):
    """LightningCLI's parser, knowing the subcommand it parses, so that
    :meth:`MedVisionCLI.add_arguments_to_parser` gives ``predict`` its own options.

    Args:
        *args: :class:`~lightning.pytorch.cli.LightningArgumentParser`'s arguments.
        command: ``fit``, ``validate``, ``test``, ``predict`` (its :attr:`subcommand`); None
            for the main parser.
        **kwargs: Its keyword arguments.
    """

    def __init__(self, *args, command: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.subcommand = command


class MedVisionCLI(LightningCLI):
    """LightningCLI in subclass mode for models and data, with medvision's runs and links.

    Adds ``--checkpoint.*`` (the best checkpoint: ``ModelCheckpoint``, ``filename: best``,
    weights and record without optimizer state; set ``monitor`` and ``mode``),
    ``--last_checkpoint.*`` (:class:`LastCheckpoint`, everything to resume from),
    ``--learning_curves.*`` (:class:`~medvision.training.curves.LearningCurves`) and, for
    ``predict``, ``--prediction_writer.*`` (``--output DIR`` and ``--tta flip`` for short).
    ``predict --ckpt_path CKPT`` needs no ``--config``: the checkpoint's preprocessing record
    gives the model and the data (:mod:`medvision.cli.predict`), and a config that disagrees
    with it is refused. Checkpoints are written and read by
    :class:`~medvision.training.checkpointing.AtomicCheckpointIO` unless ``--trainer.plugins`` names
    another checkpoint IO. Every trainer gets a :class:`~medvision.training.NonFiniteGuard`
    unless the config lists one, and a :class:`~medvision.training.MedVisionProgressBar`
    (which never waits for the GPU between logging steps) unless it names another bar. Each ``fit``
    writes into a run folder of its own, ``<default_root_dir>/version_<N>``, made only once the
    datamodule's ``setup`` has succeeded (:class:`~medvision.training.loggers.DeferredLoggers`);
    each ``test`` and ``validate`` on a checkpoint into a new folder of its run, ``test/``
    (``validate/``) the first time and ``test-<date-time>/`` after; see
    :mod:`medvision.utils.runs`. ``fit --ckpt_path last`` resumes the newest run's ``last.ckpt`` in
    its own folder. ``limit_*_batches: 1`` means one batch. Without a logger
    (``--trainer.logger false``) a ``LearningRateMonitor`` of the config is dropped.
    ``--trainer.logger WandbLogger`` (``CSVLogger``) names medvision's logger.

    Args:
        args: Command-line arguments (``["fit", "--config", ...]``); ``sys.argv`` when None.
        run: Run the subcommand (``False``: only build model, data and trainer, for notebooks).
        **kwargs: LightningCLI's other arguments.
    """

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs) -> None:
        self.predict_request: PredictRequest | None = None  # see medvision.cli.predict
        self._predict_parser = None
        self._parsers: list = []  # every parser built: the options a typo is compared with
        import_exported_classes()  # short class names resolve among imported classes
        quiet_lightning()
        if args is None or isinstance(args, list | tuple):
            given = list(sys.argv[1:] if args is None else args)
            if logger_class_paths(given) != given:  # --trainer.logger WandbLogger: medvision's
                args = logger_class_paths(given)
        kwargs.setdefault("save_config_callback", LoggedSaveConfigCallback)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("trainer_defaults", {})
        kwargs["trainer_defaults"].setdefault("logger", DEFAULT_LOGGER)
        kwargs.setdefault("parser_kwargs", parser_kwargs())
        kwargs.setdefault("parser_class", MedVisionParser)
        try:
            super().__init__(
                LightningModule,
                LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                args=args,
                run=run,
                **kwargs,
            )
        except ArgumentError as error:  # an unknown option: name the closest known one
            hint = closest_options(str(error), self._option_strings(args))
            if not hint:
                raise
            raise ArgumentError(None, f"{error}{hint}") from error

    def _option_strings(self, args: ArgsType) -> list[str]:
        """The options of the parsers of the command in ``args`` (all parsers' if unknown)."""
        words = set(args) if isinstance(args, list | tuple) else set()
        parsers = [p for p in self._parsers if getattr(p, "subcommand", None) in words]
        # argparse has no public list of a parser's options: its actions hold them
        actions = [a for p in parsers or self._parsers for a in p._actions]
        return sorted({option for action in actions for option in action.option_strings})

    def add_arguments_to_parser(self, parser) -> None:
        self._parsers.append(parser)
        for name in LINKED_DATA_PROPERTIES:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.filename": "best",
                "checkpoint.monitor": "val/loss",
                "checkpoint.save_weights_only": True,  # best.ckpt: weights + record (a third)
            }
        )
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.set_defaults({"last_checkpoint.every_n_train_steps": 200})
        parser.add_lightning_class_args(LearningCurves, "learning_curves")
        if getattr(parser, "subcommand", None) in ("predict", None):
            parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        if getattr(parser, "subcommand", None) == "predict":
            add_predict_arguments(parser)
            self._predict_parser = parser

    def parse_arguments(self, parser, args: ArgsType) -> None:
        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        if argv[:1] == ["predict"] and self._predict_parser is not None:
            self.predict_request = PredictRequest.before_parsing(argv, self._predict_parser)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        # before the --ckpt_path checkpoint's hyperparameters enter the config: a checkpoint
        # for other classes is refused by the module itself, naming them
        self._requested = requested_links(config.get("model"))
        if subcommand == "predict":
            self.predict_request = self.predict_request or PredictRequest()
            given = (lambda: parser.parse_args(argv, defaults=False)[subcommand]) if argv else None
            self.predict_request.after_parsing(config, given)
        elif config.get("ckpt_path") and Path(config.ckpt_path).is_file():
            load_checkpoint(config.ckpt_path, mmap=True)  # a damaged one: says what is wrong

    def before_instantiate_classes(self) -> None:
        self.runs = runs_for(self.subcommand, self.command_config, self.config_paths())
        if self.runs.resumed:
            self.save_config_kwargs["overwrite"] = True  # a resumed run writes its config again
        if self.subcommand == "predict":
            self.save_config_callback = None  # predictions record their own inputs
            self.predict_request.before_instantiation(self.command_config)

    @property
    def command_config(self):
        """The parsed config of this command (of its subcommand, when there is one)."""
        return self.config[self.subcommand] if self.subcommand else self.config

    @property
    def command_config_init(self):
        """:attr:`command_config` with its classes instantiated (after they are)."""
        return self.config_init[self.subcommand] if self.subcommand else self.config_init

    def config_paths(self) -> list[str]:
        """The ``--config`` files given, in order (for naming runs)."""
        return [str(path) for path in self.command_config.get("config") or []]

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        check_linked_values(self._requested, self.datamodule)
        if self.subcommand == "predict":
            self.predict_request.check_datamodule(self.datamodule)

    def before_predict(self) -> None:
        """The checkpoint's weights loaded, the writer told the record, the model wrapped with
        the predict-time options (:meth:`PredictRequest.prepare`): ``self.model`` becomes the
        :class:`~medvision.apply.tta.PredictionModule` (the trained model is its ``module``)."""
        writer = self.config_init[self.subcommand]["prediction_writer"]
        self.model = self.predict_request.prepare(self.model, self.datamodule, writer)

    def instantiate_trainer(self, **kwargs) -> Trainer:
        kwargs = {**one_batch_limits(self.command_config.trainer), **kwargs}
        if self.runs.folder is not None:
            kwargs.setdefault("default_root_dir", str(self.runs.folder))
        # the configured callbacks, before Lightning adds its defaults to the same list
        given = list((self.command_config_init.get("trainer") or {}).get("callbacks") or [])
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)
        if not any(isinstance(c, NonFiniteGuard) for c in trainer.callbacks):
            trainer.callbacks.append(NonFiniteGuard())
        use_medvision_progress_bar(trainer, given)  # no read of the loss every step
        add_missing_callbacks(trainer, task_callbacks(self.model))
        drop_learning_rate_monitors(trainer)  # --trainer.logger false: nothing to log it to
        if self.subcommand == "fit" or self.subcommand is None:
            point_checkpoints(trainer, self.runs.folder)
        if self.subcommand is not None:  # run=False (a notebook) keeps trainer.logger at hand
            DeferredLoggers.attach(trainer)  # no run folder before the datamodule's setup works
        return trainer

    def after_fit(self) -> None:
        self.end_logger_runs()
        if self.trainer.is_global_zero:
            log.info("%s", run_summary(self.trainer, self.runs.folder))

    def after_test(self) -> None:
        self.end_logger_runs()
        if self.trainer.is_global_zero:
            log.info("Test results and reports are in %s", self.runs.folder)

    def after_validate(self) -> None:
        self.end_logger_runs()

    def end_logger_runs(self) -> None:
        """One command, one logger run: W&B runs are finished here (see WandbLogger.end_run)."""
        for logger in self.trainer.loggers:
            end_run = getattr(logger, "end_run", None)
            if callable(end_run):
                end_run()


def main(args: ArgsType = None) -> None:
    """Run ``medvision fit|validate|test|predict|tune``; ``main(["fit", ...])`` in Python.

    The ``medvision`` command is :func:`medvision.cli.entry.main` (also ``medvision.cli.main``),
    which comes here for these commands. A configuration or input error ends with its one
    useful line on stderr and exit status 2 (``--debug`` or ``MEDVISION_DEBUG=1``: the whole
    traceback). To keep the trained objects (in a notebook), use
    ``cli = MedVisionCLI(args=[...])`` and read ``cli.model``, ``cli.datamodule`` and
    ``cli.trainer``.

    Args:
        args: The command's arguments; ``sys.argv[1:]`` when None.
    """
    debug = debugging(args)
    args = [a for a in (sys.argv[1:] if args is None else list(args)) if a != "--debug"]
    setup_logging()
    if args[:1] == ["tune"]:
        from medvision.cli.tune import main as tune_main

        tune_main(args[1:], debug=debug)
        return
    try:
        cli = MedVisionCLI(args=args)
    except SIGTERMException:
        log.warning("Stopped by SIGTERM; exiting with status 143.")
        raise SystemExit(143) from None
    except ArgumentError as error:
        if debug:
            raise
        for line in parse_error_lines(str(error), args[0] if args else "fit"):
            log.error("%s", line)
        raise SystemExit(2) from None
    except (ValueError, FileNotFoundError, TypeError, KeyError, RuntimeError) as error:
        if debug:
            raise
        log.error("%s", user_error(error))
        log.error("(medvision %s --debug shows the whole traceback)", " ".join(args[:1]))
        raise SystemExit(2) from None
    # predict goes on past unreadable inputs; the exit status still says that some failed
    failed = [f for c in cli.trainer.callbacks for f in getattr(c, "failures", ())]
    if failed:
        log.error("%d input files failed (first: %s); see failed.csv", len(failed), failed[0])
        raise SystemExit(1)


if __name__ == "__main__":
    main()
