"""Single-label image classification as a LightningModule: any timm model, or the seed CNNs."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

import medvision.models.nets  # noqa: F401  (registers cnn5 and vgg_leaky with timm)
from medvision.evaluation.metrics import (
    IGNORE_LABEL,
    best_f1_thresholds,
    classification_metrics,
    loggable_scalars,
    multilabel_metrics,
)
from medvision.models.base import MedVisionModule
from medvision.models.classification_net import create_classification_net, input_stats
from medvision.models.classifier_outputs import add_temperature, thresholds_at_temperature
from medvision.models.losses import balanced_class_weights, build_loss, positive_weights
from medvision.models.weights import load_pretrained_weights
from medvision.utils.checkpoints import load_checkpoint
from medvision.utils.class_names import check_class_names
from medvision.utils.steps import EveryNSteps, read_interval

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")


class ClassificationModule(MedVisionModule):
    """Image classification: logits ``N x num_classes`` for ``N x in_channels x H x W``.

    Batches are dicts with ``image`` (float in [0, 1]) and ``label``: an int64 class index, or
    with ``multilabel`` a float 0/1 vector of ``num_classes`` labels plus ``label_mask`` (0
    where a label is unknown, e.g. uncertain, and left out of loss and metrics). Images are
    standardized with the network's mean/std (timm's data config; ImageNet's by default) inside
    ``forward``. Probabilities are ``softmax(logits / temperature)`` (sigmoid for multi-label);
    the ``temperature`` buffer is 1 unless ``calibrate`` fitted it.

    Logged per stage: ``<stage>/loss``, ``accuracy``, ``balanced_accuracy``, ``f1`` (macro),
    ``auroc``, and per class ``precision/<class>``, ``recall/<class>``,
    ``f1_per_class/<class>``; multi-label: ``auroc``, ``f1`` at 0.5 and their
    ``*_per_label/<label>``, and after each validation epoch ``val/f1_tuned`` with the
    per-label thresholds that maximize validation F1 (kept in the checkpoint, used by
    ``predict``). ``test_step`` returns each batch's probabilities and targets, from which
    :class:`~medvision.evaluation.ClassificationTestReport` (a callback the CLI adds) logs
    ``test/ece`` and writes its report to the run folder (per-class tables, confusion matrix,
    reliability diagram, per-image CSV and bootstrap confidence intervals).
    The training metrics are updated every ``log_every_n_steps`` steps with the batches since,
    kept on the device until then (a torchmetrics update waits for a GPU).

    Args:
        model_name: The network: any timm model name (``resnet18``, ``densenet121``,
            ``efficientnet_b0``, ...) or a seed study's net registered by medvision
            (``cnn5``, ``vgg_leaky``); built by ``timm.create_model``.
        pretrained: Load timm's pretrained weights from the hub (needs the internet).
        pretrained_weights: A local state dict or medvision checkpoint whose network weights
            are loaded instead (offline).
        in_channels: Image channels, 1 (gray) or 3 (RGB); linked from the datamodule.
        num_classes: Classes (or labels, multi-label); linked from the datamodule.
        class_names: The classes in output order; linked from the datamodule (without them
            they are reported as ``0``, ``1``, ...).
        class_weights: Loss weights: ``none``, ``auto`` (inverse class frequency from the
            datamodule's ``class_counts``, set at ``setup``) or one weight per class;
            multi-label: BCE positive weights (``auto``: negatives / positives per label).
        label_smoothing: Label smoothing of the cross-entropy, in [0, 1).
        multilabel: Independent labels: sigmoid outputs and binary cross-entropy averaged over
            the known labels.
        highlight_classes: Classes (e.g. melanoma) that get a summary line of their own at the
            end of ``test``.
        model_kwargs: More keyword arguments for ``timm.create_model`` (``drop_rate``, a seed
            net's ``channels``, ...).
        optimizer: The optimizer (a class path with ``init_args`` in YAML; Adam by default).
        lr_scheduler: An optional learning-rate scheduler, likewise.
        lr_scheduler_monitor: The metric a scheduler such as ``ReduceLROnPlateau`` watches.
        channels_last: Weights and images in the channels-last memory layout; ``null``: on a
            CUDA GPU only.
        compile: ``true``, or a dict of ``torch.compile`` options, compiles the network.
        calibrate: At the end of ``fit``, fit the temperature on the validation split for
            every saved checkpoint (best and last) and store it in each (the callback
            ``medvision.training.TemperatureCalibration``); ``test``, ``predict``,
            ``load_model`` and ``export`` then apply it. Needs a validation split.
    """

    task = "classification"

    def __init__(
        self,
        model_name: str = "resnet18",
        pretrained: bool = False,
        pretrained_weights: str | Path | None = None,
        in_channels: int = 3,
        num_classes: int = 2,
        class_names: Sequence[str] | None = None,
        class_weights: Literal["auto", "none"] | list[float] = "none",
        label_smoothing: float = 0.0,
        multilabel: bool = False,
        highlight_classes: list[str] | None = None,
        model_kwargs: dict | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_monitor: str = "val/loss",
        channels_last: bool | None = None,
        compile: bool | dict = False,
        calibrate: bool = False,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, lr_scheduler_monitor, channels_last, compile)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.class_names = check_class_names(class_names, num_classes)
        unknown = sorted(set(highlight_classes or []) - set(self.class_names))
        if unknown:
            raise ValueError(f"highlight_classes {unknown} are not among {self.class_names}")
        self.highlight_classes = list(highlight_classes or [])
        self.net = create_classification_net(
            model_name, pretrained, in_channels, num_classes, **(model_kwargs or {})
        )
        self._network_args = {"model_name": model_name, "model_kwargs": model_kwargs}
        if pretrained_weights is not None:
            load_pretrained_weights(self.net, pretrained_weights)
        mean, std = input_stats(self.net, in_channels)
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)
        self.class_weights = class_weights
        weights = None
        if isinstance(class_weights, list | tuple):
            if len(class_weights) != num_classes:
                raise ValueError(
                    f"class_weights has {len(class_weights)} values for {num_classes} classes"
                )
            weights = torch.tensor(class_weights, dtype=torch.float32)
        elif class_weights not in ("auto", "none"):
            raise ValueError(
                f"class_weights must be 'auto', 'none' or a list, got {class_weights!r}"
            )
        self.label_smoothing = label_smoothing
        self.multilabel = multilabel
        self.loss = build_loss(
            "masked_bce" if multilabel else "cross_entropy", num_classes, label_smoothing
        )
        self.loss_weight = weights
        if multilabel:
            self.register_buffer("thresholds", torch.full((num_classes,), 0.5))
            metrics = multilabel_metrics(num_classes)
        else:
            metrics = classification_metrics(num_classes)
        add_temperature(self)
        self.calibrate = calibrate
        #: The test metrics' values at the end of ``test`` (read by the report's tables).
        self.test_results: dict[str, torch.Tensor] = {}
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self._train_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._train_updates = EveryNSteps(read_interval(0))

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        data_multilabel = getattr(datamodule, "multilabel", False)
        if datamodule is not None and data_multilabel != self.multilabel:
            raise ValueError(
                f"{type(datamodule).__name__} gives {'multi' if data_multilabel else 'single'}"
                f"-label targets but the model has multilabel: {self.multilabel}. Set "
                f"model.init_args.multilabel: {data_multilabel}."
            )
        if self.class_weights != "auto" or stage not in ("fit", "validate", "test"):
            return
        counts = getattr(datamodule, "class_counts", None)
        known = getattr(datamodule, "known_counts", None) if self.multilabel else counts
        if counts is None or known is None:
            raise ValueError(
                "class_weights: auto needs a datamodule with class_counts (and known_counts for "
                "multi-label); give the weights as a list instead."
            )
        positives = [counts[name] for name in self.class_names]
        if self.multilabel:
            weights = positive_weights(positives, [known[name] for name in self.class_names])
        else:
            weights = balanced_class_weights(positives)
        self.loss_weight = weights.to(self.device)
        kind = "positive weights" if self.multilabel else "class weights"
        log.info("%s (auto): %s", kind, dict(zip(self.class_names, weights.tolist(), strict=True)))

    @property
    def loss_weight(self) -> torch.Tensor | None:
        """Class weights (single-label) or BCE positive weights (multi-label) of the loss."""
        return self.loss.pos_weight if self.multilabel else self.loss.weight

    @loss_weight.setter
    def loss_weight(self, weights: torch.Tensor | None) -> None:
        if self.multilabel:
            self.loss.pos_weight = weights
        else:
            self.loss.weight = weights

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.to_memory_format((image - self.input_mean) / self.input_std))

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """The network's feature map of images in [0, 1] (timm's ``forward_features``)."""
        return self.net.forward_features(
            self.to_memory_format((image - self.input_mean) / self.input_std)
        )

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits of feature maps (timm's ``forward_head``: pooling and classifier)."""
        return self.net.forward_head(features)

    def logits(self, batch: dict) -> torch.Tensor:
        """Class logits (float32) of a batch's images."""
        return self(batch["image"]).float()

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        return self._step(batch, stage)[0]

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        """The loss, and what the test report keeps: ``probs`` (``N x K``, calibrated) and
        ``target`` (``N`` classes, or ``N x K`` 0/1 with -1 where unknown)."""
        loss, probs, target = self._step(batch, "test")
        return {"loss": loss, "probs": probs, "target": target}

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, probs, target)`` of a batch; the stage's metrics updated, the loss logged."""
        logits = self.logits(batch)
        labels = batch["label"]
        if self.multilabel:
            known = batch["label_mask"]
            loss = self.loss(logits, labels, known)
            target = torch.where(known.bool(), labels, IGNORE_LABEL).long()
        else:
            loss = self.loss(logits, labels)
            target = labels
        probs = self.probabilities(logits.detach())
        if stage == "train":
            self._train_outputs.append((probs, target))
        else:
            getattr(self, f"{stage}_metrics").update(probs, target)
        self.log_loss(stage, loss, batch_size=len(labels))
        return loss, probs, target

    def on_train_start(self) -> None:
        if float(self.temperature) != 1.0:  # fitted for other weights: training changes them
            log.info("Training: the temperature %.4g is reset to 1", float(self.temperature))
            self.set_temperature(1.0)
        self._train_outputs = []
        every = read_interval(self.trainer.log_every_n_steps)
        self._train_updates = EveryNSteps(every, start=self.trainer.global_step)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self._train_updates.due(self.trainer.global_step):
            self._update_train_metrics()

    def _update_train_metrics(self) -> None:
        """Update the training metrics with the batches kept since the last update."""
        if not self._train_outputs:
            return
        probs, target = (torch.cat(parts) for parts in zip(*self._train_outputs, strict=True))
        self._train_outputs = []
        self.train_metrics.update(probs, target)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """The batch without its images, with ``class_probs``: ``N x K`` probabilities of the
        images (test-time augmentation is applied on top by :mod:`medvision.apply`)."""
        output = {k: v for k, v in batch.items() if k not in ("image", "features")}
        output["class_probs"] = self.probabilities(self.logits({"image": batch["image"]}))
        return output

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities of logits ``N x K``: sigmoid (multi-label) or softmax of
        ``logits / temperature``."""
        logits = logits / self.temperature
        return logits.sigmoid() if self.multilabel else logits.softmax(dim=1)

    def set_temperature(self, temperature: float) -> None:
        """Set the temperature; a multi-label model's thresholds move to keep its decisions.

        Args:
            temperature: ``T > 0`` (see :func:`medvision.evaluation.calibration.fit_temperature`).
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if self.multilabel:
            old = float(self.temperature)
            self.thresholds = thresholds_at_temperature(self.thresholds, old, temperature)
        self.temperature.fill_(float(temperature))

    def describe_output(self) -> dict:
        """Classification: classes, thresholds, mean/std and the network to rebuild (see
        :mod:`medvision.models.record`); the thresholds as tuned so far."""
        return {
            "task": "classification",
            "class_names": list(self.class_names),
            "multilabel": self.multilabel,
            "thresholds": self.thresholds.tolist() if self.multilabel else None,
            "temperature": float(self.temperature),
            "mean": self.input_mean.flatten().tolist(),
            "std": self.input_std.flatten().tolist(),
            "network": {
                "class_path": "medvision.models.ClassificationModule",
                "init_args": {**self._network_args, "multilabel": self.multilabel},
            },
        }

    def _log_epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        metrics = getattr(self, f"{stage}_metrics")
        if not any(metric.update_called for metric in metrics.values()):
            return {}
        with warnings.catch_warnings():  # AUROC of a class absent from a small val batch
            warnings.filterwarnings("ignore", message=".*samples in target.*")
            values = metrics.compute()
        metrics.reset()
        scalars = loggable_scalars(values, self.class_names)
        prog_bar = {f"{stage}/f1", f"{stage}/accuracy"} if stage != "train" else set()
        for key, value in scalars.items():
            # values are already reduced over processes; sync_dist averages equal numbers
            self.log(key, value, prog_bar=key in prog_bar, sync_dist=True)
        return values

    def on_train_epoch_end(self) -> None:
        self._update_train_metrics()
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch_metrics("val")
        if self.multilabel and values and not self.trainer.sanity_checking:
            self._tune_thresholds(values["val/pr_curve"])

    def _tune_thresholds(self, pr_curve) -> None:
        """Keep, per label, the threshold that maximizes F1 on this validation epoch."""
        thresholds, f1 = best_f1_thresholds(pr_curve)
        self.thresholds = thresholds.to(self.thresholds)
        self.log("val/f1_tuned", f1.mean(), sync_dist=True)
        for name, threshold in zip(self.class_names, thresholds, strict=True):
            self.log(f"val/threshold/{name}", threshold, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self.test_results = {}

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_epoch_metrics("test")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        trained = checkpoint.get("hyper_parameters", {}).get("class_names")
        if trained is not None and list(trained) != self.class_names:
            raise ValueError(
                f"the checkpoint was trained on classes {list(trained)} ({len(trained)}) but this "
                f"run has {self.class_names} ({len(self.class_names)}). Use data with the same "
                "class folders, or pass "
                f"--data.class_names {list(trained)} in that order."
            )


def load_classifier(path: str | Path) -> ClassificationModule:
    """A trained :class:`ClassificationModule` from its checkpoint, on the CPU.

    The weights come from the checkpoint, so nothing is downloaded or read besides it
    (``pretrained`` and ``pretrained_weights`` of the original run are not applied again).

    Args:
        path: A ``ClassificationModule`` checkpoint (``best.ckpt``, ``last.ckpt``).

    Returns:
        The module, with the checkpoint's weights, thresholds and temperature.
    """
    path = _existing_checkpoint(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*class_names not given.*")
        return ClassificationModule.load_from_checkpoint(
            path, map_location="cpu", pretrained=False, pretrained_weights=None
        )


def read_classifier_checkpoint(path: str | Path) -> dict:
    """A ``ClassificationModule`` checkpoint as a dict (``hyper_parameters``, ``state_dict``).

    Read the arguments a classifier was trained with from here: a module's own ``hparams``
    are not reliable for this when it is built inside LightningCLI, which hands the whole CLI
    configuration to every module created during instantiation.

    Args:
        path: The checkpoint file (read with ``weights_only`` loading).
    """
    return load_checkpoint(_existing_checkpoint(path), mmap=True)


def _existing_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint {path} does not exist.")
    return path
