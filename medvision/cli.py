"""``medvision fit|validate|test|predict``: LightningCLI with datamodule -> model links.

Any LightningModule and LightningDataModule can be picked in YAML by ``class_path``. The
datamodule's ``in_channels``, ``num_classes`` and ``class_names`` are passed to the model when
both are built, so configs never repeat them.
"""

from __future__ import annotations

import logging

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningCLI

from medvision.callbacks import LoggedSaveConfigCallback, PredictionWriter
from medvision.checkpointing import use_atomic_checkpoints

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
    ``predictions.csv``; default ``<default_root_dir>/predictions``). Checkpoints are written by
    :class:`~medvision.checkpointing.AtomicCheckpointIO` unless ``--trainer.plugins`` names
    another checkpoint IO.
    """

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs) -> None:
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

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)
        return trainer


def main(args: ArgsType = None) -> None:
    """Entry point of the ``medvision`` command; ``main(["fit", "--config", ...])`` in Python.

    To keep the trained objects (in a notebook), use ``cli = MedVisionCLI(args=[...])`` and read
    ``cli.model``, ``cli.datamodule`` and ``cli.trainer``.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    MedVisionCLI(args=args)


if __name__ == "__main__":
    main()
