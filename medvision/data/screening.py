"""Screening input files before training: decode each once, collect every problem, report them.

A :class:`BadFile` is one unusable file and why. :func:`scan_files` runs a check over many
files in a thread pool and returns the good ones and the bad ones, so that a datamodule can
stop with one error listing them all (or leave them out, see ``bad_files``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from medvision.data.io import (
    ImageReadError,
    binarize_mask,
    read_image,
    read_label_image,
    read_label_mask,
)

T = TypeVar("T")
#: What a datamodule does with bad input files: stop with one error, or leave them out.
BadFiles = Literal["error", "exclude"]


@dataclass(frozen=True)
class BadFile:
    """One input file that cannot be used, and why.

    Attributes:
        path: The file.
        problem: What is wrong with it and what to do about it (without the path).
    """

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def bad_file(path: str | Path, message: str) -> BadFile:
    """A :class:`BadFile` from an error message that may start with ``"<path>: "``.

    Args:
        path: The file.
        message: The error message; a leading ``"<path>: "`` is dropped.
    """
    return BadFile(str(path), message.removeprefix(f"{path}: "))


def scan_files(
    items: Sequence[T], check: Callable[[T], object], path_of: Callable[[T], Path] = Path
) -> tuple[list[T], list[BadFile]]:
    """Run ``check`` on every item once, in a thread pool: ``(good items, bad files)``.

    For decoding a whole dataset once up front, so that every bad file is reported together.

    Args:
        items: What to check (image files, image/mask pairs, ...).
        check: Called on each item; a ``ValueError`` it raises
            (:class:`~medvision.data.io.ImageReadError` included) marks the item bad.
        path_of: The file to report for a bad item whose error has no ``path`` (an
            ``ImageReadError``'s ``path``, e.g. the mask of a pair, wins).

    Returns:
        The good items in their order, and a :class:`BadFile` per bad one.
    """

    def problem(item: T) -> BadFile | None:
        try:
            check(item)
        except ValueError as exc:
            return bad_file(getattr(exc, "path", None) or path_of(item), str(exc))
        return None

    with ThreadPoolExecutor(default_num_workers()) as pool:
        found = list(pool.map(problem, items))
    good = [item for item, bad in zip(items, found, strict=True) if bad is None]
    return good, [bad for bad in found if bad is not None]


def check_image(path: Path) -> None:
    """Decode one image (see :func:`~medvision.data.io.read_image`); raise if it cannot be.

    Args:
        path: The image file.
    """
    read_image(path)


def check_pair(
    pair: tuple[Path, Path | None], same_size: bool = True, num_classes: int = 1
) -> None:
    """Decode an image and its mask (when not ``None``): mask valid, and of the same size.

    Args:
        pair: ``(image, mask or None)``.
        same_size: Refuse a mask of another height/width than its image.
        num_classes: 1: the mask must be binary (:func:`~medvision.data.io.binarize_mask`);
            2 or more: a label map of that many classes
            (:func:`~medvision.data.io.read_label_mask`).
    """
    image = read_image(pair[0])
    if pair[1] is not None:
        mask = read_mask(pair[1], num_classes)
        if same_size:
            check_same_size(pair[0], image, pair[1], mask)


def read_mask(path: Path, num_classes: int = 1) -> np.ndarray:
    """A mask file as uint8 ``H x W``: 0/1 when ``num_classes`` is 1, else class indices.

    Args:
        path: The mask file.
        num_classes: 1 (binary) or the number of classes of a label map, background included.

    Raises:
        ImageReadError: naming ``path``, for a mask that is not binary (not a label map of
            ``num_classes`` classes), or unreadable.
    """
    if num_classes == 1:
        return binarize_mask(read_image(path), path)
    return read_label_mask(read_label_image(path), path, num_classes)


def distinct_stems(pairs: list[tuple]) -> tuple[list[tuple], list[BadFile]]:
    """``(image, ...)`` items whose images differ in file stem, and a problem for the others.

    Segmentation writes ``<stem>.png`` per image, so ``a.png`` after ``a.jpg`` would overwrite
    its outputs: the later one is refused, naming the first.

    Args:
        pairs: Tuples whose first element is the image file, in order.

    Returns:
        The kept items, and a :class:`BadFile` for each refused one.
    """
    first: dict[str, Path] = {}
    kept, clashes = [], []
    for pair in pairs:
        taken = first.setdefault(pair[0].stem, pair[0])
        if taken == pair[0]:
            kept.append(pair)
        else:
            clashes.append(
                BadFile(
                    str(pair[0]),
                    f"has the same name as {taken.name}, and both would be written as "
                    f"{pair[0].stem}.png. Rename one of them.",
                )
            )
    return kept, clashes


def pair_by_key(
    images: Sequence[tuple[str, Path]],
    masks: Mapping[str, Path],
    mask_named: Callable[[str], str],
    image_named: Callable[[str], str] | None,
) -> tuple[list[tuple[Path, Path]], list[BadFile]]:
    """Images and masks paired by a key (file name, stem), and each file without its partner.

    Args:
        images: ``(key, image file)``, in the order the pairs are wanted (two images may share
            a key, and then a mask).
        masks: Key -> mask file.
        mask_named: Where the mask of a key would be, for the problem of an image without it
            (``no mask <mask_named(key)>. Add the mask or remove the image.``).
        image_named: Likewise for a mask without its image; None: such masks are not
            reported (predict scores only the images it is given).

    Returns:
        ``(pairs, unpaired)``: ``(image, mask)`` in the order of ``images``, and a
        :class:`BadFile` per image without a mask, then per mask without an image.
    """
    unpaired = [
        BadFile(str(image), f"no mask {mask_named(key)}. Add the mask or remove the image.")
        for key, image in images
        if key not in masks
    ]
    if image_named is not None:
        keys = {key for key, _ in images}
        unpaired += [
            BadFile(str(mask), f"no image {image_named(key)}. Add the image or remove the mask.")
            for key, mask in masks.items()
            if key not in keys
        ]
    return [(image, masks[key]) for key, image in images if key in masks], unpaired


def output_name(path: str | Path, root: str | Path | None = None) -> str:
    """The name a predicted input's outputs get: its path under ``root`` without the suffix.

    ``root/a/x.tif`` -> ``a/x`` (written as ``masks/a/x.png``), ``root/b/ct.nii.gz`` ->
    ``b/ct``, a DICOM series folder ``root/p1/series`` -> ``p1/series``; an input outside
    ``root`` (or without one) keeps its own name only. Patient-per-folder layouts keep their
    folders, so ``a/x.tif`` and ``b/x.tif`` never overwrite each other's outputs.

    Args:
        path: The input file, or series folder.
        root: The folder the inputs were found in.
    """
    path = Path(path)
    relative = Path(path.name)
    if root is not None and path != Path(root) and path.is_relative_to(root):
        relative = path.relative_to(root)
    name = relative.name
    if name.lower().endswith(".nii.gz"):
        name = name[: -len(".nii.gz")]
    elif not path.is_dir():
        name = Path(name).stem
    return (relative.parent / name).as_posix()


def distinct_names(
    items: list[T], root: Path, path_of: Callable[[T], Path] = Path
) -> tuple[list[T], list[BadFile]]:
    """Items whose :func:`output_name` differ, and a problem for each later one that clashes.

    ``a/x.png`` after ``a/x.jpg`` would overwrite its outputs; ``a/x.png`` and ``b/x.png``
    do not clash.

    Args:
        items: What to predict, in order.
        root: The folder they were found in.
        path_of: The input file (or folder) of an item.

    Returns:
        The kept items, and a :class:`BadFile` for each refused one.
    """
    first: dict[str, Path] = {}
    kept, clashes = [], []
    for item in items:
        path = path_of(item)
        name = output_name(path, root)
        taken = first.setdefault(name, path)
        if taken == path:
            kept.append(item)
        else:
            clashes.append(
                BadFile(
                    str(path),
                    f"has the same name as {taken.name} in its folder, and both would be "
                    f"written as {name}. Rename one of them.",
                )
            )
    return kept, clashes


def problem_report(problems: Sequence[str], what: str, fix: str, max_listed: int = 10) -> str:
    """One error message for many bad files: a count, the first ``max_listed``, and the fix.

    Args:
        problems: One line per bad file (``str(BadFile)``).
        what: What they are, after the count (e.g. ``"bad image/mask pairs"``).
        fix: The last line: what to do about them.
        max_listed: Most problems listed; the rest are counted.

    Returns:
        The message.
    """
    listed = "\n  ".join(problems[:max_listed])
    more = f"\n  ... and {len(problems) - max_listed} more" if len(problems) > max_listed else ""
    return f"{len(problems)} {what}:\n  {listed}{more}\n{fix}"


def default_num_workers() -> int:
    """Loader workers that fit the machine: one per usable CPU core, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(8, cores)


def check_same_size(image_path: Path, image: np.ndarray, mask_path: Path, mask: np.ndarray):
    """Raise an ``ImageReadError`` naming both files when image and mask differ in height/width.

    Args:
        image_path: The image file, named in the error.
        image: Its decoded array, ``H x W`` or ``H x W x C``.
        mask_path: The mask file, named in the error (and the error's ``path``).
        mask: Its decoded array.
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ImageReadError(
            f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image {image_path} is "
            f"{image.shape[0]}x{image.shape[1]} (height x width). Re-export the mask at the "
            "image's size, or remove the pair.",
            mask_path,
        )


def screen_csv_rows(
    path: Path,
    image_column: str,
    group_column: str,
    other_columns: Sequence[str],
    problem: Callable[[dict[str, str]], str | None],
    record: Callable[[dict[str, str]], T],
    layout_hint: str,
) -> tuple[list[T], list[BadFile]]:
    """The records of a metadata CSV's good rows (one row per image), and each bad row's problem.

    A row is bad when its image or group cell is empty, when its image is an earlier row's
    (the problem names that row's line), or when ``problem`` finds something wrong with it.
    A missing file or column is an error (``FileNotFoundError`` with ``layout_hint``,
    ``ValueError`` naming the columns).

    Args:
        path: The CSV file, with a header line.
        image_column: The column naming each row's image file or id (unique per row).
        group_column: The column of the group the image belongs to (a lesion, a patient).
        other_columns: Further columns the CSV must have.
        problem: What is wrong with a row whose image and group are given, or None.
        record: The record of a good row.
        layout_hint: The expected layout, said when the file is missing.

    Returns:
        ``(records, problems)``: the good rows' records in file order, and a
        :class:`BadFile` per bad row naming its line (``<path> line <n> (<image>)``).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. {layout_hint}")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = {image_column, group_column, *other_columns}
        missing = columns - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: no column {sorted(missing)}; found {reader.fieldnames}.")
        records, problems, seen = [], [], {}
        for line, row in enumerate(reader, start=2):
            image, group = ((row[column] or "").strip() for column in (image_column, group_column))
            if not image or not group:
                found = f"{image_column} and {group_column} must both be given"
            elif image in seen:
                found = f"{image_column} {image} is already on line {seen[image]}"
                found += "; delete one of the rows"
            else:
                found = problem(row)
            if found is not None:
                where = f"{path} line {line} ({image or f'no {image_column}'})"
                problems.append(BadFile(where, found))
                continue
            seen[image] = line
            records.append(record(row))
    return records, problems
