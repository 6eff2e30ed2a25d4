"""Where a classifier looked: Grad-CAM heat maps of predictions, drawn over the images.

:class:`CamExplainer` wraps :mod:`medvision.apply.explain` (pytorch-grad-cam) for a trained
:class:`~medvision.models.ClassificationModule`: it checks the model, the method, the target
layer and the class once, then explains batches of prepared images. ``medvision predict
--cam gradcam`` (:class:`~medvision.apply.PredictionWriter`) writes its overlays to
``cams/<stem>.png``; :meth:`medvision.apply.inference.Predictor.explain` returns them in Python.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from medvision.apply.explain import (
    INSTALL_HINT,
    cam_overlay,
    find_target_layer,
    get_layer,
    grad_cam,
)
from medvision.data.io import read_image
from medvision.data.visualize import to_display
from medvision.utils.files import save_png

log = logging.getLogger(__name__)

#: ``--cam`` methods: classic Grad-CAM, and HiResCAM (the same maps for timm's classifiers;
#: faithful for the seed nets, which flatten their feature map into fully connected layers).
CAM_METHODS = ("gradcam", "hirescam")
#: Seed nets whose head has position-specific weights: Grad-CAM's averaging can cancel there.
FLATTENING_NETS = ("cnn5", "vgg_leaky")
#: How ``medvision predict`` and :meth:`~medvision.apply.inference.Predictor.explain` name the
#: options in messages, and what they advise for a model that cannot be explained.
CLI_OPTIONS = {
    "method": "--cam",
    "target_layer": "--prediction_writer.cam_target_layer",
    "class": "--prediction_writer.cam_class",
    "not_a_classifier": "its masks/ and overlays/ already show where it looks. Drop --cam.",
}
PYTHON_OPTIONS = {
    "method": "method",
    "target_layer": "target_layer",
    "class": "class_index",
    "not_a_classifier": (
        "a segmentation model cannot be explained with Grad-CAM. Its predict(x).probabilities "
        "(the probability of each pixel) already show where it looks."
    ),
}


def check_cam(method: str | None, option: str = "--cam") -> str | None:
    """``method`` if it is one of :data:`CAM_METHODS` (or None); a clear error otherwise.

    Args:
        method: The method asked for.
        option: How the caller named the option, for the message.
    """
    if method is not None and method not in CAM_METHODS:
        raise ValueError(
            f"{option} {method!r} is not a known explanation method: use one of "
            f"{', '.join(CAM_METHODS)} (e.g. {option} gradcam)."
        )
    return method


@dataclass(frozen=True)
class Explanation:
    """One image's heat map of where the evidence for a class lies.

    Args:
        heat_map: float32 ``H x W`` in [0, 1] at the image's own size (resized bilinearly
            from the network's input size), scaled to its maximum.
        overlay: uint8 ``H x W x 3``: the heat map (jet colours) blended over the image.
        class_index: The explained class (the predicted one unless chosen).
        class_name: Its name.
        target_layer: The explained layer of the network (a name in ``net.named_modules()``).
        method: ``gradcam`` or ``hirescam``.
        source: The file, or ``<array N>``.
    """

    heat_map: np.ndarray
    overlay: np.ndarray
    class_index: int
    class_name: str
    target_layer: str
    method: str
    source: str


class CamExplainer:
    """Heat maps of a trained classifier, with every setting checked up front.

    Args:
        module: A :class:`~medvision.models.ClassificationModule` (or subclass).
        method: One of :data:`CAM_METHODS`.
        target_layer: A module name of ``module.net`` (``layer4``; ``net.layer4`` also works);
            None picks the last spatial feature map
            (:func:`~medvision.apply.explain.find_target_layer`).
        class_: The class to explain: None (each image's predicted class), a class index or a
            class name.
        options: How the caller names ``method``, ``target_layer`` and ``class`` in messages
            (:data:`CLI_OPTIONS` or :data:`PYTHON_OPTIONS`).

    Raises:
        ValueError: a segmentation model, an unknown method, layer or class, naming the
            option and the fix.
        ImportError: naming the ``trust`` extra when pytorch-grad-cam is not installed.
    """

    def __init__(
        self,
        module,
        method: str = "gradcam",
        target_layer: str | None = None,
        class_: int | str | None = None,
        options: dict[str, str] = PYTHON_OPTIONS,
    ) -> None:
        self.options = options
        check_cam(method, options["method"])
        describe = getattr(module, "describe_output", None)
        task = describe()["task"] if callable(describe) else type(module).__name__
        if task != "classification":
            what = "--cam" if options is CLI_OPTIONS else "explain()"
            raise ValueError(
                f"{what} explains classifiers only, and this is a {task} model "
                f"({type(module).__name__}): {options['not_a_classifier']}"
            )
        if importlib.util.find_spec("pytorch_grad_cam") is None:
            raise ImportError(f"{options['method']} needs pytorch-grad-cam: {INSTALL_HINT}")
        self.module = module
        self.method = method
        self.class_names = list(module.class_names)
        self.class_index = self._class_index(class_)
        self.target_layer = self._layer(target_layer)
        network = module.describe_output()["network"]
        model_name = network.get("init_args", {}).get("model_name")
        if method == "gradcam" and model_name in FLATTENING_NETS:
            log.warning(
                "%s flattens its feature map into fully connected layers: Grad-CAM's averaged "
                "gradients can cancel there and give empty or misplaced maps; %s hirescam "
                "shows where the evidence lies.",
                model_name,
                options["method"],
            )

    def _class_index(self, class_: int | str | None) -> int | None:
        if class_ is None:
            return None
        if isinstance(class_, str) and class_ in self.class_names:
            return self.class_names.index(class_)
        digits = isinstance(class_, int | str) and str(class_).isdigit()
        if digits and int(class_) < len(self.class_names):
            return int(class_)
        raise ValueError(
            f"{self.options['class']} {class_!r} is not a class of this model: give one of "
            f"{self.class_names} or its index (0 to {len(self.class_names) - 1}), or leave it "
            "unset to explain each image's predicted class."
        )

    def _layer(self, name: str | None) -> str:
        net = self.module.net
        if name is None:
            return find_target_layer(net)
        name = name.removeprefix("net.")
        try:
            get_layer(net, name)
        except ValueError as error:
            raise ValueError(f"{self.options['target_layer']}: {error}") from None
        return name

    def heat_maps(self, images: torch.Tensor) -> tuple[np.ndarray, list[int]]:
        """Heat maps of prepared images at the network's input size.

        Args:
            images: ``N x C x h x w`` as the model takes them (the record's size, [0, 1]).

        Returns:
            float32 ``N x h x w`` in [0, 1], and the explained class of each image.
        """
        if self.class_index is None:
            with torch.inference_mode():
                classes = self.module(images.to(self.module.device)).argmax(dim=1).tolist()
        else:
            classes = [self.class_index] * len(images)
        layer = get_layer(self.module.net, self.target_layer)
        return grad_cam(self.module, images, layer, classes, self.method), classes

    def explain(self, images: torch.Tensor, originals: list[np.ndarray], sources: list[str]):
        """:class:`Explanation` per image, at each original image's size.

        Args:
            images: ``N x C x h x w`` prepared images.
            originals: ``N`` images as decoded (any dtype, ``H x W [x C]``), for the overlays.
            sources: ``N`` names (files, or ``<array N>``).

        Returns:
            A list of :class:`Explanation`.
        """
        maps, classes = self.heat_maps(images)
        found = []
        for heat, index, original, source in zip(maps, classes, originals, sources, strict=True):
            display = to_display(original)
            height, width = display.shape[:2]
            resized = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
            resized = np.clip(resized, 0.0, 1.0).astype(np.float32)
            found.append(
                Explanation(
                    resized,
                    cam_overlay(display, resized),
                    index,
                    self.class_names[index],
                    self.target_layer,
                    self.method,
                    source,
                )
            )
        return found

    def write(self, root: Path, images: torch.Tensor, paths: list[str], names: list[str]) -> int:
        """Write ``cams/<name>.png`` overlays of a batch of files under ``root``.

        Args:
            root: The prediction folder.
            images: The batch's prepared images.
            paths: Their files.
            names: Their outputs' names (the files' paths under the inputs' folder, without
                suffix).

        Returns:
            How many overlays were written.
        """
        originals = [read_image(path) for path in paths]
        explanations = self.explain(images, originals, list(paths))
        for explanation, name in zip(explanations, names, strict=True):
            save_png(root / "cams" / f"{name}.png", explanation.overlay)
        return len(paths)

    def describe(self) -> dict:
        """What ``prediction_info.json`` records of the explanations."""
        explained = "predicted" if self.class_index is None else self.class_names[self.class_index]
        return {"method": self.method, "target_layer": self.target_layer, "class": explained}
