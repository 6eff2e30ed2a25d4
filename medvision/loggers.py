"""Weights & Biases that never blocks on a login prompt."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

log = logging.getLogger(__name__)


def wandb_api_key_configured() -> bool:
    """True when W&B can authenticate without asking: ``WANDB_API_KEY`` or a netrc entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger``, offline when no API key is configured.

    ``offline=None`` (default) decides from the environment: online with ``WANDB_API_KEY`` or a
    ``wandb login`` netrc entry, offline otherwise (also when ``WANDB_MODE=offline``). Offline runs
    are written under ``save_dir`` and the command to upload them is logged at the end.
    """

    def __init__(
        self,
        project: str = "medvision",
        save_dir: str = "runs",
        name: str | None = None,
        group: str | None = None,
        offline: bool | None = None,
        log_model: bool | str = False,
        **kwargs,
    ) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_configured()
            if offline:
                log.warning(
                    "W&B: no API key configured (WANDB_API_KEY or `wandb login`): "
                    "logging offline under %s",
                    save_dir,
                )
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(
            project=project,
            save_dir=save_dir,
            name=name,
            group=group,
            offline=offline,
            log_model=log_model,
            **kwargs,
        )
        self._is_offline = offline

    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._is_offline and self._experiment is not None:
            run_dir = Path(self._experiment.dir).parent
            log.warning(
                "W&B offline run saved in %s; upload it with: wandb sync %s", run_dir, run_dir
            )
