"""The driver of ``physiotwin import``: device exports merged into one record CSV.

It picks the importer of each file (``--format`` or by sniffing; see
`physiotwin.importing` for the contract), resolves clock times (time zones, daylight
saving), merges several files, drops exact duplicates, runs the plausibility checks it
is given (`physiotwin.plausibility.check_record`) and writes a record CSV with a
``source`` column (``FILE:ROW``) and a comment header naming each file, its format and
the notes. Generic: it knows no vendor and no kind.

Clock times. An importer returns naive wall-clock times (the device's clock) or
tz-aware ones (absolute). With ``tz`` (``--tz Europe/Berlin``) naive times are
localised with ``tz_localize(tz, ambiguous="infer", nonexistent="shift_forward")`` in
the order the events happened (row order, reversed for exports that list the newest
first; per ``stream``), so the repeated hour of a daylight-saving change is resolved,
and every time is written with its UTC offset. Without ``tz`` naive times are written as
they are, and a clock that goes back within one stream and kind is refused (pass
``--tz``). Files with naive and files with absolute times cannot be merged without ``tz``.
Exact duplicates (same time, kind and value) are dropped, within each file before its
clock is resolved and across files after merging, and counted in a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .errors import ImportFileError, TimelineError
from .importing import ROW_COLUMNS, SNIFF_BYTES, ImportedRows, Importer, import_error

__all__ = ["ImportResult", "import_files", "pick_importer", "write_record", "summary_lines"]


@dataclass(frozen=True)
class ImportResult:
    """The merged record: ``frame`` (columns time [ISO text], kind, value, unit, duration,
    source), ``timeline`` (the checked `Timeline`), ``sources`` (``(file, format)``) and
    ``notes``."""

    frame: pd.DataFrame
    timeline: object  # a physiotwin.timeline.Timeline
    sources: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]


def import_files(paths: Sequence[str | Path], importers: dict, fmt: str | None = None, tz: str | None = None,
                 check: Callable | None = None) -> ImportResult:
    """Read ``paths`` (with the importer ``fmt``, or the one whose ``sniff`` accepts each
    file), resolve their clocks (``tz``: an IANA zone for naive device times), merge them,
    drop exact duplicates (same time, kind, value) and run ``check``.

    Arguments:
        importers: ``{name: Importer}``, e.g. `physiotwin.registry.importers()`.
        check: ``check(timeline) -> (timeline, notes)``, the record's plausibility checks
            (`physiotwin.plausibility.check_record`); it may drop events or raise.

    Raises `ImportFileError` (a file, row and column), or what ``check`` raises."""
    zone = _zone(tz)
    parts, sources, notes, dropped = [], [], [], 0
    for path in map(Path, paths):
        importer = pick_importer(path, fmt, importers)
        rows = _read_rows(path, importer)
        unique, repeated = _drop_duplicates(rows.frame)  # before the clock: a repeated row is no clock change
        dropped += repeated
        frame = _resolve_clock(ImportedRows(unique, rows.notes, rows.newest_first), path, zone)
        frame["source"] = [f"{path.name}:{r}" for r in frame["row"]]
        parts.append(frame)
        sources.append((path.name, importer.name))
        notes.extend(f"{path.name}: {n}" for n in rows.notes)
    merged = _merge(parts, sources, zone)
    merged, across = _drop_duplicates(merged)
    dropped += across
    if dropped:
        notes.append(f"dropped {dropped} exact duplicate row(s) (same time, kind and value)")
    timeline = _timeline(merged)
    checked: tuple = ()
    if check is not None:
        timeline, checked = check(timeline)
    kept = merged.iloc[np.sort(np.asarray(timeline.row, dtype=np.int64) - 1)].reset_index(drop=True)
    return ImportResult(kept, timeline, tuple(sources), tuple(notes) + tuple(checked))


def pick_importer(path: Path, fmt: str | None, importers: dict) -> Importer:
    """The importer named ``fmt``, or the only one whose ``sniff`` accepts ``path``."""
    installed = ", ".join(importers) or "none"
    if fmt is not None:
        if fmt not in importers:
            raise ImportFileError(f"unknown format {fmt!r} (installed formats: {installed})")
        return importers[fmt]
    head = _head(path)
    found = [imp for imp in importers.values() if imp.sniff is not None and imp.sniff(path, head)]
    if len(found) != 1:
        which = "matches none of" if not found else f"matches several formats ({', '.join(i.name for i in found)}) of"
        raise import_error(path, None, None, f"the format cannot be guessed: the file {which} the installed formats "
                                             f"({installed}); pass --format")
    return found[0]


def _head(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(SNIFF_BYTES).decode("utf-8-sig", errors="replace")
    except FileNotFoundError:
        raise import_error(path, None, None, "no such file") from None
    except OSError as err:
        raise import_error(path, None, None, f"cannot read: {err.strerror}") from None


def _zone(tz: str | None):
    if tz is None:
        return None
    try:
        pd.Timestamp("2000-01-01").tz_localize(tz)
    except Exception:  # noqa: BLE001 - pytz/zoneinfo raise different types for an unknown zone
        raise ImportFileError(f"--tz {tz!r}: not a time zone (use an IANA name such as Europe/Berlin)") from None
    return tz


def _read_rows(path: Path, importer: Importer) -> ImportedRows:
    rows = importer.read(path)
    missing = [c for c in ROW_COLUMNS if c not in rows.frame.columns]
    if missing:
        raise ImportFileError(f"importer {importer.name!r} returned no column(s) {', '.join(missing)} for {path.name}")
    if rows.frame.empty:
        raise import_error(path, None, None, f"no events of an installed kind in this {importer.name} export")
    return rows


def _occurrence_order(frame: pd.DataFrame, newest_first: bool) -> list[np.ndarray]:
    """Positions of each stream's rows in the order the events happened."""
    streams = frame["stream"] if "stream" in frame.columns else pd.Series(0, index=frame.index)
    orders = []
    for _, part in frame.groupby(streams, sort=False):
        order = np.argsort(part["row"].to_numpy(), kind="stable")
        orders.append(part.index.to_numpy()[order[::-1] if newest_first else order])
    return orders


def _resolve_clock(rows: ImportedRows, path: Path, zone: str | None) -> pd.DataFrame:
    frame = rows.frame.reset_index(drop=True).copy()
    times = pd.DatetimeIndex(frame["time"])
    if times.tz is not None:
        frame["time"] = times.tz_convert("UTC")
        return frame
    if zone is None:
        _check_forward(frame, path, rows.newest_first)
        return frame
    local = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    for order in _occurrence_order(frame, rows.newest_first):
        local.iloc[order] = _localise(times[order], frame["row"].to_numpy()[order], path, zone)
    frame["time"] = local
    return frame


def _localise(times: pd.DatetimeIndex, rows: np.ndarray, path: Path, zone: str) -> pd.DatetimeIndex:
    try:
        return times.tz_localize(zone, ambiguous="infer", nonexistent="shift_forward").tz_convert("UTC")
    except Exception as err:  # noqa: BLE001 - pandas raises ValueError or pytz's AmbiguousTimeError
        unresolved = np.flatnonzero(pd.isna(times.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward")))
        row = int(rows[unresolved[0]]) if len(unresolved) else None
        raise import_error(path, row, "time", f"cannot resolve the wall-clock time in {zone}: {err}") from None


def _check_forward(frame: pd.DataFrame, path: Path, newest_first: bool) -> None:
    """Without a time zone, each kind's device clock must not go back (in occurrence order)."""
    for order in _occurrence_order(frame, newest_first):
        part = frame.iloc[order]
        for _, kind_rows in part.groupby("kind", sort=False):
            times = kind_rows["time"].to_numpy()
            back = np.flatnonzero(times[1:] < times[:-1])
            if len(back):
                i = back[0] + 1
                raise import_error(path, int(kind_rows["row"].iloc[i]), "time",
                                   f"the device clock goes back from {pd.Timestamp(times[i - 1])} to "
                                   f"{pd.Timestamp(times[i])} (a daylight-saving change or a clock reset); pass --tz "
                                   f"ZONE (e.g. --tz Europe/Berlin) to resolve wall-clock times")


def _merge(parts: list[pd.DataFrame], sources, zone: str | None) -> pd.DataFrame:
    aware = [pd.DatetimeIndex(p["time"]).tz is not None for p in parts]
    if any(aware) and not all(aware):
        naive = [name for (name, _), a in zip(sources, aware) if not a]
        raise ImportFileError(f"{', '.join(naive)}: device-clock times cannot be merged with the absolute times of the "
                              f"other files; pass --tz ZONE (the device's time zone)")
    merged = pd.concat(parts, ignore_index=True)
    times = pd.DatetimeIndex(merged["time"])
    if times.tz is not None and zone is not None:
        times = times.tz_convert(zone)
    merged["time"] = times
    merged = merged.sort_values("time", kind="stable").reset_index(drop=True)
    merged["time"] = [_iso(t) for t in merged["time"]]
    return merged[["time", "kind", "value", "unit", "duration", "source"]]


def _iso(moment: pd.Timestamp) -> str:
    return moment.isoformat(timespec="seconds")


def _drop_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    keep = ~frame.duplicated(subset=["time", "kind", "value"], keep="first")
    return frame[keep].reset_index(drop=True), int((~keep).sum())


def _timeline(frame: pd.DataFrame):
    from .timeline import timeline_from_frame

    try:
        return timeline_from_frame(frame, source="<import>")
    except TimelineError as err:
        if err.row is None:
            raise
        where = frame["source"].iloc[err.row - 1]
        name, _, row = where.rpartition(":")
        message = str(err).split(": ", 1)[-1]
        raise import_error(name, int(row), err.field, message) from None


# --------------------------------------------------------------------------- output


def write_record(result: ImportResult, out: str | Path) -> Path:
    """Write the record CSV atomically (a complete file or none) with a comment header."""
    from .io import atomic_path, check_writable

    out = check_writable(out)
    lines = [f"# start: {result.frame['time'].iloc[0]}"]
    lines += [f"# source: {name} (format {fmt})" for name, fmt in result.sources]
    lines += [f"# note: {note}" for note in result.notes]
    body = result.frame.to_csv(index=False, float_format="%.10g", lineterminator="\n")
    with atomic_path(out, ".part") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n" + body)
    return out


def summary_lines(result: ImportResult) -> list[str]:
    """One line per kind: count, first and last time."""
    lines = []
    for kind, part in result.frame.groupby("kind", sort=True):
        lines.append(f"{kind:>12}: {len(part):5d} rows, {part['time'].iloc[0]} to {part['time'].iloc[-1]}")
    return lines
