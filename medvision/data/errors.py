"""The error every image reader raises for a file it cannot use."""

from __future__ import annotations

from pathlib import Path


class ImageReadError(ValueError):
    """A file could not be read as the image it should be; the message names the file and a fix.

    ``path`` is the offending file (the message starts with it), so that a scan of many files
    can list each bad one (see :func:`medvision.data.screening.scan_files`).

    Args:
        message: What is wrong and what to do, starting with the file's path.
        path: The offending file.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)
