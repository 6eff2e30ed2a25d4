"""ClassificationModule and the seed networks: shapes, gradients, weights, class weighting."""

import pytest
import timm
import torch

from medvision.models import ClassificationModule
from medvision.models.losses import balanced_class_weights
from medvision.models.nets import CNN5, VGGLeaky

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
