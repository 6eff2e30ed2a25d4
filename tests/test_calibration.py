"""Calibration: ECE and per-label ECE against hand-worked values, temperature scaling, diagrams."""

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medvision.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    per_label_ece,
    reliability_bins,
    reliability_diagram,
)

# Eight 3-class predictions. 15 bins of width 1/15: bin b holds confidences in [b/15, (b+1)/15).
PROBS = torch.tensor(
    [
        [0.95, 0.03, 0.02],  # label 0, conf 0.95, correct    -> bin 14 [0.933, 1.0)
        [0.02, 0.95, 0.03],  # label 1, conf 0.95, correct    -> bin 14
        [0.90, 0.05, 0.05],  # label 2, conf 0.90, wrong      -> bin 13 [0.867, 0.933)
        [0.70, 0.20, 0.10],  # label 0, conf 0.70, correct    -> bin 10 [0.667, 0.733)
        [0.10, 0.70, 0.20],  # label 1, conf 0.70, correct    -> bin 10
        [0.20, 0.10, 0.70],  # label 0, conf 0.70, wrong      -> bin 10
        [0.45, 0.35, 0.20],  # label 0, conf 0.45, correct    -> bin 6 [0.400, 0.467)
        [0.30, 0.45, 0.25],  # label 0, conf 0.45, wrong      -> bin 6
    ]
)
LABELS = torch.tensor([0, 1, 2, 0, 1, 0, 0, 0])


def test_ece_hand_computed():
    # bin 14: 2 items, accuracy 1,   mean confidence 0.95 -> |gap| 0.05,  weight 2/8
    # bin 13: 1 item,  accuracy 0,   mean confidence 0.90 -> |gap| 0.90,  weight 1/8
    # bin 10: 3 items, accuracy 2/3, mean confidence 0.70 -> |gap| 1/30,  weight 3/8
    # bin  6: 2 items, accuracy 1/2, mean confidence 0.45 -> |gap| 0.05,  weight 2/8
    # ECE = (2 * 0.05 + 0.90 + 3 * 1/30 + 2 * 0.05) / 8 = 1.2 / 8 = 0.15
    assert expected_calibration_error(PROBS, LABELS) == pytest.approx(0.15, abs=1e-6)
    assert expected_calibration_error(PROBS.numpy(), LABELS.numpy()) == pytest.approx(
        0.15, abs=1e-6
    )


def test_ece_with_two_bins():
    # 2 bins: [0, 0.5) holds the two 0.45s (accuracy 1/2, gap 0.05); [0.5, 1) the other six
    # (accuracy 4/6, mean confidence (0.95 * 2 + 0.9 + 0.7 * 3) / 6 = 4.9 / 6, gap 0.9 / 6).
    # ECE = 2/8 * 0.05 + 6/8 * 0.15 = 0.0125 + 0.1125 = 0.125
    assert expected_calibration_error(PROBS, LABELS, num_bins=2) == pytest.approx(0.125, abs=1e-6)


def test_ece_rejects_logits_and_unnormalized_rows():
    with pytest.raises(ValueError, match="not logits"):
        expected_calibration_error(PROBS * 5 - 2, LABELS)
    with pytest.raises(ValueError, match="sum to 1.*per_label_ece"):
        expected_calibration_error(PROBS * 0.5, LABELS)
    with pytest.raises(ValueError, match="labels must lie"):
        expected_calibration_error(PROBS, LABELS + 1)
    with pytest.raises(ValueError, match="N x K and labels N"):
        expected_calibration_error(PROBS, LABELS[:3])


def test_per_label_ece_hand_computed_with_unknown_entry():
    probs = torch.tensor(
        [
            [0.90, 0.30, 0.5],
            [0.90, 0.85, 0.5],
            [0.10, 0.85, 0.5],
            [0.10, 0.05, 0.5],
            [0.55, 0.99, 0.5],
        ]
    )
    targets = torch.tensor([[1, 0, 1], [0, 1, 1], [0, 1, 1], [0, 1, 1], [1, 1, 1]])
    known = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0]])
    # Label 0 (all known): bin 13 [0.867, 0.933) holds 0.9, 0.9 with targets 1, 0: gap 0.4,
    # weight 2/5; bin 1 [0.067, 0.133) holds 0.1, 0.1 with targets 0, 0: gap 0.1, weight 2/5;
    # bin 8 [0.533, 0.6) holds 0.55 with target 1: gap 0.45, weight 1/5.
    # ECE = (2 * 0.4 + 2 * 0.1 + 0.45) / 5 = 1.45 / 5 = 0.29
    # Label 1, row 3 unknown: bin 4 holds 0.3 (target 0): gap 0.3; bin 12 [0.8, 0.867) holds
    # 0.85, 0.85 (targets 1, 1): gap 0.15 each; bin 14 holds 0.99 (target 1): gap 0.01.
    # ECE = (0.3 + 2 * 0.15 + 0.01) / 4 = 0.61 / 4 = 0.1525
    # (with the unknown 0.05 / target 1 counted it would be (0.61 + 0.95) / 5 = 0.312).
    # Label 2: no known entry -> NaN.
    errors = per_label_ece(probs, targets, known)
    assert errors.shape == (3,)
    assert errors[:2].tolist() == pytest.approx([0.29, 0.1525], abs=1e-6)
    assert math.isnan(errors[2])
    assert per_label_ece(probs[:, 1:2], targets[:, 1:2])[0] == pytest.approx(0.312, abs=1e-6)


def test_per_label_ece_errors():
    probs, targets = torch.full((4, 2), 0.5), torch.ones(4, 2)
    with pytest.raises(ValueError, match="all N x K"):
        per_label_ece(probs, targets[:, :1])
    with pytest.raises(ValueError, match="0 or 1 where known"):
        per_label_ece(probs, targets * 2)
    # a non-binary value at an unknown entry is fine: it is left out
    known = torch.tensor([[1, 1], [1, 1], [1, 1], [1, 0]])
    bad_unknown = targets.clone()
    bad_unknown[3, 1] = -1
    assert torch.isfinite(per_label_ece(probs, bad_unknown, known)).all()


def test_reliability_bins_match_the_hand_worked_bins():
    confidences, predicted = PROBS.max(dim=1)
    accuracy, confidence, count = reliability_bins(confidences, (predicted == LABELS).float())
    assert count.sum() == 8 and count[[6, 10, 13, 14]].tolist() == [2, 3, 1, 2]
    assert accuracy[[6, 10, 13, 14]] == pytest.approx([0.5, 2 / 3, 0.0, 1.0])
    assert confidence[[6, 10, 13, 14]] == pytest.approx([0.45, 0.7, 0.9, 0.95])
    assert np.isnan(accuracy[0]) and np.isnan(confidence[0])


def test_reliability_diagram_png_written_and_readable(tmp_path):
    path = reliability_diagram(PROBS, LABELS, tmp_path / "sub" / "reliability.png", title="val")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.size[0] > 200 and image.size[1] > 200
        pixels = np.asarray(image)
    assert pixels.std() > 10  # something was drawn
    assert [p.name for p in path.parent.iterdir()] == ["reliability.png"]  # no partial file

    binary = reliability_diagram(PROBS[:, 0], (LABELS == 0).long(), tmp_path / "label0.png")
    with Image.open(binary) as image:
        assert image.format == "PNG"


def _calibrated_logits(num_items=2000, num_classes=4, seed=0):
    """Logits whose softmax is the true class distribution: labels are sampled from it."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_items, num_classes, generator=generator, dtype=torch.float64) * 2
    labels = torch.multinomial(logits.softmax(1), 1, generator=generator)[:, 0]
    return logits, labels


def test_temperature_scaling_fixes_an_overconfident_model():
    logits, labels = _calibrated_logits()
    overconfident = logits * 10
    temperature = fit_temperature(overconfident, labels)
    assert temperature > 5  # about 10: the factor that made the model over-confident
    assert temperature == pytest.approx(10, rel=0.2)
    before = F.cross_entropy(overconfident, labels)
    after = F.cross_entropy(apply_temperature(overconfident, temperature), labels)
    assert after < before * 0.5
    probs_before = overconfident.softmax(1).float()
    probs_after = apply_temperature(overconfident, temperature).softmax(1).float()
    assert expected_calibration_error(probs_after, labels) < expected_calibration_error(
        probs_before, labels
    )
    # same predicted classes: temperature never changes the argmax
    assert torch.equal(probs_before.argmax(1), probs_after.argmax(1))


def test_temperature_near_one_on_calibrated_logits_and_deterministic():
    logits, labels = _calibrated_logits()
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(1.0, abs=0.1)
    assert fit_temperature(logits, labels) == temperature


def test_multilabel_temperature_ignores_unknown_labels():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(1000, 3, generator=generator, dtype=torch.float64) * 2
    targets = torch.bernoulli(logits.sigmoid(), generator=generator)
    known = torch.ones_like(targets)
    known[:300, 0] = 0
    # unknown entries hold garbage that would distort the fit if it were used
    garbled = torch.where(known > 0, targets, 1 - targets)
    assert fit_temperature(logits, garbled, multilabel=True, known=known) == pytest.approx(
        1.0, abs=0.15
    )
    assert fit_temperature(logits * 5, targets, multilabel=True) == pytest.approx(5, rel=0.25)


def test_empty_validation_split_error():
    with pytest.raises(ValueError, match=r"validation split is empty.*--data.val_fraction"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="no validation label is known"):
        fit_temperature(
            torch.zeros(4, 2), torch.zeros(4, 2), multilabel=True, known=torch.zeros(4, 2)
        )


def test_fit_temperature_bad_inputs(caplog):
    with pytest.raises(ValueError, match="N x K logits and N labels"):
        fit_temperature(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_temperature(torch.full((4, 3), float("nan")), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(torch.zeros(2), 0.0)
    # all confidently wrong: the NLL falls as T grows without bound; clamped with a warning
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    with caplog.at_level(logging.WARNING, logger="medvision.evaluation.calibration"):
        assert fit_temperature(logits, torch.tensor([1, 0])) == pytest.approx(100.0)
    assert "clamped" in caplog.text
    # all correct: sharpening only helps (T < 1); the NLL is flat there, no bound is hit
    assert fit_temperature(logits, torch.tensor([0, 1])) < 1


def test_the_reliability_bins_give_torchmetrics_ece():
    generator = torch.Generator().manual_seed(0)
    probs = torch.randn(500, 4, generator=generator).mul(2).softmax(1)
    labels = torch.randint(0, 4, (500,), generator=generator)
    confidences, predicted = probs.max(dim=1)
    accuracy, confidence, count = reliability_bins(confidences, (predicted == labels).float())
    filled = count > 0
    ece = np.sum(count[filled] * np.abs(accuracy[filled] - confidence[filled])) / 500
    assert ece == pytest.approx(expected_calibration_error(probs, labels), abs=1e-6)
