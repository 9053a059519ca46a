"""Built-in input corrections: logged meal sizes and logged sodium intake.

- ``meal_size``: every logged ``carbs`` row gets a factor ``exp(c)``, ``c ~ N(0, 0.3^2)``,
  applied to the carbohydrate signals while that meal is eaten (meals without a
  duration queue at 5 g/min, as the signals do). Carbohydrate counts are routinely
  20-40 % off (Brazeau et al., Diabetes Res Clin Pract 99:19, 2013).
- ``sodium_intake``: every logged ``sodium_intake`` level gets a factor, ``c ~ N(0,
  0.3^2)``, while it holds. Self-reported dietary sodium misses the 24-h urinary
  excretion by 20-40 % (McLean et al., Curr Hypertens Rep 20:42, 2018).
"""

from __future__ import annotations

import numpy as np

from physiotwin.correction import InputCorrection, level_events
from physiotwin.plugins import hookimpl
from physiotwin.plugins.kinds import meal_pieces

__all__ = ["MealSize", "SodiumIntake"]


class MealSize(InputCorrection):
    name = "meal_size"
    kind = "carbs"
    signals = ("carbs", "carbs_episode")
    prior_sd = 0.3
    description = "size of each logged meal (carbohydrate counting error)"

    def events(self, tl, minutes):
        out = np.full(minutes, -1, dtype=np.int32)
        mid = np.arange(minutes) + 0.5
        pieces = meal_pieces(tl)
        for n, (start, end, _) in enumerate(pieces):
            out[(mid >= start) & (mid < end)] = n
        return out, len(pieces)


class SodiumIntake(InputCorrection):
    name = "sodium_intake"
    kind = "sodium_intake"
    signals = ("sodium_intake",)
    prior_sd = 0.3
    description = "each logged sodium intake level (dietary recall error)"

    def events(self, tl, minutes):
        return level_events(tl, self.kind, minutes)


@hookimpl
def register_corrections(register):
    register(MealSize)
    register(SodiumIntake)
