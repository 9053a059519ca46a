"""Plausibility rules for glucose readings and insulin and carbohydrate logs.

Registered through ``register_record_checks``; `physiotwin.plausibility.check_record`
runs them on every record before it is imported, calibrated, forecast or reported.
Each rule says what it does with what it finds:

- **unit mix-up** (error): glucose readings whose median, in mg/dL, is below 30 were
  written in mmol/L and labelled mg/dL (a median of 30 mg/dL is not survivable; the
  mmol/L values of a living person lie between 2 and 33). A median above 600 mg/dL is
  the reverse mix-up. Caught by the value range, since the label is what is wrong.
- **instrument range** (drop): readings no instrument of that kind reports are
  dropped and counted: CGM outside 40-500 mg/dL (Dexcom and Medtronic sensors report
  40-400, FreeStyle Libre 40-500; their "Low"/"High" are imported as those limits), meter
  readings outside 20-600 mg/dL (ISO 15197 meters). If more than a fifth of the
  readings are outside, the record is refused instead (a broken export or a unit
  mix-up, not a few sensor errors).
- **flat-lined sensor** (drop): a CGM that reports the same value (within 0.05 mg/dL) for
  3 h or more (at least 12 readings) has stopped sensing; those readings are dropped
  and counted. A record whose CGM readings are mostly (more than half) flat is refused.
- **dose and intake limits** (error): a bolus over 100 U (insulin pumps deliver at most
  25-35 U per bolus, pens at most 80 U per injection), a basal rate over 35 U/h (pump
  maxima are 15-35 U/h), or a meal over 500 g of carbohydrate.
"""

from __future__ import annotations

import numpy as np

from physiotwin.plausibility import Finding, RecordCheck, flat_runs
from physiotwin.plugins import hookimpl

READINGS = ("cgm", "bg")
#: what each kind's instruments report, mg/dL
REPORTED = {"cgm": (40.0, 500.0), "bg": (20.0, 600.0)}
MMOL_MEDIAN = 30.0  # mg/dL: below, the values are mmol/L labelled mg/dL
MGDL_MEDIAN = 600.0  # mg/dL: above, the values are mg/dL labelled mmol/L (or worse)
OUTSIDE_REFUSED = 0.2  # fraction of readings outside the instrument's range that refuses the record
FLAT_MINUTES, FLAT_READINGS, FLAT_TOLERANCE = 180.0, 12, 0.05
FLAT_REFUSED = 0.5
LIMITS = {"bolus": (100.0, "U", "insulin pumps deliver at most 25-35 U per bolus and pens at most 80 U per "
                               "injection"),
          "basal": (35.0, "U/h", "insulin pump basal rates go up to 15-35 U/h"),
          "carbs": (500.0, "g", "a meal of more than 500 g of carbohydrate is a logging error")}


def _unit_mixup(tl) -> list[Finding]:
    found = []
    for kind in READINGS:
        idx = np.flatnonzero(tl.kind == kind)
        if len(idx) == 0:
            continue
        median = float(np.median(tl.value[idx]))
        if median < MMOL_MEDIAN:
            found.append(Finding("error", f"the {kind!r} readings look like mmol/L labelled mg/dL (median "
                                          f"{median:.3g} mg/dL, which no living person has): write the unit "
                                          f"mmol/L", [int(idx[0])], "unit"))
        elif median > MGDL_MEDIAN:
            found.append(Finding("error", f"the {kind!r} readings look like mg/dL labelled mmol/L (median "
                                          f"{median:.4g} mg/dL after conversion): check the unit", [int(idx[0])],
                                 "unit"))
    return found


def _instrument_range(tl) -> list[Finding]:
    found = []
    for kind, (low, high) in REPORTED.items():
        idx = np.flatnonzero(tl.kind == kind)
        out = idx[(tl.value[idx] < low) | (tl.value[idx] > high)]
        if len(out) == 0:
            continue
        if len(out) > OUTSIDE_REFUSED * len(idx):
            found.append(Finding("error", f"{len(out)} of {len(idx)} {kind!r} readings lie outside {low:g}-{high:g} "
                                          f"mg/dL, the range its instruments report: a broken export or a unit "
                                          f"mix-up", [int(out[0])]))
            continue
        found.append(Finding("drop", f"{len(out)} {kind!r} readings outside {low:g}-{high:g} mg/dL (what its "
                                     f"instruments report; e.g. {tl.value[out[0]]:g}) dropped", out.tolist()))
    return found


def _flat_sensor(tl) -> list[Finding]:
    idx = np.flatnonzero(tl.kind == "cgm")
    flat = []
    for a, b in flat_runs(tl.value[idx], FLAT_TOLERANCE):
        if b - a + 1 >= FLAT_READINGS and tl.time[idx[b]] - tl.time[idx[a]] >= FLAT_MINUTES:
            flat.append((a, b))
    if not flat:
        return []
    stuck = np.concatenate([idx[a:b + 1] for a, b in flat])
    hours = sum(tl.time[idx[b]] - tl.time[idx[a]] for a, b in flat) / 60.0
    value = tl.value[idx[flat[0][0]]]
    if len(stuck) > FLAT_REFUSED * len(idx):
        return [Finding("error", f"the CGM is flat-lined: {len(stuck)} of {len(idx)} readings are stuck at one value "
                                 f"(e.g. {value:g} mg/dL for {hours:.1f} h); a sensor that reports no change has "
                                 f"stopped sensing", [int(stuck[0])])]
    return [Finding("drop", f"{len(stuck)} 'cgm' readings in {len(flat)} flat run(s) of 3 h or more (a stuck sensor, "
                            f"{hours:.1f} h in all, e.g. at {value:g} mg/dL) dropped", stuck.tolist())]


def _dose_limits(tl) -> list[Finding]:
    found = []
    for kind, (limit, unit, why) in LIMITS.items():
        idx = np.flatnonzero((tl.kind == kind) & (tl.value > limit))
        if len(idx):
            found.append(Finding("error", f"{kind!r} of {tl.value[idx[0]]:g} {unit} is implausible (over {limit:g} "
                                          f"{unit}: {why})", [int(idx[0])]))
    return found


CHECKS = (
    RecordCheck("glucose_units", "glucose readings whose median is below 30 mg/dL are mmol/L labelled mg/dL "
                "(error); above 600 mg/dL the reverse", _unit_mixup, READINGS),
    RecordCheck("instrument_range", "CGM readings outside 40-500 mg/dL and meter readings outside 20-600 mg/dL "
                "are dropped and counted; more than 20 % outside refuses the record", _instrument_range, READINGS),
    RecordCheck("flat_sensor", "CGM readings stuck at one value for 3 h or more are dropped and counted; a record "
                "mostly stuck is refused", _flat_sensor, ("cgm",)),
    RecordCheck("dose_limits", "a bolus over 100 U, a basal rate over 35 U/h or a meal over 500 g is an error",
                _dose_limits, tuple(LIMITS)),
)


@hookimpl
def register_record_checks(register):
    for check in CHECKS:
        register(check)
