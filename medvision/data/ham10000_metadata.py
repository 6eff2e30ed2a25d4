"""HAM10000's ``HAM10000_metadata.csv``: one record per image, every bad row named."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medvision.data.screening import BadFile, problem_report, screen_csv_rows

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
    records, problems = screen_csv_rows(
        path, "image_id", "lesion_id", ["dx"], _dx_problem, _record, LAYOUT_HINT
    )
    if not records and not problems:
        raise ValueError(f"{path}: has no rows.")
    return records, problems


def _dx(row: dict) -> str:
    return (row["dx"] or "").strip().lower()


def _dx_problem(row: dict) -> str | None:
    if _dx(row) not in DIAGNOSES:
        return f"unknown dx {row['dx']!r}; dx must be one of {', '.join(DIAGNOSES)}"
    return None


def _record(row: dict) -> HAM10000Record:
    return HAM10000Record(row["image_id"].strip(), row["lesion_id"].strip(), _dx(row))
