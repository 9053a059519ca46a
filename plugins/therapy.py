"""Insulin therapy changes on a timeline table: what a what-if replays.

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

__all__ = ["change_therapy", "read_table", "write_table"]


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
    minutes = _minutes(out, start)
    day0 = 0.0 if start is None else (pd.Timestamp(start).hour * 60.0 + pd.Timestamp(start).minute)
    is_basal = (out["kind"] == "basal").to_numpy()
    b_time, b_rate = minutes[is_basal], out.loc[is_basal, "value"].to_numpy(dtype=float)
    end = float(np.nanmax(minutes)) + 1.0
    first = -((day0 // 1440.0) * 1440.0 + day0)
    edges = [d + h * 60.0 for d in np.arange(first, end + 1440.0, 1440.0) for h in night]
    points = np.unique(np.concatenate([b_time, [e for e in edges if 0.0 <= e < end]]))
    points = points[points >= (b_time.min() if len(b_time) else 0.0)]
    rate = b_rate[np.searchsorted(b_time, points, side="right") - 1]
    hour = ((points + day0) % 1440.0) / 60.0
    lo, hi = night
    in_night = (hour >= lo) & (hour < hi) if lo <= hi else (hour >= lo) | (hour < hi)
    rate = np.where(in_night, rate * night_basal, rate)
    unit = out.loc[is_basal, "unit"].iloc[0] if is_basal.any() else "U/h"
    times = points if pd.api.types.is_numeric_dtype(out["time"]) else [
        (pd.Timestamp(start) + pd.Timedelta(minutes=float(m))).isoformat() for m in points]
    basal = pd.DataFrame({"time": times, "kind": "basal", "value": rate, "unit": unit, "duration": np.nan})
    rest = out.loc[~is_basal]
    merged = pd.concat([basal, rest], ignore_index=True)
    order = np.argsort(np.concatenate([points, minutes[~is_basal]]), kind="stable")
    return merged.iloc[order].reset_index(drop=True)
