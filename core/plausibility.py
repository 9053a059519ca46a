"""Plausibility checks every record goes through, whatever its source.

A record that parses can still be wrong in ways no single cell shows: readings in
another unit than the one written beside them, a sensor stuck at one value, a value
no instrument reports, the same reading given twice with different values, a clock
that goes back an hour in autumn. Fitted as they are, such records give a twin that
calibrates "successfully" to nonsense. `check_record` runs, on a parsed `Timeline`:

1. the generic checks of this module (they know no domain):
   - **conflicting duplicates**: two rows of an observation kind, or of a level kind,
     at the same time with different values are an error naming both rows; identical
     duplicates are dropped and counted;
   - **a clock that goes back**: rows of one kind in time order except for one step
     back of 20 min to 3 h (the signature of a daylight-saving change written in wall-
     clock time, which sorting would silently interleave) are an error naming the row;
2. every `RecordCheck` the installed plugins register (``register_record_checks``):
   domain rules such as the reporting range of a sensor or the largest dose a device
   gives.

A check returns `Finding`s: an ``error`` stops (a `RecordError` naming the file, row
and field), ``drop`` removes the rows it names and is reported in a note with the
count, ``warning`` is a note. `read_record` reads a file, checks it and issues the
notes as `RecordWarning` warnings (the CLI prints them as ``warning: ...`` lines).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from os import PathLike

import numpy as np

from .errors import RecordError
from .extensions import Finding, RecordCheck
from .timeline import Timeline, read_timeline

__all__ = ["Finding", "RecordCheck", "RecordWarning", "check_record", "read_record", "flat_runs"]

CLOCK_BACK = (20.0, 180.0)  # minutes: a step back in this range is a clock change, not a reordering


class RecordWarning(UserWarning):
    """A plausibility note: rows dropped by a documented rule, or something to look at."""


def flat_runs(values: np.ndarray, tolerance: float = 0.0) -> list[tuple[int, int]]:
    """``[(first, last), ...]`` index ranges where consecutive values differ by at most
    ``tolerance`` (runs of length 1 included)."""
    if len(values) == 0:
        return []
    breaks = np.flatnonzero(np.abs(np.diff(values)) > tolerance) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks - 1, [len(values) - 1]])
    return list(zip(starts.tolist(), ends.tolist()))


def _clock(tl: Timeline, minutes: float) -> str:
    if tl.start is None:
        return f"minute {minutes:g}"
    from datetime import timedelta

    return (tl.start + timedelta(minutes=float(minutes))).strftime("%Y-%m-%d %H:%M")


def _is_level_or_reading(tl: Timeline, name: str) -> bool:
    kind = (tl.kinds or {}).get(name)
    return kind is None or bool(kind.observation or kind.level)


def duplicates(tl: Timeline) -> list[Finding]:
    """Rows of one kind at the same time: conflicting values of a reading or a level are
    an error; identical copies are dropped (kept once). Amounts (doses, intakes) at the
    same time are separate events and are kept."""
    found, dropped = [], []
    for name in dict.fromkeys(tl.kind.tolist()):
        if not _is_level_or_reading(tl, name):
            continue
        idx = np.flatnonzero(tl.kind == name)
        order = idx[np.lexsort((tl.row[idx], tl.time[idx]))]
        same = np.flatnonzero(np.diff(tl.time[order]) == 0.0)
        for k in same:
            a, b = order[k], order[k + 1]
            va, vb = tl.value[a], tl.value[b]
            if va == vb and (tl.duration[a] == tl.duration[b] or np.isnan(tl.duration[a]) and np.isnan(tl.duration[b])):
                dropped.append(int(b))
                continue
            found.append(Finding("error", f"{name!r} at {_clock(tl, tl.time[a])} is given twice with different values "
                                          f"({va:g} on {tl.row_label} {tl.row[a]}, {vb:g} on {tl.row_label} {tl.row[b]}; "
                                          f"values in {_unit(tl, name)}): keep the right one", [int(b), int(a)]))
    if dropped:
        found.append(Finding("drop", f"{len(dropped)} duplicated rows (same kind, time and value) dropped", dropped))
    return found


def _unit(tl: Timeline, name: str) -> str:
    kind = (tl.kinds or {}).get(name)
    return kind.unit if kind is not None else "the kind's unit"


def clock_goes_back(tl: Timeline) -> list[Finding]:
    """A kind whose rows, in file order, are in time order but for one step back of
    20 min to 3 h: a wall clock that was put back (daylight saving ends), which sorting
    would interleave with the hour before."""
    found = []
    for name in dict.fromkeys(tl.kind.tolist()):
        idx = np.flatnonzero(tl.kind == name)
        if len(idx) < 4:
            continue
        in_file = idx[np.argsort(tl.row[idx], kind="stable")]
        steps = np.diff(tl.time[in_file])
        back = np.flatnonzero(steps < 0)
        if len(back) != 1 or not CLOCK_BACK[0] <= -steps[back[0]] <= CLOCK_BACK[1]:
            continue
        i = in_file[back[0] + 1]
        before = in_file[back[0]]
        found.append(Finding("error", f"the clock goes back {-steps[back[0]]:g} min (from {_clock(tl, tl.time[before])} "
                                      f"on {tl.row_label} {tl.row[before]} to {_clock(tl, tl.time[i])}) while the "
                                      f"{name!r} rows are otherwise in time order: a daylight-saving change written in "
                                      f"local time? Give the times with their UTC offset (physiotwin import --tz ZONE "
                                      f"does this) or in UTC", [int(i)], "time"))
    return found


GENERIC: tuple[Callable[[Timeline], Sequence[Finding]], ...] = (clock_goes_back, duplicates)


def _checks() -> list[Callable[[Timeline], Sequence[Finding]]]:
    from .registry import record_checks

    return list(GENERIC) + [c.rule for c in record_checks().values()]


def check_record(tl: Timeline) -> tuple[Timeline, list[str]]:
    """Run every check on ``tl``. Returns the timeline without the rows a rule dropped
    and the notes (one line each, naming the file); raises `RecordError` (one line naming
    the file, row and field) on the first error."""
    keep = np.ones(len(tl), dtype=bool)
    notes: list[str] = []
    if len(tl) == 0:
        return tl, notes
    for check in _checks():
        current = tl.where(keep) if not keep.all() else tl
        positions = np.flatnonzero(keep)
        for finding in check(current):
            events = [int(positions[i]) for i in finding.events]
            if finding.severity == "error":
                row = int(tl.row[events[0]]) if events else None
                raise RecordError(f"{tl.source}" + (f", {tl.row_label} {row}" if row is not None else "")
                                  + f", field {finding.field!r}: {finding.message}", source=tl.source, row=row,
                                  field=finding.field)
            if finding.severity == "drop":
                keep[events] = False
                rows = ", ".join(str(int(r)) for r in sorted(tl.row[events])[:5])
                more = ", ..." if len(events) > 5 else ""
                notes.append(f"{tl.source}: {finding.message} ({tl.row_label}s {rows}{more})")
            else:
                notes.append(f"{tl.source}: {finding.message}")
    return (tl if keep.all() else tl.where(keep)), notes


def read_record(path: str | PathLike, *, checks: bool = True) -> Timeline:
    """Read a record file and check it; notes are issued as `RecordWarning` warnings."""
    tl = read_timeline(path)
    if not checks:
        return tl
    tl, notes = check_record(tl)
    for note in notes:
        warnings.warn(note, RecordWarning, stacklevel=2)
    return tl
