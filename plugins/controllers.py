"""Built-in closed-loop insulin controllers (`physiotwin.control.Controller`).

All three read the CGM's sensor glucose every 5 min, take over the timeline's ``basal``
and ``bolus`` rows (the controller is the therapy), and deliver insulin through the
``insulin`` signal (U/min). Meals are announced by the ``carbs`` rows (what was
logged): a meal logged during the last 5 min gets its bolus at the next decision.

- ``basal_bolus``: simglucose's `BBController` (Xie, simglucose 0.2.11): a constant
  basal ``u2ss * BW / 6000`` U/min and, for an announced meal, a bolus
  ``carbs / CR + (G > 150) (G - 140) / CF`` U over the next 5 min.
- ``pid``: the same meal boluses, and the basal rate modulated by a PID on sensor
  glucose around 120 mg/dL (gains in units of the patient's basal rate: +0.5 basal per
  100 mg/dL, the integral over 4 h clipped to +-1 basal rate and never positive below
  the target (anti-windup), +0.5 basal
  per 100 mg/dL of change over 30 min), with a low-glucose suspend (no basal while
  glucose is heading below 80 mg/dL within 30 min, as pumps do).
- ``mpc``: the same meal boluses, and every 5 min the basal multiplier (0, 0.5, 1, 1.5,
  2 or 3 for the next 30 min, then 1) that minimises the predicted
  ``((G - 120) / 40)^2 + 10 max(0, (80 - G) / 10)^2`` over 2 h, predicted by the
  simulated model itself from its current state (in a twin's replay: the calibrated
  twin; the state is known, not estimated: a best case of model-predictive control).
  Carbohydrate still to come is not foreseen.

CR and CF: from the timeline's own log when it has meal boluses (the median of logged
grams / meal bolus units; CF by the 1800 rule from that ratio, CF = CR * 1800 / 500),
else by the 500 and 1800 rules from an estimated total daily dose of twice the daily
basal (Walsh, Pumping Insulin, 2006).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from physiotwin.control import Controller
from physiotwin.plugins import hookimpl

__all__ = ["BasalBolus", "PID", "MPC"]

TARGET = 120.0  # mg/dL
MULTIPLIERS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
KP, KD = 0.5, 0.5  # PID gains, in basal rates per 100 mg/dL (KD: of the glucose change over 30 min)


def _announced(tl, minutes: int, period: int) -> np.ndarray:
    """Grams logged in the ``period`` minutes before each minute ``[minutes, 1]``."""
    grams = np.zeros(minutes + period)
    ev = tl.select("carbs")
    for t, v in zip(ev.time, ev.value):
        m = int(np.floor(t))
        if 0 <= m < minutes:
            grams[m] += v
    c = np.concatenate([[0.0], np.cumsum(grams)])
    k = np.arange(minutes)
    return (c[k] - c[np.maximum(k - period, 0)])[:, None]


def _ratios(model, theta, tl) -> dict[str, float]:
    from physiotwin.plugins.therapy import meal_bolus

    names = list(model.param_names)
    basal = float(theta[names.index("glucose.u2ss")] * theta[names.index("glucose.BW")] / 6000.0)  # U/min
    carbs, bolus = tl.select("carbs"), tl.select("bolus")
    ratios = []
    if len(carbs) and len(bolus):
        for t, units, is_meal in zip(bolus.time, bolus.value, meal_bolus(bolus.time, carbs.time)):
            if is_meal and units > 0:
                ratios.append(carbs.value[np.argmin(np.abs(carbs.time - t))] / units)
    cr = float(np.median(ratios)) if ratios else 500.0 / (2.0 * basal * 1440.0)
    return {"basal": basal, "CR": cr, "CF": cr * 1800.0 / 500.0}


class _MealBolus(Controller):
    """Shared: the timeline's insulin rows replaced, meal announcements, bolus for them."""

    kind = "cgm"
    signal = "insulin"
    replaces = ("basal", "bolus")
    period = 5

    def timeline(self, tl):
        rest = super().timeline(tl)
        # a basal row of 0 U/h at the start: the controller delivers all the insulin
        return type(tl)(np.append(0.0, rest.time), np.append("basal", rest.kind), np.append(0.0, rest.value),
                        np.append(np.nan, rest.duration), np.append(-1, rest.row), source=tl.source, start=tl.start,
                        kinds=tl.kinds, row_label=tl.row_label)

    def prepare(self, tl, minutes, day0):
        return _announced(tl, minutes, self.period)

    def configure(self, model, theta, tl):
        return _ratios(model, theta, tl)

    def bolus(self, reading, feed, s):
        grams = feed[0]
        units = grams / s["CR"] + jnp.where(reading > 150.0, (reading - 140.0) / s["CF"], 0.0)
        return jnp.where(grams > 0, units, 0.0) / self.period  # U/min over the next period


class BasalBolus(_MealBolus):
    name = "basal_bolus"
    description = "simglucose's basal-bolus controller: constant basal, meal bolus carbs/CR + correction"

    def act(self, state, t, reading, feed, s, plant):
        return state, s["basal"] + self.bolus(reading, feed, s)


class PID(_MealBolus):
    name = "pid"
    description = "meal boluses plus a PID on sensor glucose around 120 mg/dL modulating the basal rate"

    def init(self, s):
        return (jnp.zeros(()), jnp.full((), jnp.nan))

    def act(self, state, t, reading, feed, s, plant):
        integral, last = state
        e = (reading - TARGET) / 100.0  # in units of "one basal rate per 100 mg/dL"
        slope = jnp.where(jnp.isfinite(last), (reading - last) / self.period, 0.0)  # mg/dL/min
        integral = jnp.clip(integral + e * self.period / 240.0, -1.0, 1.0)
        integral = jnp.where(reading < TARGET, jnp.minimum(integral, 0.0), integral)  # no extra insulin when low
        rate = s["basal"] * (1.0 + KP * e + integral + KD * slope * 30.0 / 100.0)
        # low-glucose suspend: no basal when glucose is predicted below 80 mg/dL in 30 min
        rate = jnp.where(reading + 30.0 * slope < 80.0, 0.0, jnp.maximum(rate, 0.0))
        return (integral, reading), rate + self.bolus(reading, feed, s)


class MPC(_MealBolus):
    name = "mpc"
    description = "meal boluses plus the basal multiplier that minimises predicted glycaemic cost over 2 h"
    horizon = 120
    future_unknown = ("carbs", "carbs_episode", "meal_episode")

    def act(self, state, t, reading, feed, s, plant):
        import jax

        bolus = self.bolus(reading, feed, s)
        k = jnp.arange(self.horizon)

        def cost(m):
            actions = s["basal"] * jnp.where(k < 30, m, 1.0) + jnp.where(k < self.period, bolus, 0.0)
            g = plant.predict(actions)
            return jnp.mean(((g - TARGET) / 40.0) ** 2 + 10.0 * jnp.maximum(0.0, (80.0 - g) / 10.0) ** 2)

        m = jnp.asarray(MULTIPLIERS)
        best = m[jnp.argmin(jax.vmap(cost)(m))]
        return state, s["basal"] * best + bolus


@hookimpl
def register_controllers(register):
    for c in (BasalBolus, PID, MPC):
        register(c)
