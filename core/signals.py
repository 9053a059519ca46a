"""Timeline -> piecewise-constant input signals.

Organs read timeline inputs as *signals*: functions of time that are constant
between breakpoints (zero-order hold, right-continuous: at a breakpoint the new
value applies). A timeline is compiled once, in NumPy, into

- ``times``: increasing breakpoints, ``times[0] == 0``;
- ``values``: one row per breakpoint, one column per signal,

and the breakpoints are handed to the step-size controller (``jump_ts``) so the
solver never steps over a change of input.

Built-in signals (name, unit):

| signal | unit | from kinds | meaning |
|---|---|---|---|
| ``carbs`` | g/min | carbs | carbohydrate ingestion rate. A meal without ``duration`` joins a queue eaten at 5 g/min (as in simglucose); with ``duration`` it is eaten evenly over it. |
| ``carbs_episode`` | g | carbs | grams eaten in the current (or last) eating episode, counted to the end of the current minute of the episode (the bookkeeping simglucose uses for gastric emptying). |
| ``meal_episode`` | 1 | carbs | number of eating episodes begun so far (changes exactly when a meal starts). |
| ``insulin`` | U/min | bolus, basal | boluses spread evenly over ``duration`` (default 1 min) plus the basal rate set by ``basal`` rows. |
| ``basal_set`` | 1 | basal | 0 before the first ``basal`` row, 1 after: until then the patient's own steady-state basal applies. |
| ``sodium_intake`` | mmol/day | sodium_intake | level from each row on; NaN before the first row, which the composer replaces by the input's default. |
| ``exercise`` | 1 | exercise | fraction of heart-rate reserve during each bout, 0 otherwise (overlapping bouts add). |
| ``blood_loss`` | mL/min | blood_loss | each loss spread evenly over its duration. |
| ``sglt2i`` | mg/min | sglt2i | oral doses, each delivered into the gut over 1 minute. |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .timeline import Timeline

__all__ = ["Signal", "SIGNALS", "SIGNAL_UNITS", "compile_signals", "EAT_RATE"]

EAT_RATE = 5.0  # g/min, the ingestion rate of meals without a duration (simglucose)
BOLUS_DURATION = 1.0  # min


@dataclass(frozen=True)
class Signal:
    """A timeline signal: its unit, the breakpoints it needs, and its value on
    each segment ``[left, right)`` of a grid that contains those breakpoints."""

    name: str
    unit: str
    description: str
    breakpoints: Callable[[Timeline], np.ndarray]
    values: Callable[[Timeline, np.ndarray, np.ndarray], np.ndarray]


# ---------------------------------------------------------------- carbohydrate
def _meal_pieces(tl: Timeline) -> list[tuple[float, float, float]]:
    """(start, end, rate g/min) of every meal; meals without duration queue at EAT_RATE."""
    meals = tl.select("carbs")
    pieces = []
    queue_end = -np.inf
    for t, grams, dur in zip(meals.time, meals.value, meals.duration):
        if grams <= 0:
            continue
        if np.isnan(dur):
            start = max(t, queue_end)
            queue_end = start + grams / EAT_RATE
            pieces.append((start, queue_end, EAT_RATE))
        else:
            pieces.append((t, t + dur, grams / dur))
    return pieces


def _rate_on(pieces, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    mid = 0.5 * (left + right)
    out = np.zeros_like(left)
    for a, b, r in pieces:
        out += np.where((mid >= a) & (mid < b), r, 0.0)
    return out


def _episodes(pieces) -> list[tuple[float, float]]:
    """Maximal intervals of continuous eating."""
    eps: list[list[float]] = []
    for a, b, _ in sorted(pieces):
        if eps and a <= eps[-1][1]:
            eps[-1][1] = max(eps[-1][1], b)
        else:
            eps.append([a, b])
    return [(a, b) for a, b in eps]


def _carb_breaks(tl: Timeline) -> np.ndarray:
    pieces = _meal_pieces(tl)
    pts = [p for a, b, _ in pieces for p in (a, b)]
    for a, b in _episodes(pieces):  # minute ticks within each episode
        pts.extend(np.arange(a, b, 1.0))
    return np.asarray(pts, dtype=float)


def _carbs(tl, left, right):
    return _rate_on(_meal_pieces(tl), left, right)


def _meal_episode(tl, left, right):
    starts = np.asarray([a for a, _ in _episodes(_meal_pieces(tl))])
    return np.asarray([np.sum(starts <= a) for a in left], dtype=float)


def _carbs_episode(tl, left, right):
    pieces = _meal_pieces(tl)
    rate = _rate_on(pieces, left, right)
    cumulative = np.concatenate([[0.0], np.cumsum(rate * (right - left))])  # C at each left edge, then end
    c_left, c_right = cumulative[:-1], cumulative[1:]
    out = np.zeros_like(left)
    starts = [a for a, _ in _episodes(pieces)]
    for k, (a, b) in enumerate(zip(left, right)):
        begun = [s for s in starts if s <= a]
        if not begun:
            continue
        s = begun[-1]
        j = int(np.searchsorted(left, s))
        c_start = c_left[j]
        # within an episode count to the end of the current minute; after it, hold the total
        out[k] = c_right[k] - c_start if rate[k] > 0 else (c_left[k] - c_start)
    return out


# --------------------------------------------------------------------- insulin
def _insulin_pieces(tl: Timeline) -> list[tuple[float, float, float]]:
    pieces = []
    bol = tl.select("bolus")
    for t, units, dur in zip(bol.time, bol.value, bol.duration):
        d = BOLUS_DURATION if np.isnan(dur) else dur
        if units > 0:
            pieces.append((t, t + d, units / d))
    bas = tl.select("basal")
    for k, (t, rate) in enumerate(zip(bas.time, bas.value)):
        end = bas.time[k + 1] if k + 1 < len(bas) else np.inf
        if end > t:
            pieces.append((t, end, rate / 60.0))  # U/h -> U/min
    return pieces


def _insulin_breaks(tl):
    return np.asarray([p for a, b, _ in _insulin_pieces(tl) for p in (a, b)], dtype=float)


def _basal_breaks(tl):
    return tl.select("basal").time[:1].astype(float)


def _basal_set(tl, left, right):
    bas = tl.select("basal")
    if len(bas) == 0:
        return np.zeros_like(left)
    return (left >= bas.time[0]).astype(float)


# ------------------------------------------------------------ generic shapes
def _spread_pieces(kind: str, default_duration: float | None):
    """(start, end, rate) for amounts spread over their duration (or a default)."""

    def pieces(tl: Timeline):
        ev = tl.select(kind)
        out = []
        for t, amount, dur in zip(ev.time, ev.value, ev.duration):
            d = default_duration if np.isnan(dur) else dur
            if amount > 0:
                out.append((t, t + d, amount / d))
        return out

    return pieces


def _level_pieces(kind: str, scale: float = 1.0):
    """(start, end, value) for a level that holds from each row to the next."""

    def pieces(tl: Timeline):
        ev = tl.select(kind)
        ends = list(ev.time[1:]) + [np.inf]
        return [(t, e, v * scale) for t, e, v in zip(ev.time, ends, ev.value) if e > t]

    return pieces


def _breaks_of(pieces):
    return lambda tl: np.asarray([p for a, b, _ in pieces(tl) for p in (a, b)], dtype=float)


def _rate_signal(name, unit, description, pieces) -> "Signal":
    return Signal(name, unit, description, _breaks_of(pieces), lambda tl, a, b: _rate_on(pieces(tl), a, b))


def _level_signal(name, unit, description, kind) -> "Signal":
    """A level signal that is NaN (= the reading input's default) before its first row."""
    pieces = _level_pieces(kind)

    def values(tl, left, right):
        ev = tl.select(kind)
        out = _rate_on(pieces(tl), left, right)
        return np.where(left < (ev.time[0] if len(ev) else np.inf), np.nan, out)

    return Signal(name, unit, description, _breaks_of(pieces), values)


SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        Signal("carbs", "g/min", "carbohydrate ingestion rate", _carb_breaks, _carbs),
        Signal("carbs_episode", "g", "grams eaten so far in the current eating episode", _carb_breaks, _carbs_episode),
        Signal("meal_episode", "1", "number of eating episodes begun so far", _carb_breaks, _meal_episode),
        Signal("insulin", "U/min", "subcutaneous insulin delivery (boluses + set basal)", _insulin_breaks,
               lambda tl, a, b: _rate_on(_insulin_pieces(tl), a, b)),
        Signal("basal_set", "1", "1 once a basal rate has been set by the timeline", _basal_breaks, _basal_set),
        _level_signal("sodium_intake", "mmol/day", "dietary sodium intake", "sodium_intake"),
        _rate_signal("exercise", "1", "exercise intensity (fraction of heart-rate reserve)",
                     lambda tl: [(t, t + d, v) for t, v, d in zip(*(tl.select("exercise").time,
                                 tl.select("exercise").value, tl.select("exercise").duration)) if v > 0]),
        _rate_signal("blood_loss", "mL/min", "rate of blood loss", _spread_pieces("blood_loss", None)),
        _rate_signal("sglt2i", "mg/min", "oral SGLT2 inhibitor (empagliflozin) dosing into the gut",
                     _spread_pieces("sglt2i", 1.0)),
    )
}
SIGNAL_UNITS: dict[str, str] = {name: s.unit for name, s in SIGNALS.items()}


def compile_signals(tl: Timeline, names: Sequence[str], t_end: float) -> tuple[np.ndarray, np.ndarray]:
    """Compile a timeline into breakpoints and signal values up to ``t_end`` (min).

    Arguments:
        tl: the parsed timeline.
        names: signal names (``"carbs"`` or ``"timeline.carbs"``), in column order.
        t_end: end of the simulation; later breakpoints are dropped.

    Returns:
        ``(times, values)``, ``times`` of shape ``(K,)`` starting at 0, ``values`` of
        shape ``(K, len(names))``; row k holds on ``[times[k], times[k+1])``.
    """
    names = [n.split(".", 1)[1] if n.startswith("timeline.") else n for n in names]
    pts = [np.zeros(1)]
    for n in names:
        pts.append(SIGNALS[n].breakpoints(tl))
    grid = np.unique(np.concatenate(pts))
    grid = grid[(grid >= 0) & (grid < t_end) & np.isfinite(grid)]
    # drop breakpoints closer than 1e-9 min to their predecessor (float noise)
    keep = np.concatenate([[True], np.diff(grid) > 1e-9])
    grid = grid[keep]
    left = grid
    right = np.concatenate([grid[1:], [max(t_end, grid[-1] + 1.0)]])
    values = np.stack([SIGNALS[n].values(tl, left, right) for n in names], axis=1) if names else np.zeros((len(grid), 0))
    return grid, values
