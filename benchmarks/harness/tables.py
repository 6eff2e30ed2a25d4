"""Tables: declared once as columns, printed as Markdown, written as CSV or into a docs page."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple


def fmt(value: Any, pattern: str | Callable[[Any], str] = "{:.1f}") -> str:
    """``value`` formatted by ``pattern`` (a format string or a function).

    Args:
        value: the value; None (no value) shows as ``-``.
        pattern: a function of the value, or a ``"{:.3f}"``-style format (text is shown as
            it is).
    """
    if value is None:
        return "-"
    if callable(pattern):
        return pattern(value)
    return value if isinstance(value, str) else pattern.format(value)


def line(cells: Iterable[str]) -> str:
    """One Markdown table line: ``| a | b |``, an empty cell as ``| |``.

    Args:
        cells: the cells' text.
    """
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


class Column(NamedTuple):
    """One column of a table.

    Args:
        title: the header cell (also the CSV header).
        key: the row's key of the value (``test.f1``: ``row["test"]["f1"]``), or a function
            of the row; default: ``title``.
        pattern: the cell's format (see :func:`fmt`); None shows as ``-``, text as it is.
    """

    title: str
    key: str | Callable[[dict], Any] | None = None
    pattern: str | Callable[[Any], str] = "{}"

    def value(self, row: dict) -> Any:
        """The column's raw value in ``row`` (None when the row has none)."""
        key = self.title if self.key is None else self.key
        if callable(key):
            return key(row)
        for part in [key] if key in row else key.split("."):  # "test.f1": row["test"]["f1"]
            row = row.get(part) if isinstance(row, dict) else None
        return row

    def cell(self, row: dict) -> str:
        """The column's cell in ``row``, formatted."""
        return fmt(self.value(row), self.pattern)


class Table:
    """A table declared by its columns, in order.

    Args:
        *columns: the columns; a plain string ``"x"`` is ``Column("x")``.
    """

    def __init__(self, *columns: Column | str) -> None:
        self.columns = [Column(c) if isinstance(c, str) else c for c in columns]

    @property
    def titles(self) -> list[str]:
        """The header cells."""
        return [column.title for column in self.columns]

    def without(self, *titles: str) -> Table:
        """The same table less the named columns."""
        return Table(*(c for c in self.columns if c.title not in titles))

    def markdown(self, rows: Iterable[dict]) -> str:
        """The table in Markdown: header, separator, one line per row.

        Args:
            rows: dicts the columns read.
        """
        lines = [line(self.titles), "|---" * len(self.columns) + "|"]
        lines += [line(c.cell(row) for c in self.columns) for row in rows]
        return "\n".join(lines)

    def write_csv(self, path: Path, rows: Iterable[dict]) -> None:
        """The rows' raw values as CSV (header: the titles; None: empty), written atomically.

        Args:
            path: the ``.csv`` file.
            rows: dicts the columns read.
        """
        from medvision.utils.files import write_csv

        records = [{c.title: c.value(row) for c in self.columns} for row in rows]
        write_csv(path, records, fieldnames=self.titles)


def write_marked(
    page: Path, start: str, end: str, body: str, title: str | None = None, append: bool = True
) -> None:
    """Put ``body`` between the ``start`` and ``end`` marker lines of a docs page.

    The block written is ``start``, a blank line, ``body``, a blank line, ``end``; an earlier
    block between the same markers is replaced. The page is written atomically.

    Args:
        page: the Markdown file.
        start: the opening marker, e.g. ``<!-- ham10000-table:start -->``.
        end: the closing marker.
        body: Markdown.
        title: the heading of a new page, written when ``page`` does not exist.
        append: when the page lacks the markers, add the block at its end (True) or stop
            with an error naming the page and marker (False).
    """
    from medvision.utils.files import write_text

    block = f"{start}\n\n{body}\n\n{end}"
    if page.exists():
        text = page.read_text()
    elif title is not None:
        text = f"# {title}\n"
    else:
        sys.exit(f"{page} does not exist")
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    elif append:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    else:
        sys.exit(f"{page} has no {start} marker")
    write_text(page, text)
