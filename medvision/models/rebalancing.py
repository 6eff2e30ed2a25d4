"""Retraining a classifier's head on cached feature maps: plain, reweighted, or GAN-rebalanced.

The rebalancing study's method in three steps: (1) a classifier trained on the imbalanced images
(any :class:`~medvision.models.ClassificationModule` checkpoint) is split into ``features`` and
``head``; (2) a class-conditional GAN learns to generate feature maps, while the head learns to
classify real and generated ones; (3) generated features top every class up to the majority
count and the head is fine-tuned on real + generated features. The baselines retrain the same
head on the same cached features with a plain, class-weighted or sampled loss
(:class:`FeatureHeadClassifier`); the GAN arm is :class:`FeatureGANRebalancer`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from medvision.models.classification import ClassificationModule, read_classifier_checkpoint
from medvision.models.losses import adversarial_loss
from medvision.models.nets.feature_gan import FeatureDiscriminator, FeatureGenerator

log = logging.getLogger(__name__)

#: feature maps per class compared (generated vs real) after each GAN epoch
STATISTICS_SAMPLES = 256


class FeatureHeadClassifier(ClassificationModule):
    """The classifier of ``classifier_checkpoint`` with its head retrained on feature maps.

    Training, validation and test batches are ``{"features": N x C x h x w, "label": N}`` from
    :class:`~medvision.pipelines.FeatureDataModule`; only the parameters that
    ``forward_head`` uses are trained (for a timm ResNet: the final linear layer; for
    ``vgg_leaky``: its convolutional and fully connected head), the feature extractor stays
    frozen. Batches with ``image`` go through the whole network, so the checkpoint predicts
    from images like any classifier (``medvision predict``). Loss, metrics, test reports and
    the other arguments are :class:`ClassificationModule`'s.

    Args:
        classifier_checkpoint: The trained classifier's ``.ckpt`` (linked from the datamodule
            by the CLI); its network and architecture are taken from it.
        in_channels: Linked from the datamodule; must match the classifier's.
        num_classes: Linked from the datamodule; must match the classifier's.
        class_names: Linked from the datamodule; must match the classifier's, in order.
    """

    def __init__(
        self,
        classifier_checkpoint: str | Path,
        in_channels: int | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        class_weights: Literal["auto", "none"] | list[float] = "none",
        label_smoothing: float = 0.0,
        highlight_classes: list[str] | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_monitor: str = "val/loss",
    ) -> None:
        checkpoint = read_classifier_checkpoint(classifier_checkpoint)
        trained = checkpoint["hyper_parameters"]
        _check_same_task(trained, in_channels, num_classes, class_names, classifier_checkpoint)
        super().__init__(
            model_name=trained["model_name"],
            in_channels=trained["in_channels"],
            num_classes=trained["num_classes"],
            class_names=trained["class_names"],
            class_weights=class_weights,
            label_smoothing=label_smoothing,
            highlight_classes=highlight_classes,
            model_kwargs=trained.get("model_kwargs"),
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            lr_scheduler_monitor=lr_scheduler_monitor,
        )
        # this class's own arguments, not ClassificationModule's, make its checkpoints load
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.net.load_state_dict(_net_weights(checkpoint["state_dict"]))
        self.head_parameter_names = self._freeze_features()

    def _freeze_features(self) -> list[str]:
        """Freeze what ``forward_features`` uses; return the names of the head's parameters."""
        probe = torch.zeros(2, self.input_mean.shape[1], 64, 64)
        was_training = self.net.training
        self.net.eval()  # no BatchNorm statistics change during the probe
        self.forward_features(probe).sum().backward()
        feature_params = {name for name, p in self.net.named_parameters() if p.grad is not None}
        self.net.zero_grad(set_to_none=True)
        self.net.train(was_training)
        head = []
        for name, param in self.net.named_parameters():
            param.requires_grad = name not in feature_params
            if param.requires_grad:
                head.append(name)
        if not head:
            raise ValueError(f"{type(self.net).__name__}: forward_head has no parameters to train")
        return head

    def logits(self, batch: dict) -> torch.Tensor:
        """``N x K`` float32 logits: of the head for ``features``, of the whole net for ``image``.

        Args:
            batch: A batch with ``features`` (``N x C x h x w``) or ``image``.
        """
        if "features" in batch:
            return self.forward_head(batch["features"]).float()
        return super().logits(batch)


class FeatureGANRebalancer(FeatureHeadClassifier):
    """Feature-space GAN rebalancing (AC-GAN style), then the head fine-tuned on the result.

    Epochs ``0 .. gan_epochs-1`` train the GAN on the training features: a
    :class:`~medvision.models.nets.feature_gan.FeatureGenerator` (noise plus a class -> feature
    map) against a :class:`~medvision.models.nets.feature_gan.FeatureDiscriminator`
    (real/fake); the generator is also pushed to make features the head classifies as their
    class. The GAN works on features scaled per channel to [-1, 1] (``tanh`` output) by the
    training set's range. Later epochs top up every class with generated features, drawn
    afresh each epoch, and fine-tune the head on every real batch plus its share of them
    (:attr:`generated_per_class` counts what the last epoch drew). Logged in training:
    ``train/d_loss``, ``train/g_loss``, ``train/head_real_accuracy``,
    ``train/head_fake_accuracy``, and after each GAN epoch, per class, the mean and standard
    deviation of generated and real features (``gan/fake_std/<class>``,
    ``gan/std_ratio/<class>`` ...): a ratio far below 1 is mode collapse. The other arguments
    are those of :class:`FeatureHeadClassifier`.

    Args:
        feature_shape: ``(C, h, w)`` of the cached feature maps, linked from the datamodule.
        gan_epochs: Epochs of GAN training before the head is fine-tuned on rebalanced data.
        target_count: Training features per class after the top-up; null: the largest
            class's count.
        noise_dim: Length of the generator's noise vector.
        generator_width: Channels of the generator's hidden maps.
        discriminator_width: Channels of the discriminator's first convolution.
        class_loss_weight: Weight of the head's cross-entropy on generated features in the
            generator's loss.
        head_fake_every: In GAN epochs, train the head on generated features every this many
            steps (the study: 2).
        head_real_every: In GAN epochs, train the head on real features every this many steps
            (the study: 5).
        seed: Seed of the generated top-up (with the epoch).
        generator_optimizer: The generator's optimizer.
        discriminator_optimizer: The discriminator's optimizer.
        optimizer: The head's optimizer.
    """

    def __init__(
        self,
        classifier_checkpoint: str | Path,
        feature_shape: Sequence[int],
        in_channels: int | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        gan_epochs: int = 10,
        target_count: int | None = None,
        noise_dim: int = 100,
        generator_width: int = 256,
        discriminator_width: int = 256,
        class_loss_weight: float = 1.0,
        head_fake_every: int = 2,
        head_real_every: int = 5,
        seed: int = 0,
        label_smoothing: float = 0.0,
        highlight_classes: list[str] | None = None,
        generator_optimizer: OptimizerCallable = torch.optim.Adam,
        discriminator_optimizer: OptimizerCallable = torch.optim.Adam,
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        super().__init__(
            classifier_checkpoint,
            in_channels=in_channels,
            num_classes=num_classes,
            class_names=class_names,
            label_smoothing=label_smoothing,
            highlight_classes=highlight_classes,
            optimizer=optimizer,
        )
        self.save_hyperparameters(
            ignore=["optimizer", "generator_optimizer", "discriminator_optimizer"]
        )
        self.automatic_optimization = False
        shape = tuple(int(v) for v in feature_shape)
        self.generator = FeatureGenerator(self.num_classes, shape, noise_dim, generator_width)
        self.discriminator = FeatureDiscriminator(shape, discriminator_width)
        self.generator_optimizer = generator_optimizer
        self.discriminator_optimizer = discriminator_optimizer
        # per-channel range of the real training features, set at the start of fit
        self.register_buffer("feature_low", torch.zeros(1, shape[0], 1, 1))
        self.register_buffer("feature_high", torch.ones(1, shape[0], 1, 1))
        #: generated features per class in the last rebalanced epoch
        self.generated_per_class = torch.zeros(self.num_classes, dtype=torch.long)

    #: the GAN and its feature scaling: not needed to predict from images
    training_only_state = ("generator.", "discriminator.", "feature_low", "feature_high")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- scaling between the head's feature space and the GAN's [-1, 1] ---------------------
    def to_gan_space(self, features: torch.Tensor) -> torch.Tensor:
        """Scale features per channel from the training range to [-1, 1].

        Args:
            features: ``N x C x h x w`` features in the head's space.
        """
        span = (self.feature_high - self.feature_low).clamp(min=1e-6)
        return (features - self.feature_low) / span * 2 - 1

    def from_gan_space(self, scaled: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_gan_space`.

        Args:
            scaled: ``N x C x h x w`` features in [-1, 1].
        """
        return (scaled + 1) / 2 * (self.feature_high - self.feature_low) + self.feature_low

    def generate(self, labels: torch.Tensor, generator: torch.Generator | None = None):
        """Feature maps in the head's space for class indices ``labels`` (no gradient).

        Args:
            labels: ``N`` int64 class indices.
            generator: Random generator of the noise; None: the global one.
        """
        if len(labels) == 0:
            return self.feature_low.new_zeros(0, *self.generator.feature_shape)
        with torch.no_grad():
            return self.from_gan_space(self.generator.sample(labels, generator))

    # -- optimizers and phases -------------------------------------------------------------
    def configure_optimizers(self):
        return [
            self.generator_optimizer(self.generator.parameters()),
            self.discriminator_optimizer(self.discriminator.parameters()),
            self.optimizer(self.head_parameters()),
        ]

    def head_parameters(self) -> list[torch.nn.Parameter]:
        named = dict(self.net.named_parameters())
        return [named[name] for name in self.head_parameter_names]

    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        train = datamodule.datasets["train"]
        if self.trainer.ckpt_path is None:  # a resumed run keeps the range it trained with
            low, high = _channel_range(train.features)
            self.feature_low, self.feature_high = low.to(self.device), high.to(self.device)
        self._class_counts = torch.tensor([datamodule.class_counts[n] for n in self.class_names])
        self._real_statistics = _class_statistics(train, self.num_classes)

    @property
    def in_gan_phase(self) -> bool:
        return self.current_epoch < self.hparams.gan_epochs

    def training_step(self, batch: dict, batch_idx: int) -> None:
        if self.in_gan_phase:
            self._gan_step(batch, batch_idx)
        else:
            self._rebalanced_head_step(batch, batch_idx)

    def _gan_step(self, batch: dict, batch_idx: int) -> None:
        g_opt, d_opt, h_opt = self.optimizers()
        real, labels = batch["features"], batch["label"]
        real_scaled = self.to_gan_space(real)
        # class-balanced fake labels: the rare classes are the ones the GAN is for
        fake_labels = torch.randint(0, self.num_classes, (len(labels),), device=self.device)
        fake_scaled = self.generator.sample(fake_labels)

        d_loss = adversarial_loss(self.discriminator(real_scaled), True) + adversarial_loss(
            self.discriminator(fake_scaled.detach()), False
        )
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()

        fake_logits = self.forward_head(self.from_gan_space(fake_scaled)).float()
        g_loss = adversarial_loss(self.discriminator(fake_scaled), True)
        g_loss = g_loss + self.hparams.class_loss_weight * F.cross_entropy(fake_logits, fake_labels)
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()
        h_opt.zero_grad()  # the generator's loss left gradients on the head

        step = batch_idx + 1
        if step % self.hparams.head_fake_every == 0:
            self._head_update(self.from_gan_space(fake_scaled.detach()), fake_labels, "fake")
        if step % self.hparams.head_real_every == 0:
            self._head_update(real, labels, "real")
        size = len(labels)
        self.log("train/d_loss", d_loss, on_step=True, on_epoch=True, batch_size=size)
        self.log("train/g_loss", g_loss, on_step=True, on_epoch=True, batch_size=size)

    def _train_head(self, features: torch.Tensor, labels: torch.Tensor):
        """One optimizer step of the head on ``features``; returns its logits and loss."""
        h_opt = self.optimizers()[2]
        logits = self.forward_head(features).float()
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        h_opt.zero_grad()
        self.manual_backward(loss)
        h_opt.step()
        return logits.detach(), loss.detach()

    def _head_update(self, features: torch.Tensor, labels: torch.Tensor, kind: str) -> None:
        logits, loss = self._train_head(features, labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        self.log(f"train/head_{kind}_accuracy", accuracy, on_epoch=True, batch_size=len(labels))
        self.log(f"train/head_{kind}_loss", loss, on_epoch=True, batch_size=len(labels))

    def _rebalanced_head_step(self, batch: dict, batch_idx: int) -> None:
        features, labels = batch["features"], batch["label"]
        last = batch_idx == self.trainer.num_training_batches - 1
        extra_labels = self._next_generated_labels(len(labels), last)
        extra_features = self.generate(extra_labels, self._epoch_rng)
        features = torch.cat([features, extra_features.to(features)])
        labels = torch.cat([labels, extra_labels])
        logits, loss = self._train_head(features, labels)
        self.train_metrics.update(logits.softmax(dim=1), labels)
        self.log_loss("train", loss, batch_size=len(labels))

    # -- the generated set -----------------------------------------------------------------
    def generated_counts(self) -> torch.Tensor:
        """Features to generate per class and epoch: up to ``target_count`` (or the majority)."""
        counts = self._class_counts
        target = self.hparams.target_count or int(counts.max())
        return (target - counts).clamp(min=0)

    def on_train_epoch_start(self) -> None:
        if self.in_gan_phase:
            self.generator.train()
            self.discriminator.train()
            return
        # this epoch's generated labels, shuffled; each real batch takes its share of them
        self.generator.eval()
        self._epoch_rng = torch.Generator(device=self.device)
        self._epoch_rng.manual_seed(self.hparams.seed + self.current_epoch)
        quota = self.generated_counts().to(self.device)
        labels = torch.repeat_interleave(torch.arange(self.num_classes, device=self.device), quota)
        order = torch.randperm(len(labels), generator=self._epoch_rng, device=self.device)
        self._pending_labels = labels[order]
        self._share = len(labels) / max(int(self._class_counts.sum()), 1)
        self.generated_per_class = torch.zeros(self.num_classes, dtype=torch.long)
        if self.current_epoch == self.hparams.gan_epochs:
            counts = dict(zip(self.class_names, quota.tolist(), strict=True))
            log.info("rebalancing: generated features per class and epoch: %s", counts)

    def _next_generated_labels(self, real_batch_size: int, last_batch: bool) -> torch.Tensor:
        """The class labels of the generated features that join this real batch."""
        count = len(self._pending_labels) if last_batch else round(real_batch_size * self._share)
        labels, self._pending_labels = (
            self._pending_labels[:count],
            self._pending_labels[count:],
        )
        self.generated_per_class += torch.bincount(labels.cpu(), minlength=self.num_classes)
        return labels

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.in_gan_phase:
            self._log_feature_statistics()

    def _log_feature_statistics(self) -> None:
        """Per class: mean and std of generated vs real features (std ratio << 1: collapse)."""
        rng = torch.Generator(device=self.device).manual_seed(self.hparams.seed + 1)
        self.generator.eval()
        for index, name in enumerate(self.class_names):
            if self._real_statistics[index] is None:
                continue
            real_mean, real_std = self._real_statistics[index]
            labels = torch.full((STATISTICS_SAMPLES,), index, device=self.device)
            fake = self.generate(labels, rng).float().cpu()
            fake_std = fake.std(0).mean()
            self.log_dict(
                {
                    f"gan/real_mean/{name}": real_mean,
                    f"gan/fake_mean/{name}": fake.mean(),
                    f"gan/real_std/{name}": real_std,
                    f"gan/fake_std/{name}": fake_std,
                    f"gan/std_ratio/{name}": fake_std / real_std.clamp(min=1e-8),
                }
            )
        self.generator.train()


def _class_statistics(train, num_classes: int) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """Per class, the mean and (per-element, then averaged) std of up to STATISTICS_SAMPLES
    real training feature maps; None for a class with fewer than two."""
    labels = torch.as_tensor(train.labels)
    statistics = []
    for index in range(num_classes):
        rows = (labels == index).nonzero()[:STATISTICS_SAMPLES, 0]
        if len(rows) < 2:
            statistics.append(None)
            continue
        real = train.features[rows].float()
        statistics.append((real.mean(), real.std(0).mean()))
    return statistics


def _net_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``net.`` entries of a ClassificationModule state dict, without the prefix."""
    return {k.removeprefix("net."): v for k, v in state_dict.items() if k.startswith("net.")}


def _channel_range(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel min and max of ``N x C x h x w`` features, as ``1 x C x 1 x 1``."""
    flat = features.float().transpose(0, 1).flatten(1)
    return flat.min(1).values.view(1, -1, 1, 1), flat.max(1).values.view(1, -1, 1, 1)


def _check_same_task(trained: dict, in_channels, num_classes, class_names, checkpoint) -> None:
    """The data must be what the classifier was trained on: same classes, same channels."""
    problems = []
    if class_names is not None and list(class_names) != list(trained["class_names"]):
        problems.append(f"classes {list(class_names)} (classifier: {trained['class_names']})")
    if num_classes is not None and num_classes != trained["num_classes"]:
        problems.append(f"{num_classes} classes (classifier: {trained['num_classes']})")
    if in_channels is not None and in_channels != trained["in_channels"]:
        problems.append(f"{in_channels} channels (classifier: {trained['in_channels']})")
    if problems:
        raise ValueError(
            f"the data does not match the classifier of {checkpoint}: " + "; ".join(problems)
        )
