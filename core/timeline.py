"""Event timelines: meals, insulin doses and sensor readings, read from a table.

A timeline is a list of *events*. Each event has a `time`, a `kind` (``carbs``,
``bolus``, ``basal``, ``cgm``, or any kind a plugin registers), a `value` with
its `unit`, and an optional `duration` in minutes. The reader checks every cell
once, at the boundary, converts values to the kind's canonical unit and reports
the first problem as a one-line `TimelineError` that names the file, the row and
the field:

    meals.csv, row 4, field 'value': not a number: 'abc'

## CSV

```text
# start: 2026-01-05T07:00
time,kind,value,unit,duration
0,basal,0.9,U/h,
30,carbs,45,g,15
30,bolus,4.5,U,
```

* The header names the columns `time,kind,value,unit` and optionally
  `duration` and `source` (provenance text, kept for people, e.g. the file and row
  of the device export an event was imported from), in any order, lowercase. Any
  other column is an error. A header alone is a timeline with no events (a baseline
  run); a file without a header is an error.
* Cells are stripped of surrounding whitespace. Blank lines are skipped. Lines
  starting with `#` are comments, except `# start: <ISO-8601>` (or
  `# start = <ISO-8601>`), which sets the absolute start of the timeline.
* Quoted cells are allowed, but a record must fit on one line.
* `row` in messages is the 1-based line number in the file (the header is
  line 1 when nothing precedes it).

## TOML (file suffix `.toml`)

```toml
start = 2026-01-05T07:00:00      # optional; a string works too
[[event]]
time = 30
kind = "carbs"
value = 45
unit = "g"
duration = 15
```

Each `[[event]]` table takes the keys `time`, `kind`, `value`, `unit` and
optionally `duration`; messages name the 1-based index of the table
(``scenario.toml, event 3, field 'unit': ...``). Other top-level keys are ignored,
so a timeline can live inside a larger scenario file.

## Fields

* `time`: minutes since the start (a finite number >= 0), or ISO-8601
  timestamps (`2026-01-05T07:30`, `2026-01-05 07:30:00`), the same style in
  every row. With timestamps the start is the earliest timestamp unless a start
  is given (the `start` argument wins over the file's start); a timestamp before
  the start is an error. With minutes, a given start is kept as `Timeline.start`
  (the absolute time of minute 0) and is otherwise `None`.
* Time zones: timestamps carrying a UTC offset are converted to UTC and stored
  naive; rows must not mix offset-carrying and naive timestamps (error naming the
  row). A start with an offset is converted to naive UTC the same way.
* `value`: a finite number in `[minimum, maximum]` of the kind, checked after
  conversion to the kind's canonical unit.
* `unit`: required; any pint unit of the kind's dimension (using the kind's pint
  context, e.g. ``glucose`` for `mmol/L` -> `mg/dL`).
* `duration`: optional, minutes, finite and > 0; an empty cell means absent
  (`NaN`). Kinds with ``duration="forbidden"`` reject it.

Events are stable-sorted by time, so rows may come in any order.
"""

from __future__ import annotations

import csv
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import TimelineError
from .kinds import DURATION_RULES, TimelineKind
from .units import UnitError, conversion, parse_unit

__all__ = [
    "TimelineKind",
    "TimelineError",
    "Timeline",
    "read_timeline",
    "timeline_from_frame",
    "COLUMNS",
]

COLUMNS = ("time", "kind", "value", "unit", "duration", "source")
"""All columns of a timeline table; `duration` and `source` (provenance, e.g. the row of a
device export an event was imported from; not interpreted) are optional."""

_REQUIRED = COLUMNS[:4]
_COLUMNS_HINT = "columns are time,kind,value,unit[,duration][,source]"
_START_COMMENT = re.compile(r"#\s*start\s*[:=]\s*(.*?)\s*")
_ABSENT = object()  # a TOML key that is not there


def _default_kinds() -> Mapping[str, TimelineKind]:
    from physiotwin.registry import timeline_kinds

    return timeline_kinds()


# --------------------------------------------------------------------------- errors


class _Invalid(Exception):
    """One bad cell, before we know which file and row it came from."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(frozen=True)
class _Where:
    """Names the source of events in messages: ``meals.csv, row 4``."""

    source: str
    label: str = "row"  # "row" for CSV and DataFrames, "event" for TOML

    def error(self, row: int | None, field: str | None, message: str) -> TimelineError:
        parts = [self.source]
        if row is not None:
            parts.append(f"{self.label} {row}")
        if field is not None:
            parts.append(f"field {field!r}")
        text = ", ".join(parts) + ": " + message
        return TimelineError(_one_line(text), source=self.source, row=row, field=field)

    def file_error(self, message: str) -> TimelineError:
        return self.error(None, None, message)


def _one_line(text: str) -> str:
    return " ".join(text.split("\n"))


# --------------------------------------------------------------------------- timeline


@dataclass(frozen=True, eq=False)
class Timeline:
    """Validated events, stable-sorted by time, values in canonical units.

    * `time`: float64 minutes since `start`.
    * `kind`: object array of kind names.
    * `value`: float64, in the kind's canonical unit.
    * `duration`: float64 minutes, `NaN` where not given.
    * `row`: int64, the row (CSV, DataFrame) or event (TOML) number of each event,
      for messages from later stages: use `error`.
    * `source`: file name, or ``"<DataFrame>"``.
    * `start`: absolute time of minute 0 when known (naive, UTC if the input
      carried offsets), else `None`.
    * `kinds`: the kinds the timeline was checked against (gives `to_frame` its
      units); `row_label`: ``"row"`` or ``"event"``, used by `error`.

    Arrays are read-only. Timelines compare by identity; compare arrays or
    `to_frame()` to compare contents.
    """

    time: np.ndarray
    kind: np.ndarray
    value: np.ndarray
    duration: np.ndarray
    row: np.ndarray
    source: str
    start: datetime | None
    kinds: Mapping[str, TimelineKind] | None = field(default=None, repr=False)
    row_label: str = "row"

    def __post_init__(self):
        arrays = {
            "time": np.asarray(self.time, dtype=np.float64),
            "kind": np.asarray(self.kind, dtype=object),
            "value": np.asarray(self.value, dtype=np.float64),
            "duration": np.asarray(self.duration, dtype=np.float64),
            "row": np.asarray(self.row, dtype=np.int64),
        }
        lengths = {name: a.shape for name, a in arrays.items()}
        if len(set(lengths.values())) != 1 or arrays["time"].ndim != 1:
            raise ValueError(f"Timeline arrays must be 1-d and of equal length, got {lengths}")
        for name, array in arrays.items():
            array = array.copy() if array is getattr(self, name) else array
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def minute_of_day(self) -> float:
        """The minute of the day at time 0 (0 when the timeline has no absolute start)."""
        s = self.start
        return 0.0 if s is None else s.hour * 60.0 + s.minute + s.second / 60.0

    @classmethod
    def empty(
        cls,
        source: str = "<empty>",
        start: datetime | None = None,
        kinds: Mapping[str, TimelineKind] | None = None,
        row_label: str = "row",
    ) -> Timeline:
        """A timeline with no events (a file with a header only; `simulate` without a timeline)."""
        nothing = np.zeros(0)
        return cls(nothing, np.zeros(0, dtype=object), nothing, nothing, np.zeros(0, dtype=np.int64),
                   source=source, start=start, kinds=kinds, row_label=row_label)

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}: {n}" for k, n in zip(*np.unique(self.kind.astype(str), return_counts=True)))
        start = f", start={self.start.isoformat()}" if self.start else ""
        return f"Timeline({len(self)} events from {self.source!r}{start}; {counts or 'empty'})"

    def select(self, kind: str | TimelineKind) -> Timeline:
        """Events of one kind (possibly none), in time order."""
        name = kind.name if isinstance(kind, TimelineKind) else kind
        return self.where(np.array([k == name for k in self.kind], dtype=bool))

    def where(self, mask: np.ndarray) -> Timeline:
        """The events where ``mask`` (bool per event) is true, in time order."""
        mask = np.asarray(mask, dtype=bool)
        return Timeline(
            time=self.time[mask],
            kind=self.kind[mask],
            value=self.value[mask],
            duration=self.duration[mask],
            row=self.row[mask],
            source=self.source,
            start=self.start,
            kinds=self.kinds,
            row_label=self.row_label,
        )

    def to_frame(self) -> pd.DataFrame:
        """Columns `time,kind,value,unit,duration`, in canonical units (time in minutes)."""
        kinds = self.kinds if self.kinds is not None else _default_kinds()
        units = [kinds[k].unit if k in kinds else "" for k in self.kind]
        return pd.DataFrame(
            {
                "time": np.array(self.time),
                "kind": pd.Series(list(self.kind), dtype=object),
                "value": np.array(self.value),
                "unit": pd.Series(units, dtype=object),
                "duration": np.array(self.duration),
            }
        )

    def error(self, i: int, field: str, msg: str) -> TimelineError:
        """An error about event `i` (index into these arrays) naming its source and row."""
        return _Where(self.source, self.row_label).error(int(self.row[i]), field, msg)


# --------------------------------------------------------------------------- entry points


def read_timeline(
    path: str | PathLike,
    kinds: Mapping[str, TimelineKind] | None = None,
    start: datetime | str | None = None,
) -> Timeline:
    """Read and check a timeline from a CSV file, or TOML when the suffix is `.toml`.

    `kinds` defaults to every kind the installed plugins register.
    `start` overrides a start given in the file. Raises `TimelineError`.
    """
    path = Path(path)
    source = str(path)
    if path.suffix.lower() == ".toml":
        where = _Where(source, "event")
        rows, file_start = _read_toml(_read_text(path, where), where)
    else:
        where = _Where(source, "row")
        rows, file_start = _read_csv(_read_text(path, where), where)
    return _build(rows, kinds, where, file_start, start)


def timeline_from_frame(
    df: pd.DataFrame,
    kinds: Mapping[str, TimelineKind] | None = None,
    source: str = "<DataFrame>",
    start: datetime | str | None = None,
) -> Timeline:
    """Check a DataFrame with the columns of a timeline table, like `read_timeline`.

    Cells may be strings (checked exactly like CSV cells) or numbers / datetimes.
    `NaN`/`None` is an empty cell. Rows are numbered 1, 2, ... by position.
    """
    where = _Where(source, "row")
    columns = _check_header([str(c) for c in df.columns], where)
    rows = [
        (number, {c: _frame_cell(v) for c, v in zip(columns, values)})
        for number, values in enumerate(df.itertuples(index=False, name=None), start=1)
    ]
    return _build(rows, kinds, where, None, start)


# --------------------------------------------------------------------------- reading files


def _read_text(path: Path, where: _Where) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise where.file_error("cannot read file: no such file") from None
    except UnicodeDecodeError:
        raise where.file_error("cannot read file: not UTF-8 text") from None
    except OSError as err:
        raise where.file_error(f"cannot read file: {err.strerror or err}") from None


def _read_csv(text: str, where: _Where):
    """Rows as `(line number, {column: cell})`, and the start from a comment."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    header, rows, file_start = None, [], None
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            match = _START_COMMENT.fullmatch(line)
            if match:
                if file_start is not None:
                    raise where.error(number, "start", "start given twice")
                file_start = _parse_start(match.group(1).strip("'\""), where, number)
            continue
        cells = _split_line(line, where, number)
        if header is None:
            header = _check_header(cells, where)
        else:
            rows.append((number, _cells_by_column(cells, header, where, number)))
    if header is None:
        raise where.file_error(f"no header line and no events ({_COLUMNS_HINT}; a header alone is a timeline "
                               f"with no events)")
    return rows, file_start


def _split_line(line: str, where: _Where, number: int) -> list[str]:
    try:
        return [cell.strip() for cell in next(csv.reader([line], strict=True))]
    except csv.Error as err:
        raise where.error(number, None, f"malformed CSV line: {err}") from None


def _check_header(names: list[str], where: _Where) -> list[str]:
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        listed = ", ".join(repr(n) for n in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise where.file_error(f"unknown column{plural} {listed} ({_COLUMNS_HINT})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise where.file_error(f"column {repeated[0]!r} given twice ({_COLUMNS_HINT})")
    missing = [n for n in _REQUIRED if n not in names]
    if missing:
        listed = ", ".join(repr(n) for n in missing)
        plural = "s" if len(missing) > 1 else ""
        raise where.file_error(f"missing column{plural} {listed} ({_COLUMNS_HINT})")
    return names


def _cells_by_column(cells: list[str], header: list[str], where: _Where, number: int) -> dict:
    if len(cells) < len(header):
        missing = header[len(cells)]
        raise where.error(
            number, missing, f"missing (row has {len(cells)} fields, header has {len(header)})"
        )
    extra = cells[len(header):]
    if any(extra):  # trailing empty cells (a trailing comma) are tolerated
        raise where.error(
            number, None, f"{len(cells)} fields but the header names {len(header)} columns"
        )
    return dict(zip(header, cells))


def _read_toml(text: str, where: _Where):
    """Events as `(event number, {key: value})`, and the top-level start."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise where.file_error(f"invalid TOML: {err}") from None
    file_start = None
    if "start" in data:
        file_start = _parse_start(data["start"], where, None)
    events = data.get("event", [])
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise where.error(None, "event", "expected an array of [[event]] tables")
    rows = []
    for number, event in enumerate(events, start=1):
        for key in event:
            if key not in COLUMNS:
                raise where.error(number, key, "unknown key (keys are time, kind, value, unit[, duration])")
        rows.append((number, dict(event)))
    return rows, file_start


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class _Event:
    row: int
    time: float | datetime
    kind: str
    value: float
    duration: float


def _build(rows, kinds, where: _Where, file_start, start) -> Timeline:
    kinds = _default_kinds() if kinds is None else kinds
    if start is not None:
        file_start = _parse_start(start, where, None, argument=True)
    if not rows:  # a header alone: a run with no events (the baseline)
        return Timeline.empty(where.source, file_start, kinds, where.label)
    events = [_parse_row_or_raise(number, cells, kinds, where) for number, cells in rows]
    _check_time_style(events, where)
    minutes, start = _resolve_times(events, file_start, where)
    order = np.argsort(minutes, kind="stable")
    return Timeline(
        time=minutes[order],
        kind=np.array([e.kind for e in events], dtype=object)[order],
        value=np.array([e.value for e in events], dtype=np.float64)[order],
        duration=np.array([e.duration for e in events], dtype=np.float64)[order],
        row=np.array([e.row for e in events], dtype=np.int64)[order],
        source=where.source,
        start=start,
        kinds=kinds,
        row_label=where.label,
    )


def _parse_row_or_raise(number: int, cells: dict, kinds, where: _Where) -> _Event:
    try:
        return _parse_row(number, cells, kinds)
    except _Invalid as bad:
        raise where.error(number, bad.field, bad.message) from None


def _parse_row(number: int, cells: dict, kinds: Mapping[str, TimelineKind]) -> _Event:
    time = _parse_time(cells.get("time", _ABSENT))
    name = _parse_kind(cells.get("kind", _ABSENT), kinds)
    kind = kinds[name]
    amount = _parse_number(cells.get("value", _ABSENT), "value")
    value = _convert(amount, cells.get("unit", _ABSENT), name, kind)
    duration = _parse_duration(cells.get("duration", _ABSENT), name, kind)
    return _Event(number, time, name, value, duration)


# --------------------------------------------------------------------------- cells


def _frame_cell(raw):
    """A DataFrame cell as the reader sees it: missing values (`NaN`, `None`, `NaT`) are empty."""
    if raw is None or raw is pd.NA or raw is pd.NaT:
        return ""
    if isinstance(raw, (float, np.floating)) and math.isnan(raw):
        return ""
    return raw


def _is_empty(raw) -> bool:
    return raw is None or (isinstance(raw, str) and raw.strip() == "")


def _is_number(raw) -> bool:
    return isinstance(raw, (int, float, np.integer, np.floating)) and not isinstance(raw, (bool, np.bool_))


def _require(raw, field: str):
    if raw is _ABSENT:
        raise _Invalid(field, "missing")
    if _is_empty(raw):
        raise _Invalid(field, "empty")
    return raw.strip() if isinstance(raw, str) else raw


def _parse_number(raw, field: str) -> float:
    raw = _require(raw, field)
    if _is_number(raw):
        number = float(raw)
    elif isinstance(raw, str):
        try:
            number = float(raw)
        except ValueError:
            raise _Invalid(field, f"not a number: {raw!r}") from None
    else:
        raise _Invalid(field, f"not a number: {raw!r}")
    if not math.isfinite(number):
        raise _Invalid(field, f"not a finite number: {raw!r}")
    return number


def _parse_text(raw, field: str) -> str:
    raw = _require(raw, field)
    if not isinstance(raw, str):
        raise _Invalid(field, f"expected text, got {raw!r}")
    return raw


def _parse_kind(raw, kinds: Mapping[str, TimelineKind]) -> str:
    name = _parse_text(raw, "kind")
    if name not in kinds:
        known = ", ".join(sorted(kinds)) or "(none)"
        raise _Invalid("kind", f"unknown kind {name!r}; known kinds: {known}")
    return name


def _parse_time(raw) -> float | datetime:
    """Minutes (float) or a timestamp (datetime, as written)."""
    raw = _require(raw, "time")
    timestamp = _as_datetime(raw)
    if timestamp is not None:
        return timestamp
    if isinstance(raw, str):
        try:
            float(raw)
        except ValueError:
            raise _Invalid("time", f"not a number of minutes or an ISO-8601 timestamp: {raw!r}") from None
    minutes = _parse_number(raw, "time")
    if minutes < 0:
        raise _Invalid("time", f"negative time {_fmt(minutes)} (minutes since start must be >= 0)")
    return minutes


def _as_datetime(raw) -> datetime | None:
    """`raw` as a datetime if it is one or an ISO-8601 string that is not a number."""
    if isinstance(raw, pd.Timestamp):
        return raw.to_pydatetime()
    if isinstance(raw, datetime):
        return raw
    if isinstance(raw, date):
        return datetime(raw.year, raw.month, raw.day)
    if isinstance(raw, np.datetime64):
        return pd.Timestamp(raw).to_pydatetime()
    if isinstance(raw, str):
        try:
            float(raw)
            return None
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            return None
    return None


def _convert(amount: float, raw_unit, name: str, kind: TimelineKind) -> float:
    unit = _parse_text(raw_unit, "unit")
    try:
        parse_unit(unit)
    except UnitError:
        raise _Invalid("unit", f"unknown unit {unit!r} (units of {name!r}: {kind.accepted_units})") from None
    try:
        scale, offset = conversion(unit, kind.unit, kind.unit_context)
    except Exception:  # pint raises several error types for impossible conversions
        raise _Invalid(
            "unit", f"unit {unit!r} is not convertible to {kind.unit!r} required by {name!r} "
                    f"(units of {name!r}: {kind.accepted_units})"
        ) from None
    value = amount * scale + offset
    _check_range(value, amount, unit, name, kind)
    return value


def _check_range(value: float, amount: float, unit: str, name: str, kind: TimelineKind) -> None:
    canonical = _unit_suffix(kind.unit)
    if value < kind.minimum:
        if value < 0 <= kind.minimum:
            floor = f" (minimum {_fmt(kind.minimum)}{canonical})" if kind.minimum > 0 else ""
            raise _Invalid("value", f"negative amount {_fmt(amount)}{_unit_suffix(unit)} for {name!r}{floor}")
        raise _Invalid(
            "value",
            f"value {_fmt(value)}{canonical} below minimum {_fmt(kind.minimum)}{canonical} for {name!r}",
        )
    if value > kind.maximum:
        raise _Invalid(
            "value",
            f"value {_fmt(value)}{canonical} above maximum {_fmt(kind.maximum)}{canonical} for {name!r}",
        )


def _parse_duration(raw, name: str, kind: TimelineKind) -> float:
    if raw is _ABSENT or _is_empty(raw):
        if kind.duration == "required":
            raise _Invalid("duration", f"{name!r} needs a duration in minutes")
        return math.nan
    if kind.duration == "forbidden":
        shown = raw.strip() if isinstance(raw, str) else raw
        raise _Invalid("duration", f"{name!r} takes no duration (got {shown!r})")
    minutes = _parse_number(raw, "duration")
    if minutes <= 0:
        raise _Invalid("duration", f"duration must be > 0 minutes, got {_fmt(minutes)}")
    return minutes


def _unit_suffix(unit: str) -> str:
    unit = unit.strip()
    return "" if unit in ("", "1", "dimensionless") else f" {unit}"


def _fmt(x: float) -> str:
    return f"{x:.12g}"


# --------------------------------------------------------------------------- time


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is not None and moment.utcoffset() is not None:
        return moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.replace(tzinfo=None)


def _parse_start(raw, where: _Where, row: int | None, argument: bool = False) -> datetime:
    """A start from the file (comment / TOML key) or from the `start` argument, naive UTC."""
    moment = _as_datetime(raw.strip() if isinstance(raw, str) else raw)
    if moment is None:
        message = f"not an ISO-8601 timestamp: {raw!r}"
        if argument:
            raise where.file_error(f"invalid start argument: {message}")
        raise where.error(row, "start", message)
    return _naive_utc(moment)


def _time_style(event: _Event) -> str:
    if not isinstance(event.time, datetime):
        return "minutes"
    aware = event.time.tzinfo is not None and event.time.utcoffset() is not None
    return "aware" if aware else "naive"


_STYLE_WORDS = {
    "minutes": "minutes",
    "naive": "ISO-8601 timestamps",
    "aware": "ISO-8601 timestamps",
}


def _check_time_style(events: list[_Event], where: _Where) -> None:
    """All minutes, all naive timestamps, or all timestamps with a UTC offset."""
    first = events[0]
    first_style = _time_style(first)
    for event in events[1:]:
        style = _time_style(event)
        if style == first_style:
            continue
        if "minutes" in (style, first_style):
            message = (
                f"mixes minutes and ISO-8601 timestamps: this {where.label} uses "
                f"{_STYLE_WORDS[style]}, {where.label} {first.row} uses {_STYLE_WORDS[first_style]}"
            )
        else:
            message = (
                f"mixes timestamps with and without a UTC offset: this {where.label} is "
                f"{style}, {where.label} {first.row} is {first_style}"
            )
        raise where.error(event.row, "time", message)


def _resolve_times(events: list[_Event], start: datetime | None, where: _Where):
    """Minutes since start for every event, and the start of the timeline."""
    if _time_style(events[0]) == "minutes":
        return np.array([e.time for e in events], dtype=np.float64), start
    moments = [_naive_utc(e.time) for e in events]
    if start is None:
        start = min(moments)
    for event, moment in zip(events, moments):
        if moment < start:
            raise where.error(
                event.row,
                "time",
                f"timestamp {moment.isoformat()} is before the start {start.isoformat()}",
            )
    minutes = [(m - start).total_seconds() / 60.0 for m in moments]
    return np.array(minutes, dtype=np.float64), start
