"""Feature caching, head retraining and the feature-space GAN, on synthetic chest X-rays."""

import os
import shutil

import pytest
import torch
from lightning.pytorch import Trainer

from medvision.cli import main
from medvision.data import ChestXrayDataModule
from medvision.models import FeatureGANRebalancer, FeatureHeadClassifier
from medvision.models.nets.feature_gan import FeatureDiscriminator, FeatureGenerator
from medvision.pipelines import FeatureDataModule
from medvision.utils.files import read_csv

from .conftest import CONFIGS, EXTRACTOR_IMAGE_SIZE, copy_checkpoint, rebalance_run_args

IMAGE_SIZE = EXTRACTOR_IMAGE_SIZE


@pytest.fixture
def chest_dir(chest_extractor):
    """The synthetic X-rays the session's extractor was trained on (shared: read only)."""
    return chest_extractor.data_dir


@pytest.fixture
def extractor(tmp_path, chest_extractor):
    """Step 1: the session's cnn5 classifier checkpoint (one batch on the synthetic X-rays),
    copied into the test's folder, where its feature caches are written."""
    return copy_checkpoint(chest_extractor.checkpoint, tmp_path / "extractor")


def image_data(chest_dir):
    """The extractor's datamodule settings (configs/data/chest_xray.yaml at the test's size)."""
    return ChestXrayDataModule(
        data_dir=chest_dir,
        image_size=IMAGE_SIZE,
        in_channels=1,
        val_fraction=0.2,
        test_split="test",
        seed=42,
        num_workers=0,
    )


def feature_data(chest_dir, extractor, **kwargs):
    return FeatureDataModule(image_data(chest_dir), extractor, batch_size=8, **kwargs)


def rebalance_args(root, chest_dir, extractor, *extra):
    """configs/rebalance_chestxray.yaml on the synthetic X-rays and the test's extractor."""
    return rebalance_run_args(
        "rebalance_chestxray.yaml", root, chest_dir, extractor, *extra, image_size=IMAGE_SIZE
    )


def quiet_trainer(root, **kwargs):
    return Trainer(
        default_root_dir=root,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before, module):
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


@pytest.mark.parametrize("shape", [(512, 10, 10), (64, 4, 5), (32, 7, 7), (16, 1, 1), (8, 8, 8)])
def test_generator_and_discriminator_shapes(shape):
    generator = FeatureGenerator(num_classes=3, feature_shape=shape, noise_dim=16, width=32)
    discriminator = FeatureDiscriminator(shape, width=16)
    labels = torch.tensor([0, 1, 2, 1])
    fakes = generator.sample(labels)
    assert fakes.shape == (4, *shape) and fakes.abs().max() <= 1  # tanh range
    logits = discriminator(fakes)
    assert logits.shape == (4,)
    logits.sum().backward()
    assert all(p.grad is not None for p in generator.parameters())


def test_features_are_extracted_once_and_cached(tmp_path, chest_dir, extractor):
    data = feature_data(chest_dir, extractor)
    data.setup("fit")
    images = image_data(chest_dir)
    images.setup("fit")
    for split in ("train", "val", "test"):
        assert len(data.datasets[split]) == len(images.datasets[split])
        assert data.datasets[split].labels == images.datasets[split].labels
    sample = data.datasets["train"][0]
    assert (
        sample["features"].shape == data.feature_shape and sample["features"].dtype == torch.float32
    )
    assert data.class_counts == images.class_counts

    cache = extractor.parent / f"features_{extractor.stem}" / "train.pt"
    made = cache.stat().st_mtime_ns
    feature_data(chest_dir, extractor).setup("fit")
    assert cache.stat().st_mtime_ns == made  # reused
    os.utime(extractor, ns=(made + 10**9, made + 10**9))  # "a retrained extractor"
    feature_data(chest_dir, extractor).setup("fit")
    assert cache.stat().st_mtime_ns != made  # extracted again


def test_head_retraining_leaves_the_extractor_alone(tmp_path, chest_dir, extractor):
    model = FeatureHeadClassifier(extractor, class_weights="auto")
    assert model.head_parameter_names and all(
        n.startswith("head.") for n in model.head_parameter_names
    )
    before = snapshot(model.net)
    quiet_trainer(tmp_path, max_epochs=1).fit(model, feature_data(chest_dir, extractor))
    assert changed(before, model.net) == set(model.head_parameter_names)


def test_data_of_other_classes_is_refused(extractor):
    with pytest.raises(ValueError, match="does not match the classifier"):
        FeatureHeadClassifier(extractor, class_names=["A", "B", "C", "D"])


def gan(extractor, data, **kwargs):
    return FeatureGANRebalancer(
        extractor,
        feature_shape=data.feature_shape,
        generator_width=16,
        discriminator_width=16,
        noise_dim=8,
        **kwargs,
    )


def test_one_gan_step_changes_generator_discriminator_and_head(tmp_path, chest_dir, extractor):
    data = feature_data(chest_dir, extractor)
    model = gan(extractor, data, head_fake_every=1, head_real_every=1)
    before = [snapshot(m) for m in (model.generator, model.discriminator, model.net)]
    quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0).fit(
        model, data
    )
    modules = (model.generator, model.discriminator, model.net)
    g, d, net = (changed(b, m) for b, m in zip(before, modules, strict=True))
    assert g == set(before[0]) and d == set(before[1])  # every weight of both moved
    assert net == set(model.head_parameter_names)  # the head learned, the extractor did not


@pytest.mark.parametrize("target_count", [None, 40])
def test_generated_features_follow_the_requested_counts(
    tmp_path, chest_dir, extractor, target_count
):
    data = feature_data(chest_dir, extractor)
    model = gan(extractor, data, gan_epochs=1, target_count=target_count)
    quiet_trainer(tmp_path, max_epochs=2, limit_val_batches=0).fit(model, data)
    counts = torch.tensor([data.class_counts[name] for name in data.class_names])
    target = target_count or int(counts.max())
    expected = (target - counts).clamp(min=0)
    assert torch.equal(model.generated_per_class, expected)
    assert (expected > 0).any()


def test_rebalanced_checkpoint_tests_and_predicts_through_the_cli(tmp_path, chest_dir, extractor):
    root = tmp_path / "gan"
    args = rebalance_args(
        root,
        chest_dir,
        extractor,
        "--config",
        str(CONFIGS / "rebalancing/feature_gan.yaml"),
        "--model.init_args.gan_epochs=1",
        "--model.init_args.generator_width=16",
        "--model.init_args.discriminator_width=16",
        "--trainer.max_epochs=2",
    )
    main(["fit", *args])
    logged = (root / "version_0/metrics.csv").read_text()
    for key in ("train/d_loss", "train/g_loss", "gan/std_ratio/COVID19", "val/balanced_accuracy"):
        assert key in logged
    best = root / "version_0/checkpoints/best.ckpt"

    main(["test", *args, f"--ckpt_path={best}"])
    assert (root / "version_0/test/test_per_class.csv").is_file()

    predict_dir = tmp_path / "to_predict"
    shutil.copytree(chest_dir / "test" / "NORMAL", predict_dir)
    good = len(list(predict_dir.iterdir()))
    (predict_dir / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit) as exit_status:  # the good files predicted, one failed
        main(
            [
                "predict",
                *args,
                f"--ckpt_path={best}",
                f"--data.init_args.predict_dir={predict_dir}",
                f"--prediction_writer.output_dir={root / 'predictions'}",
            ]
        )
    assert exit_status.value.code == 1
    assert "broken.png" in ((root / "predictions") / "failed.csv").read_text()
    rows = read_csv((root / "predictions") / "predictions.csv")
    assert len(rows) == good
    assert {"pred", "prob_COVID19", "prob_TUBERCULOSIS"} <= set(rows[0])
    classes = ["COVID19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS"]
    for row in rows:
        probs = [float(row[f"prob_{name}"]) for name in classes]
        assert abs(sum(probs) - 1) < 1e-4 and row["pred"] == classes[probs.index(max(probs))]


@pytest.mark.parametrize("arm", ["class_weighted.yaml", "weighted_sampler.yaml"])
def test_baseline_arms_compose_and_train(tmp_path, chest_dir, extractor, arm):
    root = tmp_path / arm
    args = rebalance_args(
        root, chest_dir, extractor, "--config", str(CONFIGS / "rebalancing" / arm)
    )
    main(["fit", *args, "--trainer.max_epochs=1"])
    assert (root / "version_0/checkpoints/best.ckpt").is_file()


def test_missing_extractor_checkpoint_says_what_to_do(tmp_path, chest_dir):
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist. Train the feature"):
        FeatureDataModule(image_data(chest_dir), tmp_path / "missing.ckpt")


@pytest.mark.parametrize(
    ("model_name", "head_prefix"), [("resnet18", "fc."), ("vgg_leaky", "head.")]
)
def test_timm_and_vgg_extractors_split_at_forward_features(tmp_path, model_name, head_prefix):
    import lightning

    from medvision.models import ClassificationModule

    classifier = ClassificationModule(
        model_name=model_name, in_channels=3, num_classes=3, class_names=["a", "b", "c"]
    )
    path = tmp_path / f"{model_name}.ckpt"
    torch.save(
        {
            "state_dict": classifier.state_dict(),
            "hyper_parameters": dict(classifier.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    model = FeatureHeadClassifier(path)
    assert all(name.startswith(head_prefix) for name in model.head_parameter_names)
    trainable = {n for n, p in model.net.named_parameters() if p.requires_grad}
    assert trainable == set(model.head_parameter_names)
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # the split changes nothing: head(features(x)) is the classifier
        torch.testing.assert_close(model.eval()(image), classifier.eval()(image))
