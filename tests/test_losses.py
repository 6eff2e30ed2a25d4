"""Loss values worked out by hand on tiny masks."""

import math

import numpy as np
import pytest
import torch

from medvision.models.losses import (
    SEGMENTATION_LOSSES,
    UNetWeightedBCELoss,
    build_loss,
    unet_weight_map,
)


def as_nchw(values):
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def test_weight_map_two_objects_by_hand():
    # two objects (columns 0-1 and 3-4) with a one-pixel gap at column 2.
    # class balance: foreground fraction 0.8 -> w_c = 0.5/0.8 = 0.625 on objects, 0.5/0.2 = 2.5
    # on background. Gap pixel: d1 = d2 = 1 -> border = 10 * exp(-(1+1)^2 / (2 * 1^2)) = 10 e^-2.
    weights = unet_weight_map(np.array([[1, 1, 0, 1, 1]]), w0=10, sigma=1)
    expected = [0.625, 0.625, 2.5 + 10 * math.exp(-2), 0.625, 0.625]
    np.testing.assert_allclose(weights[0], expected, rtol=1e-6)


def test_weight_map_single_object_has_no_border_term():
    weights = unet_weight_map(np.array([[1, 1, 0, 0]]), class_balance=False)
    np.testing.assert_array_equal(weights, np.ones((1, 4)))


def test_weight_map_border_decays_with_the_gap():
    narrow = unet_weight_map(np.array([[1, 0, 1]]), w0=10, sigma=5, class_balance=False)[0, 1]
    wide = unet_weight_map(np.array([[1, 0, 0, 0, 0, 0, 1]]), w0=10, sigma=5, class_balance=False)[
        0, 3
    ]
    assert narrow == pytest.approx(1 + 10 * math.exp(-4 / 50))
    assert wide == pytest.approx(1 + 10 * math.exp(-36 / 50))  # d1 = d2 = 3 at the centre


def test_weighted_bce_by_hand():
    # logits 0 -> BCE = ln 2 at every pixel; loss = ln 2 * mean(weights) from the map above
    loss = UNetWeightedBCELoss(w0=10, sigma=1)(as_nchw([0, 0, 0, 0, 0]), as_nchw([1, 1, 0, 1, 1]))
    mean_weight = (4 * 0.625 + 2.5 + 10 * math.exp(-2)) / 5
    assert loss.item() == pytest.approx(math.log(2) * mean_weight, rel=1e-6)


def test_dice_loss_by_hand():
    dice = build_loss("dice")
    # probabilities 0.5 everywhere, truth [1, 1, 0, 0]: 1 - 2 * 1 / (2 + 2) = 0.5
    assert dice(as_nchw([0, 0, 0, 0]), as_nchw([1, 1, 0, 0])).item() == pytest.approx(0.5, abs=1e-6)
    # truth [1, 0, 0, 0]: 1 - 2 * 0.5 / (2 + 1) = 2/3
    assert dice(as_nchw([0, 0, 0, 0]), as_nchw([1, 0, 0, 0])).item() == pytest.approx(
        2 / 3, abs=1e-6
    )
    # confident and right: loss 0
    assert dice(as_nchw([20, -20, -20]), as_nchw([1, 0, 0])).item() == pytest.approx(0, abs=1e-6)


def test_bce_dice_is_the_sum():
    loss = build_loss("bce_dice")(as_nchw([0, 0, 0, 0]), as_nchw([1, 1, 0, 0]))
    assert loss.item() == pytest.approx(math.log(2) + 0.5, abs=1e-6)


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_every_named_loss_backpropagates(name):
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    loss = build_loss(name)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0


def test_unknown_loss_lists_the_choices():
    with pytest.raises(ValueError, match="unknown loss 'dcie'.*bce_dice"):
        build_loss("dcie")
