"""Class names as datamodules and models take them: checked once, the same way everywhere."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

#: The message for as many ``class_names`` as ``num_classes`` asks for, not more or fewer.
COUNT_MESSAGE = "{count} class_names for num_classes={num_classes}"


def check_class_names(
    class_names: str | Sequence[str] | None,
    num_classes: int | None = None,
    *,
    binary_name: str | None = None,
    names_hint: str | None = None,
    count_message: str = COUNT_MESSAGE,
) -> list[str]:
    """The class names as a list of strings, checked.

    A single string is one name. Without names (None), ``num_classes`` says how many classes
    there are: one class is ``binary_name`` when given; otherwise the classes are named
    ``'0'``, ``'1'``, ... with a warning (the CLI links the names from the datamodule, so this
    only happens to a module built by hand).

    Args:
        class_names: The names as given, or None.
        num_classes: How many names there must be; None: any number (names then required).
        binary_name: The name of the one class when ``num_classes`` is 1 and no names are
            given; None: ``'0'`` with the warning.
        names_hint: Also require distinct, non-empty names, and say this after the error's
            ``give distinct, non-empty names;``. None: not checked.
        count_message: The error for a count other than ``num_classes``, formatted with
            ``count``, ``names`` and ``num_classes``.

    Raises:
        ValueError: naming ``class_names``: none given without ``num_classes``, empty or
            repeated names (with ``names_hint``), or a count other than ``num_classes``.
    """
    if isinstance(class_names, str):
        class_names = [class_names]
    if class_names is None:
        if num_classes is None:
            raise ValueError("class_names must be given: one name per class.")
        if num_classes == 1 and binary_name is not None:
            return [binary_name]
        warnings.warn(
            f"class_names not given: classes are reported as '0'..'{num_classes - 1}'. The CLI "
            "links them from the datamodule; pass class_names= when building the module by hand.",
            stacklevel=3,
        )
        return [str(i) for i in range(num_classes)]
    names = [str(name) for name in class_names]
    if names_hint is not None and (
        not names or not all(name.strip() for name in names) or len(set(names)) < len(names)
    ):
        raise ValueError(f"class_names {names}: give distinct, non-empty names; {names_hint}")
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(
            count_message.format(count=len(names), names=names, num_classes=num_classes)
        )
    return names
