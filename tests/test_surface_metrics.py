"""HD95 and surface Dice: hand-worked values on a shifted square, spacing, empty masks, MONAI."""

import math
import sys

import numpy as np
import pytest
import torch

from medvision.evaluation.surface_metrics import (
    hd95,
    hd95_batch,
    image_diagonal,
    surface_dice,
    surface_dice_batch,
)

monai_metrics = pytest.importorskip("monai.metrics")
# MONAI's own deprecation notice when its functions are called directly below
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")


def square(shift_cols=0, shift_rows=0, size=20):
    """A 10 x 10 square at rows 5-14, cols 5-14 of a 20 x 20 image, shifted."""
    mask = np.zeros((size, size), dtype=bool)
    mask[5 + shift_rows : 15 + shift_rows, 5 + shift_cols : 15 + shift_cols] = True
    return mask


TRUTH = square()
SHIFTED = square(shift_cols=2)  # cols 7-16


# Boundary = the 36 edge pixels of each 10 x 10 square. Distances from the shifted square's
# boundary to the truth's (by symmetry the other direction is the same):
#   top and bottom rows, cols 7-14: on the truth's top/bottom edge          -> 0   (16 pixels)
#   top and bottom rows, col 15: 1 from (5, 14);  col 16: 2 from (5, 14)     -> 1, 2 (2 + 2)
#   left column (col 7), rows 6 and 13: 1 from the truth's top/bottom edge   -> 1   (2)
#   left column, rows 7-12: 2 from the truth's left edge (col 5)             -> 2   (6)
#   right column (col 16), rows 6-13: 2 from the truth's right edge (col 14) -> 2   (8)
# Sorted: 16 zeros, 4 ones, 16 twos. The 95th percentile (linear, index 0.95 * 35 = 33.25)
# lies among the twos: HD95 = 2. Within 1 px: 16 + 4 = 20 of 36 in each direction, so
# NSD(1 px) = (20 + 20) / (36 + 36) = 5/9; within 2 px: all, NSD(2 px) = 1.
def test_shifted_square_hand_worked():
    assert hd95(SHIFTED, TRUTH) == pytest.approx(2.0)
    assert surface_dice(SHIFTED, TRUTH, tolerance=1.0) == pytest.approx(5 / 9, abs=1e-6)
    assert surface_dice(SHIFTED, TRUTH, tolerance=2.0) == pytest.approx(1.0)
    assert surface_dice(SHIFTED, TRUTH, tolerance=0.0) == pytest.approx(16 / 36, abs=1e-6)
    assert hd95(TRUTH, TRUTH) == 0.0 and surface_dice(TRUTH, TRUTH) == 1.0
    # torch tensors and 0/1 ints work the same
    assert hd95(torch.from_numpy(SHIFTED), torch.from_numpy(TRUTH).int()) == pytest.approx(2.0)


def test_anisotropic_spacing():
    # Rows 2 mm apart, columns 1 mm: the 2-column shift is 2 mm, and the 1-row steps of the
    # left column's corners become 2 mm: every non-zero distance is 2 mm. HD95 = 2 mm.
    assert hd95(SHIFTED, TRUTH, spacing=(2.0, 1.0)) == pytest.approx(2.0)
    # Columns 2 mm apart: the shift is 4 mm. Distances (mm) of the shifted boundary: top and
    # bottom rows 0 (16), 2 (col 15: 2), 4 (col 16: 2); left column 1 (rows 6, 13), 2 (rows 7,
    # 12: two rows up/down to the top/bottom edge), 3 (rows 8, 11), 4 (rows 9, 10); right
    # column 4 (8). The 12 largest are 4 mm, so the 95th percentile is 4 mm.
    assert hd95(SHIFTED, TRUTH, spacing=(1.0, 2.0)) == pytest.approx(4.0)
    # within 2 mm: 16 + 2 (top/bottom) + 4 (left rows 6, 7, 12, 13) = 22 of 36 each way
    assert surface_dice(SHIFTED, TRUTH, 2.0, spacing=(1.0, 2.0)) == pytest.approx(22 / 36)
    assert surface_dice(SHIFTED, TRUTH, 4.0, spacing=(1.0, 2.0)) == pytest.approx(1.0)
    # a vertical shift of 2 rows with rows 3 mm apart: HD95 = 6 mm
    assert hd95(square(shift_rows=2), TRUTH, spacing=(3.0, 1.0)) == pytest.approx(6.0)


def test_empty_mask_cases():
    empty = np.zeros((20, 20), dtype=bool)
    assert hd95(empty, empty) == 0.0
    assert surface_dice(empty, empty) == 1.0
    diagonal = math.hypot(20, 20)
    assert hd95(empty, TRUTH) == pytest.approx(diagonal)
    assert hd95(TRUTH, empty) == pytest.approx(diagonal)
    assert surface_dice(empty, TRUTH) == 0.0 and surface_dice(TRUTH, empty) == 0.0
    # in mm with spacing: sqrt((20 * 2) ** 2 + (20 * 0.5) ** 2)
    assert hd95(empty, TRUTH, spacing=(2.0, 0.5)) == pytest.approx(math.hypot(40, 10))
    assert image_diagonal((20, 30), (2.0, 1.0)) == pytest.approx(50.0)


def test_monai_itself_returns_nan_for_empty_masks():
    # what this module overrides (documented in its docstring)
    empty, truth = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    truth[..., 2:5, 2:5] = 1
    with pytest.warns(UserWarning):
        assert torch.isnan(
            monai_metrics.compute_hausdorff_distance(empty, truth, True, percentile=95)
        ).all()
        assert torch.isnan(monai_metrics.compute_surface_dice(empty, empty, [1.0], True)).all()
        assert monai_metrics.compute_surface_dice(empty, truth, [1.0], True).item() == 0.0


def test_batch_agrees_with_monai_and_fills_empty_cases():
    generator = np.random.default_rng(0)
    preds, truths = [], []
    for _ in range(4):  # random blobs: thresholded smoothed noise
        for masks in (preds, truths):
            noise = generator.normal(size=(32, 32))
            smooth = sum(
                np.roll(np.roll(noise, i, 0), j, 1) for i in range(-3, 4) for j in range(-3, 4)
            )
            masks.append(smooth > 2)
    preds, truths = np.stack(preds), np.stack(truths)
    assert preds.reshape(4, -1).any(1).all() and truths.reshape(4, -1).any(1).all()
    spacing = (0.7, 1.3)
    p, t = torch.from_numpy(preds)[:, None].float(), torch.from_numpy(truths)[:, None].float()
    expected_hd = monai_metrics.compute_hausdorff_distance(
        p, t, True, percentile=95, spacing=spacing
    )
    expected_nsd = monai_metrics.compute_surface_dice(p, t, [1.5], True, spacing=spacing)
    # append a both-empty and a one-empty image; N x 1 x H x W input works too
    empty = np.zeros((1, 32, 32), dtype=bool)
    preds_all = np.concatenate([preds, empty, empty])[:, None]
    truths_all = np.concatenate([truths, empty, truths[:1]])[:, None]
    hd = hd95_batch(preds_all, truths_all, spacing=spacing)
    nsd = surface_dice_batch(preds_all, truths_all, tolerance=1.5, spacing=spacing)
    assert hd[:4] == pytest.approx(expected_hd[:, 0].numpy(), rel=1e-6)
    assert nsd[:4] == pytest.approx(expected_nsd[:, 0].numpy(), rel=1e-6)
    assert hd[4:] == pytest.approx([0.0, math.hypot(32 * 0.7, 32 * 1.3)])
    assert nsd[4:].tolist() == [1.0, 0.0]
    assert hd.dtype == np.float64 and np.isfinite(hd).all() and np.isfinite(nsd).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        hd95(TRUTH, TRUTH[:10])
    with pytest.raises(ValueError, match="binary.*binarize"):
        surface_dice(TRUTH * 0.7, TRUTH)
    with pytest.raises(ValueError, match=r"spacing must be the pixel size \(row, col\)"):
        hd95(TRUTH, TRUTH, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(TRUTH, TRUTH, spacing=(1.0,))
    with pytest.raises(ValueError, match="tolerance"):
        surface_dice(TRUTH, TRUTH, tolerance=-1)
    with pytest.raises(ValueError, match="one H x W mask.*hd95_batch"):
        hd95(TRUTH[None], TRUTH[None])
    with pytest.raises(ValueError, match="batch N x H x W"):
        hd95_batch(TRUTH[None, None, None], TRUTH[None, None, None])


def test_missing_monai_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "monai", None)
    with pytest.raises(ImportError, match=r'pip install "medvision-lightning\[trust\]"'):
        hd95(SHIFTED, TRUTH)
    # empty-mask cases need no MONAI
    assert surface_dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
