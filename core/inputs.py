"""Timeline inputs of a composed model, ready for the integrator.

A composed model reads timeline signals (`physiotwin.signals`). `Inputs` holds them
as pieces that are constant in time (zero-order hold), plus the organ resets that
apply at the start of a piece (an organ lists the timeline inputs whose change
triggers `physiotwin.Organ.reset`). Two layouts:

- `piecewise_inputs`: one piece per breakpoint of the timeline (exact; for the
  adaptive solver, which stops at every breakpoint);
- `minute_inputs`: one piece per minute, each the mean of the signal over that minute
  (amounts are kept exactly when a change falls inside a minute; for the fixed-step
  solver of calibration and forecasting, and the per-minute state filter).

Arrays are padded (breakpoints with +inf, resets too) to a multiple of a few, so a
few more events do not recompile a jitted program.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .composer import Model
from .signals import compile_signals
from .timeline import Timeline

__all__ = ["Inputs", "piecewise_inputs", "minute_inputs", "minute_means", "lookup"]

PAD_BREAKPOINTS = 32  # breakpoint arrays are padded to a multiple of this
PAD_RESETS = 8


class Inputs(eqx.Module):
    """Piecewise-constant inputs.

    Attributes:
        times: start of each piece (min), increasing; padding is +inf.
        values: ``[piece, signal]``, the signal values held over each piece.
        resets: ``[piece, organ]``, the organs whose `Organ.reset` applies at the start of the piece.
        reset_times, reset_masks: the same resets as a list of times (padded with +inf)
            and organ masks, for solvers that stop at them.
    """

    times: Float[Array, " piece"]
    values: Float[Array, "piece signal"]
    resets: Bool[Array, "piece organ"]
    reset_times: Float[Array, " reset"]
    reset_masks: Bool[Array, "reset organ"]

    def at(self, t):
        """Signal values at time ``t`` (right-continuous: at a breakpoint the new value applies)."""
        return lookup(t, self.times, self.values)

    def slice(self, start: int, stop: int) -> "Inputs":
        """Pieces ``start:stop`` (of a minute layout), with the reset list kept as is."""
        return Inputs(self.times[start:stop], self.values[start:stop], self.resets[start:stop], self.reset_times,
                      self.reset_masks)


def lookup(t, times, values):
    """Zero-order hold, right-continuous: the row of the last breakpoint <= t."""
    k = jnp.maximum(jnp.sum(t >= times) - 1, 0)
    return values[k]


def _reset_rows(model: Model, values: np.ndarray) -> np.ndarray:
    """``[piece, organ]``: a reset-triggering signal of the organ changes at the start of the piece."""
    out = np.zeros((len(values), len(model.organs)), dtype=bool)
    prev = np.concatenate([values[:1], values[:-1]])  # (no reset at the first piece: the start state is set)
    for i, cols in enumerate(model.reset_columns):
        if cols:
            c = list(cols)
            out[:, i] = np.any(np.nan_to_num(values[:, c]) != np.nan_to_num(prev[:, c]), axis=1)
    return out


def _reset_list(model: Model, times: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reset times and masks, padded (+inf) to a multiple of PAD_RESETS; empty when no organ resets."""
    n_org = len(model.organs)
    if not any(model.reset_columns):
        return np.zeros(0), np.zeros((0, n_org), bool)
    at = np.flatnonzero(rows.any(axis=1))
    size = PAD_RESETS * max(1, math.ceil(len(at) / PAD_RESETS))
    t = np.full(size, np.inf)
    m = np.zeros((size, n_org), bool)
    t[:len(at)] = times[at]
    m[:len(at)] = rows[at]
    return t, m


def _pad(times: np.ndarray, values: np.ndarray, rows: np.ndarray):
    k = len(times)
    size = PAD_BREAKPOINTS * max(1, math.ceil(k / PAD_BREAKPOINTS))
    t = np.full(size, np.inf)
    t[:k] = times
    v = np.repeat(values[-1:], size, axis=0) if k else np.zeros((size, values.shape[1]))
    v[:k] = values
    r = np.zeros((size, rows.shape[1]), bool)
    r[:k] = rows
    return t, v, r


def piecewise_inputs(model: Model, tl: Timeline, t_end: float) -> Inputs:
    """One piece per breakpoint of ``tl`` up to ``t_end`` (padded)."""
    times, values = compile_signals(tl, model.signal_names, t_end)
    rows = _reset_rows(model, values)
    reset_t, reset_m = _reset_list(model, times, rows)
    t, v, r = _pad(times, values, rows)
    return Inputs(jnp.asarray(t), jnp.asarray(v), jnp.asarray(r), jnp.asarray(reset_t), jnp.asarray(reset_m))


def _zero_order(times: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(times, t, side="right") - 1
    return values[np.clip(idx, 0, len(times) - 1)]


def minute_means(times: np.ndarray, values: np.ndarray, minutes: int) -> np.ndarray:
    """Mean of each piecewise-constant signal over every minute ``[k, k+1)``, so that the
    amount delivered is kept exactly when a change falls inside a minute. A level signal
    that is not yet set (NaN) stays NaN over minutes where it is unset at the midpoint.

    Each minute sums only the pieces that overlap it, so a minute's value never depends
    on later events (not even in the last bit: forecasts rely on it)."""
    out = np.zeros((minutes, values.shape[1]))
    ends = np.append(times[1:], np.inf)
    finite = np.nan_to_num(values)
    for a, b, v in zip(times, ends, finite):
        k0 = int(np.floor(a))
        k1 = int(min(np.ceil(b), minutes))
        if k1 <= k0:
            continue
        k = np.arange(k0, k1)
        overlap = np.minimum(b, k + 1.0) - np.maximum(a, k)
        out[k0:k1] += overlap[:, None] * v[None, :]
    unset = np.isnan(_zero_order(times, values, np.arange(minutes) + 0.5))
    return np.where(unset, np.nan, out)


def minute_inputs(model: Model, tl: Timeline, minutes: int) -> Inputs:
    """One piece per minute ``[k, k+1)`` for the first ``minutes`` minutes of ``tl``."""
    times, values = compile_signals(tl, model.signal_names, float(minutes))
    v = minute_means(times, values, minutes)
    rows = _reset_rows(model, v)
    grid = np.arange(minutes, dtype=float)
    reset_t, reset_m = _reset_list(model, grid, rows)
    return Inputs(jnp.asarray(grid), jnp.asarray(v), jnp.asarray(rows), jnp.asarray(reset_t),
                  jnp.asarray(reset_m))
