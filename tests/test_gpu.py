"""GPU paths: mixed precision on CUDA. Skipped without a GPU (CI has none)."""

import pytest
import torch

from medvision.cli import main

from .conftest import CONFIGS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_amp_fit_one_batch_on_gpu(precision, tmp_path, lung_dir):
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "unet_lung.yaml"),
            "--config",
            str(CONFIGS / "trainer/gpu_amp.yaml"),
            f"--trainer.precision={precision}",
            f"--data.init_args.data_dir={lung_dir}",
            "--data.init_args.image_size=64",
            "--data.init_args.num_workers=0",
            "--trainer.fast_dev_run=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
