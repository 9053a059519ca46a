"""A record prepared for calibration, filtering and forecasting: inputs and readings on the
minute grid, and the logged events that input corrections act on.

Readings are placed at the end of the minute they fall in (a reading at ``t`` min
belongs to minute ``round(t) - 1``). Missing readings (gaps) are NaN; nothing else
needs to know about gaps. A record may hold several observation kinds, each
explained by one observation model; the record checks, once, that every observation
kind it holds is explained (or was asked to be ignored), that it can be fitted at all,
and says what is wrong with it otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

import numpy as np

from ..composer import Model
from ..correction import InputCorrection
from ..errors import CalibrationError, ObservationError
from ..inputs import Inputs, minute_inputs
from ..observation import ObservationModel
from ..timeline import Timeline

__all__ = ["Record", "CorrectionPlan", "correction_plans", "prepare_record", "readings_on_grid", "previous_reading", "split_record",
           "record_minutes", "timeline_text", "observed_kinds", "check_kinds"]


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


def record_minutes(tl: Timeline) -> int:
    """Length of a record on the minute grid: its last event, rounded up."""
    return int(math.ceil(float(np.max(tl.time)) + 1e-9)) if len(tl) else 0


@dataclass(frozen=True)
class CorrectionPlan:
    """An input correction applied to one record: which signal columns it scales, which
    event acts during each minute (-1: none), and how many events (padded count)."""

    name: str
    columns: np.ndarray  # bool per signal
    index: np.ndarray  # int per minute
    n_events: int
    n_padded: int
    prior_sd: float


@dataclass(frozen=True)
class Record:
    """A timeline prepared for one composition.

    Attributes:
        timeline: the parsed record. minutes: its length on the grid. inputs: the
        minute layout of its signals. kinds: the observation kinds fitted (the order of
        the observation models). obs: ``[kind, minute]`` readings at the end of each
        minute. corrections: the input corrections that apply. day0: minute of the day at
        t = 0 (0 when the record has no absolute start). source: file name for messages.
    """

    timeline: Timeline
    minutes: int
    inputs: Inputs
    kinds: tuple[str, ...]
    obs: np.ndarray
    corrections: tuple[CorrectionPlan, ...]
    day0: float
    source: str
    start: datetime | None


def observed_kinds(tl: Timeline) -> list[str]:
    """The fittable observation kinds present in ``tl`` (not inputs, not ground truth)."""
    kinds = tl.kinds if tl.kinds is not None else {}
    present = dict.fromkeys(str(k) for k in tl.kind)
    return [k for k in present if k in kinds and kinds[k].fitted]


def check_kinds(tl: Timeline, explained: Sequence[str], source: str, ignore: Sequence[str] = ()) -> None:
    """Every observation kind of ``tl`` must be explained, unless ``ignore`` names it."""
    for kind in observed_kinds(tl):
        if kind not in explained and kind not in ignore:
            raise ObservationError(f"{source}: the record holds {kind!r} readings, which no observation model of "
                                   f"this twin explains (explained: {', '.join(explained) or 'none'}); pass "
                                   f"--ignore-kind {kind} to leave them out")


def correction_plans(model: Model, tl: Timeline, corrections: Sequence[InputCorrection], minutes: int):
    """The `CorrectionPlan` of every correction that applies to ``tl`` and ``model``."""
    signals = [n.split(".", 1)[1] for n in model.signal_names]
    plans = []
    for c in corrections:
        columns = np.array([s in c.signals for s in signals], dtype=bool)
        if not columns.any() or len(tl.select(c.kind)) == 0:
            continue
        index, n = c.events(tl, minutes)
        if n == 0:
            continue
        plans.append(CorrectionPlan(c.name, columns, np.asarray(index, np.int32), int(n),
                                    16 * max(1, -(-int(n) // 16)), float(c.prior_sd)))
    return tuple(plans)


def prepare_record(model: Model, tl: Timeline, observations: Sequence[ObservationModel],
                   corrections: Sequence[InputCorrection] = (), source: str | None = None,
                   minutes: int | None = None, require_readings: bool = True) -> Record:
    """Check and grid a record for ``observations`` (one model per kind). Raises
    `CalibrationError` naming the file when the record has no events, or (with
    ``require_readings``) no reading at all of the observed kinds."""
    source = source or tl.source
    if len(tl) == 0:
        raise CalibrationError(f"{source}: the record is empty (no events)")
    kinds = tuple(o.kind for o in observations)
    obs_minutes = record_minutes(tl) if minutes is None else minutes
    if obs_minutes < 2:
        raise CalibrationError(f"{source}: the record spans {obs_minutes} min; it needs at least a few hours")
    obs = np.stack([readings_on_grid(tl, k, obs_minutes) for k in kinds]) if kinds else np.zeros((0, obs_minutes))
    if require_readings and not np.isfinite(obs).any():
        raise CalibrationError(f"{source}: the record has no readings of {', '.join(map(repr, kinds))} to "
                               f"calibrate against")
    return Record(tl, obs_minutes, minute_inputs(model, tl, obs_minutes), kinds, obs,
                  correction_plans(model, tl, corrections, obs_minutes), tl.minute_of_day, source, tl.start)


def split_record(tl: Timeline, at: float) -> tuple[Timeline, Timeline]:
    """Cut a record at ``at`` minutes: events before it, and events from it on (times
    shifted so the second part starts at 0, with its own absolute start). Levels in
    force at the cut (kinds declared ``level``) are repeated at the start of the second part."""

    def part(mask, shift, extra=()):
        idx = np.concatenate([np.asarray(extra, dtype=int), np.flatnonzero(mask)])
        time = np.concatenate([np.full(len(extra), shift), tl.time[mask]]) - shift
        start = None if tl.start is None else tl.start + timedelta(minutes=shift)
        return Timeline(time, tl.kind[idx], tl.value[idx], tl.duration[idx], tl.row[idx], source=tl.source,
                        start=start, kinds=tl.kinds, row_label=tl.row_label)

    kinds = tl.kinds or {}
    carried = []
    for kind in (k for k, d in kinds.items() if d.level):
        before = np.flatnonzero((tl.kind == kind) & (tl.time < at))
        at_cut = np.any((tl.kind == kind) & (tl.time == at))
        if len(before) and not at_cut:
            carried.append(int(before[-1]))
    return part(tl.time < at, 0.0), part(tl.time >= at, float(at), carried)


def timeline_text(tl: Timeline) -> str:
    """A timeline as CSV text (minutes since its start; the start as a comment)."""
    frame = tl.to_frame()
    head = f"# start: {tl.start.isoformat()}\n" if tl.start is not None else ""
    return head + frame.to_csv(index=False, float_format="%.10g")


def write_split(path, days: float) -> tuple[str, str]:
    """Write ``<stem>_train.csv`` (the first ``days`` of the record at ``path``) and
    ``<stem>_test.csv`` (the rest, starting at 0 with its own absolute start)."""
    from pathlib import Path

    from ..timeline import read_timeline

    path = Path(path)
    tl = read_timeline(path)
    out = []
    for part, suffix in zip(split_record(tl, days * 1440.0), ("train", "test")):
        target = path.with_name(f"{path.stem}_{suffix}.csv")
        target.write_text(timeline_text(part))
        out.append(str(target))
    return out[0], out[1]
