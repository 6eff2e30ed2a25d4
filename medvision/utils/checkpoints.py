"""Reading checkpoints and weight files without running code in them.

:func:`load_checkpoint` is ``torch.load(..., weights_only=True)`` with clear errors: a file that
smuggles in pickled code is refused, a truncated one is named as such.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint or weight file holds pickled objects that could run code when loaded."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """Read a checkpoint or state dict with ``weights_only=True``, so no code in it can run.

    Tensors, numbers, strings and plain containers load; anything else (a pickled function
    call, an arbitrary class) raises :class:`UnsafeCheckpointError` naming the file. A file
    that is not a complete PyTorch archive (truncated by a crash, or not a checkpoint at all)
    raises ``ValueError`` naming it.

    Args:
        path: The ``.ckpt``/``.pt`` file; a missing one raises ``FileNotFoundError``.
        map_location: Where tensors go, as for ``torch.load`` (``"cpu"``, a device, a mapping).
        mmap: Memory-map the file instead of reading it whole (large weight files).

    Returns:
        What the file holds: a Lightning checkpoint dict or a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        reason = _unpickling_reason(exc)
        raise UnsafeCheckpointError(
            f"{path}: refused to load. It holds pickled objects beyond tensors and plain "
            f"containers, which could run code when unpickled ({reason}). medvision and "
            "Lightning checkpoints never need them. Use a checkpoint from a source you trust; "
            "if you do trust this one, inspect it yourself with torch.load(weights_only=False)."
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}). "
            "It may be truncated or another kind of file; use another checkpoint."
        ) from exc


def _unpickling_reason(exc: Exception) -> str:
    """The line of torch's weights_only error that names the refused global."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "nsupported" in line]
    return (named or lines or [type(exc).__name__])[0]
