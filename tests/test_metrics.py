import pytest
import torch

from medvision.evaluation.metrics import (
    PerImageOverlap,
    classification_metrics,
    loggable_scalars,
    overlap_scores,
    segmentation_metrics,
)


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


def test_classification_metrics_on_a_hand_made_confusion_matrix():
    # true class -> predicted: class 0: 0,0,0,1  class 1: 1,2,2  class 2: 2,2,2
    # confusion rows (true) x columns (predicted): [3 1 0] [0 1 2] [0 0 3]
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    probs = torch.full((10, 3), 0.1)
    probs[torch.arange(10), preds] = 0.8
    metrics = classification_metrics(num_classes=3)
    metrics.update(probs, labels)
    values = metrics.compute()
    assert values["confusion_matrix"].tolist() == [[3, 1, 0], [0, 1, 2], [0, 0, 3]]
    assert values["accuracy"].item() == pytest.approx(0.7)
    # recall: 3/4, 1/3, 3/3; precision: 3/3, 1/2, 3/5
    assert values["recall"].tolist() == pytest.approx([0.75, 1 / 3, 1.0])
    assert values["precision"].tolist() == pytest.approx([1.0, 0.5, 0.6])
    assert values["balanced_accuracy"].item() == pytest.approx((0.75 + 1 / 3 + 1) / 3)
    f1 = [2 * 0.75 / 1.75, 2 * 0.5 * (1 / 3) / (0.5 + 1 / 3), 2 * 0.6 / 1.6]
    assert values["f1_per_class"].tolist() == pytest.approx(f1)
    assert values["f1"].item() == pytest.approx(sum(f1) / 3)
    # one-vs-rest AUROC, counting ties as 1/2: class 0 (3*6 + 6/2) / 24, class 1 (6.5 + 6) / 21,
    # class 2 (3 * (5 + 2/2)) / 21
    auroc = [21 / 24, 12.5 / 21, 18 / 21]
    assert values["auroc"].item() == pytest.approx(sum(auroc) / 3, abs=1e-5)


def test_per_class_vectors_are_logged_under_class_names():
    values = {"val/f1": torch.tensor(0.5), "val/recall": torch.tensor([0.1, 0.9])}
    values["val/confusion_matrix"] = torch.eye(2)
    assert loggable_scalars(values, ["NORMAL", "COVID19"]) == {
        "val/f1": values["val/f1"],
        "val/recall/NORMAL": values["val/recall"][0],
        "val/recall/COVID19": values["val/recall"][1],
    }


def test_isic_thresholded_jaccard_counts_poor_images_as_zero():
    # image 1: IoU 1/2 (below 0.65, counts 0); image 2: IoU 3/4 (kept)
    pred = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).float().view(2, 1, 1, 4)
    truth = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]]).float().view(2, 1, 1, 4)
    metrics = segmentation_metrics(threshold=0.5, jaccard_floor=0.65)
    metrics.update(pred, truth)
    values = metrics.compute()
    assert values["iou"].item() == pytest.approx((0.5 + 0.75) / 2)
    assert values["thresholded_iou"].item() == pytest.approx(0.75 / 2)
