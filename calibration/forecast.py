"""Forecasting from a twin: filter the state up to each origin, then simulate forward.

At a forecast origin ``o`` only the past is known: the readings up to ``o`` and the
logged inputs with a time ``<= o``. The forecast

1. estimates the state at every minute with the twin's state filter
   (`physiotwin.calibration.filter`), run once over the whole record (causal: the
   estimate at ``o`` uses readings ``<= o`` only);
2. simulates every origin forward at once (`jax.vmap` over origins, in blocks), with
   the inputs that were known at that origin: an event logged before ``o`` keeps
   acting, one logged after ``o`` does not exist yet, and a level stays as last set.
   The predicted reading of each kind adds the expected reading error, which decays
   with its correlation (`ObservationModel.forecast_correction`).

Horizons may run from minutes to days; origins are simulated in blocks so memory stays
bounded for long records and horizons.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..composer import Model
from ..inputs import Inputs, minute_inputs
from ..integrate import integrate
from ..timeline import Timeline
from .filter import Filter, filter_jit

__all__ = ["forecast_paths", "known_inputs", "origins_of", "run_forecast", "error_sd", "spread_part", "readings_ahead",
           "spread_origins", "BLOCK", "SPREAD_DAYS", "Z90"]

BLOCK = 128  # origins simulated together
SPREAD_DAYS = 2.0  # the last days of the training record whose forecast errors give a model's spread
Z90 = 1.6448536269514722  # standard normal 95th percentile: a central 90 % band is +- Z90 SD


def spread_part(train: Timeline) -> Timeline:
    """The last `SPREAD_DAYS` of a training record (all of it when shorter)."""
    from .data import split_record

    end = float(np.max(train.time))
    return split_record(train, end - SPREAD_DAYS * 1440.0)[1] if end > SPREAD_DAYS * 1440.0 else train


def readings_ahead(obs: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """``[origin, horizon]``: the readings 1..horizon minutes after each origin (``obs`` on
    the minute grid, at least ``max(origins) + horizon`` long)."""
    return np.stack([obs[origins + h - 1] for h in range(1, horizon + 1)], axis=1)


def spread_origins(origins: np.ndarray, minutes: int) -> np.ndarray:
    """Which origins of a spread part are scored (after the filter settles)."""
    return origins >= min(360, minutes // 4)


def error_sd(predicted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """RMS error per column of ``predicted - observed`` (``[origin, horizon]``), NaN-aware;
    a horizon with no reading takes the largest SD of the others."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.sqrt(np.nanmean((predicted - observed) ** 2, axis=0))
    fill = np.nanmax(sd) if np.isfinite(sd).any() else np.nan
    return np.where(np.isfinite(sd), sd, fill)


def forecast_paths(flt: Filter, y_origin, e_origin, inputs: Inputs, t_origin, extra_cols: tuple[int, ...]):
    """Simulate every origin forward over its own known inputs (``inputs`` batched [O, H, ...]).

    Returns ``(reading[O, H, kind], noise-free[O, H, kind], extra[O, H, n])`` at minutes
    1..H after each origin: the expected reading (model output plus the decaying reading
    error), the model output itself, and the extra outputs ``extra_cols``."""
    nk = len(flt.observations)
    cols = jnp.asarray(flt.obs_cols + tuple(extra_cols), dtype=int)

    def one(y0, e0, gi, t0):
        _, obs = integrate(flt.field, y0, gi, flt.stepping, t0=t0,
                           observe=lambda t, y, u: flt.field.outputs(t, y, u)[cols])
        h = jnp.arange(1, gi.values.shape[0] + 1, dtype=obs.dtype)
        corr = jnp.stack([om.forecast_correction(e0[k], h, flt.errors[k]) for k, om in enumerate(flt.observations)],
                         axis=-1) if nk else jnp.zeros((h.shape[0], 0))
        return obs[:, :nk] + corr, obs[:, :nk], obs[:, nk:]

    return jax.vmap(one)(y_origin, e_origin, inputs, t_origin)


_paths_jit = eqx.filter_jit(forecast_paths)


def known_inputs(model: Model, tl: Timeline, origins: np.ndarray, horizon: int, minutes: int) -> Inputs:
    """Inputs over ``[o, o + horizon)`` as known at each origin ``o``: from the input events
    (non-observation kinds) with time ``<= o``. One compilation of the timeline per
    distinct prefix."""
    kinds = tl.kinds or {}
    is_input = np.array([k in kinds and not kinds[k].observation for k in tl.kind], dtype=bool)
    inputs_idx = np.flatnonzero(is_input)
    count = np.searchsorted(tl.time[inputs_idx], origins, side="right")
    cache: dict[int, Inputs] = {}
    for c in np.unique(count):
        keep = np.zeros(len(tl), dtype=bool)
        keep[inputs_idx[:c]] = True
        sub = Timeline(tl.time[keep], tl.kind[keep], tl.value[keep], tl.duration[keep], tl.row[keep],
                       source=tl.source, start=tl.start, kinds=tl.kinds, row_label=tl.row_label)
        cache[int(c)] = jax.tree_util.tree_map(np.asarray, minute_inputs(model, sub, minutes + horizon))
    pieces = [cache[int(c)] for c in count]
    stack = lambda f: jnp.asarray(np.stack([f(g, o) for g, o in zip(pieces, origins)]))
    return Inputs(stack(lambda g, o: g.times[o:o + horizon]), stack(lambda g, o: g.values[o:o + horizon]),
                  stack(lambda g, o: g.resets[o:o + horizon]), jnp.zeros((len(origins), 0)),
                  jnp.zeros((len(origins), 0, pieces[0].resets.shape[1]), bool))


def origins_of(minutes: int, every: int, start: int | None = None) -> np.ndarray:
    start = every if start is None else start
    return np.arange(start, minutes + 1, every, dtype=int)


def run_forecast(flt: Filter, tl: Timeline, inputs: Inputs, obs: np.ndarray, y0, q: float, horizon: int,
                 every: int, extra_cols: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """Filter the whole record and forecast ``horizon`` minutes from every ``every``-minute origin.

    ``inputs``/``obs``: the record on the minute grid. Returns numpy arrays: ``origin[O]``
    (min), ``reading[O, H, kind]``, ``model[O, H, kind]`` and ``extra[O, H, n]`` (minute h
    after the origin at index h-1)."""
    minutes = obs.shape[1]
    ys, es, _ = filter_jit(flt, inputs, jnp.asarray(obs), y0, jnp.asarray(q))
    origins = origins_of(minutes, every)
    out = {"reading": [], "model": [], "extra": []}
    for b in range(0, len(origins), BLOCK):
        block = origins[b:b + BLOCK]
        pad = np.concatenate([block, np.repeat(block[-1:], BLOCK - len(block))]) if len(origins) > BLOCK else block
        known = known_inputs(flt.field.model, tl, pad, horizon, minutes)
        idx = pad - 1  # state at the end of minute o-1 = at time o
        res = _paths_jit(flt, ys[idx], es[idx], known, jnp.asarray(pad, dtype=float), tuple(extra_cols))
        for key, arr in zip(out, res):
            out[key].append(np.asarray(arr)[:len(block)])
    result = {k: np.concatenate(v) for k, v in out.items()}
    result["origin"] = origins
    return result
