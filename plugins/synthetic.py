"""Synthetic type-1-diabetes records from simglucose, for developing and checking calibration.

`generate_record` runs simglucose 0.2.11 (Xie, https://github.com/jxx123/simglucose, MIT),
the open implementation of the UVA/Padova T1D simulator (Dalla Man et al., J Diabetes Sci
Technol 8:26, 2014), with its own parts: a `T1DPatient`, the ``GuardianRT`` CGM (a
reading every 5 min), the ``Insulet`` pump, a `RandomScenario` of meals and the basal-bolus
controller `BBController`. The loop is simglucose's own `SimObj.simulate` loop, driven
here directly so that the instantaneous sensor readings, the sensor glucose and plasma
glucose at every sample time, and every meal to the minute can be recorded.

The record is a physiotwin timeline table (columns ``time,kind,value,unit,duration``,
ISO-8601 times) with the kinds

==============  =======  ======================================================================
kind            unit     rows
==============  =======  ======================================================================
``basal``       U/h      the pump's basal rate: at the start and whenever it changes
``bolus``       U        each controller bolus, total units, with ``duration`` = minutes it ran
``carbs``       g        the *logged* meals (with logging errors when ``corrupt``)
``cgm``         mg/dL    noisy sensor readings every 5 min (with gaps when ``corrupt``)
``cgm_true``    mg/dL    noise-free sensor glucose Gs/Vg at every sample time (ground truth)
``bg_true``     mg/dL    plasma glucose Gp/Vg at every sample time (ground truth)
``carbs_true``  g        the meals actually eaten, at the minute eating starts (ground truth)
==============  =======  ======================================================================

Meals carry no duration: simglucose eats every announced meal at 5 g/min, and so does
physiotwin for meals without one. The ground-truth kinds are observations; simulation
ignores them.

What simglucose does (read from its source), and how the record maps it:

* The environment steps one sample time (5 min) per controller call, as five 1-min patient
  steps with the controller's action held. The patient's ODE right-hand side uses the
  action of the minute ``[t, t+1)``; a meal the scenario announces at minute ``m`` starts
  being eaten over ``[m, m+1)``.
* `BBController` returns a basal rate ``u2ss * BW / 6000`` U/min (constant per patient)
  and, in the step after one in which a meal was announced, a bolus
  ``carbs / CR + (CGM > 150) * (CGM - 140) / CF`` units *as a rate over the next sample
  time*, i.e. ``bolus / 5`` U/min for 5 min; the record gives its total units and
  ``duration`` 5. ``CGM`` there is the environment's observation, the 5-min average of
  the zero-order-held sensor output (not the raw reading).
* The pump rounds rates to 0.05 pmol/min (about 1e-5 U/min, i.e. not noticeably) and
  clips to its limits; the record holds the delivered (pumped) values.
* The sensor draws a new reading only when ``t % 5 == 0`` (simglucose holds it in between),
  ``Gs/Vg + noise`` clipped to [39, 600] mg/dL, the noise a Johnson-SU transform of an
  AR(1) process sampled every 15 min and cubic-interpolated to 5 min.
* The environment's own ``BG`` history is the 5-min mean of *subcutaneous* glucose, not
  plasma glucose; ``bg_true`` here is plasma glucose ``Gp/Vg`` at the sample time.

Logging errors (``corrupt=True``; all drawn from a `numpy.random.Generator` seeded from
`seed`): multiplicative lognormal carb-count error, unlogged snacks, jittered meal times,
CGM dropouts and isolated missing readings. By default the controller's bolus follows the
*logged* carb count (``bolus_on="logged"``), as when a patient enters an estimate into a
bolus calculator: an under-counted meal gets an under-sized bolus and an unlogged snack
none. With ``bolus_on="true"`` the controller sees the meal actually eaten (simglucose's
behaviour). With ``corrupt=False`` the log equals the truth and there are no gaps.

Physiology the twin lacks (``hidden``, a `HiddenPhysiology`; see
`physiotwin.plugins.hidden_physiology`): a daily insulin-sensitivity profile, day-to-day
variation and exercise, acting on ``Vmx`` and ``kp3`` (and ``Vm0`` during exercise). The
total factor is recorded as ``insulin_sensitivity_true`` (unit 1) at every sample time,
and the per-patient draws go into ``df.attrs["settings"]`` (the header).

Patient behaviour (``hypo_treatment=True``): when the CGM the controller sees falls below
``hypo_threshold`` (70 mg/dL), the patient eats ``hypo_carbs`` (15 g; at most one
treatment per 15 min, the "rule of 15"), takes no bolus for it, and logs it with
probability ``hypo_log_prob`` (0.3; drawn from the hidden stream, so the other streams
stay as they are).
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from os import PathLike
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from .hidden_physiology import HiddenPhysiology, Profile, SensitivePatient

__all__ = ["SAMPLE_TIME", "generate_record", "replay_therapy", "record_filename", "write_record"]

SAMPLE_TIME = 5  # min, GuardianRT
SENSOR = "GuardianRT"
PUMP = "Insulet"
_UNITS = {
    "basal": "U/h",
    "bolus": "U",
    "carbs": "g",
    "cgm": "mg/dL",
    "cgm_true": "mg/dL",
    "bg_true": "mg/dL",
    "carbs_true": "g",
    "insulin_sensitivity_true": "1",
}
# row order at equal times: inputs first, then observations
_KIND_ORDER = {k: i for i, k in enumerate(["basal", "carbs", "bolus", "carbs_true", "cgm", "cgm_true", "bg_true",
                                                        "insulin_sensitivity_true"])}
_INSTALL_HINT = 'generating synthetic records needs simglucose: pip install "physiotwin[sim]"'


def _import_simglucose():
    """The simglucose parts, imported quietly (it imports pkg_resources and warns)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from simglucose.actuator.pump import InsulinPump
            from simglucose.controller.basal_bolus_ctrller import BBController
            from simglucose.patient import t1dpatient
            from simglucose.sensor.cgm import CGMSensor
            from simglucose.simulation.env import T1DSimEnv
            from simglucose.simulation.scenario_gen import RandomScenario
    except ImportError as err:
        raise RuntimeError(f"{_INSTALL_HINT} ({err})") from err
    return T1DSimEnv, t1dpatient, CGMSensor, InsulinPump, RandomScenario, BBController


class _RecordingSensor:
    """Wraps a simglucose sensor; keeps (t, reading, Gs/Vg, Gp/Vg) of every fresh reading."""

    def __init__(self, sensor, vg: float):
        self._sensor, self._vg = sensor, vg
        self.samples: dict[float, tuple[float, float, float]] = {}

    def __getattr__(self, name):
        return getattr(self._sensor, name)

    def measure(self, patient):
        cgm = self._sensor.measure(patient)
        if patient.t % self._sensor.sample_time == 0:  # a fresh reading (else simglucose holds the last)
            # the last reading at a time wins (env.reset measures twice at t = 0)
            self.samples[float(patient.t)] = (
                float(cgm),
                float(patient.observation.Gsub),
                float(patient.state[3] / self._vg),
            )
        return cgm

    def reset(self):
        self._sensor.reset()
        self.samples.clear()


class _RecordingScenario:
    """Wraps a simglucose scenario; keeps (time, grams) of every announced meal. `extra`:
    meals added while the simulation runs (``{minute: grams}``, e.g. hypo treatments)."""

    def __init__(self, scenario):
        self._scenario = scenario
        self.meals: list[tuple[datetime, float]] = []
        self.extra: dict[int, float] = {}

    def __getattr__(self, name):
        return getattr(self._scenario, name)

    def get_action(self, t):
        action = self._scenario.get_action(t)
        if self.extra:
            minute = int(round((t - self._scenario.start_time).total_seconds() / 60))
            if minute in self.extra:
                action = action._replace(meal=action.meal + self.extra.pop(minute))
        if action.meal > 0:
            self.meals.append((t, float(action.meal)))
        return action

    def reset(self):
        self._scenario.reset()
        self.meals.clear()


def _fast_patient(T1DPatient, row: pd.Series):
    """`T1DPatient.withName`, with its parameters as plain floats.

    simglucose's ODE right-hand side reads every parameter as an attribute of a pandas
    Series (about 45 lookups per evaluation), which takes ~90 % of its run time. The same
    values as plain Python floats give bit-identical arithmetic (both are IEEE doubles),
    about 5x faster. The initial state is the one `T1DPatient.reset` takes from the row.
    """
    fields = {k: (v if isinstance(v, str) else float(v)) for k, v in row.items()}
    init_state = np.array(row.iloc[2:15].values, dtype=np.float64)
    return T1DPatient(SimpleNamespace(**fields), init_state=init_state)


def _minutes_of(days: float) -> int:
    minutes = int(round(days * 1440))
    if minutes < SAMPLE_TIME or minutes % SAMPLE_TIME:
        raise ValueError(f"days must give a positive multiple of {SAMPLE_TIME} min, got days={days!r}")
    return minutes


def generate_record(
    patient: str = "adult#001",
    days: float = 10,
    seed: int = 0,
    start: str | datetime = "2026-01-05T00:00",
    corrupt: bool = True,
    *,
    carb_error_median: float = 0.9,
    carb_error_sd: float = 0.2,
    snack_grams: float = 30.0,
    snack_skip_prob: float = 0.5,
    meal_time_sd: float = 5.0,
    gaps_per_day: float = 0.5,
    gap_minutes: tuple[float, float] = (15.0, 90.0),
    missing_prob: float = 0.005,
    bolus_on: str = "logged",
    hidden: HiddenPhysiology | None = None,
    hypo_treatment: bool = False,
    hypo_threshold: float = 70.0,
    hypo_carbs: float = 15.0,
    hypo_log_prob: float = 0.3,
) -> pd.DataFrame:
    """Simulate `patient` for `days` with simglucose and return the record as a timeline table.

    patient: a simglucose virtual patient (``adult#001`` .. ``adult#010``, ``adolescent#...``,
    ``child#...``). days: length, a whole number of 5-min samples (the last at ``start +
    days - 5 min``). seed: with the patient's name, seeds the meal scenario, the sensor noise
    and the logging errors (independent streams from ``SeedSequence([seed, crc32(patient)])``);
    same arguments, same record. start: the absolute start; midnight keeps simglucose's daily
    meal plan aligned. corrupt: apply the logging errors below (`False`: the log equals the
    truth and the CGM has no gaps; the sensor noise stays).

    Logging errors: logged grams = true grams x a lognormal factor of median
    `carb_error_median` (0.9: a ~10 % under-count) and log-SD `carb_error_sd`, rounded (>= 1
    g); a meal under `snack_grams` goes unlogged with probability `snack_skip_prob`; logged
    times get a normal error of SD `meal_time_sd` minutes; ``floor(gaps_per_day * D)`` CGM
    dropouts (plus one with the fractional part's probability), each of a uniform number of
    samples within `gap_minutes`, and any other reading missing with probability
    `missing_prob`. `bolus_on`: ``"logged"`` doses for the logged count (no bolus for an
    unlogged snack), ``"true"`` for the meal eaten.

    `hidden`, `hypo_treatment` and the ``hypo_*`` options: see the module docstring.

    Returns a DataFrame with columns ``time`` (ISO-8601), ``kind``, ``value``, ``unit``,
    ``duration``, sorted by time; ``df.attrs`` holds ``patient``, ``seed``, ``days``,
    ``start`` and ``settings``, which `write_record` puts in its header. Raises
    `RuntimeError` when simglucose is not installed.
    """
    if bolus_on not in ("logged", "true"):
        raise ValueError(f"bolus_on must be 'logged' or 'true', got {bolus_on!r}")
    if not 0 < gap_minutes[0] <= gap_minutes[1]:
        raise ValueError(f"gap_minutes must be 0 < low <= high, got {gap_minutes!r}")
    total = _minutes_of(days)
    t0 = datetime.fromisoformat(start) if isinstance(start, str) else start
    log = _LogErrors(corrupt, carb_error_median, carb_error_sd, snack_grams, snack_skip_prob, meal_time_sd)
    # independent streams per (seed, patient): patients of one seed get different meals, noise and errors
    scenario_seed, sensor_seed, log_seed, hidden_seed = _seeds(patient, seed)
    rng = np.random.default_rng(log_seed)
    profile = hidden.draw(hidden_seed, total / 1440) if hidden is not None and hidden.active else None
    treat = (_HypoTreatment(hypo_threshold, hypo_carbs, hypo_log_prob, np.random.default_rng([hidden_seed, 1]))
             if hypo_treatment else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = _Simulation(patient, t0, scenario_seed, sensor_seed, profile=profile)
        events = sim.run(total, rng, log, bolus_on, treat)
    times, cgm, gs, gp = sim.readings(total)
    keep = (_cgm_mask(len(times), total, rng, gaps_per_day, gap_minutes, missing_prob) if corrupt
            else np.ones(len(times), bool))
    rows = events + [(int(m), "cgm", float(v), math.nan) for m, v, k in zip(times, cgm, keep) if k]
    rows += [(int(m), "cgm_true", float(v), math.nan) for m, v in zip(times, gs)]
    rows += [(int(m), "bg_true", float(v), math.nan) for m, v in zip(times, gp)]
    rows += _sensitivity_rows(times, profile)
    settings = dict(corrupt=False, bolus_on=bolus_on) if not corrupt else dict(
        corrupt=True, carb_error_median=carb_error_median, carb_error_sd=carb_error_sd, snack_grams=snack_grams,
        snack_skip_prob=snack_skip_prob, meal_time_sd=meal_time_sd, gaps_per_day=gaps_per_day,
        gap_minutes=tuple(gap_minutes), missing_prob=missing_prob, bolus_on=bolus_on)
    settings.update(_truth_settings(treat, profile))
    df = _frame(rows, t0)
    df.attrs.update(patient=patient, seed=seed, days=days, start=t0.isoformat(timespec="seconds"), settings=settings)
    return df


def _frame(rows, t0: datetime) -> pd.DataFrame:
    """Rows ``(minute, kind, value, duration)`` as a timeline table with ISO times, in time order."""
    rows = sorted(rows, key=lambda r: (r[0], _KIND_ORDER[r[1]]))
    return pd.DataFrame({
        "time": [(t0 + timedelta(minutes=m)).isoformat(timespec="seconds") for m, *_ in rows],
        "kind": [r[1] for r in rows],
        "value": np.array([r[2] for r in rows], dtype=np.float64),
        "unit": [_UNITS[r[1]] for r in rows],
        "duration": np.array([r[3] for r in rows], dtype=np.float64),
    })


@dataclass(frozen=True)
class _LogErrors:
    """How the patient logs meals (see `generate_record`)."""

    corrupt: bool
    median: float
    sd: float
    snack_grams: float
    skip_prob: float
    time_sd: float


class _MealPlan:
    """A simglucose scenario that announces given meals ``{minute: grams}`` at their minute."""

    def __init__(self, t0: datetime, meals: dict[int, float]):
        from simglucose.simulation.scenario import Action

        self._action, self.t0, self.start_time, self.plan = Action, t0, t0, dict(meals)

    def get_action(self, t):
        minute = int(round((t - self.t0).total_seconds() / 60))
        return self._action(meal=self.plan.get(minute, 0.0))

    def reset(self):
        pass


class _InsulinPlan:
    """A simglucose controller that delivers a given insulin schedule: at each call, the
    basal rate in force and the boluses that start at that minute (U/min over 5 min)."""

    def __init__(self, basal: list[tuple[int, float]], bolus: dict[int, float]):
        from simglucose.controller.base import Action

        self._action, self.basal, self.bolus, self.minute = Action, sorted(basal), dict(bolus), 0

    def policy(self, observation, reward, done, **info):
        minute = self.minute
        self.minute += SAMPLE_TIME
        rate = next((r for m, r in reversed(self.basal) if m <= minute), 0.0) / 60.0
        return self._action(basal=rate, bolus=self.bolus.get(minute, 0.0) / SAMPLE_TIME)

    def reset(self):
        self.minute = 0


class _Simulation:
    """simglucose's own parts, driven by its ``SimObj.simulate`` loop."""

    def __init__(self, patient: str, t0: datetime, scenario_seed: int, sensor_seed: int, scenario=None,
                 controller=None, profile: Profile | None = None):
        T1DSimEnv, t1dpatient, CGMSensor, InsulinPump, RandomScenario, BBController = _import_simglucose()
        params = pd.read_csv(t1dpatient.PATIENT_PARA_FILE)
        if not (params.Name == patient).any():
            raise ValueError(f"unknown simglucose patient {patient!r}")
        row = params.loc[params.Name == patient].squeeze()
        self.t0 = t0
        self.patient = _fast_patient(t1dpatient.T1DPatient, row)
        if profile is not None:
            self.patient = SensitivePatient(self.patient, profile)
        self.sensor = _RecordingSensor(CGMSensor.withName(SENSOR, seed=sensor_seed), float(row.Vg))
        self.pump = InsulinPump.withName(PUMP)
        self.scenario = _RecordingScenario(scenario or RandomScenario(start_time=t0, seed=scenario_seed))
        self.env = T1DSimEnv(self.patient, self.sensor, self.pump, self.scenario)
        self.controller = controller or BBController()
        if self.sensor.sample_time != SAMPLE_TIME:
            raise RuntimeError(f"simglucose {SENSOR} samples every {self.sensor.sample_time} min, "
                               f"expected {SAMPLE_TIME}")

    def run(self, total: int, rng, log: _LogErrors, bolus_on: str, treat: "_HypoTreatment | None" = None
            ) -> list[tuple[int, str, float, float]]:
        """Simulate ``total`` minutes; the input rows (basal changes, boluses, meals logged and eaten)."""
        env, pump, scenario = self.env, self.pump, self.scenario
        rows: list[tuple[int, str, float, float]] = []
        last_basal = None
        self.controller.reset()
        obs, reward, done, info = env.reset()
        while env.time < self.t0 + timedelta(minutes=total):
            minute = int(round(self.patient.t))
            action = self.controller.policy(obs, reward, done, **info)
            rate_basal = float(pump.basal(action.basal))  # U/min, as delivered each minute
            rate_bolus = float(pump.bolus(action.bolus))
            if last_basal is None or not math.isclose(last_basal, rate_basal * 60, rel_tol=1e-12):
                last_basal = rate_basal * 60
                rows.append((minute, "basal", last_basal, math.nan))
            if rate_bolus > 0:
                rows.append((minute, "bolus", rate_bolus * env.sample_time, float(SAMPLE_TIME)))
            n_meals = len(scenario.meals)
            obs, reward, done, info = env.step(action)
            # meals announced during this step: log them now, so the next controller call can use the log
            window_logged = 0.0
            for when, grams in scenario.meals[n_meals:]:
                m = int(round((when - self.t0).total_seconds() / 60))
                rows.append((m, "carbs_true", grams, math.nan))
                if treat is not None and m in treat.given:  # a hypo treatment: no bolus, often unlogged
                    if treat.given[m]:
                        rows.append((m, "carbs", treat.grams, math.nan))
                    continue
                entry = _log_meal(m, grams, total, rng, log)
                if entry is not None:
                    rows.append((entry[0], "carbs", entry[1], math.nan))
                    window_logged += entry[1]
            if treat is not None:
                treat.check(float(obs.CGM), int(round(self.patient.t)), scenario)
            if bolus_on == "logged":
                info = dict(info, meal=window_logged / env.sample_time)  # g/min, as the env reports meals
        return rows

    def readings(self, total: int):
        """``(times, cgm, Gs/Vg, Gp/Vg)`` of every sample time before ``total``."""
        samples = sorted((t, v) for t, v in self.sensor.samples.items() if t < total)
        times = np.array([int(round(t)) for t, _ in samples])
        if not np.array_equal(times, np.arange(0, total, SAMPLE_TIME)):
            raise RuntimeError("simglucose did not produce a reading every sample time")
        cgm, gs, gp = (np.array([v[i] for _, v in samples]) for i in range(3))
        return times, cgm, gs, gp


def _seeds(patient: str, seed: int) -> tuple[int, int, int, int]:
    """Scenario, sensor, logging and hidden-physiology seeds of a (seed, patient): independent
    streams (the first three are those of the 3-stream generator, unchanged)."""
    entropy = [int(seed), zlib.crc32(patient.encode())]
    return tuple(int(s) for s in np.random.SeedSequence(entropy).generate_state(4))


class _HypoTreatment:
    """The patient's response to a low reading: `grams` of carbs, at most every 15 min."""

    def __init__(self, threshold: float, grams: float, log_prob: float, rng):
        self.threshold, self.grams, self.log_prob, self.rng = threshold, grams, log_prob, rng
        self.given: dict[int, bool] = {}  # minute -> logged
        self.last = -math.inf

    def check(self, cgm: float, minute: int, scenario: "_RecordingScenario") -> None:
        if cgm < self.threshold and minute - self.last >= 15:
            self.last = minute
            self.given[minute] = bool(self.rng.random() < self.log_prob)
            scenario.extra[minute] = scenario.extra.get(minute, 0.0) + self.grams


def _truth_settings(treat: "_HypoTreatment | None", profile: "Profile | None") -> dict:
    """What the record's header says about patient behaviour and hidden physiology."""
    out = {}
    if treat is not None:
        out.update(hypo_threshold=treat.threshold, hypo_carbs=treat.grams, hypo_log_prob=treat.log_prob,
                   hypo_treatments=len(treat.given))
    if profile is not None:
        out.update(profile.options.settings(), **profile.describe())
    return out


def _sensitivity_rows(times, profile: "Profile | None") -> list:
    if profile is None:
        return []
    return [(int(m), "insulin_sensitivity_true", profile.factors(float(m))[0], math.nan) for m in times]


def replay_therapy(record: pd.DataFrame, patient: str, seed: int, start: str | datetime,
                   hidden: HiddenPhysiology | None = None) -> pd.DataFrame:
    """The true counterfactual of a record from `generate_record`: the same simglucose
    patient, the same meals actually eaten (``carbs_true`` rows) and the same sensor (same
    noise stream), open loop under the insulin of ``record`` (its ``basal`` and ``bolus``
    rows, usually changed from the original's). Returns the record's input rows with new
    ``cgm`` (no gaps), ``cgm_true`` and ``bg_true`` rows, as `generate_record` writes them.

    The record's length is its ``days`` attribute, else the last reading's time + 5 min.
    `hidden`: the record's `HiddenPhysiology` (the same profile is drawn again; hypo
    treatments given in the record are among the meals eaten)."""
    t0 = datetime.fromisoformat(start) if isinstance(start, str) else start
    if pd.api.types.is_numeric_dtype(record["time"]):  # minutes since start
        minute = record["time"].round().astype(int)
    else:
        minute = ((pd.to_datetime(record["time"]) - pd.Timestamp(t0)).dt.total_seconds() / 60).round().astype(int)
    kind = record["kind"].to_numpy()
    days = record.attrs.get("days")
    total = _minutes_of(days) if days else int(minute[kind == "cgm_true"].max()) + SAMPLE_TIME
    meals: dict[int, float] = {}
    for m, v in zip(minute[kind == "carbs_true"], record["value"][kind == "carbs_true"]):
        meals[int(m)] = meals.get(int(m), 0.0) + float(v)
    basal = [(int(m), float(v)) for m, v in zip(minute[kind == "basal"], record["value"][kind == "basal"])]
    bolus: dict[int, float] = {}
    for m, v in zip(minute[kind == "bolus"], record["value"][kind == "bolus"]):
        bolus[int(m)] = bolus.get(int(m), 0.0) + float(v)
    scenario_seed, sensor_seed, _, hidden_seed = _seeds(patient, seed)
    profile = hidden.draw(hidden_seed, total / 1440) if hidden is not None and hidden.active else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = _Simulation(patient, t0, scenario_seed, sensor_seed, _MealPlan(t0, meals), _InsulinPlan(basal, bolus),
                          profile=profile)
        sim.env.reset()
        while sim.env.time < t0 + timedelta(minutes=total):
            sim.env.step(sim.controller.policy(None, None, None))
    times, cgm, gs, gp = sim.readings(total)
    inputs = [(int(m), k, float(v), float(d)) for m, k, v, d in
              zip(minute, kind, record["value"], record["duration"]) if k in ("basal", "bolus", "carbs", "carbs_true")]
    rows = inputs + [(int(m), "cgm", float(v), math.nan) for m, v in zip(times, cgm)]
    rows += [(int(m), "cgm_true", float(v), math.nan) for m, v in zip(times, gs)]
    rows += [(int(m), "bg_true", float(v), math.nan) for m, v in zip(times, gp)]
    rows += _sensitivity_rows(times, profile)
    df = _frame(rows, t0)
    df.attrs.update(patient=patient, seed=seed, days=total / 1440, start=t0.isoformat(timespec="seconds"),
                    settings=dict(counterfactual=True))
    return df


def _log_meal(minute, grams, total, rng, log: _LogErrors):
    """(minute, grams) as the patient logs the meal, or None when it goes unlogged.

    Every meal draws the same three numbers in the same order, so the log of one meal
    does not depend on the settings used for another."""
    if not log.corrupt:
        return minute, grams
    factor = log.median * math.exp(log.sd * rng.standard_normal())
    skip = rng.random() < log.skip_prob
    shift = log.time_sd * rng.standard_normal()
    if grams < log.snack_grams and skip:
        return None
    logged_minute = min(max(minute + int(round(shift)), 0), total - 1)
    return logged_minute, float(max(1, round(grams * factor)))


def _cgm_mask(n, total, rng, gaps_per_day, gap_minutes, missing_prob) -> np.ndarray:
    """Which of the `n` readings survive: dropouts (placed uniformly, may overlap) and isolated misses."""
    keep = np.ones(n, dtype=bool)
    lo = max(1, math.ceil(gap_minutes[0] / SAMPLE_TIME))
    hi = max(lo, math.floor(gap_minutes[1] / SAMPLE_TIME))
    expected = gaps_per_day * total / 1440
    count = int(expected) + int(rng.random() < expected - int(expected))  # on average `expected`
    for _ in range(count):
        length = int(rng.integers(lo, hi + 1))  # readings missing
        first = int(rng.integers(0, max(1, n - length + 1)))
        keep[first:first + length] = False
    keep &= rng.random(n) >= missing_prob
    return keep


def record_filename(patient: str, seed: int) -> str:
    """``adult#001``, 0 -> ``adult_001_seed0.csv``."""
    return f"{patient.replace('#', '_')}_seed{seed}.csv"


def _fmt(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return ""
    return f"{x:.10g}"


def write_record(df: pd.DataFrame, path: str | PathLike, start: str | datetime | None = None) -> Path:
    """Write a record from `generate_record` as a timeline CSV with a ``# start:`` line.

    `start` defaults to ``df.attrs["start"]`` (else the earliest time). A second comment
    line names the generator, patient, seed, days and the corruption settings. Values are
    written with 10 significant digits. Read it back with
    ``physiotwin.timeline.read_timeline(path, kinds=physiotwin.registry.timeline_kinds())``.
    """
    path = Path(path)
    if start is None:
        start = df.attrs.get("start") or min(df["time"])
    start = start.isoformat(timespec="seconds") if isinstance(start, datetime) else str(start)
    attrs = df.attrs
    settings = ", ".join(f"{k}={v}" for k, v in attrs.get("settings", {}).items())
    lines = [
        f"# start: {start}",
        "# generated by physiotwin.plugins.synthetic: "
        f"patient={attrs.get('patient')}, seed={attrs.get('seed')}, days={attrs.get('days')}, {settings}",
        "time,kind,value,unit,duration",
    ]
    for t, kind, value, unit, duration in df[["time", "kind", "value", "unit", "duration"]].itertuples(
        index=False, name=None
    ):
        lines.append(f"{t},{kind},{_fmt(float(value))},{unit},{_fmt(float(duration))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
