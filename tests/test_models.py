"""Every architecture does forward and backward on 64x64 inputs (timm/smp style)."""

from urllib.error import URLError

import pytest
import torch

from medvision.models import SegmentationModule
from medvision.models.nets import FCN

ARCHS = ["Unet", "FCN", "FPN", "UnetPlusPlus", "DeepLabV3Plus"]


@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_every_parameter_gets_a_gradient(arch, num_classes):
    names = ["fg"] if num_classes == 1 else ["background", "a", "b"]
    module = SegmentationModule(
        arch=arch,
        encoder_name="resnet18",
        in_channels=1,
        num_classes=num_classes,
        class_names=names,
    )
    image = torch.rand(2, 1, 64, 64)
    if num_classes == 1:
        mask = (torch.rand(2, 1, 64, 64) > 0.5).float()
    else:
        mask = torch.randint(0, num_classes, (2, 64, 64))
    logits = module(image)
    assert logits.shape == (2, num_classes, 64, 64)
    loss = module.loss(logits, mask)
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_fcn_sums_skips_and_keeps_any_input_size():
    net = FCN("resnet18", encoder_weights=None, in_channels=3, classes=2).eval()
    assert net(torch.rand(1, 3, 70, 54)).shape == (1, 2, 70, 54)
    assert net.decoder.score8.in_channels == 128 and net.decoder.score16.in_channels == 256


def test_fcn_and_unet_share_the_encoder():
    unet = SegmentationModule(arch="Unet", encoder_name="resnet18").net
    fcn = SegmentationModule(arch="FCN", encoder_name="resnet18").net
    shapes = lambda m: [p.shape for p in m.encoder.parameters()]  # noqa: E731
    assert shapes(unet) == shapes(fcn)


def test_predict_step_returns_probabilities_and_keeps_metadata():
    module = SegmentationModule(arch="Unet", encoder_name="resnet18").eval()
    out = module.predict_step({"image": torch.rand(2, 1, 64, 64), "path": ["a", "b"]}, 0)
    assert out["path"] == ["a", "b"] and out["probs"].shape == (2, 1, 64, 64)
    assert out["probs"].min() >= 0 and out["probs"].max() <= 1


def test_optimizer_and_scheduler_are_injected():
    module = SegmentationModule(
        encoder_name="resnet18",
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1),
    )
    config = module.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD)
    assert config["lr_scheduler"]["monitor"] == "val/loss"


def test_class_names_must_match_num_classes():
    with pytest.raises(ValueError, match=r"2 class_names \['a', 'b'\] for num_classes=3"):
        SegmentationModule(encoder_name="resnet18", num_classes=3, class_names=["a", "b"])


def test_offline_pretrained_weights_give_a_clear_error(monkeypatch):
    import segmentation_models_pytorch as smp

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(smp, "create_model", offline)
    with pytest.raises(
        RuntimeError, match="'imagenet' weights of encoder 'resnet34'.*encoder_weights: null"
    ):
        SegmentationModule(encoder_weights="imagenet")


def test_unknown_architecture_names_smp_choices():
    with pytest.raises(ValueError, match=r"unknown arch 'Unett' \(model.init_args.arch\).*Unet"):
        SegmentationModule(arch="Unett")
