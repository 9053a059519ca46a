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
``bg``          mg/dL    plasma glucose Gp/Vg at every sample time (ground truth)
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
  plasma glucose; ``bg`` here is plasma glucose ``Gp/Vg`` at the sample time.

Logging errors (``corrupt=True``; all drawn from a `numpy.random.Generator` seeded from
`seed`): multiplicative lognormal carb-count error, unlogged snacks, jittered meal times,
CGM dropouts and isolated missing readings. By default the controller's bolus follows the
*logged* carb count (``bolus_on="logged"``), as when a patient enters an estimate into a
bolus calculator: an under-counted meal gets an under-sized bolus and an unlogged snack
none. With ``bolus_on="true"`` the controller sees the meal actually eaten (simglucose's
behaviour). With ``corrupt=False`` the log equals the truth and there are no gaps.
"""

from __future__ import annotations

import math
import warnings
import zlib
from datetime import datetime, timedelta
from os import PathLike
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

__all__ = ["SAMPLE_TIME", "generate_record", "record_filename", "write_record"]

SAMPLE_TIME = 5  # min, GuardianRT
SENSOR = "GuardianRT"
PUMP = "Insulet"
_UNITS = {
    "basal": "U/h",
    "bolus": "U",
    "carbs": "g",
    "cgm": "mg/dL",
    "cgm_true": "mg/dL",
    "bg": "mg/dL",
    "carbs_true": "g",
}
# row order at equal times: inputs first, then observations
_KIND_ORDER = {k: i for i, k in enumerate(["basal", "carbs", "bolus", "carbs_true", "cgm", "cgm_true", "bg"])}
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
    """Wraps a simglucose scenario; keeps (time, grams) of every announced meal."""

    def __init__(self, scenario):
        self._scenario = scenario
        self.meals: list[tuple[datetime, float]] = []

    def __getattr__(self, name):
        return getattr(self._scenario, name)

    def get_action(self, t):
        action = self._scenario.get_action(t)
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
) -> pd.DataFrame:
    """Simulate `patient` for `days` with simglucose and return the record as a timeline table.

    Parameters
    ----------
    patient : a simglucose virtual patient (``adult#001`` .. ``adult#010``, ``adolescent#...``,
        ``child#...``).
    days : length; the record covers ``[start, start + days)`` (samples every 5 min, the last
        at ``start + days - 5 min``). Must be a whole number of 5-min samples.
    seed : with the patient's name, seeds the meal scenario, the sensor noise and the
        logging errors (independent streams from `numpy.random.SeedSequence([seed,
        crc32(patient)])`, so two patients of one seed get different meals and noise).
        Same arguments, same record.
    start : the absolute start time; midnight keeps simglucose's daily meal plan aligned
        (its `RandomScenario` draws a new day at every midnight).
    corrupt : apply the logging errors below; `False` gives a log equal to the truth and a
        CGM without gaps (the sensor noise stays: it is part of the sensor).
    carb_error_median, carb_error_sd : logged grams = true grams x a lognormal factor with
        this median (default 0.9, a systematic ~10 % under-count) and this SD of its log
        (default 0.2), rounded to whole grams (at least 1 g).
    snack_grams, snack_skip_prob : a meal under `snack_grams` (default 30 g) goes unlogged
        with probability `snack_skip_prob` (default 0.5).
    meal_time_sd : SD in minutes (default 5) of the normal error of a logged meal time,
        rounded to whole minutes and kept inside the record.
    gaps_per_day : CGM dropouts per day (default 0.5): a record of D days gets
        ``floor(gaps_per_day * D)`` of them, plus one more with probability equal to the
        fractional part. Each starts at a uniformly drawn reading.
    gap_minutes : each dropout lasts a uniform whole number of sample times in this range
        (default 15 to 90 min): its `cgm` rows are missing; `cgm_true` and `bg` stay.
    missing_prob : probability (default 0.005) that any other single reading is missing.
    bolus_on : ``"logged"`` (default): the controller doses for the logged carb count (no
        bolus for an unlogged snack); ``"true"``: for the meal actually eaten.

    Returns
    -------
    DataFrame with columns ``time`` (ISO-8601 strings), ``kind``, ``value``, ``unit``,
    ``duration`` (minutes, NaN where absent), sorted by time; values in full precision.
    ``df.attrs`` holds ``patient``, ``seed``, ``days``, ``start`` (ISO string) and
    ``settings`` (the corruption settings), which `write_record` puts in its header.
    Raises `RuntimeError` when simglucose is not installed.
    """
    if bolus_on not in ("logged", "true"):
        raise ValueError(f"bolus_on must be 'logged' or 'true', got {bolus_on!r}")
    lo_gap, hi_gap = gap_minutes
    if not 0 < lo_gap <= hi_gap:
        raise ValueError(f"gap_minutes must be 0 < low <= high, got {gap_minutes!r}")
    total = _minutes_of(days)
    t0 = datetime.fromisoformat(start) if isinstance(start, str) else start
    T1DSimEnv, t1dpatient, CGMSensor, InsulinPump, RandomScenario, BBController = _import_simglucose()

    # independent streams per (seed, patient): patients of one seed get different meals, noise and errors
    entropy = [int(seed), zlib.crc32(patient.encode())]
    scenario_seed, sensor_seed, log_seed = (int(s) for s in np.random.SeedSequence(entropy).generate_state(3))
    rng = np.random.default_rng(log_seed)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = pd.read_csv(t1dpatient.PATIENT_PARA_FILE)
        if not (params.Name == patient).any():
            raise ValueError(f"unknown simglucose patient {patient!r}")
        row = params.loc[params.Name == patient].squeeze()
        vg = float(row.Vg)
        pat = _fast_patient(t1dpatient.T1DPatient, row)
        sensor = _RecordingSensor(CGMSensor.withName(SENSOR, seed=sensor_seed), vg)
        pump = InsulinPump.withName(PUMP)
        scenario = _RecordingScenario(RandomScenario(start_time=t0, seed=scenario_seed))
        env = T1DSimEnv(pat, sensor, pump, scenario)
        controller = BBController()
        if sensor.sample_time != SAMPLE_TIME:
            raise RuntimeError(f"simglucose {SENSOR} samples every {sensor.sample_time} min, expected {SAMPLE_TIME}")

        logged: list[tuple[int, float]] = []  # (minute, grams) as logged
        basal: list[tuple[int, float]] = []   # (minute, U/h) at changes
        bolus: list[tuple[int, float]] = []   # (minute, U over SAMPLE_TIME)
        true_meals: list[tuple[int, float]] = []

        # simglucose's SimObj.simulate loop
        controller.reset()
        obs, reward, done, info = env.reset()
        while env.time < t0 + timedelta(minutes=total):
            minute = int(round(pat.t))
            action = controller.policy(obs, reward, done, **info)
            rate_basal = float(pump.basal(action.basal))  # U/min, as delivered each minute
            rate_bolus = float(pump.bolus(action.bolus))
            if not basal or not math.isclose(basal[-1][1], rate_basal * 60, rel_tol=1e-12):
                basal.append((minute, rate_basal * 60))
            if rate_bolus > 0:
                bolus.append((minute, rate_bolus * env.sample_time))
            n_meals = len(scenario.meals)
            obs, reward, done, info = env.step(action)
            # meals announced during this step: log them now, so the next controller call can use the log
            window_logged = 0.0
            for when, grams in scenario.meals[n_meals:]:
                m = int(round((when - t0).total_seconds() / 60))
                true_meals.append((m, grams))
                entry = _log_meal(m, grams, total, rng, corrupt, carb_error_median, carb_error_sd,
                                  snack_grams, snack_skip_prob, meal_time_sd)
                if entry is not None:
                    logged.append(entry)
                    window_logged += entry[1]
            if bolus_on == "logged":
                info = dict(info, meal=window_logged / env.sample_time)  # g/min, as the env reports meals

    samples = sorted((t, v) for t, v in sensor.samples.items() if t < total)
    times = np.array([int(round(t)) for t, _ in samples])
    cgm, gs, gp = (np.array([v[i] for _, v in samples]) for i in range(3))
    expected = np.arange(0, total, SAMPLE_TIME)
    if not np.array_equal(times, expected):
        raise RuntimeError("simglucose did not produce a reading every sample time")
    keep = _cgm_mask(len(times), total, rng, gaps_per_day, gap_minutes, missing_prob) if corrupt else np.ones(len(times), bool)

    rows: list[tuple[int, str, float, float]] = []
    rows += [(m, "basal", v, math.nan) for m, v in basal]
    rows += [(m, "bolus", v, float(SAMPLE_TIME)) for m, v in bolus]
    rows += [(m, "carbs", g, math.nan) for m, g in logged]
    rows += [(m, "carbs_true", g, math.nan) for m, g in true_meals]
    rows += [(int(m), "cgm", float(v), math.nan) for m, v, k in zip(times, cgm, keep) if k]
    rows += [(int(m), "cgm_true", float(v), math.nan) for m, v in zip(times, gs)]
    rows += [(int(m), "bg", float(v), math.nan) for m, v in zip(times, gp)]
    rows.sort(key=lambda r: (r[0], _KIND_ORDER[r[1]]))

    df = pd.DataFrame(
        {
            "time": [(t0 + timedelta(minutes=m)).isoformat(timespec="seconds") for m, *_ in rows],
            "kind": [r[1] for r in rows],
            "value": np.array([r[2] for r in rows], dtype=np.float64),
            "unit": [_UNITS[r[1]] for r in rows],
            "duration": np.array([r[3] for r in rows], dtype=np.float64),
        }
    )
    df.attrs.update(
        patient=patient,
        seed=seed,
        days=days,
        start=t0.isoformat(timespec="seconds"),
        settings=(
            dict(corrupt=False, bolus_on=bolus_on)
            if not corrupt
            else dict(
                corrupt=True,
                carb_error_median=carb_error_median,
                carb_error_sd=carb_error_sd,
                snack_grams=snack_grams,
                snack_skip_prob=snack_skip_prob,
                meal_time_sd=meal_time_sd,
                gaps_per_day=gaps_per_day,
                gap_minutes=tuple(gap_minutes),
                missing_prob=missing_prob,
                bolus_on=bolus_on,
            )
        ),
    )
    return df


def _log_meal(minute, grams, total, rng, corrupt, median, sd, snack_grams, skip_prob, time_sd):
    """(minute, grams) as the patient logs the meal, or None when it goes unlogged.

    Every meal draws the same three numbers in the same order, so the log of one meal
    does not depend on the settings used for another."""
    if not corrupt:
        return minute, grams
    factor = median * math.exp(sd * rng.standard_normal())
    skip = rng.random() < skip_prob
    shift = time_sd * rng.standard_normal()
    if grams < snack_grams and skip:
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
        "# generated by physiotwin.calibration.synthetic: "
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
