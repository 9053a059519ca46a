"""Built-in timeline kinds, the signals they compile to, and their units.

Input kinds (each value converted to the canonical unit):

| kind | unit | signals |
|---|---|---|
| ``carbs`` | g | ``carbs``, ``carbs_episode``, ``meal_episode`` |
| ``bolus`` | U | ``insulin`` |
| ``basal`` | U/h (level) | ``insulin``, ``basal_set`` |
| ``sodium_intake`` | mmol/day (level) | ``sodium_intake`` |
| ``exercise`` | 1 | ``exercise`` |
| ``blood_loss`` | mL | ``blood_loss`` |
| ``sglt2i`` | mg | ``sglt2i`` |

Observation kinds, each explained by the observation model of the same name
(`physiotwin.plugins.observations`): ``cgm`` (mg/dL), ``bg`` (finger-stick plasma
glucose, mg/dL), ``map`` (mean arterial pressure, mmHg), ``heart_rate`` (1/min),
``creatinine`` (serum creatinine, mg/dL; µmol/L accepted). Ground truth of simulated
records (never fitted; evaluation scores against it): ``cgm_true``, ``bg_true``,
``map_true``, ``heart_rate_true``, ``creatinine_true``, ``carbs_true``, ``sodium_intake_true``, and the hidden
``insulin_sensitivity_true`` (the truth model's sensitivity factor; nothing measures it).

Signals (name, unit):

| signal | unit | from kinds | meaning |
|---|---|---|---|
| ``carbs`` | g/min | carbs | carbohydrate ingestion rate. A meal without ``duration`` joins a queue eaten at 5 g/min (as in simglucose); with ``duration`` it is eaten evenly over it. |
| ``carbs_episode`` | g | carbs | grams eaten in the current (or last) eating episode, counted to the end of the current minute of the episode (the bookkeeping simglucose uses for gastric emptying). |
| ``meal_episode`` | 1 | carbs | number of eating episodes begun so far (changes exactly when a meal starts). |
| ``insulin`` | U/min | bolus, basal | boluses spread evenly over ``duration`` (default 1 min) plus the basal rate set by ``basal`` rows. |
| ``basal_set`` | 1 | basal | 0 before the first ``basal`` row, 1 after: until then the patient's own steady-state basal applies. |
| ``sodium_intake`` | mmol/day | sodium_intake | level from each row on; NaN before the first row, which the composer replaces by the input's default. |
| ``exercise`` | 1 | exercise | fraction of heart-rate reserve during each bout, 0 otherwise (overlapping bouts add). |
| ``blood_loss`` | mL/min | blood_loss | each loss spread evenly over its duration. |
| ``sglt2i`` | mg/min | sglt2i | oral doses, each delivered into the gut over 1 minute. |

Units: ``U`` (alias ``IU``) is the international unit of insulin, 6000 pmol, the
conversion the UVA/Padova simulator uses (Dalla Man 2007; simglucose), replacing
pint's enzyme unit; ``bpm`` is one beat per minute. Substances for mass <-> moles:
glucose (180.156 g/mol), sodium (22.98977 g/mol), creatinine (113.12 g/mol).
"""

from __future__ import annotations

import numpy as np

from physiotwin.kinds import Signal, TimelineKind
from physiotwin.plugins import hookimpl
from physiotwin.signals import breaks_of, level_signal, rate_on, rate_signal, spread_pieces
from physiotwin.timeline import Timeline

__all__ = ["BUILTIN_KINDS", "EAT_RATE", "meal_pieces", "register_timeline_kinds"]

EAT_RATE = 5.0  # g/min, the ingestion rate of meals without a duration (simglucose)
BOLUS_DURATION = 1.0  # min
GLUCOSE_MOLAR_MASS = 180.156  # g/mol
SODIUM_MOLAR_MASS = 22.98977  # g/mol
CREATININE_MOLAR_MASS = 113.12  # g/mol


# ---------------------------------------------------------------- carbohydrate
def meal_pieces(tl: Timeline) -> list[tuple[float, float, float]]:
    """(start, end, rate g/min) of every meal; meals without duration queue at EAT_RATE."""
    meals = tl.select("carbs")
    pieces = []
    queue_end = -np.inf
    for t, grams, dur in zip(meals.time, meals.value, meals.duration):
        if grams <= 0:
            continue
        if np.isnan(dur):
            start = max(t, queue_end)
            queue_end = start + grams / EAT_RATE
            pieces.append((start, queue_end, EAT_RATE))
        else:
            pieces.append((t, t + dur, grams / dur))
    return pieces


def _episodes(pieces) -> list[tuple[float, float]]:
    """Maximal intervals of continuous eating."""
    eps: list[list[float]] = []
    for a, b, _ in sorted(pieces):
        if eps and a <= eps[-1][1]:
            eps[-1][1] = max(eps[-1][1], b)
        else:
            eps.append([a, b])
    return [(a, b) for a, b in eps]


def _carb_breaks(tl: Timeline) -> np.ndarray:
    pieces = meal_pieces(tl)
    pts = [p for a, b, _ in pieces for p in (a, b)]
    for a, b in _episodes(pieces):  # minute ticks within each episode
        pts.extend(np.arange(a, b, 1.0))
    return np.asarray(pts, dtype=float)


def _meal_episode(tl, left, right):
    starts = np.asarray([a for a, _ in _episodes(meal_pieces(tl))])
    return np.asarray([np.sum(starts <= a) for a in left], dtype=float)


def _carbs_episode(tl, left, right):
    pieces = meal_pieces(tl)
    rate = rate_on(pieces, left, right)
    cumulative = np.concatenate([[0.0], np.cumsum(rate * (right - left))])  # C at each left edge, then end
    c_left, c_right = cumulative[:-1], cumulative[1:]
    out = np.zeros_like(left)
    starts = [a for a, _ in _episodes(pieces)]
    for k, (a, b) in enumerate(zip(left, right)):
        begun = [s for s in starts if s <= a]
        if not begun:
            continue
        j = int(np.searchsorted(left, begun[-1]))
        # within an episode count to the end of the current minute; after it, hold the total
        out[k] = c_right[k] - c_left[j] if rate[k] > 0 else (c_left[k] - c_left[j])
    return out


CARBS = Signal("carbs", "g/min", "carbohydrate ingestion rate", _carb_breaks,
               lambda tl, a, b: rate_on(meal_pieces(tl), a, b))
CARBS_EPISODE = Signal("carbs_episode", "g", "grams eaten so far in the current eating episode", _carb_breaks,
                       _carbs_episode)
MEAL_EPISODE = Signal("meal_episode", "1", "number of eating episodes begun so far", _carb_breaks, _meal_episode)


# --------------------------------------------------------------------- insulin
def _insulin_pieces(tl: Timeline) -> list[tuple[float, float, float]]:
    pieces = spread_pieces("bolus", BOLUS_DURATION)(tl)
    bas = tl.select("basal")
    for k, (t, rate) in enumerate(zip(bas.time, bas.value)):
        end = bas.time[k + 1] if k + 1 < len(bas) else np.inf
        if end > t:
            pieces.append((t, end, rate / 60.0))  # U/h -> U/min
    return pieces


def _basal_set(tl, left, right):
    bas = tl.select("basal")
    if len(bas) == 0:
        return np.zeros_like(left)
    return (left >= bas.time[0]).astype(float)


INSULIN = Signal("insulin", "U/min", "subcutaneous insulin delivery (boluses + set basal)",
                 breaks_of(_insulin_pieces), lambda tl, a, b: rate_on(_insulin_pieces(tl), a, b))
BASAL_SET = Signal("basal_set", "1", "1 once a basal rate has been set by the timeline",
                   lambda tl: tl.select("basal").time[:1].astype(float), _basal_set)


def _exercise_pieces(tl: Timeline):
    ev = tl.select("exercise")
    return [(t, t + d, v) for t, v, d in zip(ev.time, ev.value, ev.duration) if v > 0]


BUILTIN_KINDS: dict[str, TimelineKind] = {
    kind.name: kind
    for kind in (
        TimelineKind("carbs", "g", "carbohydrate eaten; at 5 g/min unless a duration is given",
                     signals=(CARBS, CARBS_EPISODE, MEAL_EPISODE), units=("kg",)),
        TimelineKind("bolus", "U", "insulin bolus, delivered evenly over `duration` minutes (default 1)",
                     signals=(INSULIN,), units=("IU",)),
        TimelineKind("basal", "U/h", "basal insulin rate, piecewise constant from this time on; the patient's "
                     "steady-state basal when absent", duration="forbidden", level=True, signals=(INSULIN, BASAL_SET), units=("U/day",)),
        TimelineKind("sodium_intake", "mmol/day", "dietary sodium intake, piecewise constant from this time on "
                     "(100 mmol/day when absent)", unit_context="sodium", duration="forbidden", level=True,
                     signals=(level_signal("sodium_intake", "mmol/day", "dietary sodium intake", "sodium_intake"),), units=("g/day", "mg/day")),
        TimelineKind("exercise", "1", "exercise intensity as a fraction 0-1 of heart-rate reserve, for `duration` "
                     "minutes", maximum=1.0, duration="required",
                     signals=(rate_signal("exercise", "1", "exercise intensity (fraction of heart-rate reserve)",
                                          _exercise_pieces),), units=("percent",)),
        TimelineKind("blood_loss", "mL", "blood lost evenly over `duration` minutes", duration="required",
                     signals=(rate_signal("blood_loss", "mL/min", "rate of blood loss",
                                          spread_pieces("blood_loss", None)),), units=("L",)),
        TimelineKind("sglt2i", "mg", "oral dose of the SGLT2 inhibitor empagliflozin", duration="forbidden",
                     signals=(rate_signal("sglt2i", "mg/min", "oral SGLT2 inhibitor (empagliflozin) dosing into "
                                          "the gut", spread_pieces("sglt2i", 1.0)),), units=("g",)),
        # observations, each explained by the observation model of the same name
        TimelineKind("cgm", "mg/dL", "continuous glucose monitor reading", unit_context="glucose",
                     observation=True, duration="forbidden", units=("mmol/L",)),
        TimelineKind("bg", "mg/dL", "finger-stick (meter) plasma glucose reading", unit_context="glucose",
                     observation=True, duration="forbidden", units=("mmol/L",)),
        TimelineKind("map", "mmHg", "mean arterial pressure from a cuff (home or ambulatory)", minimum=20.0,
                     maximum=250.0, observation=True, duration="forbidden", units=("kPa",)),
        TimelineKind("heart_rate", "1/min", "heart rate (e.g. with each cuff reading)", minimum=20.0, maximum=250.0,
                     observation=True, duration="forbidden", units=("1/s",)),
        TimelineKind("creatinine", "mg/dL", "serum creatinine (laboratory)", minimum=0.05, maximum=30.0,
                     unit_context="creatinine", observation=True, duration="forbidden", units=("umol/L",)),
        # ground truth, present only in simulated records: never fitted, used to score
        TimelineKind("cgm_true", "mg/dL", "noise-free sensor (subcutaneous) glucose at a CGM sample time; ground "
                     "truth available in simulated records only", unit_context="glucose", observation=True,
                     truth_of="cgm", duration="forbidden"),
        TimelineKind("bg_true", "mg/dL", "true plasma glucose; ground truth available in simulated records only",
                     unit_context="glucose", observation=True, truth_of="bg", duration="forbidden"),
        TimelineKind("carbs_true", "g", "carbohydrate actually eaten (the `carbs` rows are what was logged); ground "
                     "truth available in simulated records only", observation=True, truth_of="carbs"),
        TimelineKind("insulin_sensitivity_true", "1", "the truth model's insulin-sensitivity factor (1: the "
                     "patient's constant UVA/Padova sensitivity); hidden physiology of simulated records only, "
                     "nothing measures it", observation=True, truth_of="insulin_sensitivity",
                     duration="forbidden"),
        TimelineKind("map_true", "mmHg", "mean arterial pressure without cuff error; ground truth available in "
                     "simulated records only", observation=True, truth_of="map", duration="forbidden"),
        TimelineKind("heart_rate_true", "1/min", "heart rate without measurement error; ground truth available in "
                     "simulated records only", observation=True, truth_of="heart_rate", duration="forbidden"),
        TimelineKind("creatinine_true", "mg/dL", "serum creatinine without laboratory error; ground truth "
                     "available in simulated records only", unit_context="creatinine", observation=True,
                     truth_of="creatinine", duration="forbidden"),
        TimelineKind("sodium_intake_true", "mmol/day", "sodium actually eaten (the `sodium_intake` rows are what "
                     "was logged); ground truth available in simulated records only", unit_context="sodium",
                     observation=True, truth_of="sodium_intake", duration="forbidden"),
    )
}


@hookimpl
def register_timeline_kinds(register):
    """Register the built-in kinds."""
    for kind in BUILTIN_KINDS.values():
        register(kind)


@hookimpl
def register_units(define_unit, define_substance):
    define_unit("insulin_unit = 6000 * picomole = U = IU")
    define_unit("bpm = 1 / minute")
    for name, molar_mass in (("glucose", GLUCOSE_MOLAR_MASS), ("sodium", SODIUM_MOLAR_MASS),
                             ("creatinine", CREATININE_MOLAR_MASS)):
        define_substance(name, molar_mass)

