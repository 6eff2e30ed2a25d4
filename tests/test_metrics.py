import pytest
import torch

from medvision.metrics import PerImageOverlap, overlap_scores, segmentation_metrics


def test_overlap_scores_by_hand():
    pred = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]).bool()
    truth = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]).bool()
    dice, iou = overlap_scores(pred, truth)
    torch.testing.assert_close(dice, torch.tensor([2 / 3, 1.0, 0.0]))  # empty vs empty scores 1
    torch.testing.assert_close(iou, torch.tensor([1 / 2, 1.0, 0.0]))


def test_dice_is_averaged_per_image_not_pooled():
    metric = PerImageOverlap("dice")
    probs = torch.tensor([[1.0] * 4 + [0.0] * 0, [1.0, 0.0, 0.0, 0.0]]).reshape(2, 1, 1, 4)
    truth = torch.tensor([[1.0] * 4, [0.0, 1.0, 1.0, 1.0]]).reshape(2, 1, 1, 4)
    metric.update(probs, truth)
    assert metric.compute().item() == pytest.approx(0.5)  # (1 + 0) / 2; pooled would be 0.75


def test_threshold_is_applied():
    probs = torch.tensor([0.3, 0.6]).reshape(1, 1, 1, 2)
    truth = torch.tensor([1.0, 1.0]).reshape(1, 1, 1, 2)
    low, high = PerImageOverlap("iou", threshold=0.2), PerImageOverlap("iou", threshold=0.5)
    low.update(probs, truth), high.update(probs, truth)
    assert low.compute().item() == pytest.approx(1.0)
    assert high.compute().item() == pytest.approx(0.5)


def test_dice_and_iou_stay_separate_in_the_collection():
    # first batch: both scores 0 -> equal states; torchmetrics compute groups would merge them
    metrics = segmentation_metrics()
    metrics.update(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    metrics.update(torch.tensor([1.0, 1, 1, 0]).reshape(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    result = metrics.compute()
    assert result["dice"].item() == pytest.approx((0 + 6 / 7) / 2)
    assert result["iou"].item() == pytest.approx((0 + 3 / 4) / 2)
    assert result["pixel_accuracy"].item() == pytest.approx(3 / 8)
