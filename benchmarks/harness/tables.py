"""Tables declared by their columns: Markdown, CSV, and a docs page's block between markers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple


class Column(NamedTuple):
    """One column: its ``title`` (header and CSV header); ``key``, the row's key of the value
    (``test.f1``: ``row["test"]["f1"]``) or a function of the row (default: the title); and
    ``pattern``, the cell's ``"{:.3f}"``-style format or a function of the value. No value
    shows as ``-``, text as it is."""

    title: str
    key: str | Callable[[dict], Any] | None = None
    pattern: str | Callable[[Any], str] = "{}"

    def value(self, row: dict) -> Any:
        """The column's raw value in ``row`` (None when the row has none)."""
        key = self.title if self.key is None else self.key
        if callable(key):
            return key(row)
        for part in [key] if key in row else key.split("."):
            row = row.get(part) if isinstance(row, dict) else None
        return row

    def cell(self, row: dict) -> str:
        """The column's cell in ``row``, formatted."""
        value = self.value(row)
        if value is None:
            return "-"
        if callable(self.pattern):
            return self.pattern(value)
        return value if isinstance(value, str) else self.pattern.format(value)


class Table:
    """A table declared by its columns, in order (a string ``"x"`` is ``Column("x")``)."""

    def __init__(self, *columns: Column | str) -> None:
        self.columns = [Column(c) if isinstance(c, str) else c for c in columns]
        self.titles = [column.title for column in self.columns]

    def without(self, *titles: str) -> Table:
        """The same table less the named columns."""
        return Table(*(c for c in self.columns if c.title not in titles))

    def markdown(self, rows: Iterable[dict]) -> str:
        """Header, separator and one line per row (an empty cell as ``| |``)."""

        def line(cells: Iterable[str]) -> str:
            return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"

        lines = [line(self.titles), "|---" * len(self.columns) + "|"]
        return "\n".join(lines + [line(c.cell(row) for c in self.columns) for row in rows])

    def write_csv(self, path: Path, rows: Iterable[dict]) -> None:
        """The rows' raw values as CSV (header: the titles; None: empty), written atomically."""
        from medvision.utils.files import write_csv

        records = [{c.title: c.value(row) for c in self.columns} for row in rows]
        write_csv(path, records, fieldnames=self.titles)


def write_marked(page: Path, start: str, end: str, body: str, title=None, append=True) -> None:
    """Put ``body`` between the ``start`` and ``end`` marker lines of a docs page (atomically),
    replacing an earlier block. A page without the markers gets the block at its end
    (``append``) or stops the script; a missing page is begun with ``# title``."""
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


def publish(text: str, page: Path | None, markers: tuple[str, str], command: str | None = None):
    """Print ``text``; with a ``page`` (``--write-docs``), also put it between its ``markers``,
    under ``command`` in a code block."""
    print(text)
    if page is not None:
        body = text if command is None else f"```\n{command}\n```\n\n{text}"
        write_marked(page, *markers, body, title=page.stem.replace("_", " ").capitalize())
        print(f"Written to {page}", file=sys.stderr)
