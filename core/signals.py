"""Timeline -> piecewise-constant input signals.

Organs read timeline inputs as *signals*: functions of time that are constant
between breakpoints (zero-order hold, right-continuous: at a breakpoint the new
value applies). The signals come with the timeline kinds that plugins register
(`physiotwin.TimelineKind.signals`; ``physiotwin signals`` lists them). A timeline
is compiled once, in NumPy, into

- ``times``: increasing breakpoints, ``times[0] == 0``;
- ``values``: one row per breakpoint, one column per signal,

and the breakpoints are handed to the step-size controller (``jump_ts``) so the
solver never steps over a change of input.

The helpers below build the common shapes of a signal from (start, end, value)
pieces: `rate_signal` (amounts delivered at a rate over an interval; overlapping
pieces add), `spread_pieces` (each event's amount spread evenly over its duration),
`level_signal` (a level that holds from each row to the next).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from .kinds import Signal
from .timeline import Timeline

__all__ = ["Signal", "compile_signals", "rate_on", "rate_signal", "spread_pieces", "level_signal",
           "breaks_of", "signal_units"]

Pieces = Callable[[Timeline], list[tuple[float, float, float]]]


def rate_on(pieces, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Sum of the values of the pieces ``(start, end, value)`` covering the middle of each segment."""
    mid = 0.5 * (left + right)
    out = np.zeros_like(left)
    for a, b, r in pieces:
        out += np.where((mid >= a) & (mid < b), r, 0.0)
    return out


def breaks_of(pieces: Pieces) -> Callable[[Timeline], np.ndarray]:
    """Breakpoints of a piece function: every start and end."""
    return lambda tl: np.asarray([p for a, b, _ in pieces(tl) for p in (a, b)], dtype=float)


def spread_pieces(kind: str, default_duration: float | None) -> Pieces:
    """``(start, end, rate)`` of the positive amounts of ``kind``, each spread evenly over its
    duration (or ``default_duration`` when the row has none)."""

    def pieces(tl: Timeline):
        ev = tl.select(kind)
        out = []
        for t, amount, dur in zip(ev.time, ev.value, ev.duration):
            d = default_duration if np.isnan(dur) else dur
            if amount > 0:
                out.append((t, t + d, amount / d))
        return out

    return pieces


def level_pieces(kind: str, scale: float = 1.0) -> Pieces:
    """``(start, end, value)`` for a level that holds from each row of ``kind`` to the next."""

    def pieces(tl: Timeline):
        ev = tl.select(kind)
        ends = list(ev.time[1:]) + [np.inf]
        return [(t, e, v * scale) for t, e, v in zip(ev.time, ends, ev.value) if e > t]

    return pieces


def rate_signal(name: str, unit: str, description: str, pieces: Pieces) -> Signal:
    """A signal that is the sum of the pieces active at each time (0 elsewhere)."""
    return Signal(name, unit, description, breaks_of(pieces), lambda tl, a, b: rate_on(pieces(tl), a, b))


def level_signal(name: str, unit: str, description: str, kind: str) -> Signal:
    """A level set by the rows of ``kind``: NaN (= the reading input's default) before its first row."""
    pieces = level_pieces(kind)

    def values(tl, left, right):
        ev = tl.select(kind)
        out = rate_on(pieces(tl), left, right)
        return np.where(left < (ev.time[0] if len(ev) else np.inf), np.nan, out)

    return Signal(name, unit, description, breaks_of(pieces), values, level=True)


def signal_units(signals: Mapping[str, Signal]) -> dict[str, str]:
    return {name: s.unit for name, s in signals.items()}


def compile_signals(tl: Timeline, names: Sequence[str], t_end: float,
                    signals: Mapping[str, Signal] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Compile a timeline into breakpoints and signal values up to ``t_end`` (min).

    Arguments:
        tl: the parsed timeline.
        names: signal names (``"x"`` or ``"timeline.x"``), in column order.
        t_end: end of the simulation; later breakpoints are dropped.
        signals: the signal definitions (default: every installed plugin's).

    Returns:
        ``(times, values)``, ``times`` of shape ``(K,)`` starting at 0, ``values`` of
        shape ``(K, len(names))``; row k holds on ``[times[k], times[k+1])``.
    """
    if signals is None:
        from .registry import timeline_signals

        signals = timeline_signals()
    names = [n.split(".", 1)[1] if n.startswith("timeline.") else n for n in names]
    pts = [np.zeros(1)] + [signals[n].breakpoints(tl) for n in names]
    grid = np.unique(np.concatenate(pts))
    grid = grid[(grid >= 0) & (grid < t_end) & np.isfinite(grid)]
    # drop breakpoints closer than 1e-9 min to their predecessor (float noise)
    grid = grid[np.concatenate([[True], np.diff(grid) > 1e-9])]
    left = grid
    right = np.concatenate([grid[1:], [max(t_end, grid[-1] + 1.0)]])
    values = (np.stack([signals[n].values(tl, left, right) for n in names], axis=1) if names
              else np.zeros((len(grid), 0)))
    return grid, values
