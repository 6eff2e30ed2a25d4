"""Image sizes as options give them: one side of a square, or ``[height, width]``."""

from __future__ import annotations

from collections.abc import Sequence


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``256`` -> ``(256, 256)``; ``[h, w]`` -> ``(h, w)``.

    Args:
        size: One side of a square, or ``(height, width)``, in pixels.

    Returns:
        ``(height, width)`` as ints.
    """
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)
