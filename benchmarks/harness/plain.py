"""The plain PyTorch reference that medvision's loop is held against: the same networks and
losses, built directly from smp and timm, and a hand-written step (no Lightning, no host sync)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Plain(NamedTuple):
    """A network (``net``) with what a plain loop needs around it: ``preprocess`` (the input
    standardization), ``loss(logits, target)``, ``target`` (the batch key: ``mask`` or
    ``label``) and ``probabilities`` (of the logits)."""

    net: object
    preprocess: Callable
    loss: Callable
    target: str
    probabilities: Callable


def unet(encoder: str = "resnet34", in_channels: int = 1) -> Plain:
    """smp's U-Net (one output channel, no pretrained weights), BCE + Dice on its logits."""
    import segmentation_models_pytorch as smp
    import torch

    net = smp.Unet(encoder, encoder_weights=None, in_channels=in_channels, classes=1)
    bce, dice = torch.nn.BCEWithLogitsLoss(), smp.losses.DiceLoss("binary", from_logits=True)
    return Plain(
        net,
        lambda image: image,
        lambda logits, mask: bce(logits, mask) + dice(logits, mask),
        "mask",
        lambda logits: logits.sigmoid(),
    )


def classifier(model_name: str, in_channels: int, num_classes: int, class_weight=None) -> Plain:
    """A timm classifier standardizing its input (with one channel, by the mean of timm's RGB
    mean and std), cross-entropy (``class_weight``: a CPU tensor or None) on float32 logits."""
    import timm
    import torch

    net = timm.create_model(model_name, num_classes=num_classes, in_chans=in_channels)
    mean = torch.tensor(net.pretrained_cfg["mean"], dtype=torch.float32)
    std = torch.tensor(net.pretrained_cfg["std"], dtype=torch.float32)
    if in_channels != len(mean):
        mean, std = mean.mean().repeat(in_channels), std.mean().repeat(in_channels)
    stats = {"cpu": (mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1), class_weight)}

    def on(device) -> tuple:  # the constants copied to a device once, not at every step
        if str(device) not in stats:
            stats[str(device)] = tuple(t if t is None else t.to(device) for t in stats["cpu"])
        return stats[str(device)]

    def preprocess(image):
        mean, std, _ = on(image.device)
        return (image - mean) / std

    def loss(logits, label):
        weight = on(logits.device)[2]
        return torch.nn.functional.cross_entropy(logits.float(), label, weight=weight)

    return Plain(net, preprocess, loss, "label", lambda logits: logits.float().softmax(dim=1))


def memory_format(layout: str):
    """``torch.channels_last`` for ``channels_last``, else ``torch.contiguous_format``."""
    import torch

    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def autocast(device: str, precision: str):
    """The autocast context of a Lightning precision (``32``: disabled)."""
    import torch

    dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
    return torch.autocast(device, dtype=dtype, enabled=precision != "32")


def train_step(plain: Plain, optimizer, image, target, precision: str = "32", scaler=None):
    """Forward under autocast, loss, backward, optimizer step (through a GradScaler with
    ``16-mixed``); the loss, a device tensor never read on the host."""
    with autocast(image.device.type, precision):
        loss = plain.loss(plain.net(plain.preprocess(image)), target)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss


def random_batches(count, batch_size, channels, size, target, device="cpu", num_classes=2):
    """``count`` seeded random batches on ``device``: ``image`` (float32 in [0, 1]) and
    ``mask`` (0/1, one channel) or ``label`` (cycling over the classes: each in each batch)."""
    import torch

    generator, batches = torch.Generator().manual_seed(0), []
    for _ in range(count):
        batch = {"image": torch.rand(batch_size, channels, size, size, generator=generator)}
        if target == "mask":
            batch["mask"] = torch.rand(batch_size, 1, size, size, generator=generator) > 0.5
            batch["mask"] = batch["mask"].float()
        else:
            batch["label"] = torch.arange(batch_size) % num_classes
        batches.append({key: value.to(device) for key, value in batch.items()})
    return batches
