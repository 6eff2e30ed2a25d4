"""GPU paths: mixed precision, channels_last and torch.compile on CUDA. Skipped without a GPU
(CI has none); run on a GPU machine with ``pytest -m gpu``."""

import pytest
import torch

from medvision.cli import main
from medvision.models import SegmentationModule

from .conftest import CONFIGS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def gpu_fit_args(tmp_path, lung_dir, *extra: str) -> list[str]:
    """``configs/unet_lung.yaml`` for a few GPU steps on 64x64 synthetic slices."""
    return [
        "fit",
        "--config",
        str(CONFIGS / "unet_lung.yaml"),
        "--config",
        str(CONFIGS / "trainer/gpu_amp.yaml"),
        f"--data.init_args.data_dir={lung_dir}",
        "--data.init_args.image_size=64",
        "--data.init_args.num_workers=0",
        "--model.init_args.encoder_name=resnet18",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


def best_module(tmp_path) -> SegmentationModule:
    return SegmentationModule.load_from_checkpoint(next(tmp_path.rglob("best.ckpt")))


@pytest.mark.parametrize("config", ["trainer/gpu_amp.yaml", "trainer/gpu_amp_fp16.yaml"])
def test_amp_configs_fit_one_batch(config, tmp_path, lung_dir):
    args = gpu_fit_args(tmp_path, lung_dir, "--trainer.fast_dev_run=1")
    args[args.index(str(CONFIGS / "trainer/gpu_amp.yaml"))] = str(CONFIGS / config)
    main(args)


def test_channels_last_is_on_by_default_on_gpu(tmp_path, lung_dir, monkeypatch):
    """Lightning calls ``configure_model`` before it moves the model to the GPU (``_run``:
    ``configure_model``, then ``strategy.setup`` -> ``model_to_device``): the layout is set on
    the CPU there, and ``.to(device)`` keeps it (``preserve_format``) for training."""
    seen = {}

    def layout(module) -> tuple[bool, str]:
        weight = module.net.encoder.layer1[0].conv1.weight
        return weight.is_contiguous(memory_format=torch.channels_last), weight.device.type

    configure, train_start = SegmentationModule.configure_model, SegmentationModule.on_train_start

    def configure_spy(module):
        configure(module)
        seen["configure_model"] = layout(module)

    def train_start_spy(module):
        train_start(module)
        seen["on_train_start"] = layout(module)

    monkeypatch.setattr(SegmentationModule, "configure_model", configure_spy)
    monkeypatch.setattr(SegmentationModule, "on_train_start", train_start_spy)
    main(gpu_fit_args(tmp_path, lung_dir, "--trainer.fast_dev_run=1"))
    assert seen == {"configure_model": (True, "cpu"), "on_train_start": (True, "cuda")}


def test_fp16_gradient_overflow_is_skipped_by_the_scaler_not_stopped(tmp_path, lung_dir):
    """Under 16-mixed the scaler's first steps overflow by design; NonFiniteGuard lets them be."""
    args = gpu_fit_args(
        tmp_path,
        lung_dir,
        "--trainer.precision=16-mixed",
        "--trainer.max_epochs=1",
        "--trainer.limit_val_batches=1",
    )
    main(args)
    assert best_module(tmp_path) is not None


def test_compile_fits_and_its_checkpoint_predicts_uncompiled(tmp_path, lung_dir):
    main(
        gpu_fit_args(
            tmp_path,
            lung_dir,
            "--model.init_args.compile=true",
            "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=1",
        )
    )
    module = best_module(tmp_path).cuda().eval()
    with torch.inference_mode():
        probs = module(torch.rand(2, 1, 64, 64, device="cuda")).sigmoid()
    assert probs.shape == (2, 1, 64, 64) and torch.isfinite(probs).all()
