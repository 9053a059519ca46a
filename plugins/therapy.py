"""Insulin therapy: the settings ``physiotwin optimize`` may change, the glycaemic goals
it optimises, and therapy changes on a timeline table (what a what-if replays).

Controls (`physiotwin.Control`), all multipliers of the logged insulin, bounded to
x0.5-x2 per setting as a safety limit:

- ``basal_profile``: the basal rate in each 3-hour block of the day (8 multipliers);
- ``carb_ratio``: every meal bolus (a bolus within 15 min before to 60 min after a logged
  meal); a multiplier ``m`` of the doses is a carbohydrate ratio divided by ``m``;
- ``correction_factor``: every other bolus (the correction factor divided by ``m``);
- ``bolus``: each bolus on its own.

Goals (`physiotwin.Goal`) over CGM readings every 5 min, consensus definitions
(Battelino et al., Diabetes Care 42:1593, 2019): ``tir`` (% 70-180 mg/dL, max), ``tbr``
(% < 70, min), ``tbr54`` (% < 54, min), ``tar`` (% > 180, min), ``mean`` (mg/dL, min).
For gradients the thresholds are logistic steps 2 mg/dL wide.

`change_therapy` scales the boluses and the basal rate over a night window of a record
(a timeline table with ``time,kind,value,unit,duration`` columns, times ISO-8601 as
`physiotwin.plugins.synthetic` writes them, or minutes since ``start``). Every other
row is kept as it is, so a twin's replay keeps what calibration inferred about them.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd

from physiotwin.plugins import hookimpl

__all__ = ["change_therapy", "scale_basal", "meal_bolus", "read_table", "write_table", "CONTROLS", "GOALS"]


def read_table(path) -> tuple[pd.DataFrame, str | None]:
    """A timeline CSV as a DataFrame, and its ``# start:`` line (or None)."""
    start = None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            if line[1:].strip().startswith("start:"):
                start = line.split("start:", 1)[1].strip()
    return pd.read_csv(path, comment="#"), start


def write_table(df: pd.DataFrame, path, start: str | None) -> None:
    """Write a timeline table (with its ``# start:`` line)."""
    head = f"# start: {start}\n" if start else ""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(head + df.to_csv(index=False, float_format="%.10g"))


def _minutes(df: pd.DataFrame, start: str | datetime | None) -> np.ndarray:
    t = df["time"]
    if pd.api.types.is_numeric_dtype(t):
        return t.to_numpy(dtype=float)
    return ((pd.to_datetime(t) - pd.Timestamp(start)).dt.total_seconds() / 60.0).to_numpy()


def _day0(start) -> float:
    return 0.0 if start is None else pd.Timestamp(start).hour * 60.0 + pd.Timestamp(start).minute


def _times_like(df: pd.DataFrame, minutes: np.ndarray, start):
    if pd.api.types.is_numeric_dtype(df["time"]):
        return minutes
    return [(pd.Timestamp(start) + pd.Timedelta(minutes=float(m))).isoformat() for m in minutes]


def scale_basal(df: pd.DataFrame, start, factor, edges_hours) -> pd.DataFrame:
    """The table with the basal rate multiplied by ``factor(hour of day)`` (an array
    function), with new ``basal`` rows at the hours ``edges_hours`` of every day."""
    out = df.reset_index(drop=True)
    minutes = _minutes(out, start)
    day0 = _day0(start)
    is_basal = (out["kind"] == "basal").to_numpy()
    if not is_basal.any():
        return out
    b_time, b_rate = minutes[is_basal], out.loc[is_basal, "value"].to_numpy(dtype=float)
    end = float(np.nanmax(minutes)) + 1.0
    first = -((day0 // 1440.0) * 1440.0 + day0)
    edges = [d + h * 60.0 for d in np.arange(first, end + 1440.0, 1440.0) for h in edges_hours]
    points = np.unique(np.concatenate([b_time, [e for e in edges if 0.0 <= e < end]]))
    points = points[points >= b_time.min()]
    rate = b_rate[np.searchsorted(b_time, points, side="right") - 1]
    rate = rate * factor(((points + day0) % 1440.0) / 60.0)
    unit = out.loc[is_basal, "unit"].iloc[0]
    basal = pd.DataFrame({"time": _times_like(out, points, start), "kind": "basal", "value": rate, "unit": unit,
                          "duration": np.nan})
    merged = pd.concat([basal, out.loc[~is_basal]], ignore_index=True)
    order = np.argsort(np.concatenate([points, minutes[~is_basal]]), kind="stable")
    return merged.iloc[order].reset_index(drop=True)


def change_therapy(df: pd.DataFrame, start: str | datetime | None, bolus: float = 1.0, night_basal: float = 1.0,
                   night: tuple[float, float] = (0.0, 6.0)) -> pd.DataFrame:
    """The record with every ``bolus`` row scaled by ``bolus`` and the basal rate scaled by
    ``night_basal`` from ``night[0]`` to ``night[1]`` o'clock each day (new ``basal`` rows
    at those times; the rate in force elsewhere is unchanged)."""
    if not (bolus >= 0 and night_basal >= 0 and math.isfinite(bolus) and math.isfinite(night_basal)):
        raise ValueError("therapy factors must be finite and >= 0")
    out = df.copy()
    out.loc[out["kind"] == "bolus", "value"] *= bolus
    if night_basal == 1.0:
        return out
    lo, hi = night

    def factor(hour):
        in_night = (hour >= lo) & (hour < hi) if lo <= hi else (hour >= lo) | (hour < hi)
        return np.where(in_night, night_basal, 1.0)

    return scale_basal(out, start, factor, night)


# ---------------------------------------------------------------- controls
BLOCK_HOURS = 3  # basal profile blocks
MEAL_BOLUS = (-15.0, 60.0)  # a bolus from 15 min before to 60 min after a logged meal is its meal bolus
BOUNDS = (0.5, 2.0)


def _minute_component(pieces, minutes: int) -> np.ndarray:
    """Mean over every minute of the sum of the pieces ``(start, end, rate)``."""
    from physiotwin.inputs import minute_means
    from physiotwin.signals import rate_on

    if not pieces:
        return np.zeros(minutes)
    times = np.unique(np.concatenate([[0.0], [p[0] for p in pieces], [p[1] for p in pieces]]))
    times = times[(times >= 0) & (times < minutes) & np.isfinite(times)]
    right = np.append(times[1:], float(minutes))
    return minute_means(times, rate_on(pieces, times, right)[:, None], minutes)[:, 0]


def _basal_pieces(tl):
    ev = tl.select("basal")
    ends = list(ev.time[1:]) + [np.inf]
    return [(t, e, v / 60.0) for t, e, v in zip(ev.time, ends, ev.value) if e > t]


def _bolus_pieces(tl):
    from physiotwin.plugins.kinds import BOLUS_DURATION

    ev = tl.select("bolus")
    d = np.where(np.isnan(ev.duration), BOLUS_DURATION, ev.duration)
    return [(t, t + di, v / di) for t, v, di in zip(ev.time, ev.value, d)]


def meal_bolus(bolus_times: np.ndarray, meal_times: np.ndarray) -> np.ndarray:
    """Which boluses go with a logged meal (see `MEAL_BOLUS`)."""
    if not len(meal_times):
        return np.zeros(len(bolus_times), bool)
    lag = bolus_times[:, None] - meal_times[None, :]
    return np.any((lag >= MEAL_BOLUS[0]) & (lag <= MEAL_BOLUS[1]), axis=1)


def _basal_layout(tl, minutes, day0):
    comp = _minute_component(_basal_pieces(tl), minutes)
    hour = ((np.arange(minutes) + 0.5 + day0) % 1440.0) / 60.0
    return comp, (hour // BLOCK_HOURS).astype(np.int32), 24 // BLOCK_HOURS


def _bolus_layout(which: str):
    def layout(tl, minutes, day0):
        pieces = _bolus_pieces(tl)
        meal = meal_bolus(np.array([p[0] for p in pieces]), tl.select("carbs").time)
        keep = {"meal": meal, "correction": ~meal, "each": np.ones(len(pieces), bool)}[which]
        chosen = [p for p, k in zip(pieces, keep) if k]
        comp = _minute_component(chosen, minutes)
        if which != "each":
            return comp, np.where(comp > 0, 0, -1).astype(np.int32), 1
        index = np.full(minutes, -1, np.int32)
        for i, (a, b, _) in enumerate(chosen):
            index[int(np.floor(a)):int(np.ceil(min(b, minutes)))] = i
        return comp, index, len(chosen)
    return layout


def _apply_basal(df, m, start):
    m = np.asarray(m, dtype=float)
    return scale_basal(df, start, lambda hour: m[(hour // BLOCK_HOURS).astype(int) % len(m)],
                       tuple(float(h) for h in range(0, 24, BLOCK_HOURS)))


def _apply_bolus(which: str):
    def apply(df, m, start):
        out = df.reset_index(drop=True).copy()
        minutes = _minutes(out, start)
        rows = np.flatnonzero((out["kind"] == "bolus").to_numpy())
        meal = meal_bolus(minutes[rows], minutes[(out["kind"] == "carbs").to_numpy()])
        keep = {"meal": meal, "correction": ~meal, "each": np.ones(len(rows), bool)}[which]
        chosen = rows[keep]
        factors = np.asarray(m, dtype=float)
        factors = np.full(len(chosen), factors[0]) if which != "each" else factors[:len(chosen)]
        out.loc[chosen, "value"] = out.loc[chosen, "value"].to_numpy(float) * factors
        return out
    return apply


def _describe_basal(m, tl):
    m = [round(float(x), 4) for x in m]
    return {"block_hours": BLOCK_HOURS, "block_start_hour": list(range(0, 24, BLOCK_HOURS)), "basal_multiplier": m}


def _describe_bolus(key: str, ratio: str | None):
    def describe(m, tl):
        out = {f"{key}_multiplier": [round(float(x), 4) for x in m] if len(m) != 1 else round(float(m[0]), 4)}
        if ratio is not None and len(m) == 1:
            out[f"{ratio}_multiplier"] = round(1.0 / float(m[0]), 4)
        return out
    return describe


def _controls():
    from physiotwin import Control

    return [
        Control("basal_profile", "insulin", _basal_layout, _apply_basal, _describe_basal, BOUNDS,
                f"basal rate in each {BLOCK_HOURS}-hour block of the day"),
        Control("carb_ratio", "insulin", _bolus_layout("meal"), _apply_bolus("meal"),
                _describe_bolus("meal_bolus", "carb_ratio"), BOUNDS,
                "every meal bolus (dose multiplier m: carbohydrate ratio / m)"),
        Control("correction_factor", "insulin", _bolus_layout("correction"), _apply_bolus("correction"),
                _describe_bolus("correction_bolus", "correction_factor"), BOUNDS,
                "every bolus without a meal (dose multiplier m: correction factor / m)"),
        Control("bolus", "insulin", _bolus_layout("each"), _apply_bolus("each"), _describe_bolus("bolus", None),
                BOUNDS, "each bolus on its own"),
    ]


# ---------------------------------------------------------------- goals
def _share(fn):
    def value(g, width):
        import jax
        import jax.numpy as jnp

        w = max(float(width), 1e-9)
        return 100.0 * jnp.mean(fn(g, w, jax.nn.sigmoid))
    return value


def _goals():
    import jax.numpy as jnp

    from physiotwin import Goal

    return [
        Goal("tir", "cgm", _share(lambda g, w, s: s((g - 70.0) / w) * s((180.0 - g) / w)), "max", "%", 2.0,
             "time in range 70-180 mg/dL"),
        Goal("tbr", "cgm", _share(lambda g, w, s: s((70.0 - g) / w)), "min", "%", 2.0, "time below 70 mg/dL"),
        Goal("tbr54", "cgm", _share(lambda g, w, s: s((54.0 - g) / w)), "min", "%", 2.0, "time below 54 mg/dL"),
        Goal("tar", "cgm", _share(lambda g, w, s: s((g - 180.0) / w)), "min", "%", 2.0, "time above 180 mg/dL"),
        Goal("mean", "cgm", lambda g, w: jnp.mean(g), "min", "mg/dL", 0.0, "mean glucose"),
    ]


CONTROLS = ("basal_profile", "carb_ratio", "correction_factor", "bolus")
GOALS = ("tir", "tbr", "tbr54", "tar", "mean")


@hookimpl
def register_controls(register):
    for c in _controls():
        register(c)


@hookimpl
def register_goals(register):
    for g in _goals():
        register(g)
