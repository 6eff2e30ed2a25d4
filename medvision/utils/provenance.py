"""What a run was made with: package versions, hardware, the medvision git commit, the command."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

#: Distributions whose versions decide a run's numbers.
PACKAGES = (
    "medvision-lightning",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "segmentation-models-pytorch",
    "timm",
    "albumentations",
    "numpy",
    "opencv-python-headless",
    "jsonargparse",
    "wandb",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names``; None when it is not installed.

    torch's is ``torch.__version__``, which also names its build (``2.6.0+cu124``).

    Args:
        names: Distribution names as pip knows them (default :data:`PACKAGES`).
    """
    versions = {}
    for name in names:
        try:
            versions[name] = str(torch.__version__) if name == "torch" else metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(folder: str | Path | None = None) -> dict[str, object] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``folder``.

    Args:
        folder: A folder inside the checkout; None: medvision's source folder.

    Returns:
        ``{"commit": sha, "dirty": bool}`` (``dirty``: tracked files changed), or None when
        ``folder`` is not in a git checkout or git is not installed.
    """
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def hardware() -> dict[str, object]:
    """Python, OS, CPU count, and the CUDA/cuDNN versions and GPU names torch sees."""
    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": _cpu_count(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }


def _cpu_count() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()


def run_info() -> dict[str, object]:
    """Everything above plus the command line, for ``run_info.json`` in each run folder.

    ``git`` is medvision's own checkout (None for an installed wheel); ``workdir_git`` is the
    checkout the command ran in (your configs), when that is another one.
    """
    source, workdir = git_revision(), git_revision(Path.cwd())
    return {
        "command": sys.argv,
        "packages": package_versions(),
        "git": source,
        "workdir_git": workdir if workdir != source else None,
        "hardware": hardware(),
    }
