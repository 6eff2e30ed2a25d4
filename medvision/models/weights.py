"""Getting weights into networks: hub downloads with an offline hint, and local weight files."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from medvision.utils.checkpoints import load_checkpoint

log = logging.getLogger(__name__)


@contextmanager
def explain_download_failure(what: str, fix: str) -> Iterator[None]:
    """Turn a failed weight download inside the block into a ``RuntimeError`` that says ``fix``.

    Catches ``OSError``: urllib's ``URLError``, requests' and huggingface_hub's connection and
    missing-cache errors all derive from it.

    Args:
        what: What was being fetched, e.g. ``ImageNet weights of resnet34``.
        fix: What the user can do instead, e.g. ``Set encoder_weights: null.``
    """
    try:
        yield
    except OSError as exc:
        raise RuntimeError(
            f"Could not fetch {what} ({type(exc).__name__}: {exc}). Offline? {fix} Weights "
            "downloaded once online are cached under TORCH_HOME / HF_HOME."
        ) from exc


def load_pretrained_weights(net: nn.Module, path: str | Path, prefix: str = "net.") -> None:
    """Load a state dict, or a Lightning checkpoint of a medvision module, into ``net``.

    Checkpoint keys starting with ``prefix`` (the module attribute holding the network) are
    taken without it. Tensors whose shape differs from ``net``'s (a classifier layer for another
    number of classes) are skipped and stay freshly initialized; they are logged. Any other
    missing or unexpected key is an error naming the file.

    Args:
        net: The network to load into, in place.
        path: A state dict file, or a ``.ckpt`` (read with ``weights_only=True``).
        prefix: In a checkpoint, the prefix of the network's keys (the module attribute
            holding it, ``net.``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_weights {path} does not exist.")
    state = load_checkpoint(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = {
            key.removeprefix(prefix): value
            for key, value in state["state_dict"].items()
            if key.startswith(prefix)
        }
    own = net.state_dict()
    skipped = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    for key in skipped:
        del state[key]
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not fit this network: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}{' (and more)' if len(missing) > 5 or len(unexpected) > 5 else ''}. "
            "Use weights of the same architecture (model_name)."
        )
    if skipped:
        log.info("%s: kept fresh weights for %s (shapes differ)", path, ", ".join(skipped))
    log.info("Loaded weights from %s", path)
