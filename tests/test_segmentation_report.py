"""The segmentation test report: per-image scores worked out by hand, the CSVs, the intervals."""

import math
import sys

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from medvision.evaluation import SegmentationTestReport
from medvision.utils.files import read_csv

pytest.importorskip("monai")

NAMES = ["background", "disc", "ring"]


def square(rows: slice, cols: slice, value=1, dtype=torch.bool) -> torch.Tensor:
    mask = torch.zeros(8, 8, dtype=dtype)
    mask[rows, cols] = value
    return mask


#: the 4x4 square at rows 2-5, columns 2-5, and the same square one column to the right.
#: Overlap 12 of 16 + 16 pixels: Dice 24/32 = 0.75, IoU 12/20 = 0.6. Boundary pixels (12
#: each): 6 lie on the other boundary, 6 one pixel from it, both ways: HD95 = 1 pixel, and
#: surface Dice 1 at a tolerance of 1 pixel, 12/24 = 0.5 at a tolerance of 0.5.
TRUTH = (slice(2, 6), slice(2, 6))
SHIFTED = (slice(2, 6), slice(3, 7))


class Fixed(L.LightningModule):
    """Test predictions fixed in advance; the attributes the report reads."""

    include_background = False

    def __init__(self, preds: torch.Tensor, class_names, tolerance: float = 1.0) -> None:
        super().__init__()
        self.preds, self.class_names, self.surface_tolerance = preds, class_names, tolerance

    def test_step(self, batch, batch_idx):
        return {"preds": self.preds[batch["index"]]}

    def configure_callbacks(self):
        return [SegmentationTestReport()]


def run_test(tmp_path, preds, masks, class_names, tolerance=1.0, **extra):
    samples = [
        {"image": torch.zeros(1, 8, 8), "mask": mask, "index": i, "path": f"img{i}.png"}
        | {"mask_path": f"mask{i}.png"}
        | {key: value[i] for key, value in extra.items()}
        for i, mask in enumerate(masks)
    ]
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    results = trainer.test(
        Fixed(preds, class_names, tolerance), DataLoader(samples, batch_size=2), verbose=False
    )
    return (
        results[0],
        read_csv(tmp_path / "test_per_image.csv"),
        read_csv(tmp_path / "test_summary.csv"),
    )


def test_binary_scores_by_hand_and_summary_with_intervals(tmp_path):
    # image 0: the shifted square; image 1: the square missed (empty prediction)
    preds = torch.stack([square(*SHIFTED), torch.zeros(8, 8, dtype=torch.bool)])
    masks = [square(*TRUTH, dtype=torch.float32)[None]] * 2
    logged, rows, summary = run_test(tmp_path, preds, masks, ["lesion"])
    assert list(rows[0]) == ["image", "mask", "dice", "iou", "hd95", "surface_dice"]
    assert [r["image"] for r in rows] == ["img0.png", "img1.png"] and rows[1]["mask"] == "mask1.png"
    diagonal = math.hypot(8, 8)  # one mask empty: the image diagonal (surface_metrics)
    expected = [(0.75, 0.6, 1.0, 1.0), (0.0, 0.0, diagonal, 0.0)]
    for row, values in zip(rows, expected, strict=True):
        got = [float(row[k]) for k in ("dice", "iou", "hd95", "surface_dice")]
        assert got == pytest.approx(values)
    assert [r["metric"] for r in summary] == ["dice", "iou", "hd95", "surface_dice"]
    assert list(summary[0]) == ["metric", "value", "ci_low", "ci_high", "n"]
    means = {"dice": 0.375, "iou": 0.3, "hd95": (1 + diagonal) / 2, "surface_dice": 0.5}
    for row in summary:
        value, low, high = (float(row[k]) for k in ("value", "ci_low", "ci_high"))
        assert value == pytest.approx(means[row["metric"]]) and row["n"] == "2"
        assert low <= value <= high and low < high
    # two images: resampled means are (a+a)/2, (a+b)/2 or (b+b)/2; the 95% interval spans them
    dice = summary[0]
    assert float(dice["ci_low"]) == 0.0 and float(dice["ci_high"]) == pytest.approx(0.75)
    assert logged["test/hd95"] == pytest.approx((1 + diagonal) / 2)
    assert logged["test/surface_dice"] == pytest.approx(0.5)


def test_label_maps_get_per_class_columns_and_the_mean_over_foreground(tmp_path):
    # image 0: disc shifted, no ring in either -> disc 0.75 / 0.6 / 1 / NSD 0.5 at 0.5 px,
    #          ring 1 / 1 / 0 / 1 (absent from both); image 1: a ring predicted exactly
    preds = torch.stack([square(*SHIFTED, 1, torch.long), square(*TRUTH, 2, torch.long)])
    masks = [square(*TRUTH, 1, torch.long), square(*TRUTH, 2, torch.long)]
    logged, rows, summary = run_test(tmp_path, preds, masks, NAMES, tolerance=0.5)
    metrics = ["dice", "iou", "hd95", "surface_dice"]
    per_class = [f"{m}/{c}" for m in metrics for c in ("disc", "ring")]
    assert list(rows[0]) == ["image", "mask", *metrics, *per_class]
    first = {k: float(v) for k, v in rows[0].items() if k not in ("image", "mask")}
    assert first["dice/disc"] == pytest.approx(0.75) and first["dice/ring"] == 1.0
    assert first["surface_dice/disc"] == pytest.approx(0.5) and first["hd95/ring"] == 0.0
    assert first["dice"] == pytest.approx(0.875) and first["surface_dice"] == pytest.approx(0.75)
    assert float(rows[1]["dice"]) == 1.0 and float(rows[1]["hd95"]) == 0.0
    by_metric = {row["metric"]: float(row["value"]) for row in summary}
    assert by_metric["dice"] == pytest.approx((0.875 + 1) / 2)
    assert by_metric["hd95/disc"] == pytest.approx(0.5)
    assert logged["test/hd95/disc"] == pytest.approx(0.5)


def test_spacing_gives_millimetres_and_slices_are_named(tmp_path):
    preds = torch.stack([square(*SHIFTED), torch.zeros(8, 8, dtype=torch.bool)])
    masks = [square(*TRUTH, dtype=torch.float32)[None]] * 2
    spacing = torch.tensor([[2.0, 2.0], [2.0, 2.0]], dtype=torch.float64)
    _, rows, _ = run_test(
        tmp_path, preds, masks, ["lesion"], spacing=spacing, slice_index=torch.tensor([3, 4])
    )
    assert [r["image"] for r in rows] == ["img0.png#3", "img1.png#4"]
    assert float(rows[0]["hd95"]) == pytest.approx(2.0)  # one pixel of 2 mm
    assert float(rows[0]["surface_dice"]) == pytest.approx(0.5)  # 1 mm tolerance: only the 0s
    assert float(rows[1]["hd95"]) == pytest.approx(math.hypot(16, 16))


def test_without_monai_the_boundary_scores_are_left_out_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "monai", None)
    monkeypatch.setitem(sys.modules, "monai.metrics", None)
    preds = torch.stack([square(*SHIFTED)])
    with pytest.warns(UserWarning, match=r"pip install \"medvision-lightning\[trust\]\""):
        logged, rows, summary = run_test(
            tmp_path, preds, [square(*TRUTH, dtype=torch.float32)[None]], ["lesion"]
        )
    assert list(rows[0]) == ["image", "mask", "dice", "iou"]
    assert [r["metric"] for r in summary] == ["dice", "iou"] and "test/hd95" not in logged


@pytest.mark.slow  # a one-batch CPU fit, then test on two gloo processes: about 20 s
def test_ddp_test_gathers_every_image_once(lung_dir, tmp_path):
    import subprocess

    from .conftest import REPO, subprocess_env, unet_run_args

    args = unet_run_args(tmp_path, lung_dir, "--data.init_args.test_fraction=0.25")
    env = subprocess_env()

    def medvision(*extra: str) -> None:
        command = [sys.executable, "-m", "medvision.cli", *extra]
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-4000:]

    one_batch = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1"]
    medvision("fit", *args, *one_batch, "--trainer.num_sanity_val_steps=0")
    checkpoint = tmp_path / "version_0/checkpoints/best.ckpt"
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", f"--ckpt_path={checkpoint}"]
    medvision("test", *args, *ddp)
    rows = read_csv(tmp_path / "version_0/test/test_per_image.csv")
    assert len(rows) == len({r["image"] for r in rows}) == 5  # 25% of 20, each once
    summary = {r["metric"]: r for r in read_csv(tmp_path / "version_0/test/test_summary.csv")}
    assert summary["dice"]["n"] == "5"
    logged = read_csv(tmp_path / "version_0/test/metrics.csv")[-1]
    mean_dice = sum(float(r["dice"]) for r in rows) / 5
    assert float(logged["test/dice"]) == pytest.approx(mean_dice, abs=1e-6)  # torchmetrics
    assert float(logged["test/hd95"]) == pytest.approx(float(summary["hd95"]["value"]), rel=1e-6)
