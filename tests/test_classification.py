"""ClassificationModule and the seed networks: shapes, gradients, weights, class weighting;
the test report of a classifier against scikit-learn and hand-computed calibration error."""

import lightning as L
import numpy as np
import pytest
import timm
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from medvision.evaluation import ClassificationTestReport
from medvision.models import ClassificationModule
from medvision.models.losses import balanced_class_weights
from medvision.models.nets import CNN5, VGGLeaky
from medvision.utils.files import read_csv

NAMES = ["COVID19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS"]


def forward_backward(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    logits = net(images)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    return logits


def test_cnn5_at_its_native_224_pixels():
    net = timm.create_model("cnn5", num_classes=4, in_chans=1)
    assert isinstance(net, CNN5)
    assert forward_backward(net, torch.rand(2, 1, 224, 224)).shape == (2, 4)


def test_vgg_leaky_makes_the_gan_studys_feature_map_at_160_pixels():
    net = timm.create_model("vgg_leaky", num_classes=6, in_chans=3)
    assert isinstance(net, VGGLeaky)
    images = torch.rand(2, 3, 160, 160)
    assert net.forward_features(images).shape == (2, 512, 10, 10)
    assert forward_backward(net, images).shape == (2, 6)


def test_seed_nets_have_no_pretrained_weights():
    with pytest.raises(ValueError, match="cnn5 has no pretrained weights"):
        timm.create_model("cnn5", pretrained=True)


@pytest.mark.parametrize("model_name", ["resnet18", "cnn5"])
def test_module_forward_backward_on_64px_grayscale(model_name):
    module = ClassificationModule(model_name, in_channels=1, num_classes=4, class_names=NAMES)
    batch = {"image": torch.rand(3, 1, 64, 64), "label": torch.tensor([0, 3, 1])}
    loss = module.step(batch, "train")
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_inputs_are_standardized_with_the_networks_statistics():
    module = ClassificationModule("resnet18", in_channels=1, num_classes=2, class_names=["a", "b"])
    imagenet_mean = (0.485 + 0.456 + 0.406) / 3
    assert module.input_mean.flatten().tolist() == pytest.approx([imagenet_mean])


def test_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match="unknown model_name 'resnet_1000'.*timm"):
        ClassificationModule("resnet_1000", num_classes=2, class_names=["a", "b"])


def test_offline_pretrained_weights_give_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="'resnet18'.*pretrained: false.*pretrained_weights"):
        ClassificationModule("resnet18", pretrained=True, num_classes=2, class_names=["a", "b"])


def test_class_names_must_match_num_classes_and_are_never_invented_silently():
    with pytest.raises(ValueError, match="3 class_names for num_classes=2"):
        ClassificationModule("cnn5", num_classes=2, class_names=["a", "b", "c"])
    with pytest.warns(UserWarning, match="class_names not given"):
        module = ClassificationModule("cnn5", num_classes=2)
    assert module.class_names == ["0", "1"]


def test_pretrained_weights_from_a_checkpoint_keep_the_body_and_reset_a_new_head(tmp_path):
    source = ClassificationModule("resnet18", in_channels=1, num_classes=4, class_names=NAMES)
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    target = ClassificationModule(
        "resnet18",
        in_channels=1,
        num_classes=2,
        class_names=["no", "yes"],
        pretrained_weights=str(path),
    )
    assert torch.equal(target.net.conv1.weight, source.net.conv1.weight)
    assert target.net.fc.weight.shape == (2, 512)  # the 4-class head was skipped


def test_pretrained_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "cnn5.pt"
    torch.save(timm.create_model("cnn5", num_classes=2, in_chans=1).state_dict(), path)
    with pytest.raises(ValueError, match=r"cnn5\.pt: does not fit this network"):
        ClassificationModule(
            "resnet18",
            in_channels=1,
            num_classes=2,
            class_names=["a", "b"],
            pretrained_weights=str(path),
        )


def test_balanced_class_weights_by_hand():
    # 40 images, 2 classes: 40 / (2 * 10) = 2 and 40 / (2 * 30) = 2/3
    assert balanced_class_weights([10, 30]).tolist() == pytest.approx([2.0, 2 / 3])
    with pytest.raises(ValueError, match="every class"):
        balanced_class_weights([10, 0])


def test_weighted_loss_by_hand():
    module = ClassificationModule(
        "cnn5", num_classes=2, class_names=["a", "b"], class_weights=[1.0, 3.0]
    )
    module.net = torch.nn.Identity()  # logits = the standardized input, to work by hand
    module.input_mean, module.input_std = torch.tensor(0.0), torch.tensor(1.0)
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    batch = {"image": logits, "label": torch.tensor([0, 1])}
    # each sample loses log(2); weighted mean = (1 * log2 + 3 * log2) / (1 + 3) = log 2
    assert module.step(batch, "train").item() == pytest.approx(0.693147, abs=1e-5)
    batch["image"] = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    # CE(sample 0) = log(1 + e^-2) = 0.126928, CE(sample 1) = log(1 + e^2) = 2.126928
    expected = (1 * 0.126928 + 3 * 2.126928) / 4
    assert module.step(batch, "train").item() == pytest.approx(expected, abs=1e-5)


def test_class_weight_list_must_match_the_classes():
    with pytest.raises(ValueError, match="2 values for 3 classes"):
        ClassificationModule("cnn5", num_classes=3, class_names=list("abc"), class_weights=[1, 2])


def test_highlighted_classes_must_exist():
    with pytest.raises(ValueError, match=r"highlight_classes \['melanoma'\] are not among"):
        ClassificationModule(
            "cnn5", num_classes=2, class_names=["mel", "nv"], highlight_classes=["melanoma"]
        )


def logits_loader(logits, labels, known=None, batch_size=5):
    """Batches whose images are the logits themselves (``N x K x 1 x 1``), named img<i>.png."""
    samples = [
        {"image": row.view(-1, 1, 1), "label": label, "path": f"img{i}.png"}
        | ({} if known is None else {"label_mask": known[i]})
        for i, (row, label) in enumerate(zip(logits, labels, strict=True))
    ]
    return torch.utils.data.DataLoader(samples, batch_size=batch_size)


def logits_classifier(num_classes, **kwargs):
    """A classifier whose logits are its input (standardization and network are identities)."""
    names = [f"c{k}" for k in range(num_classes)]
    module = ClassificationModule("cnn5", num_classes=num_classes, class_names=names, **kwargs)
    module.net = torch.nn.Flatten()
    module.input_mean, module.input_std = torch.tensor(0.0), torch.tensor(1.0)
    return module


def run_test(tmp_path, module, loader, callbacks):
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    return trainer.test(module, loader, verbose=False)[0]


def numpy_ece(confidence, correct, bins=15):
    """Top-label (or one label's) ECE by hand: bin b holds confidences in [b/15, (b+1)/15)."""
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    gaps = [
        (index == b).sum() * abs(correct[index == b].mean() - confidence[index == b].mean())
        for b in range(bins)
        if (index == b).any()
    ]
    return sum(gaps) / len(confidence)


def test_test_report_of_a_classifier_against_scikit_learn(tmp_path):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(23) % 3
    logits = torch.randn(23, 3, generator=generator)
    logits[torch.arange(23), labels] += 1.0
    probs = logits.softmax(1).numpy()
    module = logits_classifier(3)

    # the module alone logs its torchmetrics, and no calibration error: that is the report's
    alone = run_test(tmp_path / "alone", module, logits_loader(logits, labels), [])
    assert "test/f1" in alone and "test/ece" not in alone
    assert not (tmp_path / "alone" / "test_per_image.csv").exists()

    logged = run_test(tmp_path, module, logits_loader(logits, labels), [ClassificationTestReport()])
    rows = read_csv(tmp_path / "test_per_image.csv")
    assert list(rows[0]) == ["image", "label", "pred", "prob_c0", "prob_c1", "prob_c2"]
    assert [r["image"] for r in rows] == [f"img{i}.png" for i in range(23)]
    assert [r["label"] for r in rows] == [f"c{k}" for k in labels.tolist()]
    written = np.array([[float(r[f"prob_c{k}"]) for k in range(3)] for r in rows])
    np.testing.assert_allclose(written, probs, atol=5e-7)

    predicted, truth = probs.argmax(1), labels.numpy()
    ece = numpy_ece(probs.max(1), (predicted == truth).astype(float))
    expected = {
        "f1": f1_score(truth, predicted, average="macro"),
        "balanced_accuracy": balanced_accuracy_score(truth, predicted),
        "auroc": roc_auc_score(truth, probs, multi_class="ovr", average="macro"),
        "ece": ece,
    }
    summary = read_csv(tmp_path / "test_summary.csv")
    assert [r["metric"] for r in summary] == list(expected)
    for row in summary:
        value, low, high = (float(row[k]) for k in ("value", "ci_low", "ci_high"))
        assert value == pytest.approx(expected[row["metric"]], abs=1e-6), row["metric"]
        assert low <= value <= high and row["n"] == "23"
    assert logged["test/ece"] == pytest.approx(ece, abs=1e-6)
    assert logged["test/f1"] == pytest.approx(expected["f1"], abs=1e-6)  # the module's own
    assert (tmp_path / "test_reliability.png").is_file()
    assert (tmp_path / "test_per_class.csv").is_file()


def test_test_report_of_a_multilabel_classifier_leaves_unknown_labels_out(tmp_path):
    generator = torch.Generator().manual_seed(1)
    labels = (torch.rand(20, 3, generator=generator) > 0.5).float()
    known = (torch.rand(20, 3, generator=generator) > 0.2).float()
    known[:, 2], known[3, 2], labels[3, 2] = 0.0, 1.0, 1.0  # c2 known once: no AUROC
    logits = torch.randn(20, 3, generator=generator) + 2 * labels - 1
    module = logits_classifier(3, multilabel=True)
    loader = logits_loader(logits, labels, known)
    logged = run_test(tmp_path, module, loader, [ClassificationTestReport()])
    rows = read_csv(tmp_path / "test_per_image.csv")
    names = [f"c{k}" for k in range(3)]
    assert list(rows[0]) == ["image", *[f"label/{n}" for n in names], *[f"prob/{n}" for n in names]]
    for row, label, mask in zip(rows, labels.tolist(), known.tolist(), strict=True):
        cells = [str(int(t)) if m else "" for t, m in zip(label, mask, strict=True)]
        assert [row[f"label/{n}"] for n in names] == cells
    probs, known = logits.sigmoid().numpy(), known.numpy() > 0
    per_label = [numpy_ece(probs[known[:, k], k], labels[known[:, k], k].numpy()) for k in range(3)]
    for name, ece in zip(names, per_label, strict=True):
        assert logged[f"test/ece_per_label/{name}"] == pytest.approx(ece, abs=1e-6)
    assert logged["test/ece"] == pytest.approx(np.mean(per_label), abs=1e-6)
    summary = {r["metric"]: r for r in read_csv(tmp_path / "test_summary.csv")}
    assert list(summary) == ["f1", "auroc", "ece"]
    assert float(summary["ece"]["value"]) == pytest.approx(np.mean(per_label), abs=1e-6)
    # AUROC: the mean over the labels with known positives and negatives (c0, c1)
    aurocs = [roc_auc_score(labels[known[:, k], k], probs[known[:, k], k]) for k in range(2)]
    assert float(summary["auroc"]["value"]) == pytest.approx(np.mean(aurocs), abs=1e-6)
    low, high = float(summary["auroc"]["ci_low"]), float(summary["auroc"]["ci_high"])
    assert low <= np.mean(aurocs) <= high
