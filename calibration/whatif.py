"""What if: a calibrated twin replays its record under a changed timeline.

A twin was fitted by multiple shooting (`physiotwin.calibration.fit`): the record is cut
into windows, each integrated from its own fitted start state. Where a window's start
differs from where the previous window ended, the fit absorbed a disturbance the log
does not explain (an unlogged snack, a sensor-site change, stress). A replay keeps all of
it:

- every window starts from the previous window's *replayed* end plus the jump the fit
  found there (``start_w - end_{w-1}``), so the disturbances carry over to the changed
  timeline, while the changed inputs move the state they act on;
- every logged event the new timeline keeps unchanged (same minutes, same signal values)
  keeps the input correction the fit inferred for it (e.g. a meal's size factor); a new
  or changed event gets none (factor 1);
- after the last window (the held-out part of the record, and anything the new timeline
  adds past the record's end) the twin runs freely.

So the replay of the unchanged record *is* the twin's fitted trajectory (a test checks
it), and the replay of a changed one differs from it only through the change.

**Uncertainty.** With ``samples``, the fitted parameters are drawn from the Laplace
approximation of their posterior (`physiotwin.calibration.fit.laplace_covariance`, saved
with the twin). For each draw the *change* is predicted, ``replay_s(new) -
replay_s(record)``, and added to the fitted trajectory: the record pins the trajectory
where nothing changed, and the parameters' uncertainty enters through the effect of the
change (design note: the difference carries the least fit error). Each kind's readings
then get the observation model's error (its `FilterNoise`: an AR(1) error plus a white
reading error, with the twin's fitted error parameters), which also stands for what the
model misses. ``inflation`` scales the posterior covariance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..composer import Model
from ..errors import CalibrationError, TwinError
from ..inputs import Inputs, minute_inputs
from ..integrate import FixedSteps, integrate
from ..timeline import Timeline
from .data import correction_plans, readings_on_grid, record_minutes
from .fit import rest_state
from .hybrid import Hybrid, TwinField
from .problem import rest_signals, split_windows, substeps

__all__ = ["Plan", "WhatIf", "replay", "whatif_arrays", "whatif_dataset", "check_usable", "quantiles", "draws_of",
           "plan_of", "window_layout", "corrected_inputs"]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class Plan(eqx.Module):
    """What one replay integrates: ``W`` windows of ``L`` minutes, then a free tail."""

    win: Inputs  # [W, L] pieces
    tail: Inputs  # [R] pieces
    starts: jax.Array  # [W, S] fitted window starts (only the first is used as is)
    jumps: jax.Array  # [W, S] fitted start minus the previous window's fitted end (row 0 unused)


def replay(field: TwinField, stepping: FixedSteps, plan: Plan, nonneg, every: int):
    """States and outputs ``[minute // every, output + state]`` at the end of every
    ``every``-th minute of a replay (see the module docstring)."""
    W, L = plan.win.values.shape[:2]

    def observe(t, y, u):
        return jnp.concatenate([field.evaluate(t, y, u)[1], y])

    def window(y_prev, x):
        win, jump, start, w = x
        y0 = jnp.where(w == 0, start, y_prev + jump)
        y0 = jnp.where(nonneg, jnp.maximum(y0, 0.0), y0)
        return integrate(field, y0, win, stepping, t0=w * float(L), observe=observe)

    y_last, seen = jax.lax.scan(window, plan.starts[0], (plan.win, plan.jumps, plan.starts, jnp.arange(W)))
    _, tail = integrate(field, y_last, plan.tail, stepping, t0=jnp.asarray(W * float(L)), observe=observe)
    out = jnp.concatenate([seen.reshape((W * L,) + seen.shape[2:]), tail])
    return out[every - 1::every]


@eqx.filter_jit
def replays(model: Model, thetas, hybrid: Hybrid | None, day0, plans: Plan, nonneg, stepping: FixedSteps,
             every: int):
    """Replays of every plan (stacked on a leading axis) under every parameter vector."""

    def one(theta, plan):
        return replay(TwinField(model, theta, hybrid, day0), stepping, plan, nonneg, every)

    return jax.vmap(lambda th: jax.vmap(lambda p: one(th, p))(plans))(thetas)


# ---------------------------------------------------------------- plans
def check_usable(model: Model, tl: Timeline) -> None:
    """Every input row of ``tl`` must feed a signal the composition reads (`TimelineError`
    naming the file, row and kind otherwise); readings are allowed and ignored."""
    kinds = tl.kinds or {}
    read = {n.split(".", 1)[1] for n in model.signal_names}
    for kind in dict.fromkeys(str(k) for k in tl.kind):
        decl = kinds.get(kind)
        if decl is None or decl.observation:
            continue
        if not {s.name for s in decl.signals} & read:
            raise tl.error(int(np.flatnonzero(tl.kind == kind)[0]), "kind", (
                f"the twin's composition ({', '.join(model.organ_names)}) has no input for {kind!r} rows (they "
                f"feed {', '.join(s.name for s in decl.signals)}; it reads {', '.join(sorted(read)) or 'none'})"))


def _carried_factors(plan_new, plan_old, fitted: np.ndarray | None, new_values, old_values) -> np.ndarray:
    """Log factors for the events of ``plan_new``: the fitted one of the identical event of
    the record (same minutes, same values of the corrected signals), else 0."""
    out = np.zeros(plan_new.n_events)
    if plan_old is None or fitted is None:
        return out
    cols = plan_new.columns
    by_minutes = {}
    for m in range(plan_old.n_events):
        minutes = np.flatnonzero(plan_old.index == m)
        if len(minutes):
            by_minutes[(int(minutes[0]), len(minutes))] = (m, minutes)
    for n in range(plan_new.n_events):
        minutes = np.flatnonzero(plan_new.index == n)
        if not len(minutes):
            continue
        hit = by_minutes.get((int(minutes[0]), len(minutes)))
        if hit is None or not np.array_equal(hit[1], minutes):  # another event, or the event moved
            continue
        same = np.allclose(new_values[np.ix_(minutes, cols)], old_values[np.ix_(minutes, cols)], rtol=1e-12,
                           atol=0.0, equal_nan=True)
        if same and hit[0] < len(fitted):
            out[n] = fitted[hit[0]]
    return out


def corrected_inputs(model: Model, tl: Timeline, record: Timeline, minutes: int, fitted: dict[str, np.ndarray]
                     ) -> Inputs:
    """The minute inputs of ``tl`` with the record's fitted corrections carried over to the
    events ``tl`` keeps unchanged."""
    from ..registry import corrections

    inputs = minute_inputs(model, tl, minutes)
    if not fitted:
        return inputs
    old = minute_inputs(model, record, minutes)
    new_values, old_values = np.asarray(inputs.values), np.asarray(old.values)
    active = [c() for c in corrections().values() if c.name in fitted]
    old_plans = {p.name: p for p in correction_plans(model, record, active, minutes)}
    values = new_values.copy()
    for plan in correction_plans(model, tl, active, minutes):
        c = _carried_factors(plan, old_plans.get(plan.name), fitted.get(plan.name), new_values, old_values)
        factor = np.exp(np.append(c, 0.0))[plan.index]
        values[:, plan.columns] *= factor[:, None]
    return eqx.tree_at(lambda i: i.values, inputs, jnp.asarray(values))


def plan_of(inputs: Inputs, starts: np.ndarray, ends: np.ndarray, L: int) -> Plan:
    W = starts.shape[0]
    win, tail = split_windows(inputs, W, L)
    jumps = np.concatenate([np.zeros_like(starts[:1]), starts[1:] - ends[:-1]])
    return Plan(win, tail, jnp.asarray(starts), jnp.asarray(jumps))


# ---------------------------------------------------------------- the job
@dataclass
class WhatIf:
    """Arrays of one what-if (see `whatif_arrays`): ``time`` (min, end of each output
    interval); ``mode[scenario, time, output + state]`` for scenario (record, new) at the
    fitted values; ``samples[sample, time, output + state]`` of the new timeline (the
    change of each draw added to the fitted trajectory; None without samples);
    ``readings[kind] = [sample, time]`` with the observation error drawn."""

    time: np.ndarray
    mode: np.ndarray
    samples: np.ndarray | None
    readings: dict[str, np.ndarray]
    columns: list[str]
    minutes: int
    record_minutes: int


def window_layout(twin, variant: str) -> tuple[np.ndarray, np.ndarray, int]:
    windows = twin.result.windows.get("mechanistic" if variant == "population" else variant)
    if windows is None:
        raise TwinError("this twin was saved before what-if replays were supported (it has no fitted window "
                        "states); calibrate it again")
    L = int(twin.result.diagnostics.get("window_minutes", twin.settings.window or 0))
    starts, ends = (np.asarray(a) for a in windows)
    if variant == "population":  # no fit: one free run (the start is set to the rest state)
        starts, ends = np.zeros_like(starts), np.zeros_like(ends)
    return starts, ends, L


def draws_of(twin, variant: str, samples: int, inflation: float, rng) -> np.ndarray:
    """``samples`` parameter vectors from the twin's Laplace posterior (full theta)."""
    cov = twin.result.covariance.get(variant)
    if cov is None:
        raise CalibrationError("--samples needs the twin's posterior, which this twin does not have (saved "
                               "before what-if support, or the population variant); calibrate it again")
    z = twin.result.z if variant == "twin" else twin.result.z_mech
    if len(z) == 0:
        return np.tile(twin.theta(variant), (samples, 1))
    cov = inflation ** 2 * np.asarray(cov)
    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    root = v * np.sqrt(np.clip(w, 0.0, None))
    zs = z[None] + rng.standard_normal((samples, len(z))) @ root.T
    return np.stack([np.asarray(twin.space.theta(jnp.asarray(zi))) for zi in zs])


def _reading_noise(twin, variant: str, n: int, minutes: int, every: int, rng) -> dict[str, np.ndarray]:
    """``[n, minutes // every]`` draws of each kind's reading error (AR(1) + white)."""
    from scipy.signal import lfilter

    out = {}
    for om, errors in zip(twin.observations, twin.errors("mechanistic" if variant == "population" else variant)):
        fn = om.filter_noise({k: jnp.asarray(v) for k, v in errors.items()})
        rho, var, white = (float(np.asarray(x)) for x in (fn.rho, fn.error_var, fn.reading_var))
        xi = rng.standard_normal((n, minutes)) * np.sqrt(max(var, 0.0) * (1.0 - rho ** 2))
        xi[:, 0] = rng.standard_normal(n) * np.sqrt(max(var, 0.0))
        ar = lfilter([1.0], [1.0, -rho], xi, axis=1) if rho > 0 else xi
        e = ar[:, every - 1::every] + rng.standard_normal((n, minutes // every)) * np.sqrt(max(white, 0.0))
        out[om.kind] = e
    return out


@eqx.filter_jit
def _controlledreplays(model: Model, thetas, hybrid: Hybrid | None, day0, record: Plan, inputs: Inputs, jumps, y0,
                        setups, nonneg, stepping: FixedSteps, every: int):
    """Per parameter vector: the record's replay and the closed loop over the new
    timeline (with the record's disturbances), stacked like `replays`."""
    from ..control import closed_loop

    def one(theta, st):
        field = TwinField(model, theta, hybrid, day0)
        old = replay(field, stepping, record, nonneg, every)
        new, _ = closed_loop(field, stepping, y0, inputs.values, inputs.resets, st.controller, st.settings, st.feed,
                             st.reading, st.signal, every, jumps=jumps, nonneg=nonneg, foresee=st.foresee)
        return jnp.stack([old, new])

    return jax.vmap(one)(thetas, setups)


def _controlled(twin, tl: Timeline, controller: str, thetas: np.ndarray, plan: Plan, fitted, record, minutes: int,
                every: int, hybrid: Hybrid | None, nonneg):
    """The what-if under a closed-loop controller (`physiotwin.control`)."""
    from ..control import controlled, setup

    model, day0 = twin.model, record.minute_of_day
    ctl, tl_c = controlled(controller, model, tl, minutes, day0)
    inputs = corrected_inputs(model, tl_c, record, minutes, fitted)
    W, L = plan.win.values.shape[:2]
    jumps = np.zeros((minutes, len(model.state_names)))
    jumps[np.arange(1, W) * L] = np.asarray(plan.jumps)[1:]
    setups = [setup(ctl, model, th, tl, minutes, day0) for th in thetas]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *setups)
    return _controlledreplays(model, jnp.asarray(thetas), hybrid, jnp.asarray(day0), plan, inputs,
                               jnp.asarray(jumps), plan.starts[0], stacked, nonneg, substeps(model), int(every))


def whatif_arrays(twin, tl: Timeline, variant: str = "twin", samples: int = 0, seed: int = 0,
                  every: int = 5, inflation: float = 1.0, minutes: int | None = None,
                  controller: str | None = None) -> WhatIf:
    """Replay the twin's record and ``tl`` (see the module docstring) over ``minutes``
    (default: the longer of the record and ``tl``; never shorter than the record); with
    ``controller``, ``tl`` runs under that closed-loop controller."""
    record = twin.training_timeline()
    if record is None:
        raise TwinError("this twin was saved without its record; a replay needs it")
    if variant == "population" and samples:
        raise CalibrationError("--samples needs a posterior; the population variant has none")
    check_usable(twin.model, tl)
    n_rec = record_minutes(record)
    minutes = max(n_rec, record_minutes(tl) if minutes is None else int(minutes))
    minutes -= minutes % every
    starts, ends, L = window_layout(twin, variant)
    if starts.shape[0] * L > n_rec:
        raise TwinError("the twin's fitted windows do not fit its record (corrupted twin)")
    fitted = {} if variant == "population" else {k: np.asarray(v) for k, v in twin.result.corrections.items()}
    plans = [plan_of(corrected_inputs(twin.model, t, record, minutes, fitted), starts, ends, L) for t in (record, tl)]
    if variant == "population":
        y0 = rest_state(twin.model, twin.theta(variant), plans[0].win.values[0, 0], rest_signals(twin.model))
        plans = [eqx.tree_at(lambda p: p.starts, p, p.starts.at[0].set(y0)) for p in plans]
    nonneg = jnp.asarray([twin.model.declaration(n).nonnegative for n in twin.model.state_names])
    hybrid = twin.hybrid if variant == "twin" else None
    day0 = record.minute_of_day
    rng = np.random.default_rng(seed)
    thetas = [twin.theta(variant)[None]]
    if samples:
        thetas.append(draws_of(twin, variant, int(samples), inflation, rng))
    thetas = np.concatenate(thetas)
    if controller is None:
        stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *plans)
        out = np.asarray(replays(twin.model, jnp.asarray(thetas), hybrid, jnp.asarray(day0), stacked, nonneg,
                                  substeps(twin.model), int(every)))
    else:
        out = np.asarray(_controlled(twin, tl, controller, thetas, plans[0], fitted, record, minutes, every, hybrid,
                                     nonneg))
    return _result(twin, variant, out, samples, minutes, every, n_rec, rng)


def _result(twin, variant: str, out: np.ndarray, samples: int, minutes: int, every: int, n_rec: int, rng) -> WhatIf:
    mode = out[0]
    draws = mode[0][None] + (out[1:, 1] - out[1:, 0]) if samples else None
    columns = list(twin.model.output_names) + list(twin.model.state_names)
    readings = {}
    if samples:
        noise = _reading_noise(twin, variant, int(samples), minutes, every, rng)
        for om in twin.observations:
            col = columns.index(om.output_name(twin.model))
            readings[om.kind] = draws[:, :, col] + noise[om.kind]
            if om.reading_limits is not None:
                readings[om.kind] = np.clip(readings[om.kind], *om.reading_limits)
    time = np.arange(1, minutes // every + 1) * float(every)
    return WhatIf(time, mode, draws, readings, columns, minutes, n_rec)


def quantiles(x: np.ndarray, q: Sequence[float] = QUANTILES) -> np.ndarray:
    """Quantiles over the first axis (NaN where a draw is not finite)."""
    return np.nanquantile(np.where(np.isfinite(x), x, np.nan), np.asarray(q), axis=0)


# ---------------------------------------------------------------- the Dataset
def _metrics(kind: str, series: np.ndarray, limits: tuple[float, float] | None = None) -> dict[str, float]:
    """The kind's series metrics of ``series``, clipped to the instrument's ``limits`` (a
    model can predict values no instrument reports, e.g. glucose at or below zero)."""
    from ..registry import series_metrics

    if limits is not None:
        series = np.clip(series, *limits)
    out: dict[str, float] = {}
    for m in series_metrics(kind):
        out.update({k: float(v) for k, v in m.summarise(series[np.isfinite(series)], series.shape[-1]).items()})
    return out


def _kind_variables(twin, res: WhatIf) -> tuple[dict, dict]:
    """Per observed kind: the predicted (noise-free) readings of the record and the new
    timeline, their change, the record's readings plus that change, bands, and the kind's
    series metrics side by side."""
    data, coords = {}, {}
    record = twin.training_timeline()
    for om in twin.observations:
        k, col = om.kind, res.columns.index(om.output_name(twin.model))
        attrs = {"units": om.unit, "output": om.output_name(twin.model)}
        data[f"{k}_original"] = (("time",), res.mode[0, :, col], {**attrs, "long_name": f"{k} of the replayed "
                                                                    "record (the fitted trajectory), noise-free"})
        data[k] = (("time",), res.mode[1, :, col], {**attrs, "long_name": f"{k} under the new timeline, noise-free"})
        data[f"{k}_change"] = (("time",), res.mode[1, :, col] - res.mode[0, :, col],
                               {**attrs, "long_name": f"change of {k}: new minus record replay"})
        read = readings_on_grid(record, k, res.minutes)[res.time.astype(int) - 1]
        data[f"{k}_record_plus_change"] = (("time",), read + res.mode[1, :, col] - res.mode[0, :, col], {
            **attrs, "long_name": f"the record's {k} readings plus the predicted change (NaN where none was read)"})
        scen = {"original": _metrics(k, res.mode[0, :, col], om.reading_limits),
                "whatif": _metrics(k, res.mode[1, :, col], om.reading_limits)}
        names = list(scen["original"])
        if names:
            coords[f"{k}_metric"] = names
            data[f"{k}_metrics"] = ((f"{k}_metric", "scenario"),
                                    np.array([[scen[s][n] for s in scen] for n in names]),
                                    {"long_name": f"series metrics of the noise-free {k}, record vs what-if"})
        if res.samples is None:
            continue
        data[f"{k}_samples"] = (("sample", "time"), res.readings[k], {**attrs, "long_name": f"{k} readings drawn "
                                                                       "from the posterior and the sensor error"})
        data[f"{k}_quantiles"] = (("quantile", "time"), quantiles(res.readings[k]),
                                  {**attrs, "long_name": f"quantiles of the {k} readings under the new timeline"})
        data[f"{k}_model_quantiles"] = (("quantile", "time"), quantiles(res.samples[:, :, col]),
                                        {**attrs, "long_name": f"quantiles of the noise-free {k} under the new "
                                                               "timeline (posterior draws, no reading error)"})
        if names:
            per = np.array([[_metrics(k, r)[n] for n in names] for r in res.readings[k]])
            data[f"{k}_metrics_quantiles"] = (("quantile", f"{k}_metric"), quantiles(per),
                                              {"long_name": f"quantiles of the {k} metrics of the drawn readings"})
    return data, coords


def whatif_dataset(twin, res: WhatIf, source: str, variant: str, seed: int, inflation: float):
    """The what-if as an xarray Dataset: every state and output (``organ.var``, in its
    unit) of the replay of the new timeline, as `physiotwin.simulate` writes them, plus
    the per-kind variables of `_kind_variables`."""
    import xarray as xr

    data = {}
    for i, name in enumerate(res.columns):
        decl = twin.model.declaration(name)
        data[name] = (("time",), res.mode[1, :, i], {"units": decl.unit, "long_name": decl.description,
                                                     "organ": name.split(".", 1)[0]})
    kind_data, coords = _kind_variables(twin, res)
    data.update(kind_data)
    coords["time"] = ("time", res.time, {"units": "min", "long_name": "minutes since the record's start"})
    coords["scenario"] = ["original", "whatif"]
    if res.samples is not None:
        coords["quantile"] = list(QUANTILES)
    record = twin.training_timeline()
    if record is not None and record.start is not None:
        from datetime import timedelta

        coords["datetime"] = ("time", [np.datetime64(record.start + timedelta(minutes=float(t))) for t in res.time])
    finite = bool(np.all(np.isfinite(res.mode)))
    attrs = {"title": "physiotwin what-if replay", "timeline": source, "record": twin.record_source,
             "variant": variant, "organs": ",".join(twin.organs), "samples": 0 if res.samples is None else
             int(res.samples.shape[0]), "seed": int(seed), "posterior_inflation": float(inflation),
             "record_minutes": int(res.record_minutes),
             "note": "the replay keeps the disturbances and input corrections the fit inferred for unchanged "
                     "events; replaying the record unchanged gives the fitted trajectory"}
    if not finite:
        attrs["warning"] = "the replay is not finite (solver failure)"
    return xr.Dataset(data, coords=coords, attrs=attrs)
