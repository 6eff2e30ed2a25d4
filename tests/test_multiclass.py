"""Multi-class segmentation: losses, metrics, label-map files, the model, data and predictions."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from medvision.data.datasets import SegmentationDataset
from medvision.data.errors import ImageReadError
from medvision.data.io import read_label_image, read_label_mask
from medvision.data.screening import read_mask
from medvision.data.segmentation_folder import SegmentationFolderDataModule
from medvision.data.synthetic_label_maps import (
    PHANTOM_CLASSES,
    SyntheticMultiClassDataModule,
    disc_and_ring_phantom,
    write_label_maps,
)
from medvision.data.transforms import segmentation_transform
from medvision.evaluation.label_maps import image_scores, labels_at_size, score_columns
from medvision.evaluation.metrics import LabelOverlap, multiclass_segmentation_metrics
from medvision.models import SegmentationModule
from medvision.models.losses import MULTICLASS_SEGMENTATION_LOSSES, build_loss

NAMES = ["background", "disc", "ring"]


def logits_of(values, num_classes=3):
    """Uniform logits ``1 x K x 1 x W`` and the label map ``1 x 1 x W``."""
    target = torch.tensor(values).reshape(1, 1, -1)
    return torch.zeros(1, num_classes, 1, target.shape[-1]), target


# --- losses -----------------------------------------------------------------------------------


def test_multiclass_dice_loss_by_hand():
    # softmax 1/3 everywhere, truth [0, 1, 2, 2]: per class Dice 2I / (P + T)
    # class 0 and 1: I = 1/3, P = 4/3, T = 1 -> 2/7; class 2: I = 2/3, T = 2 -> 2/5
    logits, target = logits_of([0, 1, 2, 2])
    expected = ((1 - 2 / 7) * 2 + (1 - 2 / 5)) / 3
    assert build_loss("dice", num_classes=3)(logits, target).item() == pytest.approx(expected)
    # dice_ce adds the cross-entropy of uniform probabilities, ln 3 at every pixel
    dice_ce = build_loss("dice_ce", num_classes=3)(logits, target).item()
    assert dice_ce == pytest.approx(expected + math.log(3), rel=1e-6)
    ce = build_loss("cross_entropy", num_classes=3)(logits, target).item()
    assert ce == pytest.approx(math.log(3), rel=1e-6)


@pytest.mark.parametrize("name", MULTICLASS_SEGMENTATION_LOSSES)
def test_every_multiclass_loss_backpropagates(name):
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    loss = build_loss(name, num_classes=3)(logits, torch.randint(0, 3, (2, 16, 16)))
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name, instead", [("bce", "cross_entropy"), ("bce_dice", "dice_ce")])
def test_binary_losses_are_refused_for_label_maps_naming_the_replacement(name, instead):
    with pytest.raises(
        ValueError, match=f"'{name}' is for binary masks.*num_classes=3.*'{instead}'"
    ):
        build_loss(name, num_classes=3)


# --- metrics ----------------------------------------------------------------------------------


def test_label_overlap_per_class_and_mean_by_hand():
    # image 1: disc pred {(0,1)} truth {(0,1),(1,0)}: Dice 2/3, IoU 1/2;
    #          ring pred {(1,0),(1,1)} truth {(1,1)}: Dice 2/3, IoU 1/2
    # image 2: all background in both: disc and ring absent from both -> 1
    preds = torch.tensor([[[0, 1], [2, 2]], [[0, 0], [0, 0]]])
    truth = torch.tensor([[[0, 1], [1, 2]], [[0, 0], [0, 0]]])
    headline, per_class = multiclass_segmentation_metrics(NAMES)
    headline.update(preds, truth), per_class.update(preds, truth)
    values = {**headline.compute(), **per_class.compute()}
    assert values["dice/disc"].item() == pytest.approx((2 / 3 + 1) / 2)
    assert values["iou/ring"].item() == pytest.approx((1 / 2 + 1) / 2)
    assert values["dice"].item() == pytest.approx((2 / 3 + 1) / 2)  # mean of disc and ring
    assert values["pixel_accuracy"].item() == pytest.approx(7 / 8)
    assert "dice/background" not in values
    # with the background: image 1 background pred {(0,0)} truth {(0,0)} -> Dice 1
    with_bg, per_class = multiclass_segmentation_metrics(NAMES, include_background=True)
    with_bg.update(preds, truth), per_class.update(preds, truth)
    assert with_bg.compute()["dice"].item() == pytest.approx(((1 + 2 / 3 + 2 / 3) / 3 + 1) / 2)
    assert per_class.compute()["dice/background"].item() == pytest.approx(1.0)


def test_label_overlap_of_one_class_is_that_class_per_image():
    metric = LabelOverlap("iou", [2])
    metric.update(torch.tensor([[[2, 2, 0, 0]]]), torch.tensor([[[2, 0, 0, 0]]]))
    assert metric.compute().item() == pytest.approx(0.5)


# --- label-map files --------------------------------------------------------------------------


def test_label_maps_are_read_as_class_indices_from_gray_and_palette_pngs(tmp_path):
    labels = np.array([[0, 1], [2, 2]], np.uint8)
    Image.fromarray(labels).save(tmp_path / "gray.png")
    palette = Image.fromarray(labels).convert("P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    palette.save(tmp_path / "palette.png")
    for name in ("gray.png", "palette.png"):
        np.testing.assert_array_equal(read_mask(tmp_path / name, 3), labels)
    np.testing.assert_array_equal(read_label_image(tmp_path / "palette.png"), labels)
    rgb = np.repeat(labels[..., None], 3, axis=-1)  # a gray map saved as RGB
    np.testing.assert_array_equal(read_label_mask(rgb, "rgb.png", 3), labels)


@pytest.mark.parametrize(
    "mask, message",
    [
        (
            np.array([[0, 1], [3, 7]], np.uint8),
            r"m.png: label map holds values 0, 1, 3, 7, but num_classes=3 allows 0..2.*"
            r"class_names one name per label value",
        ),
        (np.array([[0, 255]], np.uint8), r"values 0, 255.*a 0/255 mask is binary"),
        (np.array([[0.0, 1.0]], np.float32), r"m.png: label map is stored as float32.*uint8 PNG"),
        (
            np.dstack([np.zeros((2, 2)), np.ones((2, 2)), np.zeros((2, 2))]).astype(np.uint8),
            r"m.png: label map has 3 channels.*not as colours",
        ),
        (np.zeros((2, 2, 4), np.uint8), r"m.png: label map has 4 channels"),
    ],
)
def test_bad_label_maps_name_the_file_the_values_and_the_fix(mask, message):
    with pytest.raises(ImageReadError, match=message) as error:
        read_label_mask(mask, "m.png", 3)
    assert str(error.value.path) == "m.png"


def test_dataset_gives_int64_label_maps_resized_by_nearest_neighbour(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    labels[:4, :4], labels[4:, 4:] = 1, 2
    Image.fromarray(labels).save(tmp_path / "mask.png")
    Image.fromarray(labels * 100).save(tmp_path / "image.png")
    dataset = SegmentationDataset(
        [tmp_path / "image.png"], [tmp_path / "mask.png"], segmentation_transform(4), num_classes=3
    )
    mask = dataset[0]["mask"]
    assert mask.dtype == torch.int64 and mask.shape == (4, 4)
    np.testing.assert_array_equal(mask.numpy(), labels[::2, ::2])


# --- the phantoms and the folder datamodule ---------------------------------------------------


def test_phantom_has_three_separate_classes_of_distinct_brightness():
    image, labels = disc_and_ring_phantom(48, np.random.default_rng(0))
    assert set(np.unique(labels)) == {0, 1, 2}
    means = [image[labels == k].mean() for k in range(3)]
    assert means[0] < means[2] < means[1]  # background < ring < disc


def test_folder_datamodule_reads_label_maps_and_reports_bad_ones(tmp_path):
    write_label_maps(tmp_path / "data", num_images=10, size=32, seed=0)
    dm = SegmentationFolderDataModule(
        tmp_path / "data", class_names=NAMES, image_size=32, num_workers=0, augmentation="none"
    )
    assert dm.num_classes == 3 and dm.describe_input()["class_names"] == NAMES
    dm.setup("fit")
    sample = dm.datasets["train"][0]
    assert sample["mask"].dtype == torch.int64 and set(sample["mask"].unique().tolist()) <= {
        0,
        1,
        2,
    }
    assert sum(len(d) for d in dm.datasets.values()) == 10
    Image.fromarray(np.full((32, 32), 5, np.uint8)).save(tmp_path / "data/masks/img_0002.png")
    (tmp_path / "data/masks/img_0004.png").unlink()
    with pytest.raises(ValueError, match="2 bad image/mask pairs") as error:
        SegmentationFolderDataModule(tmp_path / "data", class_names=NAMES, num_workers=0).setup(
            "fit"
        )
    assert "masks/img_0002.png: label map holds values 5, but num_classes=3" in str(error.value)
    assert "img_0004.png: no mask img_0004.* in" in str(error.value)
    # the same masks with one class name are binary masks: label 2 is refused, with the fix
    with pytest.raises(ValueError, match=r"mask values go up to 2 .*class_names with one name"):
        SegmentationFolderDataModule(tmp_path / "data", num_workers=0).setup("fit")


def test_synthetic_datamodule_writes_once(tmp_path):
    dm = SyntheticMultiClassDataModule(tmp_path / "syn", num_images=4, phantom_size=16)
    dm.prepare_data()
    first = (tmp_path / "syn/masks/img_0003.png").read_bytes()
    assert Image.open(tmp_path / "syn/masks/img_0003.png").mode == "P"  # every fourth: palette
    dm.prepare_data()
    assert (tmp_path / "syn/masks/img_0003.png").read_bytes() == first
    assert tuple(dm.class_names) == PHANTOM_CLASSES


def test_class_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"class_names \['a', 'a'\]: give distinct"):
        SegmentationFolderDataModule(tmp_path, class_names=["a", "a"])


# --- the model --------------------------------------------------------------------------------


def test_model_refuses_masks_of_the_other_mode():
    module = SegmentationModule(encoder_name="resnet18", num_classes=3, class_names=NAMES)
    batch = {"image": torch.rand(2, 1, 32, 32), "mask": torch.ones(2, 1, 32, 32)}
    with pytest.raises(ValueError, match=r"num_classes=3\) needs int64 label maps N x H x W"):
        module.step(batch, "val")
    binary = SegmentationModule(encoder_name="resnet18")
    batch["mask"] = torch.zeros(2, 32, 32, dtype=torch.long)
    with pytest.raises(ValueError, match=r"num_classes=1\) needs 0/1 masks N x 1 x H x W"):
        binary.step(batch, "val")


def test_model_logs_per_class_and_mean_dice_and_predicts_softmax():
    module = SegmentationModule(encoder_name="resnet18", num_classes=3, class_names=NAMES)
    assert isinstance(module.loss, torch.nn.Module) and module.hparams.loss is None  # dice_ce
    out = module.eval().predict_step({"image": torch.rand(2, 1, 32, 32), "path": ["a", "b"]}, 0)
    assert out["probs"].shape == (2, 3, 32, 32)
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(2, 32, 32))
    assert set(module.val_class_metrics.keys(keep_base=False)) == {
        "val/dice/disc",
        "val/dice/ring",
        "val/iou/disc",
        "val/iou/ring",
    }
    record = module.describe_output()
    assert record["network"]["init_args"]["include_background"] is False


def test_a_checkpoint_of_other_classes_is_refused():
    module = SegmentationModule(encoder_name="resnet18", num_classes=3, class_names=NAMES)
    swapped = {"hyper_parameters": {"class_names": ["background", "ring", "disc"]}}
    with pytest.raises(ValueError, match=r"trained on classes \['background', 'ring', 'disc'\]"):
        module.on_load_checkpoint(swapped)
    module.on_load_checkpoint({"hyper_parameters": {"class_names": NAMES}})  # the same: fine


def test_model_help_stays_short(capsys):
    from medvision.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "SegmentationModule"])
    text = capsys.readouterr().out
    assert len(text.splitlines()) < 200
    assert "surface_tolerance" in text and "Surface Dice tolerance" in text


# --- predictions ------------------------------------------------------------------------------


class FixedProbabilities(L.LightningModule):
    """'Predicts' softmax probabilities that put each pixel in the class its image shows."""

    threshold = 0.5
    class_names = NAMES
    include_background = False
    surface_tolerance = 1.0

    def predict_step(self, batch, batch_idx):
        out = {key: value for key, value in batch.items() if key != "image"}
        levels = (batch["image"][:, 0] * 2).round().long().clamp(0, 2)  # 0, 0.5, 1 -> 0, 1, 2
        out["probs"] = torch.nn.functional.one_hot(levels, 3).permute(0, 3, 1, 2).float()
        return out


def test_prediction_writer_writes_label_maps_overlays_and_per_class_metrics(tmp_path):
    pytest.importorskip("monai")
    from medvision.apply import SegmentationPredictionWriter

    labels = np.zeros((12, 16), np.uint8)
    labels[2:6, 2:6], labels[7:11, 8:14] = 1, 2
    (tmp_path / "in").mkdir()
    (tmp_path / "truth").mkdir()
    Image.fromarray((labels * 127.5).astype(np.uint8)).save(tmp_path / "in/a.png")
    Image.fromarray(labels).save(tmp_path / "truth/a.png")
    dm = SegmentationFolderDataModule(
        tmp_path / "unused",
        class_names=NAMES,
        image_size=(12, 16),
        predict_dir=tmp_path / "in",
        predict_mask_dir=tmp_path / "truth",
        num_workers=0,
    )
    writer = SegmentationPredictionWriter(output_dir=str(tmp_path / "out"))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False
    )
    trainer.predict(FixedProbabilities(), datamodule=dm, return_predictions=False)
    written = np.array(Image.open(tmp_path / "out/masks/a.png"))
    np.testing.assert_array_equal(written, labels)  # uint8 pixel value = class index
    overlay = np.array(Image.open(tmp_path / "out/overlays/a.png"))
    assert overlay.shape == (12, 16, 3) and tuple(overlay[3, 3]) != tuple(overlay[0, 0])
    rows = (tmp_path / "out/metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["image", "mask", *score_columns(NAMES)]
    values = dict(zip(rows[0].split(","), rows[1].split(","), strict=True))
    assert float(values["dice/disc"]) == 1.0 and float(values["hd95/ring"]) == 0.0


def test_labels_at_size_takes_the_argmax_after_resizing():
    probs = torch.zeros(3, 2, 2)
    probs[1, :, 0], probs[2, :, 1] = 1.0, 1.0  # left column disc, right column ring
    labels = labels_at_size(probs, (2, 4), threshold=0.5)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, [[1, 1, 2, 2], [1, 1, 2, 2]])


def test_image_scores_of_a_label_map_by_hand():
    pytest.importorskip("monai")
    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 1  # a 4x4 disc; no ring anywhere
    pred = np.zeros((8, 8), np.uint8)
    pred[2:6, 3:7] = 1  # shifted right by one: overlap 12 of 16 + 16
    scores = image_scores(pred, truth, NAMES, tolerance=1.0)
    # disc: Dice 24/32, IoU 12/20, HD95 1 (boundary pixels 0 or 1 apart), NSD 1 at 1 px
    # ring: absent from both -> Dice 1, IoU 1, HD95 0, NSD 1
    assert scores["dice/disc"] == pytest.approx(0.75) and scores["iou/disc"] == pytest.approx(0.6)
    assert scores["hd95/disc"] == pytest.approx(1.0) and scores["surface_dice/ring"] == 1.0
    assert scores["dice"] == pytest.approx((0.75 + 1) / 2)
    assert scores["hd95"] == pytest.approx(0.5)


# --- the quickstart, end to end ---------------------------------------------------------------


@pytest.mark.slow  # ten CPU epochs of a small U-Net on 24 phantoms, then test and predict
def test_quickstart_trains_to_dice_09_and_predicts_label_maps_from_the_checkpoint(
    tmp_path, monkeypatch
):
    import csv

    from medvision import load_model
    from medvision.cli import main

    from .conftest import CONFIGS

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    common = [
        "--config",
        str(CONFIGS / "quickstart_multiclass.yaml"),
        f"--data.init_args.data_dir={data}",
        "--data.init_args.num_images=40",
        "--data.init_args.phantom_size=48",
        "--data.init_args.image_size=48",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
        '--model.init_args.arch_kwargs={"encoder_depth": 3, "decoder_channels": [32, 16, 8]}',
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
    ]
    main(["fit", *common, "--trainer.max_epochs=10"])
    checkpoint = tmp_path / "runs/version_0/checkpoints/best.ckpt"
    main(["test", *common, f"--ckpt_path={checkpoint}"])
    with open(tmp_path / "runs/version_0/test/test_summary.csv") as file:
        summary = {row["metric"]: row for row in csv.DictReader(file)}
    assert float(summary["dice"]["value"]) >= 0.9, summary["dice"]  # mean over disc and ring
    assert {"dice/disc", "dice/ring", "hd95/ring", "surface_dice/disc"} <= set(summary)
    assert int(summary["dice"]["n"]) == 8  # the test split: 20% of 40

    (tmp_path / "new").mkdir()
    for name in ("img_0000.png", "img_0003.png"):
        (tmp_path / "new" / name).write_bytes((data / "images" / name).read_bytes())
    main(
        [
            "predict",
            f"--ckpt_path={checkpoint}",  # no --config: the checkpoint's record alone
            f"--data.predict_dir={tmp_path / 'new'}",
            f"--data.predict_mask_dir={data / 'masks'}",
            f"--output={tmp_path / 'predicted'}",
            "--trainer.accelerator=cpu",
        ]
    )
    written = np.array(Image.open(tmp_path / "predicted/masks/img_0003.png"))
    truth = read_mask(data / "masks/img_0003.png", 3)
    assert written.dtype == np.uint8 and set(np.unique(written)) <= {0, 1, 2}
    assert (written == truth).mean() > 0.95
    header = (tmp_path / "predicted/metrics.csv").read_text().splitlines()[0]
    assert header.startswith("image,mask,dice,iou,hd95,surface_dice,dice/disc")
    result = load_model(checkpoint).predict(tmp_path / "new/img_0003.png")
    assert result.class_names == PHANTOM_CLASSES and result.probabilities.shape == (3, 48, 48)
    np.testing.assert_array_equal(result.labels, written)


# --- NIfTI label maps -------------------------------------------------------------------------


def write_label_volumes(root, num_volumes=3, top_label=2):
    """Synthetic CT volumes whose blob is split in two labels: 1 (x < middle) and 2."""
    nib = pytest.importorskip("nibabel")
    from medvision.data.synthetic_volumes import write_nifti_volumes

    pairs = write_nifti_volumes(root, num_volumes, (32, 32, 8), seed=0)
    for _, mask_path in pairs:
        mask = nib.load(mask_path)
        labels = np.asanyarray(mask.dataobj).astype(np.uint8)
        labels[16:] *= top_label  # the second half of the blob (stored axis 0) gets top_label
        nib.save(nib.Nifti1Image(labels, mask.affine, mask.header), mask_path)
    return pairs


def test_volume_label_maps_keep_their_labels_and_carry_the_pixel_size(tmp_path):
    from medvision.data.volumes import VolumeSliceDataModule

    write_label_volumes(tmp_path / "vol")
    dm = VolumeSliceDataModule(
        tmp_path / "vol",
        class_names=NAMES,
        image_size=16,
        num_workers=0,
        augmentation="none",
        val_fraction=0,
        test_fraction=0,
    )
    assert dm.num_classes == 3
    dm.setup("fit")
    masks = torch.stack([dm.datasets["train"][i]["mask"] for i in range(len(dm.datasets["train"]))])
    assert masks.dtype == torch.int64 and masks.shape[1:] == (16, 16)
    assert set(masks.unique().tolist()) == {0, 1, 2}
    # voxels of 0.8 x 0.8 mm, 32 pixels resized to 16: 1.6 mm per pixel
    spacing = dm.datasets["train"][0]["spacing"]
    assert spacing.dtype == torch.float64 and spacing.tolist() == pytest.approx([1.6, 1.6])


def test_volume_labels_beyond_the_class_names_are_refused(tmp_path):
    from medvision.data.volumes import VolumeSliceDataModule

    write_label_volumes(tmp_path / "vol", top_label=3)
    dm = VolumeSliceDataModule(tmp_path / "vol", class_names=NAMES, image_size=16, num_workers=0)
    with pytest.raises(
        ValueError,
        match=r"masks/vol_000.nii.gz: mask holds labels 0, 1, 3, but "
        r"num_classes=3 allows 0 to 2.*Give class_names one name per label",
    ):
        dm.setup("fit")
    with pytest.raises(ValueError, match="gpu_augmentation: true warps binary masks only"):
        VolumeSliceDataModule(tmp_path / "vol", class_names=NAMES, gpu_augmentation=True)


def test_volume_writer_writes_the_most_probable_class(tmp_path):
    nib = pytest.importorskip("nibabel")
    from medvision.apply import VolumePredictionWriter
    from medvision.data.volumes import VolumeSliceDataModule

    pairs = write_label_volumes(tmp_path / "vol", num_volumes=1)
    dm = VolumeSliceDataModule(
        tmp_path / "vol",
        class_names=NAMES,
        predict_dir=tmp_path / "vol",
        image_size=32,
        intensity_window=(-1000, 400),
        num_workers=0,
    )

    class ThreeLevels(FixedProbabilities):
        def predict_step(self, batch, batch_idx):  # air 0, lung-like 1, soft tissue 2
            out = {key: value for key, value in batch.items() if key != "image"}
            levels = torch.bucketize(batch["image"][:, 0], torch.tensor([0.05, 0.5]))
            out["probs"] = torch.nn.functional.one_hot(levels, 3).permute(0, 3, 1, 2).float()
            return out

    writer = VolumePredictionWriter(output_dir=str(tmp_path / "out"))
    trainer = L.Trainer(
        accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False
    )
    trainer.predict(ThreeLevels(), datamodule=dm, return_predictions=False)
    hu = np.asanyarray(nib.load(pairs[0][0]).dataobj)
    expected = np.digitize(np.clip((hu + 1000) / 1400, 0, 1), [0.05, 0.5], right=True)
    written = np.asanyarray(nib.load(tmp_path / "out/vol_000.nii.gz").dataobj)
    assert written.dtype == np.uint8 and set(np.unique(written)) == {0, 1, 2}
    np.testing.assert_array_equal(written, expected)
