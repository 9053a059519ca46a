"""A record prepared for calibration and forecasting: inputs and readings on the minute grid.

Readings are placed at the end of the minute they fall in (a reading at ``t`` min
belongs to minute ``round(t) - 1``). Missing readings (gaps) are NaN; nothing else
needs to know about gaps. The record checks, once, that it can be fitted at all, and
says what is wrong with it otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from ..composer import Model
from ..timeline import Timeline
from .grid import GridInputs, grid_inputs, meal_index
from .space import CalibrationError

__all__ = ["Record", "prepare_record", "readings_on_grid", "previous_reading"]


def readings_on_grid(tl: Timeline, kind: str, minutes: int) -> np.ndarray:
    """Readings of ``kind`` at the end of each minute (NaN where none)."""
    ev = tl.select(kind)
    out = np.full(minutes, np.nan)
    m = np.rint(ev.time).astype(int) - 1
    ok = (m >= 0) & (m < minutes) & np.isfinite(ev.value)
    out[m[ok]] = ev.value[ok]
    return out


def previous_reading(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position of ``obs[..., K]``: index of the previous present reading along
    the last axis (itself when none) and the minutes since it (inf when none)."""
    k = obs.shape[-1]
    present = np.isfinite(obs)
    idx = np.where(present, np.arange(k), -1)
    last = np.maximum.accumulate(idx, axis=-1)
    prev = np.concatenate([np.full(obs.shape[:-1] + (1,), -1), last[..., :-1]], axis=-1)
    gap = np.where(prev >= 0, np.arange(k) - prev, np.inf)
    return np.where(prev >= 0, prev, np.arange(k)).astype(np.int32), gap


@dataclass(frozen=True)
class Record:
    """A timeline prepared for one composition.

    Attributes:
        timeline: the parsed record.
        minutes: its length on the grid (last event, rounded up).
        inputs: `GridInputs` over all minutes.
        obs: readings of the observed kind at the end of each minute.
        n_meals: logged meals (each may get a size correction).
        day0: minute of the day at t = 0 (0 when the record has no absolute start).
        source: file name for messages.
    """

    timeline: Timeline
    minutes: int
    inputs: GridInputs
    obs: np.ndarray
    n_meals: int
    day0: float
    source: str
    start: datetime | None


def prepare_record(model: Model, tl: Timeline, kind: str, source: str, minutes: int | None = None,
                   min_readings: int = 1) -> Record:
    """Check and grid a record. Raises `CalibrationError` naming the file when the record
    has no events, no readings of ``kind``, only missing readings, or fewer than
    ``min_readings`` readings."""
    if len(tl) == 0:
        raise CalibrationError(f"{source}: the record is empty (no events)")
    ev = tl.select(kind)
    if len(ev) == 0:
        raise CalibrationError(f"{source}: the record has no {kind!r} readings to calibrate against")
    finite = np.isfinite(ev.value)
    if not finite.any():
        raise CalibrationError(f"{source}: every {kind!r} reading is missing (NaN)")
    if minutes is None:
        minutes = int(math.ceil(float(np.max(tl.time)) + 1e-9))
    if minutes < 2:
        raise CalibrationError(f"{source}: the record spans {minutes} min; it needs at least a few hours")
    obs = readings_on_grid(tl, kind, minutes)
    n = int(np.isfinite(obs).sum())
    if n < min_readings:
        raise CalibrationError(f"{source}: {n} {kind!r} readings, fewer than the {min_readings} values to estimate "
                               f"(parameters, meal corrections, initial state and noise); give a longer record "
                               f"or fit fewer parameters")
    gi = grid_inputs(model, tl, minutes)
    _, n_meals = meal_index(tl, minutes)
    day0 = 0.0
    if tl.start is not None:
        day0 = tl.start.hour * 60.0 + tl.start.minute + tl.start.second / 60.0
    return Record(tl, minutes, gi, obs, n_meals, day0, source, tl.start)


LEVEL_KINDS = ("basal", "sodium_intake")  # kinds that set a level until the next row


def split_record(tl: Timeline, at: float) -> tuple[Timeline, Timeline]:
    """Cut a record at ``at`` minutes: events before it, and events from it on (times
    shifted so the second part starts at 0, with its own absolute start). Levels in
    force at the cut (the basal rate) are repeated at the start of the second part."""
    from datetime import timedelta

    def part(mask, shift, extra=()):
        idx = np.concatenate([np.asarray(extra, dtype=int), np.flatnonzero(mask)])
        time = np.concatenate([np.full(len(extra), shift), tl.time[mask]]) - shift
        start = None if tl.start is None else tl.start + timedelta(minutes=shift)
        return Timeline(time, tl.kind[idx], tl.value[idx], tl.duration[idx], tl.row[idx], source=tl.source,
                        start=start, kinds=tl.kinds, row_label=tl.row_label)

    carried = []
    for kind in LEVEL_KINDS:
        before = np.flatnonzero((tl.kind == kind) & (tl.time < at))
        at_cut = np.any((tl.kind == kind) & (tl.time == at))
        if len(before) and not at_cut:
            carried.append(int(before[-1]))
    return part(tl.time < at, 0.0), part(tl.time >= at, float(at), carried)


def write_split(path, days: float) -> tuple[str, str]:
    """Write ``<stem>_train.csv`` (the first ``days`` of the record at ``path``) and
    ``<stem>_test.csv`` (the rest, starting at 0 with its own absolute start)."""
    from pathlib import Path

    from ..registry import timeline_kinds
    from ..timeline import read_timeline
    from .twin import timeline_text

    path = Path(path)
    tl = read_timeline(path, kinds=timeline_kinds())
    out = []
    for part, suffix in zip(split_record(tl, days * 1440.0), ("train", "test")):
        target = path.with_name(f"{path.stem}_{suffix}.csv")
        target.write_text(timeline_text(part))
        out.append(str(target))
    return out[0], out[1]
