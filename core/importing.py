"""Device and data-system exports: the importer contract (``physiotwin import``).

An `Importer` (registered by a plugin through ``register_importers``) reads one vendor
format into `ImportedRows`: events with times, kinds, values and units, each carrying
the row of the export it came from. Helpers for importers (domain-free):
`read_export_text`, `csv_sections`, `parse_number`, `parse_clock`, `rows_frame`,
`RowCollector` and `import_error` (one-line errors naming file, row and column).

The driver that picks importers, resolves clocks, merges files and writes the record is
`physiotwin.record_import` (kept apart so that this contract imports nothing that
imports the registry).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import ImportFileError

__all__ = ["Importer", "ImportedRows", "read_export_text", "csv_sections", "parse_number", "parse_clock", "rows_frame", "import_error",
           "ROW_COLUMNS", "RowCollector", "SNIFF_BYTES"]

ROW_COLUMNS = ("time", "kind", "value", "unit", "duration", "row")
"""The columns of `ImportedRows.frame` (``stream`` is optional)."""

SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class ImportedRows:
    """What an importer read from one file.

    ``frame`` has the columns ``time`` (datetime64: naive = the device's wall clock,
    tz-aware = absolute), ``kind``, ``value``, ``unit``, ``duration`` (minutes, NaN when
    absent) and ``row`` (the 1-based line or record number in the export, for
    provenance and messages), and optionally ``stream`` (a label of the part of the
    export whose rows are in time order, e.g. a section; default: one stream).
    ``notes`` are one-line remarks for the user (e.g. how many "High" readings were set
    to the sensor's upper limit). ``newest_first``: the export lists events in reverse
    order of occurrence (rows are then read backwards to resolve clock changes)."""

    frame: pd.DataFrame
    notes: tuple[str, ...] = ()
    newest_first: bool = False


@dataclass(frozen=True)
class Importer:
    """A reader of one export format.

    ``read(path)`` returns `ImportedRows` or raises `physiotwin.errors.ImportFileError`
    naming the row and column. ``sniff(path, head)`` gets the first 64 KiB of the file
    as text and says whether the file looks like this format (format guessing)."""

    name: str
    description: str
    read: Callable[[Path], ImportedRows]
    sniff: Callable[[Path, str], bool] | None = None
    suffixes: tuple[str, ...] = (".csv",)
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"importer name {self.name!r} must be a Python identifier")


# --------------------------------------------------------------------------- helpers for importers


def import_error(source, row: int | None, column: str | None, message: str) -> ImportFileError:
    """A one-line `ImportFileError`: ``FILE, row N, column 'C': message``."""
    name = Path(str(source)).name
    where = name + (f", row {row}" if row is not None else "") + (f", column {column!r}" if column else "")
    text = " ".join(f"{where}: {message}".split())
    return ImportFileError(text, source=name, row=row, column=column)


def read_export_text(path: Path) -> str:
    """The text of an export (UTF-8, a BOM allowed), or a one-line error."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise import_error(path, None, None, "no such file") from None
    except UnicodeDecodeError:
        raise import_error(path, None, None, "not UTF-8 text") from None
    except OSError as err:
        raise import_error(path, None, None, f"cannot read: {err.strerror}") from None


def csv_sections(path: Path, text: str, is_header: Callable[[list[str]], bool], delimiter: str = ",",
                 is_skipped: Callable[[list[str]], bool] | None = None) -> list[tuple[int, list[str], list[tuple[int, list[str]]]]]:
    """Split a CSV export into sections ``(header_line, header, [(line, cells)])``.

    A line for which ``is_header(cells)`` holds starts a section; lines before the first
    header (a preamble) and blank lines are skipped; a line with fewer or more cells than
    its header (a truncated or garbled export) is an error naming the line and column.
    Trailing empty cells beyond the header are allowed; lines for which ``is_skipped(cells)``
    holds (section separators) are skipped."""
    sections: list = []
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        for cells in reader:
            line = reader.line_num
            cells = [c.strip() for c in cells]
            if not any(cells) or (is_skipped is not None and is_skipped(cells)):
                continue
            if is_header(cells):
                sections.append((line, cells, []))
            elif sections:
                _check_width(path, line, cells, sections[-1][1])
                sections[-1][2].append((line, cells[:len(sections[-1][1])]))
    except csv.Error as err:
        raise import_error(path, reader.line_num, None, f"not a CSV line: {err}") from None
    if not sections:
        raise import_error(path, None, None, "no header line of this format found")
    return sections


def _check_width(path: Path, line: int, cells: list[str], header: list[str]) -> None:
    if len(cells) < len(header):
        raise import_error(path, line, header[len(cells)],
                           f"the row ends after {len(cells)} of {len(header)} columns (a truncated export?)")
    if any(cells[len(header):]):
        raise import_error(path, line, None, f"the row has {len(cells)} cells, the header {len(header)}")


def parse_number(path: Path, row: int, column: str, raw: str, decimal: str = ".") -> float:
    """A finite number from a cell (``decimal`` ``","`` for comma-decimal exports)."""
    text = raw.strip().replace(decimal, ".") if decimal != "." else raw.strip()
    try:
        value = float(text)
    except ValueError:
        raise import_error(path, row, column, f"not a number: {raw!r}") from None
    if not np.isfinite(value):
        raise import_error(path, row, column, f"not a finite number: {raw!r}")
    return value


def parse_clock(path: Path, row: int, column: str, raw: str, formats: Sequence[str]) -> datetime:
    """A time from a cell, trying the ``strptime`` formats in turn (ISO-8601 when ``"iso"``)."""
    text = raw.strip()
    for fmt in formats:
        try:
            return datetime.fromisoformat(text) if fmt == "iso" else datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise import_error(path, row, column, f"not a time of the form {' or '.join(formats)}: {raw!r}")


def rows_frame(events: Iterable[tuple]) -> pd.DataFrame:
    """An `ImportedRows.frame` from ``(time, kind, value, unit, duration, row[, stream])`` tuples."""
    events = list(events)
    columns = list(ROW_COLUMNS) + (["stream"] if events and len(events[0]) > len(ROW_COLUMNS) else [])
    frame = pd.DataFrame(events, columns=columns)
    aware = {_aware(t) for t in frame["time"]}
    if len(aware) > 1:
        raise ValueError("rows_frame: times mix naive (device clock) and tz-aware moments")
    frame["time"] = pd.to_datetime(frame["time"], utc=aware == {True})
    frame["value"] = frame["value"].astype(float)
    frame["duration"] = frame["duration"].astype(float)
    frame["row"] = frame["row"].astype(np.int64)
    return frame


class RowCollector:
    """Collects the events an importer reads and counts what it leaves out, for `ImportedRows`.

    ``add(time, kind, value, unit, row, duration=nan, stream=0)`` keeps an event;
    ``count(note)`` counts one occurrence of a remark (``"skipped: notes"``); ``rows()``
    returns the `ImportedRows`, each remark as ``"<n> x <remark>"``."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.counts: dict[str, int] = {}

    def add(self, time, kind: str, value: float, unit: str, row: int, duration: float = float("nan"),
            stream=0) -> None:
        self.events.append((time, kind, float(value), unit, float(duration), int(row), stream))

    def count(self, note: str) -> None:
        self.counts[note] = self.counts.get(note, 0) + 1

    def rows(self, newest_first: bool = False, notes: Sequence[str] = ()) -> ImportedRows:
        counted = tuple(f"{n} x {note}" for note, n in self.counts.items())
        return ImportedRows(rows_frame(self.events), tuple(notes) + counted, newest_first)


def _aware(moment) -> bool:
    return getattr(moment, "tzinfo", None) is not None
