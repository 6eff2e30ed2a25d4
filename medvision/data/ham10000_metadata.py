"""HAM10000's ``HAM10000_metadata.csv``: one record per image, every bad row named."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from medvision.data.screening import BadFile, problem_report

#: The seven diagnosis codes of HAM10000's ``dx`` column, sorted.
DIAGNOSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

LAYOUT_HINT = (
    "Expected the HAM10000 layout: <data_dir>/images/ISIC_<id>.jpg, "
    "<data_dir>/masks/ISIC_<id>_segmentation.png (segmentation) and "
    "<data_dir>/HAM10000_metadata.csv (Harvard Dataverse doi:10.7910/DVN/DBW86T; masks from "
    "ISIC 2018 task 1)."
)


@dataclass(frozen=True)
class HAM10000Record:
    """One metadata row: the image file, its lesion (split group) and diagnosis code.

    Attributes:
        image_id: The image's name without suffix, e.g. ``ISIC_0027419``.
        lesion_id: The lesion it shows, e.g. ``HAM_0000118``; images of one lesion share it.
        dx: The diagnosis code, lower case, one of :data:`DIAGNOSES`.
    """

    image_id: str
    lesion_id: str
    dx: str


def read_metadata(path: Path) -> list[HAM10000Record]:
    """Rows of ``HAM10000_metadata.csv``; one error names every bad row (line and problem).

    Args:
        path: The metadata CSV.
    """
    records, problems = read_metadata_rows(path)
    if problems:
        raise ValueError(
            problem_report(
                [str(p) for p in problems],
                "bad metadata rows",
                f"dx must be one of {', '.join(DIAGNOSES)}; image_id and "
                "lesion_id must be given, image_id once.",
            )
        )
    return records


def read_metadata_rows(path: Path) -> tuple[list[HAM10000Record], list[BadFile]]:
    """Good rows of ``HAM10000_metadata.csv``, and a problem for each bad row.

    A row is bad with an unknown ``dx``, an empty ``image_id`` or ``lesion_id``, or an
    ``image_id`` an earlier row has. A missing file or column, or no rows, is an error.

    Args:
        path: The metadata CSV (columns ``lesion_id``, ``image_id``, ``dx``; others ignored).

    Returns:
        ``(records, problems)``: the good rows in file order, and a
        :class:`~medvision.data.screening.BadFile` per bad row naming its line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. {LAYOUT_HINT}")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"lesion_id", "image_id", "dx"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: no column {sorted(missing)}; found {reader.fieldnames}.")
        records, problems, seen = [], [], {}
        for line, row in enumerate(reader, start=2):
            problem = _row_problem(row, seen)
            if problem is not None:
                where = f"{path} line {line} ({(row['image_id'] or '').strip() or 'no image_id'})"
                problems.append(BadFile(where, problem))
                continue
            seen[row["image_id"].strip()] = line
            records.append(
                HAM10000Record(row["image_id"].strip(), row["lesion_id"].strip(), _dx(row))
            )
    if not records and not problems:
        raise ValueError(f"{path}: has no rows.")
    return records, problems


def _dx(row: dict) -> str:
    return (row["dx"] or "").strip().lower()


def _row_problem(row: dict, seen: dict[str, int]) -> str | None:
    """What is wrong with one metadata row (``seen``: image ids of earlier rows), or None."""
    image_id, lesion_id = (row["image_id"] or "").strip(), (row["lesion_id"] or "").strip()
    if not image_id or not lesion_id:
        return "image_id and lesion_id must both be given"
    if image_id in seen:
        return f"image_id {image_id} is already on line {seen[image_id]}; delete one of the rows"
    if _dx(row) not in DIAGNOSES:
        return f"unknown dx {row['dx']!r}; dx must be one of {', '.join(DIAGNOSES)}"
    return None
