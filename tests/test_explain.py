"""Grad-CAM: target layers of timm and seed nets, errors, and maps that find a known square."""

import sys

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import medvision.models.nets  # noqa: F401  (registers cnn5 and vgg_leaky with timm)
from medvision.apply.explain import cam_overlay, find_target_layer, get_layer, grad_cam
from medvision.models.classification import ClassificationModule

pytest.importorskip("pytorch_grad_cam")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", "layer4"),
        ("resnet10t", "layer4"),
        ("densenet121", "features"),  # ends in norm5 (BatchNorm + ReLU)
        ("efficientnet_b0", "bn2"),  # BatchNorm + SiLU after conv_head
        ("cnn5", "features"),  # the last conv block's max-pool output, before the head
        ("vgg_leaky", "head.8"),  # the head's last conv + BatchNorm + LeakyReLU
    ],
)
def test_target_layer_found(name, expected):
    net = timm.create_model(name, pretrained=False, num_classes=3)
    assert find_target_layer(net, input_size=64) == expected
    assert isinstance(get_layer(net, expected), nn.Module)


def test_target_layer_of_a_classification_module():
    module = ClassificationModule("resnet10t", in_channels=1, num_classes=2, class_names=["a", "b"])
    module.train()
    assert find_target_layer(module, input_size=64) == "net.layer4"
    assert module.training  # the probe ran in eval mode and restored the mode


def test_bad_layer_name_lists_candidates():
    net = timm.create_model("resnet18", pretrained=False, num_classes=2)
    with pytest.raises(ValueError, match=r"'layer5' does not exist.*'layer4'.*as target_layer"):
        get_layer(net, "layer5")
    with pytest.raises(ValueError, match="'layer5' does not exist"):
        grad_cam(net, torch.rand(1, 3, 32, 32), "layer5")


def test_net_without_convolutions_is_refused():
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        find_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)))
    # a probe the net cannot take: the error says how to go on
    with pytest.raises(ValueError, match="pass input_size, or a target layer name"):
        find_target_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30, 2)))


def test_segmentation_model_refused():
    segmenter = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))
    with pytest.raises(ValueError, match=r"classifiers only.*\(2, 1, 16, 16\)"):
        grad_cam(segmenter, torch.rand(2, 3, 16, 16), "0")


def test_bad_arguments():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    images = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"one per image \(2\), each in \[0, 2\]"):
        grad_cam(net, images, "1", class_indices=[0, 3])
    with pytest.raises(ValueError, match="one per image"):
        grad_cam(net, images, "1", class_indices=[0, 1, 2])
    with pytest.raises(ValueError, match="N x C x H x W"):
        grad_cam(net, images[0], "1")
    with pytest.raises(ValueError, match="method must be one of"):
        grad_cam(net, images, "1", method="scorecam")


def test_model_state_restored_and_works_under_inference_mode():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    net.train()
    net[0].weight.grad = torch.full_like(net[0].weight, 7.0)
    running_mean = net[1].running_mean.clone()
    with torch.inference_mode():  # as at the end of trainer.test
        images = torch.rand(3, 1, 12, 12)
        cams = grad_cam(net, images, net[2], class_indices=1)
    assert cams.shape == (3, 12, 12) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1
    assert net.training
    assert torch.equal(net[0].weight.grad, torch.full_like(net[0].weight, 7.0))
    assert torch.equal(net[1].running_mean, running_mean)
    # frozen parameters (e.g. a fixed feature extractor) still get a map
    net.requires_grad_(False)
    assert grad_cam(net, images, net[2], class_indices=1).shape == (3, 12, 12)


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    with pytest.raises(ImportError, match=r'pip install "medvision-lightning\[trust\]"'):
        grad_cam(nn.Conv2d(1, 1, 1), torch.rand(1, 1, 4, 4), "")


def test_cam_overlay():
    cam = np.zeros((8, 10), dtype=np.float32)
    cam[:4, :5] = 1.0
    gray = np.full((8, 10), 0.5, dtype=np.float32)
    overlay = cam_overlay(gray, cam)
    assert overlay.shape == (8, 10, 3) and overlay.dtype == np.uint8
    # jet: hot (red) where the map is 1, cold (blue) where it is 0
    assert overlay[0, 0, 0] > overlay[0, 0, 2] and overlay[7, 9, 2] > overlay[7, 9, 0]
    rgb_uint8 = (np.random.default_rng(0).random((8, 10, 3)) * 255).astype(np.uint8)
    assert cam_overlay(rgb_uint8, cam).shape == (8, 10, 3)
    assert cam_overlay(torch.rand(8, 10, 1), cam, image_weight=1.0).shape == (8, 10, 3)
    with pytest.raises(ValueError, match="sizes differ"):
        cam_overlay(gray, cam[:4])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cam_overlay(gray * 4, cam)
    with pytest.raises(ValueError, match="channel-last"):
        cam_overlay(np.zeros((3, 8, 10)), cam)


SIZE = 32


def corner_squares(num_images, generator):
    """Noise images with a bright 9 px square near the top-left (class 0) or bottom-right
    (class 1) corner; returns images ``N x 1 x 32 x 32`` and labels."""
    images = 0.3 + 0.1 * torch.randn(num_images, 1, SIZE, SIZE, generator=generator)
    labels = torch.arange(num_images) % 2
    side = 9
    for i, label in enumerate(labels.tolist()):
        row, col = torch.randint(0, 5, (2,), generator=generator).tolist()
        if label == 1:
            row, col = SIZE - side - row, SIZE - side - col
        images[i, :, row : row + side, col : col + side] = 1.0
    return images.clamp(0, 1), labels


def train(model, steps=30, seed=0):
    """Adam on fresh batches of corner squares; returns a held-out batch (model in eval)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        images, labels = corner_squares(32, generator)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return corner_squares(16, generator)


def quadrant_shares(cams, labels):
    """Share of each map's mass in its square's quadrant, and the largest other share."""
    half = SIZE // 2
    quadrants = [(slice(None, half), slice(None, half)), (slice(half, None), slice(half, None))]
    quadrants += [(slice(None, half), slice(half, None)), (slice(half, None), slice(None, half))]
    mass = np.stack([cams[:, rows, cols].sum((1, 2)) for rows, cols in quadrants], axis=1)
    mass /= cams.sum((1, 2))[:, None]
    own = mass[np.arange(len(labels)), labels.numpy()]
    others = np.where(labels.numpy()[:, None] == 0, mass[:, [1, 2, 3]], mass[:, [0, 2, 3]])
    return own, others.max(axis=1)


def test_heat_map_finds_the_square(one_thread):
    # cnn5 through the ClassificationModule (which standardizes inside forward)
    torch.manual_seed(0)
    module = ClassificationModule(
        "cnn5",
        in_channels=1,
        num_classes=2,
        class_names=["a", "b"],
        model_kwargs={"channels": (8, 16, 32), "hidden": 32},
    )
    images, labels = train(module)
    assert (module(images).argmax(1) == labels).all()
    layer = find_target_layer(module)
    assert layer == "net.features"
    cams = grad_cam(module, images, layer)  # predicted class = the true class here
    own, other = quadrant_shares(cams, labels)
    assert (own > 0.5).all(), own
    assert (own > other).all()
    assert np.array_equal(cams, grad_cam(module, images, layer, class_indices=labels))


def test_gradcam_equals_hirescam_with_global_pooling(one_thread):
    # timm-style head (global average pooling, then linear): both methods give the same maps,
    # and they point at the square's quadrant (less sharply: with global pooling the corner
    # can only be told from the zero padding at the image border)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )
    images, labels = train(net)
    layer = find_target_layer(net)
    assert layer == "7"
    hirescam = grad_cam(net, images, layer, class_indices=labels)
    gradcam = grad_cam(net, images, layer, class_indices=labels, method="gradcam")
    np.testing.assert_allclose(gradcam, hirescam, atol=1e-5)
    own, other = quadrant_shares(gradcam, labels)
    assert (own > other).mean() >= 0.75 and own.mean() > 0.35, own  # chance: 0.25
