"""Synthetic records of a patient with glucose, blood-pressure and kidney data, from a truth
model that differs from the twin that will be fitted to them.

The truth is the three-organ composition (``glucose``, ``cardiovascular``, ``renal``)
with a patient's own parameters (a bundled UVA/Padova patient's glucose parameters, and
cardiovascular and renal parameters away from the nominal ones: by default a
hypertensive patient with reduced kidney function), plus what a twin never sees:

- **unlogged activity**: a walk most days (30-60 min at 30-50 % of heart-rate
  reserve), which raises heart rate, pressure and glucose uptake while it lasts;
- **logging errors**: carbohydrate counts with a lognormal error (median 0.9, log-SD
  0.2) and some snacks not logged; daily sodium intake misreported by a lognormal
  factor (median 0.8, log-SD 0.25: people under-report salt);
- **sensor and measurement errors**: a CGM with an AR(1) error (SD 8 mg/dL, correlation
  0.8 over 5 min) and dropouts; a cuff MAP with an error of SD 5 mmHg and heart rate of
  SD 3 /min; a laboratory creatinine with a 4 % error.

The record (timeline kinds, canonical units): ``basal`` (the patient's steady-state
rate), ``bolus`` and ``carbs`` (as logged), ``sodium_intake`` (as logged, daily from
07:00), ``cgm`` every 5 min, ``map`` and ``heart_rate`` twice a day at home (07:30 and
20:00) and every 30 min over one ambulatory day, ``creatinine`` weekly, and ground
truth for scoring: ``cgm_true``, ``bg_true`` (every 5 min), ``map_true``,
``heart_rate_true``, ``creatinine_true`` (hourly), ``carbs_true``, ``sodium_intake_true``.
``df.attrs`` keeps the truth: parameters, activity and intake.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

__all__ = ["generate_cardiorenal_record", "TRUTH", "ORGANS", "truth_patient", "write_cardiorenal_record"]

ORGANS = ("glucose", "cardiovascular", "renal")
# a hypertensive patient with reduced kidney function (CKD stage 3): fewer nephrons, salt
# sensitive (flatter pressure natriuresis), higher resistance and heart rate, less muscle
TRUTH = {"renal.nephrons": 0.6e6, "renal.k_pn_dist": 0.6, "renal.P_cr": 1.1, "cardiovascular.TPR0": 21.0,
         "cardiovascular.HR0": 76.0, "cardiovascular.G_HR": 0.009}
UNITS = {"basal": "U/h", "bolus": "U", "carbs": "g", "carbs_true": "g", "sodium_intake": "mmol/day",
         "sodium_intake_true": "mmol/day", "cgm": "mg/dL", "cgm_true": "mg/dL", "bg_true": "mg/dL", "map": "mmHg",
         "heart_rate": "1/min", "creatinine": "mg/dL", "map_true": "mmHg", "heart_rate_true": "1/min",
         "creatinine_true": "mg/dL"}
CARB_RATIO = 10.0  # g/U


def _meals(days: int, rng) -> list[tuple[float, float]]:
    """(minute, grams) eaten: three meals a day and a snack on half of the days."""
    out = []
    for d in range(days):
        for centre, lo, hi in ((7.5, 40, 70), (12.5, 50, 90), (19.0, 60, 100)):
            out.append((d * 1440 + round(60 * (centre + rng.normal(0, 0.5))), float(rng.integers(lo, hi + 1))))
        if rng.random() < 0.5:
            out.append((d * 1440 + round(60 * (16.0 + rng.normal(0, 0.5))), float(rng.integers(10, 25))))
    return sorted(out)


def _activity(days: int, rng) -> list[tuple[float, float, float]]:
    """(minute, intensity, duration) of the unlogged walks: most days, late afternoon."""
    return [(d * 1440 + round(60 * (17.0 + rng.normal(0, 0.7))), float(rng.uniform(0.3, 0.5)),
             float(rng.integers(30, 61))) for d in range(days) if rng.random() < 0.7]


def _inputs(days: int, rng, basal: float, sodium_mean: float):
    """The truth inputs and the logged ones: rows ``(minute, kind, value, duration)``."""
    meals, walks = _meals(days, rng), _activity(days, rng)
    sodium = [(d * 1440 + 420.0, float(sodium_mean * math.exp(rng.normal(0, 0.2)))) for d in range(days)]
    truth = [(0.0, "basal", basal, math.nan)] + [(t, "carbs", g, math.nan) for t, g in meals]
    truth += [(t, "exercise", v, d) for t, v, d in walks] + [(t, "sodium_intake", v, math.nan) for t, v in sodium]
    logged = [(0.0, "basal", basal, math.nan)]
    for t, g in meals:
        logged.append((t, "carbs_true", g, math.nan))
        count = max(1.0, round(g * 0.9 * math.exp(rng.normal(0, 0.2))))
        if g >= 25 or rng.random() < 0.5:  # snacks go unlogged half of the time
            logged += [(t, "carbs", count, math.nan), (t, "bolus", round(count / CARB_RATIO, 1), math.nan)]
    for t, v in sodium:
        logged += [(t, "sodium_intake_true", v, math.nan),
                   (t, "sodium_intake", round(v * 0.8 * math.exp(rng.normal(0, 0.25))), math.nan)]
    boluses = [(t, "bolus", v, d) for t, k, v, d in logged if k == "bolus"]
    return truth + boluses, logged


def _measurement_times(days: int, ambulatory_day: int) -> tuple[np.ndarray, np.ndarray]:
    home = [d * 1440 + m for d in range(days) for m in (450, 1200)]
    ambulatory = [ambulatory_day * 1440 + m for m in range(0, 1440, 30)]
    cuff = np.unique(np.array(home + ambulatory, dtype=float))
    labs = np.array([d * 1440 + 540.0 for d in range(0, days, 7)] + [(days - 1) * 1440 + 540.0])
    return cuff, np.unique(labs)


def _ar1(n: int, rng, sd: float, phi: float) -> np.ndarray:
    e = np.empty(n)
    e[0] = rng.normal(0, sd)
    for k in range(1, n):
        e[k] = phi * e[k - 1] + rng.normal(0, sd * math.sqrt(1 - phi ** 2))
    return e


def _readings(ds, days: int, rng, ambulatory_day: int) -> list[tuple[float, str, float, float]]:
    t = ds["time"].values
    at = lambda name, when: np.interp(when, t, ds[name].values)  # noqa: E731
    cgm_t = np.arange(5.0, days * 1440, 5.0)
    gs = at("glucose.subcutaneous_glucose", cgm_t)
    cgm = np.clip(gs + _ar1(len(cgm_t), rng, 8.0, 0.8), 40.0, 400.0)
    keep = rng.random(len(cgm_t)) > 0.01
    for _ in range(days // 3):  # dropouts of 30-90 min
        k = int(rng.integers(0, len(cgm_t)))
        keep[k:k + int(rng.integers(6, 19))] = False
    rows = [(m, "cgm", float(v), math.nan) for m, v, k in zip(cgm_t, cgm, keep) if k]
    rows += [(m, "cgm_true", float(v), math.nan) for m, v in zip(cgm_t, gs)]
    rows += [(m, "bg_true", float(v), math.nan) for m, v in zip(cgm_t, at("glucose.plasma_glucose", cgm_t))]
    cuff, labs = _measurement_times(days, ambulatory_day)
    rows += [(m, "map", float(v + rng.normal(0, 5.0)), math.nan) for m, v in zip(cuff, at("cardiovascular.MAP", cuff))]
    rows += [(m, "heart_rate", float(v + rng.normal(0, 3.0)), math.nan)
             for m, v in zip(cuff, at("cardiovascular.HR", cuff))]
    rows += [(m, "creatinine", float(v * (1 + rng.normal(0, 0.04))), math.nan)
             for m, v in zip(labs, at("renal.serum_creatinine", labs))]
    hourly = np.arange(60.0, days * 1440, 60.0)
    for kind, name in (("map_true", "cardiovascular.MAP"), ("heart_rate_true", "cardiovascular.HR"),
                       ("creatinine_true", "renal.serum_creatinine")):
        rows += [(m, kind, float(v), math.nan) for m, v in zip(hourly, at(name, hourly))]
    return rows


def truth_patient(patient: str = "adult#001", truth: dict | None = None):
    """The truth model's patient table (one row: the bundled patient's glucose parameters
    and `TRUTH`, overridden by ``truth``) and the patient's steady-state basal rate (U/h)."""
    import physiotwin as pt

    table = pt.bundled_patients().loc[[patient]].drop(columns=["source"]).reset_index()
    for name, value in {**TRUTH, **(truth or {})}.items():
        table[name] = value
    basal = float(table["u2ss"].iloc[0] * table["BW"].iloc[0] / 6000.0 * 60.0)  # pmol/kg/min -> U/h
    return table, basal


def generate_cardiorenal_record(patient: str = "adult#001", days: int = 14, seed: int = 0,
                                start: str = "2026-01-05T00:00", truth: dict | None = None,
                                sodium_mean: float = 220.0, ambulatory_day: int = 9) -> pd.DataFrame:
    """Simulate the truth model and return the record as a timeline table (see the module
    docstring). ``truth`` overrides parameters (``organ.param``: value) of `TRUTH`."""
    import physiotwin as pt

    rng = np.random.default_rng([seed, 20260105])
    table, basal = truth_patient(patient, truth)
    params = {**TRUTH, **(truth or {})}
    inputs, logged = _inputs(days, rng, basal, sodium_mean)
    frame = pd.DataFrame([(t, k, v, UNITS.get(k, "1"), d) for t, k, v, d in inputs],
                         columns=["time", "kind", "value", "unit", "duration"])
    ds = pt.simulate(list(ORGANS), table, frame, days=days, every=5.0)
    if int(ds["solver_status"].values[0]) != 0:
        raise RuntimeError(f"the truth model's solve failed: {ds['solver_message'].values[0]}")
    rows = logged + _readings(ds.isel(patient=0), days, rng, ambulatory_day)
    t0 = datetime.fromisoformat(start)
    rows.sort(key=lambda r: (r[0], r[1]))
    df = pd.DataFrame({"time": [(t0 + timedelta(minutes=float(m))).isoformat(timespec="seconds") for m, *_ in rows],
                       "kind": [r[1] for r in rows], "value": [r[2] for r in rows],
                       "unit": [UNITS[r[1]] for r in rows], "duration": [r[3] for r in rows]})
    walks = [(t, v, d) for t, k, v, d in inputs if k == "exercise"]
    df.attrs.update(patient=patient, seed=seed, days=days, start=t0.isoformat(timespec="seconds"),
                    truth=params, walks=walks, sodium=[(t, v) for t, k, v, _ in inputs if k == "sodium_intake"])
    return df


def write_cardiorenal_record(df: pd.DataFrame, path) -> None:
    """Write a record of `generate_cardiorenal_record` as a timeline CSV (truth in a comment)."""
    from pathlib import Path

    head = [f"# start: {df.attrs['start']}",
            f"# generated by physiotwin.plugins.cardiorenal_records: patient={df.attrs['patient']}, "
            f"seed={df.attrs['seed']}, days={df.attrs['days']}, truth={df.attrs['truth']}"]
    body = df.to_csv(index=False, float_format="%.10g", na_rep="")
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text("\n".join(head) + "\n" + body)
    tmp.replace(path)
