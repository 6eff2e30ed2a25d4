"""Importing an object from its dotted path, as YAML's ``class_path`` names it."""

from __future__ import annotations

import importlib


def import_object(path: str):
    """The object a dotted path names: ``torch.nn.BCEWithLogitsLoss`` -> the class.

    Args:
        path: ``package.module.Name``.

    Raises:
        ValueError: naming ``path`` when its module or the name in it does not exist.
    """
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"{path!r} cannot be imported ({error})") from None
