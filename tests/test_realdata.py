"""Short checks on the real public images in ../shared/data (skipped when absent).

Loading and a few steps only; training quality is measured by the scripts in benchmarks/.
"""

import numpy as np
import pytest
from PIL import Image

from medvision.cli import main
from medvision.data import (
    ChestXrayDataModule,
    HAM10000DataModule,
    LungCTDataModule,
    NIHChestXray14DataModule,
)
from medvision.data.ham10000_metadata import read_metadata

from .conftest import (
    chest_run_args,
    config_run_args,
    shared_dataset,
    unet_run_args,
)

pytestmark = pytest.mark.realdata

#: one short epoch: loading and a few steps, not a training run
FEW_STEPS = (
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
)


@pytest.fixture
def fullres_dir():
    return shared_dataset("lung_ct_fullres_sample", "2d_images")


def test_fullres_rgb_lzw_slices_load_as_one_channel(fullres_dir):
    dm = LungCTDataModule(
        fullres_dir, image_size=128, num_workers=0, val_fraction=0.2, test_fraction=0.2
    )
    dm.setup("fit")
    sample = dm.datasets["train"][0]
    assert sample["image"].shape == (1, 128, 128) and sample["original_size"].tolist() == [512, 512]
    assert 0.05 < sample["mask"].mean() < 0.6


def test_a_few_training_steps_and_predict_at_original_size(real_lung_dir, fullres_dir, tmp_path):
    common = unet_run_args(tmp_path, real_lung_dir)
    main(
        [
            "fit",
            *common,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=3",
            "--trainer.limit_val_batches=1",
        ]
    )
    checkpoint = tmp_path / "version_0/checkpoints/last.ckpt"
    main(
        [
            "predict",
            *common,
            f"--ckpt_path={checkpoint}",
            f"--data.init_args.predict_dir={fullres_dir}",
            f"--prediction_writer.output_dir={tmp_path / 'predictions'}",
        ]
    )
    masks = sorted(((tmp_path / "predictions") / "masks").glob("*.png"))
    assert len(masks) == 10
    assert np.array(Image.open(masks[0])).shape == (512, 512)
    assert ((tmp_path / "predictions") / "metrics.csv").read_text().count("\n") == 11


def test_real_chest_xrays_decode_and_split_with_val_as_test(real_chest_dir):
    dm = ChestXrayDataModule(real_chest_dir, image_size=64, test_split="val", num_workers=0)
    assert dm.class_names == ["COVID19", "NORMAL", "PNEUMONIA"]
    dm.setup("fit")  # decodes all 884 files: mixed jpg/png, sizes and modes
    assert len(dm.datasets["test"]) == 110
    assert sum(dm.class_counts.values()) + len(dm.datasets["val"]) == 774
    assert dm.datasets["train"][0]["image"].shape == (1, 64, 64)


def test_a_few_classifier_steps_on_real_chest_xrays(real_chest_dir, tmp_path):
    main(
        [
            "fit",
            *chest_run_args(tmp_path, real_chest_dir, "--data.init_args.test_split=val"),
            "--data.init_args.sampler=weighted",
            *FEW_STEPS,
        ]
    )
    assert "val/f1" in (tmp_path / "version_0/metrics.csv").read_text()


@pytest.fixture
def real_ham_dir():
    return shared_dataset("ham10000", "HAM10000_metadata.csv")


def test_real_ham10000_splits_never_share_a_lesion(real_ham_dir):
    dm = HAM10000DataModule(real_ham_dir, task="classification", check_images=False)
    dm.setup("fit")
    image_to_lesion = {
        r.image_id: r.lesion_id for r in read_metadata(real_ham_dir / dm.metadata_filename)
    }
    lesions = {
        split: {image_to_lesion[p.stem] for p in dataset.image_paths}
        for split, dataset in dm.datasets.items()
    }
    assert not lesions["train"] & lesions["test"] and not lesions["val"] & lesions["test"]
    assert not lesions["train"] & lesions["val"]
    assert sum(dm.class_counts.values()) == len(dm.datasets["train"])
    assert dm.class_counts["nv"] > 10 * dm.class_counts["df"]  # the real imbalance


def test_a_few_lesion_segmentation_steps_on_real_ham10000(real_ham_dir, tmp_path):
    main(
        [
            "fit",
            *config_run_args(
                "unet_ham10000.yaml",
                tmp_path,
                real_ham_dir,
                "--data.init_args.check_images=false",
                "--model.init_args.encoder_name=resnet18",
                *FEW_STEPS,
                image_size="[96,128]",
            ),
        ]
    )
    assert "val/iou" in (tmp_path / "version_0/metrics.csv").read_text()


@pytest.fixture
def real_nih_dir():
    return shared_dataset("nih_chestxray14", "Data_Entry_2017.csv")


def test_real_nih_labels_and_a_few_multilabel_steps(real_nih_dir, tmp_path):
    dm = NIHChestXray14DataModule(real_nih_dir, image_size=64, num_workers=0)
    dm.setup("fit")  # decodes all 790 PNGs
    patients = {
        split: {p.name.split("_")[0] for p in d.image_paths} for split, d in dm.datasets.items()
    }
    assert not patients["train"] & patients["test"] and not patients["train"] & patients["val"]
    assert dm.class_counts["Pneumonia"] > 100  # about half of these images show pneumonia
    main(
        [
            "fit",
            *config_run_args(
                "resnet50_nih.yaml",
                tmp_path,
                real_nih_dir,
                "--data.init_args.check_images=false",
                "--model.init_args.model_name=resnet18",
                *FEW_STEPS,
                batch_size=8,
            ),
        ]
    )
    assert "val/auroc_per_label/Pneumonia" in (tmp_path / "version_0/metrics.csv").read_text()
