"""Drive simglucose's T1DPatient minute by minute on a physiotwin-style scenario.

simglucose 0.2.11 (https://github.com/jxx123/simglucose, MIT) is the reference
implementation of the UVA/Padova T1D simulator that the glucose organ reproduces.
Its patient model takes one action per minute: grams of carbohydrate announced at
that minute (eaten at 5 g/min) and an insulin rate in U/min held for the minute.
"""

from __future__ import annotations

import warnings

import numpy as np


def run(patient: str, events: list[tuple[float, str, float, float | None]], minutes: int) -> dict[str, np.ndarray]:
    """Simulate ``patient`` for ``minutes``; ``events`` are (time, kind, value, duration)
    with integer-minute times, kinds carbs (g), bolus (U), basal (U/h).

    Returns plasma glucose Gp/Vg and subcutaneous glucose Gs/Vg (mg/dL) at every minute 0..minutes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from simglucose.patient.t1dpatient import Action, T1DPatient

    p = T1DPatient.withName(patient)
    params = p._params
    basal = params.u2ss * params.BW / 6000.0  # U/min
    carbs = np.zeros(minutes)
    insulin = np.full(minutes, np.nan)
    bolus = np.zeros(minutes)
    for t, kind, value, duration in sorted(events, key=lambda e: e[0]):
        t = int(t)
        if kind == "carbs" and duration:
            # announcing value/duration every minute makes simglucose eat at that rate
            carbs[t:t + int(duration)] += value / int(duration)
        elif kind == "carbs":
            carbs[t] += value
        elif kind == "bolus":
            d = int(duration or 1)
            bolus[t:t + d] += value / d
        elif kind == "basal":
            insulin[t:] = value / 60.0
    insulin = np.where(np.isnan(insulin), basal, insulin) + bolus
    plasma, sc = [p.state[3] / params.Vg], [p.observation.Gsub]
    for k in range(minutes):
        p.step(Action(CHO=carbs[k], insulin=insulin[k]))
        plasma.append(p.state[3] / params.Vg)
        sc.append(p.observation.Gsub)
    return {"plasma_glucose": np.asarray(plasma), "subcutaneous_glucose": np.asarray(sc)}
