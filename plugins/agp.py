"""The ambulatory glucose profile (AGP) report of a CGM record, and of its twin.

Registered (``register_reports``) as the report ``agp`` for records holding ``cgm``
readings; ``physiotwin report RECORD.csv [--twin TWIN_DIR] --out REPORT.html`` shows:

1. **Glucose statistics and targets** (the consensus table, Battelino et al. 2019, Table 1
   and Fig. 2): days of data, % time CGM active, mean glucose, GMI, CV, TIR 70-180,
   TBR < 70 and < 54, TAR > 180 and > 250 with the consensus targets; and the AGP: the
   5/25/50/75/95th percentiles of the readings by time of day with the 70-180 target band,
   beside the time-in-ranges bar.
2. **Daily glucose profiles**: one small panel per calendar day.
3. **Insulin and carbohydrates per day** (when logged): carbs, boluses, basal insulin.
4. With a twin: **Twin fit** (the fitted trace over the twin's record beside the readings),
   **Forecast** (a forecast file, or the twin's own 30/60-min forecasts over the record's
   last day) and **What-if** (a what-if file: record replay against the changed timeline).

The metrics are `physiotwin.plugins.glucose_metrics.cgm_metrics`; this module adds only
what the consensus table needs besides (days, % time active). Definitions and how they
compare with the consensus and with iglu: docs/report.md.

Sources
-------
* Battelino T, Danne T, Bergenstal RM, et al. Clinical targets for continuous glucose
  monitoring data interpretation: recommendations from the International Consensus on
  Time in Range. Diabetes Care 2019;42(8):1593-1603.
* Danne T, Nimri R, Battelino T, et al. International consensus on use of continuous
  glucose monitoring. Diabetes Care 2017;40(12):1631-1640.
* Bergenstal RM, Ahmann AJ, Bailey T, et al. Recommendations for standardizing glucose
  reporting and analysis to optimize clinical decision making in diabetes: the Ambulatory
  Glucose Profile (AGP). Diabetes Technol Ther 2013;15(3):198-211.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from physiotwin.plugins import hookimpl
from physiotwin.plugins.glucose_metrics import cgm_metrics, clarke_zone_a, mae, rmse
from physiotwin.report import Report, ReportSection

__all__ = ["KIND", "consensus_metrics", "agp_percentiles", "sections", "daily_therapy"]

KIND = "cgm"
VERY_LOW, LOW, HIGH, VERY_HIGH = 54.0, 70.0, 180.0, 250.0  # mg/dL (Battelino 2019)
PERCENTILES = (5, 25, 50, 75, 95)
AGP_BIN = 15  # min: the AGP's time-of-day grid
AGP_WINDOW = 60  # min: readings within +-30 min of a grid point (on any day) make its percentiles
DAY = 1440
COLOURS = {"very_low": "#a11d21", "low": "#e8474c", "in_range": "#3aa655", "high": "#f6c343", "very_high": "#f08c2b"}
FORECAST_HORIZONS = (30, 60)  # min: what the twin forecasts when no forecast file is given
FORECAST_EVERY = 15  # min between forecast origins on the last day


# ---------------------------------------------------------------- readings and metrics
def _readings(tl, kind: str = KIND) -> tuple[np.ndarray, np.ndarray]:
    part = tl.select(kind)
    return np.asarray(part.time, float), np.asarray(part.value, float)


def _cadence(minutes: np.ndarray) -> float:
    """The usual minutes between readings (median gap, rounded as iglu does; 5 when unknown)."""
    gaps = np.diff(np.unique(minutes))
    return float(max(1, round(float(np.median(gaps))))) if gaps.size else 5.0


def consensus_metrics(minutes, glucose) -> dict[str, float]:
    """`cgm_metrics` of readings at ``minutes``, plus ``days`` (first to last reading),
    ``cadence`` (min) and ``active`` (% time CGM active: the readings present out of those
    expected at the cadence from the first to the last reading, at most 100; iglu's
    ``active_percent`` on a regular grid)."""
    minutes = np.asarray(minutes, float)
    cadence = _cadence(minutes)
    span = float(minutes.max() - minutes.min()) if minutes.size else 0.0
    expected = int(round(span / cadence)) + 1 if minutes.size else 0
    m = cgm_metrics(glucose, expected=expected)
    m.update(days=span / DAY, cadence=cadence, active=min(100.0, m["percent_present"]))
    return m


def _fmt(value, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}{unit}"


# (label, key, digits, unit, target text, test of the target or None)
_TABLE = (
    ("Days of CGM data", "days", 1, "", "14 days", lambda v: v >= 14),
    ("% time CGM active", "active", 1, " %", "≥ 70 %", lambda v: v >= 70),
    ("Mean glucose", "mean", 0, " mg/dL", "", None),
    ("Glucose management indicator (GMI)", "gmi", 1, " %", "", None),
    ("Glucose variability (CV)", "cv", 1, " %", "≤ 36 %", lambda v: v <= 36),
    ("Time above range > 250 mg/dL (TAR level 2)", "tar250", 1, " %", "< 5 %", lambda v: v < 5),
    ("Time above range > 180 mg/dL (TAR, levels 1 + 2)", "tar180", 1, " %", "< 25 %", lambda v: v < 25),
    ("Time in range 70–180 mg/dL (TIR)", "tir", 1, " %", "> 70 %", lambda v: v > 70),
    ("Time below range < 70 mg/dL (TBR, levels 1 + 2)", "tbr70", 1, " %", "< 4 %", lambda v: v < 4),
    ("Time below range < 54 mg/dL (TBR level 2)", "tbr54", 1, " %", "< 1 %", lambda v: v < 1),
    ("Low blood glucose index (LBGI, Kovatchev)", "lbgi", 1, "", "", None),
    ("High blood glucose index (HBGI, Kovatchev)", "hbgi", 1, "", "", None),
)


def metrics_table(m: dict) -> pd.DataFrame:
    """The consensus table: metric, value, target and whether it is met (✓ / ✗)."""
    rows = []
    for label, key, digits, unit, target, test in _TABLE:
        value = m.get(key, math.nan)
        ok = "" if test is None or not math.isfinite(value) else ("✓" if test(value) else "✗")
        rows.append({"Metric": label, "Value": _fmt(value, digits, unit), "Target": target, "Met": ok})
    return pd.DataFrame(rows)


def agp_percentiles(minute_of_day, glucose, step: int = AGP_BIN, window: int = AGP_WINDOW):
    """(grid minutes ``0, step, ..``, percentiles ``[5, grid]``): the `PERCENTILES` of the
    readings within ``window / 2`` minutes of each grid point by time of day (circular, on
    any day); NaN where fewer than 5 readings fall there."""
    tod, g = np.asarray(minute_of_day, float) % DAY, np.asarray(glucose, float)
    grid = np.arange(0, DAY, step, dtype=float)
    out = np.full((len(PERCENTILES), grid.size), np.nan)
    for j, c in enumerate(grid):
        d = np.abs(tod - c)
        near = g[np.minimum(d, DAY - d) <= window / 2]
        if near.size >= 5:
            out[:, j] = np.percentile(near, PERCENTILES)
    return grid, out


# ---------------------------------------------------------------- clock and days
def _clock0(tl) -> datetime:
    """The clock time of minute 0 (midnight of an unnamed day when the record has none)."""
    return tl.start if tl.start is not None else datetime(2000, 1, 1)


def _day_index(tl, minutes: np.ndarray) -> np.ndarray:
    return np.floor((np.asarray(minutes, float) + tl.minute_of_day) / DAY).astype(int)


def _day_label(tl, day: int) -> str:
    if tl.start is None:
        return f"day {day + 1}"
    return f"{(_clock0(tl) + timedelta(days=day)):%a %d %b %Y}"


def _minutes_at(tl, day: int) -> float:
    """Minutes since the record's start at midnight of calendar day ``day``."""
    return day * DAY - tl.minute_of_day


# ---------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _targets(ax) -> None:
    ax.axhspan(LOW, HIGH, color=COLOURS["in_range"], alpha=0.10, lw=0)
    for level, colour in ((VERY_LOW, COLOURS["very_low"]), (LOW, COLOURS["low"]), (HIGH, COLOURS["high"]),
                          (VERY_HIGH, COLOURS["very_high"])):
        ax.axhline(level, color=colour, lw=0.7, ls="--" if level in (VERY_LOW, VERY_HIGH) else "-")


def _hour_axis(ax) -> None:
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3))
    ax.set_xticklabels([f"{h:02d}:00" for h in range(0, 25, 3)], fontsize=7)


def agp_figure(tl, minutes: np.ndarray, glucose: np.ndarray, m: dict):
    """The AGP (percentiles by time of day, target band) beside the time-in-ranges bar;
    the figure's label is ``agp``."""
    plt = _plt()
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [6, 1]}, label="agp")
    grid, q = agp_percentiles(minutes + tl.minute_of_day, glucose)
    hours = np.append(grid, DAY) / 60.0
    q = np.concatenate([q, q[:, :1]], axis=1)  # close the day
    ax.fill_between(hours, q[0], q[4], color="#5b7fb9", alpha=0.22, lw=0, label="5–95 %")
    ax.fill_between(hours, q[1], q[3], color="#2f5597", alpha=0.40, lw=0, label="25–75 %")
    ax.plot(hours, q[2], color="#1f3864", lw=2.0, label="median")
    _targets(ax)
    _hour_axis(ax)
    top = max(350.0, float(np.nanmax(q[4])) + 20 if np.isfinite(q[4]).any() else 350.0)
    ax.set_ylim(0, top)
    ax.set_ylabel("glucose [mg/dL]")
    ax.set_title(f"Ambulatory glucose profile ({m['days']:.1f} days, {m['n']} readings)", fontsize=10)
    ax.legend(fontsize=7, loc="upper right", ncol=3)
    ax.grid(alpha=0.25)
    _ranges_bar(bar, m)
    fig.tight_layout()
    return fig


def _ranges_bar(ax, m: dict) -> None:
    parts = [("very_low", m["tbr54"], "< 54"), ("low", m["tbr70"] - m["tbr54"], "54–69"),
             ("in_range", m["tir"], "70–180"), ("high", m["tar180"] - m["tar250"], "181–250"),
             ("very_high", m["tar250"], "> 250")]
    bottom = 0.0
    for key, share, label in parts:
        share = 0.0 if not math.isfinite(share) else share
        ax.bar(0, share, bottom=bottom, color=COLOURS[key], width=0.6)
        if share >= 2:
            ax.text(0.36, bottom + share / 2, f"{label}: {share:.0f} %", fontsize=7, va="center")
        bottom += share
    ax.set_xlim(-0.4, 1.6)
    ax.set_ylim(0, 100)
    ax.set_xticks([])
    ax.set_ylabel("% of readings", fontsize=8)
    ax.set_title("time in ranges", fontsize=9)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)


def daily_figure(tl, minutes: np.ndarray, glucose: np.ndarray, trace: tuple | None = None):
    """One small panel per calendar day (label ``daily-profiles``); ``trace``: (minutes,
    values) of a model's trace drawn over the readings."""
    plt = _plt()
    days = _day_index(tl, minutes)
    first, last = int(days.min()), int(days.max())
    n = last - first + 1
    cols = min(7, n)
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.55 * cols + 0.6, 1.45 * rows + 0.5), sharey=True,
                             squeeze=False, label="daily-profiles")
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.axis("off")
            continue
        day = first + k
        lo = _minutes_at(tl, day)
        on = days == day
        h = (minutes[on] - lo) / 60.0
        g = glucose[on]
        ax.axhspan(LOW, HIGH, color=COLOURS["in_range"], alpha=0.12, lw=0)
        ax.plot(h, g, color="#1f3864", lw=0.8)
        ax.fill_between(h, HIGH, g, where=g > HIGH, color=COLOURS["high"], alpha=0.6, lw=0)
        ax.fill_between(h, LOW, g, where=g < LOW, color=COLOURS["low"], alpha=0.7, lw=0)
        if trace is not None:
            t_on = (trace[0] >= lo) & (trace[0] < lo + DAY)
            ax.plot((trace[0][t_on] - lo) / 60.0, trace[1][t_on], color="tab:orange", lw=0.8)
        ax.set_xlim(0, 24)
        ax.set_ylim(0, 400)
        ax.set_xticks([0, 12, 24])
        ax.tick_params(labelsize=6)
        ax.set_title(_day_label(tl, day), fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- therapy per day
def _per_day(tl, kind: str, days: range) -> tuple[np.ndarray, np.ndarray] | None:
    part = tl.select(kind)
    if not len(part):
        return None
    d = _day_index(tl, part.time)
    return (np.array([part.value[d == day].sum() for day in days]),
            np.array([int((d == day).sum()) for day in days]))


def _basal_per_day(tl, days: range) -> np.ndarray | None:
    """Units of basal insulin per day: each rate (U/h) holds until the next, the last one
    until the record's last event (none before the first rate)."""
    part = tl.select("basal")
    if not len(part):
        return None
    t = np.asarray(part.time, float)
    ends = np.append(t[1:], float(np.max(tl.time)))
    out = []
    for day in days:
        lo = _minutes_at(tl, day)
        overlap = np.clip(np.minimum(ends, lo + DAY) - np.maximum(t, lo), 0.0, None)
        out.append(float(np.sum(overlap * part.value / 60.0)))
    return np.array(out)


def daily_therapy(tl) -> pd.DataFrame | None:
    """Per calendar day: readings, mean glucose and TIR, and where logged carbs (g, entries),
    boluses (U, doses), basal (U) and total insulin (U). None when nothing is logged."""
    m, g = _readings(tl)
    all_days = _day_index(tl, tl.time)
    days = range(int(all_days.min()), int(all_days.max()) + 1)
    carbs, bolus, basal = _per_day(tl, "carbs", days), _per_day(tl, "bolus", days), _basal_per_day(tl, days)
    if carbs is None and bolus is None and basal is None:
        return None
    gd = _day_index(tl, m)
    rows = []
    for k, day in enumerate(days):
        cm = cgm_metrics(g[gd == day])
        row = {"Day": _day_label(tl, day), "Readings": str(cm["n"]), "Mean [mg/dL]": _fmt(cm["mean"], 0),
               "TIR [%]": _fmt(cm["tir"], 0)}
        if carbs is not None:
            row["Carbs [g] (entries)"] = f"{carbs[0][k]:.0f} ({carbs[1][k]})"
        if bolus is not None:
            row["Bolus [U] (doses)"] = f"{bolus[0][k]:.1f} ({bolus[1][k]})"
        if basal is not None:
            row["Basal [U]"] = f"{basal[k]:.1f}"
        if bolus is not None or basal is not None:
            row["Total insulin [U]"] = _fmt((bolus[0][k] if bolus else 0.0) + (basal[k] if basal is not None else 0.0))
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the twin's sections
def _offset(tl, start: datetime | None) -> float:
    """Minutes to add to times counted from ``start`` to count them from the record's start
    (0 when either has no clock time)."""
    if start is None or tl.start is None:
        return 0.0
    return (start - tl.start).total_seconds() / 60.0


def _x(tl, minutes: np.ndarray):
    """Plot coordinates of record minutes: clock times where known, else hours."""
    minutes = np.asarray(minutes, float)
    if tl.start is None:
        return minutes / 60.0
    return np.datetime64(tl.start) + (minutes * 60e3).astype("timedelta64[ms]")


def _x_label(tl) -> str:
    return "" if tl.start is not None else "time since the record's start [h]"


def _matched(minutes: np.ndarray, at: np.ndarray, glucose: np.ndarray, tolerance: float) -> np.ndarray:
    """The reading nearest each time ``at`` within ``tolerance`` minutes (NaN where none)."""
    out = np.full(at.shape, np.nan)
    if minutes.size == 0:
        return out
    order = np.argsort(minutes)
    m, g = minutes[order], glucose[order]
    i = np.clip(np.searchsorted(m, at), 1, max(m.size - 1, 1))
    left = np.clip(i - 1, 0, m.size - 1)
    right = np.clip(i, 0, m.size - 1)
    best = np.where(np.abs(m[left] - at) <= np.abs(m[right] - at), left, right)
    near = np.abs(m[best] - at) <= tolerance
    out[near] = g[best[near]]
    return out


def _errors(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(pred) & np.isfinite(ref)
    return {"n": int(ok.sum()), "rmse": rmse(pred, ref), "mae": mae(pred, ref),
            "bias": float(np.mean(pred[ok] - ref[ok])) if ok.any() else math.nan, "zone_a": clarke_zone_a(pred, ref)}


_COMPARED = (("Mean glucose [mg/dL]", "mean", 0), ("CV [%]", "cv", 1), ("GMI [%]", "gmi", 1), ("TIR [%]", "tir", 1),
             ("TBR < 70 [%]", "tbr70", 1), ("TBR < 54 [%]", "tbr54", 1), ("TAR > 180 [%]", "tar180", 1),
             ("TAR > 250 [%]", "tar250", 1))


def _fit_table(readings: np.ndarray, fitted: np.ndarray) -> pd.DataFrame:
    a, b = cgm_metrics(readings), cgm_metrics(fitted)
    rows = [{"Metric": label, "Readings": _fmt(a[k], d), "Twin (fitted)": _fmt(b[k], d)} for label, k, d in _COMPARED]
    e = _errors(fitted, readings)
    rows += [{"Metric": "Readings compared", "Readings": str(e["n"]), "Twin (fitted)": ""},
             {"Metric": "RMSE [mg/dL]", "Readings": "", "Twin (fitted)": _fmt(e["rmse"])},
             {"Metric": "MAE [mg/dL]", "Readings": "", "Twin (fitted)": _fmt(e["mae"])},
             {"Metric": "Bias, twin − readings [mg/dL]", "Readings": "", "Twin (fitted)": _fmt(e["bias"])},
             {"Metric": "Clarke zone A [%]", "Readings": "", "Twin (fitted)": _fmt(e["zone_a"])}]
    return pd.DataFrame(rows)


def _series_figure(tl, label: str, title: str, minutes, glucose, lines, band=None):
    """Readings (dots) and model series ``lines`` [(minutes, values, label, colour)] over
    time, with the target band and an optional shaded ``band`` (minutes, low, high, label)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.6), label=label)
    ax.axhspan(LOW, HIGH, color=COLOURS["in_range"], alpha=0.10, lw=0)
    if band is not None:
        ax.fill_between(_x(tl, band[0]), band[1], band[2], color="tab:blue", alpha=0.18, lw=0, label=band[3])
    ax.plot(_x(tl, minutes), glucose, ".", ms=2.5, color="0.25", label="CGM readings")
    for t, y, name, colour in lines:
        ax.plot(_x(tl, t), y, color=colour, lw=1.3, label=name)
    ax.set_ylabel("glucose [mg/dL]")
    ax.set_xlabel(_x_label(tl))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=4, loc="upper right")
    ax.grid(alpha=0.25)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _twin_trace(inp) -> tuple[np.ndarray, np.ndarray] | None:
    """(record minutes, values): the twin's fitted trace, the replay of its own record with
    what calibration inferred (noise-free), placed on the report's record by clock time."""
    twin = inp.twin
    train = twin.training_timeline()
    if train is None or KIND not in twin.kinds:
        return None
    ds = twin.whatif(train, 0, every=5)
    return ds["time"].values + _offset(inp.record, train.start), ds[f"{KIND}_original"].values


def _fit_section(inp, minutes, glucose) -> tuple[ReportSection, tuple | None]:
    twin, tl = inp.twin, inp.record
    kind = "hybrid (mechanism + residual networks)" if twin.hybrid is not None else "mechanistic"
    d = twin.result.diagnostics
    units = {om.kind: om.unit for om in twin.observations}
    held = ", ".join(f"{k} {_fmt(v, 3)} {units.get(k, '')}" for k, v in d.get("validation_rmse", {}).items())
    text = (f"<p>A {kind} twin (organs {', '.join(twin.organs)}; observes {', '.join(twin.kinds)}), calibrated "
            f"on {twin.record_source}; held-out RMSE (the end of the training record, run freely): "
            f"{held or 'not available'}.</p>")
    trace = _twin_trace(inp)
    if trace is None:
        return ReportSection("Twin fit", text + "<p class=\"note\">No fitted trace: the twin observes no CGM or "
                                                "was saved without its record.</p>", anchor="twin-fit"), None
    on = (minutes >= trace[0].min()) & (minutes <= trace[0].max())
    fitted = np.interp(minutes[on], trace[0], trace[1])
    text += ("<p class=\"note\">The fitted trace is the twin's noise-free replay of the record it was calibrated "
             "on, with the input corrections and disturbances the fit inferred; the table compares it with the "
             f"{int(on.sum())} readings it spans.</p>")
    fig = _series_figure(tl, "twin-fit", "CGM readings and the twin's fitted trace", minutes, glucose,
                         [(trace[0], trace[1], "twin (fitted)", "tab:orange")])
    return ReportSection("Twin fit", text, _fit_table(glucose[on], fitted), (fig,), anchor="twin-fit"), trace


def _forecast_of(inp) -> tuple[object, str]:
    """The forecast Dataset (the file given, else the twin's forecasts over the record, of
    which the last day is shown) and a sentence on where it comes from."""
    from physiotwin.errors import PhysiotwinError

    ds = inp.extras.get("forecast")
    if ds is not None:
        return ds, f"from the forecast file (record {ds.attrs.get('record', '?')}, variant {ds.attrs.get('variant', '?')})"
    if inp.twin is None or KIND not in inp.twin.kinds:
        return None, ""
    try:
        ds = inp.twin.forecast(inp.record, FORECAST_HORIZONS, FORECAST_EVERY)
    except PhysiotwinError as err:
        return None, f"the twin could not forecast this record: {err}"
    return ds, f"computed by the twin from every {FORECAST_EVERY} min of the record"


def _forecast_section(inp, minutes, glucose) -> ReportSection | None:
    ds, origin_text = _forecast_of(inp)
    if ds is None:
        return ReportSection("Forecast", f"<p class=\"note\">{origin_text}</p>", anchor="forecast") if origin_text \
            else None
    if KIND not in ds or ds[KIND].dims != ("origin", "horizon"):
        return ReportSection("Forecast", f"<p class=\"note\">Not a forecast of {KIND} readings (a variable "
                             f"{KIND}[origin, horizon], as `physiotwin forecast` writes).</p>", anchor="forecast")
    tl = inp.record
    origins = np.asarray(ds["origin"].values, float)
    if "origin_time" in ds.coords and tl.start is not None:
        origins = (ds["origin_time"].values - np.datetime64(tl.start)) / np.timedelta64(60, "s")
    end = float(minutes.max())
    last = origins >= end - DAY
    rows, lines, band = [], [], None
    for j, h in enumerate(np.asarray(ds["horizon"].values, float)):
        at = origins + h
        pred = np.asarray(ds[KIND].values[:, j], float)
        e = _errors(pred[last], _matched(minutes, at[last], glucose, 2.5))
        rows.append({"Horizon [min]": f"{h:.0f}", "Forecasts scored": str(e["n"]), "RMSE [mg/dL]": _fmt(e["rmse"]),
                     "MAE [mg/dL]": _fmt(e["mae"]), "Bias [mg/dL]": _fmt(e["bias"]),
                     "Clarke zone A [%]": _fmt(e["zone_a"])})
        lines.append((at[last], pred[last], f"{h:.0f} min ahead", f"C{j + 1}"))
        if band is None and f"{KIND}_lower" in ds:
            band = (at[last], ds[f"{KIND}_lower"].values[last, j], ds[f"{KIND}_upper"].values[last, j],
                    f"90 % band, {h:.0f} min")
    shown = minutes >= end - DAY
    fig = _series_figure(tl, "forecast", "Forecasts over the record's last day, at the time they forecast",
                         minutes[shown], glucose[shown], lines, band)
    text = (f"<p>Forecasts {origin_text}; shown and scored: the origins of the last 24 h, each against the reading "
            "within 2.5 min of its target time. Each forecast uses readings and logged inputs up to its origin "
            "only.</p>")
    return ReportSection("Forecast", text, pd.DataFrame(rows), (fig,), anchor="forecast")


_LABELS = {k: label for label, k, _ in _COMPARED} | {"lbgi": "LBGI", "hbgi": "HBGI"}
_WHATIF_METRICS = ("mean", "cv", "gmi", "tir", "tbr70", "tbr54", "tar180", "tar250", "lbgi", "hbgi")


def _whatif_table(ds) -> pd.DataFrame:
    m = ds[f"{KIND}_metrics"].to_pandas()
    q = ds[f"{KIND}_metrics_quantiles"].to_pandas() if f"{KIND}_metrics_quantiles" in ds else None
    rows = []
    for name in [n for n in _WHATIF_METRICS if n in m.index]:
        a, b = float(m.loc[name, "original"]), float(m.loc[name, "whatif"])
        row = {"Metric": _LABELS.get(name, name), "Record (replayed)": _fmt(a), "What-if": _fmt(b), "Change": _fmt(b - a)}
        if q is not None:
            row["What-if, 90 % of draws"] = f"{_fmt(float(q.iloc[0][name]))} to {_fmt(float(q.iloc[-1][name]))}"
        rows.append(row)
    return pd.DataFrame(rows)


def _whatif_section(inp, minutes, glucose) -> ReportSection:
    ds, tl = inp.extras["whatif"], inp.record
    if KIND not in ds or f"{KIND}_original" not in ds or ds[KIND].dims != ("time",):
        return ReportSection("What-if", f"<p class=\"note\">The what-if file has no {KIND} replay.</p>",
                             anchor="whatif")
    t = np.asarray(ds["time"].values, float)
    if "datetime" in ds.coords and tl.start is not None:
        t = (ds["datetime"].values - np.datetime64(tl.start)) / np.timedelta64(60, "s")
    band = None
    if f"{KIND}_quantiles" in ds:
        qs = ds[f"{KIND}_quantiles"].values
        band = (t, qs[0], qs[-1], "what-if readings, 5–95 %")
    lines = [(t, ds[f"{KIND}_original"].values, "record (replayed)", "0.45"), (t, ds[KIND].values, "what-if", "tab:blue")]
    on = (minutes >= t.min()) & (minutes <= t.max())
    fig = _series_figure(tl, "whatif", "What-if: the twin under the changed timeline", minutes[on], glucose[on],
                         lines, band)
    text = (f"<p>The twin replays its record ({ds.attrs.get('record', '?')}) and the changed timeline "
            f"{ds.attrs.get('timeline', '?')} (variant {ds.attrs.get('variant', '?')}, "
            f"{ds.attrs.get('samples', 0)} posterior draws). The change between the two replays is the prediction "
            "that carries least fit error; metrics are of the noise-free series.</p>")
    table = _whatif_table(ds) if f"{KIND}_metrics" in ds else None
    return ReportSection("What-if", text, table, (fig,), anchor="whatif")


def twin_sections(inp, minutes, glucose) -> tuple[list[ReportSection], tuple | None]:
    """The twin's sections (fit, forecast, what-if, where given) and its fitted trace."""
    out, trace = [], None
    if inp.twin is not None:
        fit, trace = _fit_section(inp, minutes, glucose)
        out.append(fit)
    forecast = _forecast_section(inp, minutes, glucose)
    if forecast is not None:
        out.append(forecast)
    if inp.extras.get("whatif") is not None:
        out.append(_whatif_section(inp, minutes, glucose))
    return out, trace


# ---------------------------------------------------------------- the record's sections
_DEFINITIONS = (
    "<p class=\"note\">Percentages are of the CGM readings present (at a regular cadence, the consensus's "
    "percentage of time). Ranges: TIR 70–180 mg/dL inclusive; TBR &lt; 70 includes &lt; 54 and TAR &gt; 180 "
    "includes &gt; 250, as in the consensus targets. CV = 100 SD / mean (sample SD); GMI % = 3.31 + 0.02392 × "
    "mean glucose [mg/dL]. % time active: readings present out of those expected every {cadence:.0f} min from "
    "the first to the last reading. AGP: percentiles of the readings within ±{half} min of each "
    "{step}-minute point of the day, all days pooled.</p>")


def _summary(tl, minutes, glucose, m) -> ReportSection:
    notes = []
    if m["days"] < 14 or m["active"] < 70:
        notes.append("<p class=\"note\"><b>Data sufficiency:</b> the consensus asks for 14 days of CGM data with "
                     f"at least 70 % of readings present; this record has {m['days']:.1f} days and "
                     f"{m['active']:.0f} % active: read the metrics with care.</p>")
    text = "".join(notes) + _DEFINITIONS.format(cadence=m["cadence"], half=AGP_WINDOW // 2, step=AGP_BIN)
    return ReportSection("Glucose statistics and targets", text, metrics_table(m),
                         (agp_figure(tl, minutes, glucose, m),), anchor="consensus-metrics")


def sections(inp) -> list[ReportSection]:
    """The AGP report's sections for a `physiotwin.report.ReportInput`."""
    tl = inp.record
    minutes, glucose = _readings(tl)
    if minutes.size == 0:
        return []
    m = consensus_metrics(minutes, glucose)
    fit = twin_sections(inp, minutes, glucose) if inp.twin is not None or inp.extras else ([], None)
    out = [_summary(tl, minutes, glucose, m)]
    daily = ("<p class=\"note\">The CGM readings of each calendar day; band 70–180 mg/dL"
             + ("; orange: the twin's fitted trace" if fit[1] is not None else "") + ".</p>")
    out.append(ReportSection("Daily glucose profiles", daily, None,
                             (daily_figure(tl, minutes, glucose, fit[1]),), anchor="daily-profiles"))
    therapy = daily_therapy(tl)
    if therapy is not None:
        out.append(ReportSection("Insulin and carbohydrates per day", "<p class=\"note\">As logged in the record. "
                                 "Basal: each rate holds until the next one (none is counted before the first "
                                 "rate or after the record's last event).</p>", therapy, anchor="therapy"))
    return out + fit[0]


@hookimpl
def register_reports(register):
    register(Report("agp", "ambulatory glucose profile and consensus CGM metrics (Battelino 2019); with a twin, "
                    "its fit, forecasts and what-if", (KIND,), sections))
