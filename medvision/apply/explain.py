"""Grad-CAM heat maps of image classifiers, with pytorch-grad-cam.

Grad-CAM (Selvaraju et al., 2017) weights the channels of a convolutional feature map by the
mean gradient of a class logit and keeps the positive part: where in the image the evidence
for that class lies. Here:

- :func:`find_target_layer` picks the layer to explain automatically: the last module whose
  output is a spatial feature map (``N x C x h x w``, larger than 1 x 1) and that is not a
  pooling layer, in execution order, i.e. the last convolutional stage before global pooling
  (``layer4`` of a timm ResNet, ``features`` of a DenseNet or of medvision's ``cnn5``,
  ``bn2`` of an EfficientNet). :func:`get_layer` resolves an explicit name instead.
- :func:`grad_cam` returns one heat map per image in [0, 1] at the input resolution;
  :func:`cam_overlay` blends a heat map over its image for display.

Method. By default the maps are HiResCAM (Draelos & Carin, 2020: gradient times activation
at each position, summed over channels, then ReLU) rather than Grad-CAM's spatially averaged
gradient weights. When global average pooling follows the target layer, as in every timm
classifier, the gradient is the same at every position and the two are identical. The seed
studies' ``cnn5`` and ``vgg_leaky`` instead flatten a 7 x 7 / 5 x 5 map into fully connected
layers with position-specific weights; there Grad-CAM's averaging cancels positive and
negative weights and can give an empty or misplaced map (on a synthetic task where the class
is the corner of a bright square, half of ``cnn5``'s Grad-CAM maps were all zero), while
HiResCAM shows where the evidence lies. ``method="gradcam"`` gives classic Grad-CAM.

Only classifiers (``N x K`` logits) are explained; a segmentation model's output already says
where it looks. pytorch-grad-cam is an optional dependency:
``pip install "medvision-lightning[trust]"``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

INSTALL_HINT = 'pip install "medvision-lightning[trust]"'

#: Side of the blank square image pushed through a net to find its feature maps.
PROBE_SIZE = 128


def _grad_cam_library():
    try:
        from pytorch_grad_cam import GradCAM, HiResCAM
        from pytorch_grad_cam.utils.image import show_cam_on_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as exc:
        raise ImportError(
            f"Grad-CAM needs pytorch-grad-cam (the grad-cam package), which is not installed: "
            f"{INSTALL_HINT}"
        ) from exc
    return {"gradcam": GradCAM, "hirescam": HiResCAM}, ClassifierOutputTarget, show_cam_on_image


def _is_pooling(module: nn.Module) -> bool:
    return "Pool" in type(module).__name__  # torch's *Pool*d and timm's SelectAdaptivePool2d


def feature_map_layers(net: nn.Module, input_size: int = PROBE_SIZE) -> list[str]:
    """Names of the modules that output a spatial feature map, in execution order.

    Pushes one blank ``1 x C x input_size x input_size`` image through ``net`` (in eval mode,
    without gradients; the mode is restored) and records every named module whose output is
    a 4D tensor larger than 1 x 1 that is not a pooling layer.

    Args:
        net: A classifier (timm model, medvision net or ``ClassificationModule``).
        input_size: Side of the probe image in pixels.

    Returns:
        Module names (as in ``net.named_modules()``), the last one ran last.
    """
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            f"{type(net).__name__} has no nn.Conv2d: Grad-CAM needs a convolutional feature "
            "map (vision transformers are not supported)"
        )
    names: list[str] = []

    def record(name: str, module: nn.Module, output) -> None:
        spatial = torch.is_tensor(output) and output.ndim == 4 and output.shape[-2:].numel() > 1
        if spatial and not _is_pooling(module):
            names.append(name)

    hooks = [
        module.register_forward_hook(lambda m, _, out, name=name: record(name, m, out))
        for name, module in net.named_modules()
        if name
    ]
    parameter = next(net.parameters())
    probe = torch.zeros(1, convs[0].in_channels, input_size, input_size, dtype=parameter.dtype)
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(probe.to(parameter.device))
    except Exception as exc:
        raise ValueError(
            f"could not run {type(net).__name__} on a {input_size} x {input_size} probe image "
            f"to find its feature maps ({type(exc).__name__}: {exc}); pass input_size, or a "
            "target layer name (see get_layer)"
        ) from exc
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    return list(dict.fromkeys(reversed(names)))[::-1]  # a module called twice: its last call


def find_target_layer(net: nn.Module, input_size: int = PROBE_SIZE) -> str:
    """The name of the layer Grad-CAM explains by default: the last spatial feature map.

    Args:
        net: A classifier mapping ``N x C x H x W`` images to ``N x K`` logits.
        input_size: Side of the probe image (see :func:`feature_map_layers`).

    Returns:
        A module name of ``net``, e.g. ``"layer4"`` for a timm ResNet.
    """
    names = feature_map_layers(net, input_size)
    if not names:
        raise ValueError(
            f"{type(net).__name__} outputs no feature map larger than 1 x 1 at {input_size} px; "
            "pass a larger input_size or a target layer name"
        )
    return names[-1]


def _candidate_names(net: nn.Module, count: int = 5) -> list[str]:
    names = [
        name
        for name, module in net.named_modules()
        if name and name.count(".") <= 1 and any(isinstance(m, nn.Conv2d) for m in module.modules())
    ]
    return names[-count:]


def get_layer(net: nn.Module, name: str) -> nn.Module:
    """The submodule of ``net`` called ``name`` (a name from ``net.named_modules()``).

    Args:
        net: The classifier.
        name: Dotted module name, e.g. ``"layer4"`` or ``"features.denseblock4"``.

    Returns:
        The module.

    Raises:
        ValueError: no such module; the message lists candidate names.
    """
    try:
        return net.get_submodule(name)
    except AttributeError:
        candidates = ", ".join(repr(n) for n in _candidate_names(net))
        raise ValueError(
            f"target layer {name!r} does not exist in {type(net).__name__}. Convolutional "
            f"blocks near the output: {candidates}. Pass one of these (any name from "
            "net.named_modules()) as target_layer, or leave it unset to pick the last feature "
            "map automatically."
        ) from None


def _logits_shape_check(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run the model once; refuse anything that does not return ``N x K`` logits."""
    with torch.no_grad():
        output = model(images)
    if not torch.is_tensor(output) or output.ndim != 2 or len(output) != len(images):
        shape = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
        raise ValueError(
            f"Grad-CAM explains classifiers only: the model returned {shape} for "
            f"{len(images)} images, expected N x K class logits (a segmentation model's "
            "N x 1 x H x W output already shows where it looks)"
        )
    return output


def _targets(class_indices, logits: torch.Tensor) -> list[int]:
    num_images, num_classes = logits.shape
    if class_indices is None:
        return logits.argmax(dim=1).tolist()
    indices = torch.as_tensor(class_indices).long().reshape(-1).tolist()
    if len(indices) == 1:
        indices *= num_images
    if len(indices) != num_images or not all(0 <= i < num_classes for i in indices):
        raise ValueError(
            f"class_indices must be one class or one per image ({num_images}), each in "
            f"[0, {num_classes - 1}]; got {class_indices!r}"
        )
    return indices


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: str | nn.Module,
    class_indices=None,
    method: str = "hirescam",
) -> np.ndarray:
    """Grad-CAM (or HiResCAM) heat maps of a classifier for a batch of images.

    The model is run in eval mode and left in the mode it came in, with its parameters'
    ``.grad`` as they were; works inside ``torch.no_grad`` / ``inference_mode`` (e.g. at the
    end of ``trainer.test``) and with frozen parameters.

    Args:
        model: Any ``nn.Module`` mapping ``N x C x H x W`` images to ``N x K`` logits; a
            medvision ``ClassificationModule`` qualifies (it standardizes inside forward).
        images: ``N x C x H x W`` float tensor, as the model takes it.
        target_layer: A module of ``model`` or its name (see :func:`find_target_layer`).
        class_indices: The class to explain: ``None`` for each image's predicted class, one
            int for all images, or ``N`` ints.
        method: ``"hirescam"`` (default: gradients times activations, position by position)
            or ``"gradcam"`` (channel weights = spatially averaged gradients). See the module
            docstring: identical for timm's classifiers, only HiResCAM is faithful for
            ``cnn5`` / ``vgg_leaky``.

    Returns:
        Float32 array ``N x H x W`` in [0, 1], each map scaled to its own maximum (all 0
        where the class has no positive evidence).

    Raises:
        ValueError: the model does not return ``N x K`` logits, bad class indices, an
            unknown layer name, or images that are not ``N x C x H x W``.
    """
    methods, output_target, _ = _grad_cam_library()
    if method not in methods:
        raise ValueError(f"method must be one of {sorted(methods)}, got {method!r}")
    if not torch.is_tensor(images) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            "images must be a float tensor N x C x H x W, got "
            f"{getattr(images, 'shape', type(images).__name__)}"
        )
    layer = get_layer(model, target_layer) if isinstance(target_layer, str) else target_layer
    parameters = list(model.parameters())
    saved_grads = [p.grad for p in parameters]
    was_training = model.training
    try:
        with torch.inference_mode(False), torch.enable_grad():
            images = images.detach().clone().to(parameters[0].device)  # not an inference tensor
            images.requires_grad_(True)  # a graph to the target layer even if all is frozen
            model.eval()
            logits = _logits_shape_check(model, images)
            targets = [output_target(i) for i in _targets(class_indices, logits)]
            with methods[method](model=model, target_layers=[layer]) as cam:
                heat = cam(input_tensor=images, targets=targets)
    finally:
        model.train(was_training)
        for parameter, grad in zip(parameters, saved_grads, strict=True):
            parameter.grad = grad
    return np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)


def cam_overlay(image, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """Blend a heat map (jet colour map) over its image for display.

    Args:
        image: ``H x W`` or ``H x W x C`` (C = 1 or 3, channel-last; for a model input use
            ``images[i].permute(1, 2, 0)``), float in [0, 1] or uint8; numpy or torch.
        cam: ``H x W`` heat map in [0, 1] from :func:`grad_cam`.
        image_weight: Share of the image in the blend, in [0, 1].

    Returns:
        uint8 RGB array ``H x W x 3``.
    """
    _, _, show_cam_on_image = _grad_cam_library()
    image = np.asarray(torch.as_tensor(image).detach().cpu()) if torch.is_tensor(image) else image
    image = np.asarray(image)
    image = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image must be H x W or H x W x 1/3 (channel-last), got {image.shape}")
    if image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"image values must lie in [0, 1] (or be uint8), got [{image.min()}, {image.max()}]"
        )
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != image.shape[:2]:
        raise ValueError(f"cam {cam.shape} and image {image.shape[:2]} sizes differ")
    if not 0 <= image_weight <= 1:
        raise ValueError(f"image_weight must lie in [0, 1], got {image_weight}")
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    return show_cam_on_image(rgb, np.clip(cam, 0, 1), use_rgb=True, image_weight=image_weight)
