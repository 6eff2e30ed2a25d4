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


def lazy_attributes(package: str, where: dict[str, str]):
    """``__getattr__`` and ``__dir__`` for a package whose names load on first use.

    A package ``__init__`` that re-exports its modules' classes this way stays light to
    import: ``import medvision.models.nets`` does not load the task modules, and YAML's
    ``class_path: medvision.models.SegmentationModule`` still resolves.

    Args:
        package: The package's ``__name__``.
        where: Each exported name -> the submodule (relative to ``package``) defining it.
    """

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__
