"""The plain PyTorch reference that medvision's loop is held against.

The same networks and losses as medvision's modules, built directly from smp and timm, and a
hand-written training step: no Lightning, no medvision, no host sync.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Plain(NamedTuple):
    """A network with what a plain loop needs around it.

    Args:
        net: the ``nn.Module``.
        preprocess: the input standardization (``B x C x H x W`` in, same out).
        loss: ``loss(logits, target)``, a scalar.
        target: the batch key of the target: ``mask`` or ``label``.
        probabilities: logits to probabilities (sigmoid or softmax over classes).
    """

    net: object
    preprocess: Callable
    loss: Callable
    target: str
    probabilities: Callable


def unet(encoder: str = "resnet34", in_channels: int = 1) -> Plain:
    """smp's U-Net (one output channel, no pretrained weights) with BCE + Dice on its logits.

    Args:
        encoder: the smp encoder.
        in_channels: the input's channels.
    """
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
    """A timm classifier that standardizes its input, with cross-entropy on float32 logits.

    Args:
        model_name: the timm model.
        in_channels: the input's channels; for one, the mean of timm's RGB mean and std.
        num_classes: the classes.
        class_weight: cross-entropy's per-class weights (a CPU tensor), or None.
    """
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
    """``torch.channels_last`` for ``channels_last``, else ``torch.contiguous_format``.

    Args:
        layout: ``nchw`` or ``channels_last``.
    """
    import torch

    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def autocast(device: str, precision: str):
    """The autocast context of a Lightning precision (``32``: disabled).

    Args:
        device: ``cpu`` or ``cuda``.
        precision: ``32``, ``bf16-mixed`` or ``16-mixed``.
    """
    import torch

    dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
    return torch.autocast(device, dtype=dtype, enabled=precision != "32")


def train_step(plain: Plain, optimizer, image, target, precision: str = "32", scaler=None):
    """One plain training step: forward under autocast, loss, backward, optimizer step.

    Args:
        plain: the network and its loss.
        optimizer: its optimizer.
        image: the batch's images, on the device and in the layout wanted.
        target: the batch's targets, on the device.
        precision: ``32``, ``bf16-mixed`` or ``16-mixed``.
        scaler: a ``torch.amp.GradScaler`` (with ``16-mixed``), or None.

    Returns:
        The loss (a device tensor; not read on the host).
    """
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


def random_batches(
    count: int,
    batch_size: int,
    channels: int,
    size: int,
    target: str,
    device: str = "cpu",
    num_classes: int = 2,
) -> list[dict]:
    """``count`` random batches, made once (seeded), on ``device``.

    Args:
        count: how many batches.
        batch_size: images per batch.
        channels: image channels.
        size: image side in pixels.
        target: ``mask`` (float 0/1, ``B x 1 x size x size``) or ``label`` (int64 ``B``,
            cycling over the classes, so a batch of at least ``num_classes`` holds each).
        device: where the tensors live.
        num_classes: the classes of ``label``.

    Returns:
        Dicts with ``image`` (float32 ``B x channels x size x size`` in [0, 1]) and ``target``.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        batch = {"image": torch.rand(batch_size, channels, size, size, generator=generator)}
        if target == "mask":
            mask = torch.rand(batch_size, 1, size, size, generator=generator) > 0.5
            batch["mask"] = mask.float()
        else:
            batch["label"] = torch.arange(batch_size) % num_classes
        batches.append({key: value.to(device) for key, value in batch.items()})
    return batches
