"""Writing result files whole or not at all: any file, PNG images and CSV tables.

Every writer goes through :func:`write_atomically`: a reader (or a later run) never sees a
half-written file. Files get the permissions a plain ``open()`` would give them (``0666`` less
the process's umask), so a lab's shared folder can read them.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def _process_umask() -> int:
    """The process's umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


#: Mode of every file written here: what ``open(path, "w")`` would create.
FILE_MODE = 0o666 & ~_process_umask()


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    A reader never sees a half-written file, and a killed process leaves no partial output under
    ``path``'s name: only a hidden ``.partial-*.tmp`` that no reader (nor Lightning's search for
    ``last`` checkpoints) mistakes for a result. The file gets :data:`FILE_MODE`.

    Args:
        path: Where the file ends up; its folder is created if missing.
        write: Writes the whole content to the path it is given. It must not infer a format
            from the temporary file's suffix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically.

    Args:
        path: The file to write.
        text: Its whole content.
    """
    write_atomically(path, lambda tmp: tmp.write_text(text))


def save_png(path: str | Path, array: np.ndarray) -> None:
    """Write an image array as PNG, atomically.

    Args:
        path: The ``.png`` file to write.
        array: uint8 ``H x W`` (gray) or ``H x W x 3`` (RGB), or uint16 ``H x W``.
    """
    write_atomically(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def write_csv(path: str | Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    """Write dict rows as CSV, atomically.

    Args:
        path: The ``.csv`` file to write.
        rows: One dict per row.
        fieldnames: The columns, in order; default: the first row's keys.
    """

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames or list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(path, write)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts of strings.

    Args:
        path: The ``.csv`` file to read.
    """
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
