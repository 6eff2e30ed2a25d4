"""Segment-then-classify: lesion masks from a segmentation checkpoint focus the classifier."""

import numpy as np
import pytest
from PIL import Image

from medvision.cli import main
from medvision.data import HAM10000DataModule
from medvision.data.lesion_focus import LesionFocus

from .conftest import CONFIGS


def write_mask(folder, stem, mask):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{stem}.png")


def test_crop_is_the_lesion_box_grown_by_the_margin(tmp_path):
    image = np.random.default_rng(0).random((10, 20, 3), dtype=np.float32)
    mask = np.zeros((10, 20), bool)
    mask[2:6, 4:12] = True  # 4 rows x 8 columns
    write_mask(tmp_path, "ISIC_1", mask)
    crop = LesionFocus(tmp_path, "crop", margin=0.25)(image, tmp_path / "ISIC_1.jpg")
    # 25% of 4 rows = 1 row, of 8 columns = 2 columns, on each side
    np.testing.assert_array_equal(crop, image[1:7, 2:14])


def test_mask_mode_blacks_out_the_background_and_an_empty_mask_keeps_the_image(tmp_path):
    image = np.ones((8, 8, 3), np.float32)
    mask = np.zeros((4, 4), bool)  # half size: resized to the image
    mask[1:3, 1:3] = True
    write_mask(tmp_path, "lesion", mask)
    out = LesionFocus(tmp_path, "mask")(image, "lesion.jpg")
    assert out[..., 0].sum() == 16 and out[2:6, 2:6].min() == 1.0
    write_mask(tmp_path, "clear", np.zeros((8, 8), bool))
    focus = LesionFocus(tmp_path, "crop")
    assert focus(image, "clear.jpg") is image
    assert focus.count_empty(["clear.jpg", "lesion.jpg"]) == 1


def test_missing_lesion_masks_say_how_to_make_them(ham_dir, tmp_path):
    dm = HAM10000DataModule(
        ham_dir,
        lesion_focus="crop",
        lesion_mask_dir=tmp_path / "none_yet",
        image_size=[32, 32],
        num_workers=0,
    )
    with pytest.raises(FileNotFoundError, match="(?s)missing lesion masks.*lesion_segmenter"):
        dm.setup("fit")


def test_lesion_focus_is_for_classification():
    with pytest.raises(ValueError, match="lesion_focus needs task: classification"):
        HAM10000DataModule(task="segmentation", lesion_focus="crop", lesion_mask_dir="x")


@pytest.mark.slow
def test_one_config_segments_then_classifies(ham_dir, tmp_path):
    seg_root, cls_root = tmp_path / "seg", tmp_path / "cls"
    common = [
        f"--data.init_args.data_dir={ham_dir}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=8",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
    ]
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "unet_ham10000.yaml"),
            *common,
            "--data.init_args.image_size=[32,64]",
            "--model.init_args.encoder_name=resnet18",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            f"--trainer.default_root_dir={seg_root}",
            f"--trainer.logger.init_args.save_dir={seg_root}",
        ]
    )
    segmenter = seg_root / "version_0/checkpoints/last.ckpt"
    lesions = tmp_path / "lesion_masks"
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "resnet50_ham10000_lesion_crop.yaml"),
            *common,
            "--data.init_args.image_size=[32,32]",
            f"--data.init_args.lesion_segmenter={segmenter}",
            f"--data.init_args.lesion_mask_dir={lesions}",
            "--model.init_args.model_name=resnet18",
            "--trainer.fast_dev_run=1",
            f"--trainer.default_root_dir={cls_root}",
        ]
    )
    images = sorted((ham_dir / "images").glob("*.jpg"))
    masks = sorted(lesions.glob("*.png"))
    assert [m.stem for m in masks] == [p.stem for p in images]  # one per image
    first = np.array(Image.open(masks[0]))
    assert first.shape == (48, 64) and set(np.unique(first)) <= {0, 255}  # original size
