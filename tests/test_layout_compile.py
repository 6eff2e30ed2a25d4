"""Module options ``channels_last`` and ``compile``, on the CPU (the GPU side is in test_gpu.py)."""

import pytest
import torch
from lightning.pytorch import Trainer

from medvision.cli import main
from medvision.data import LungCTDataModule
from medvision.models import ClassificationModule, SegmentationModule, base

from .conftest import unet_run_args


def _is_channels_last(tensor: torch.Tensor) -> bool:
    """Laid out NHWC, and not also NCHW (which tensors with one channel or pixel are)."""
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def _conv_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    """4D weights with more than one input channel and pixel, where the layouts differ."""
    return [p for p in module.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1]


def _fit_one_batch(module, data_dir, tmp_path) -> Trainer:
    trainer = Trainer(
        accelerator="cpu",
        fast_dev_run=1,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    data = LungCTDataModule(data_dir, image_size=64, batch_size=4, num_workers=0)
    trainer.fit(module, datamodule=data)
    return trainer


def test_channels_last_is_off_on_cpu_by_default(lung_dir, tmp_path):
    module = SegmentationModule(encoder_name="resnet18")
    _fit_one_batch(module, lung_dir, tmp_path)
    assert not any(_is_channels_last(w) for w in _conv_weights(module))
    assert module.to_memory_format(torch.rand(2, 1, 8, 8)).is_contiguous()


def test_channels_last_true_converts_weights_and_images(lung_dir, tmp_path):
    module = SegmentationModule(encoder_name="resnet18", channels_last=True)
    seen = []
    layer = module.net.encoder.layer1[0].conv1  # 64 channels in: the layouts differ
    layer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    _fit_one_batch(module, lung_dir, tmp_path)
    assert all(_is_channels_last(w) for w in _conv_weights(module))
    assert seen and all(_is_channels_last(image) for image in seen)


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    module = ClassificationModule("resnet18", in_channels=3, num_classes=4).eval()
    image = torch.rand(2, 3, 64, 64)
    expected = module(image)
    module.channels_last = True
    module.configure_model()
    torch.testing.assert_close(module(image), expected, rtol=1e-4, atol=1e-4)


def test_compile_wraps_the_network_and_keeps_checkpoint_keys(lung_dir, tmp_path):
    """``backend: eager`` runs TorchDynamo's graph capture without code generation (fast)."""
    module = SegmentationModule(encoder_name="resnet18", compile={"backend": "eager"})
    keys = set(module.state_dict())
    _fit_one_batch(module, lung_dir, tmp_path)
    assert module.net._compiled_call_impl is not None
    assert set(module.state_dict()) == keys


def test_compile_from_the_cli_checkpoint_loads_into_an_uncompiled_module(lung_dir, tmp_path):
    main(
        ["fit"]
        + unet_run_args(
            tmp_path,
            lung_dir,
            "--model.init_args.compile={backend: eager}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
        )
    )
    best = next(tmp_path.rglob("best.ckpt"))
    module = SegmentationModule.load_from_checkpoint(best, compile=False)
    assert module.net._compiled_call_impl is None


def test_compile_without_a_cpp_compiler_is_a_clear_error(lung_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(base.shutil, "which", lambda name: None)
    module = SegmentationModule(encoder_name="resnet18", compile=True)
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler.*compile: false"):
        _fit_one_batch(module, lung_dir, tmp_path)


def test_compile_on_unsupported_python_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(RuntimeError, match="not supported with Python.*compile: false"):
        base.check_compile_supported({}, on_cuda=False)


def test_compile_on_gpu_without_triton_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("torch.utils._triton.has_triton", lambda: False)
    with pytest.raises(RuntimeError, match="needs Triton.*pip install triton"):
        base.check_compile_supported({}, on_cuda=True)


def test_compile_option_of_the_wrong_type_is_refused():
    with pytest.raises(ValueError, match="compile must be"):
        SegmentationModule(encoder_name="resnet18", compile="yes")
