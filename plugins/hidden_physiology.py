"""Physiology the twin lacks, for the synthetic record generator (`synthetic.generate_record`).

The UVA/Padova model that simglucose runs, and the twin fits, has constant insulin
sensitivity. Real patients do not:

* **A daily profile.** Insulin sensitivity follows the time of day, with resistance in
  the early morning (the dawn phenomenon) and at breakfast (Visentin et al., J Diabetes
  Sci Technol 9:1258, 2015; Visentin et al., Diabetes Technol Ther 20:285, 2018, the
  UVA/Padova S2017 simulator's time-varying sensitivity). Here
  ``s_c(h) = 1 - a cos(2 pi (h - phi) / 24)``, lowest at hour ``phi``; ``a`` and ``phi``
  are drawn per patient around the given mean amplitude and hour.
* **Day-to-day variation.** A factor per day, log-normal with the given SD.
* **Exercise.** Sessions of moderate exercise in the late afternoon. During a session
  insulin-independent uptake rises (``Vm0`` x ``1 + uptake``); sensitivity rises with it
  and stays raised for hours after, decaying with a time constant ``tau`` (post-exercise
  sensitivity lasts several hours and up to a day and more: e.g. Riddell et al., Lancet
  Diabetes Endocrinol 5:377, 2017).

The total factor ``s(t) = s_c(t) s_day(t) s_ex(t)`` multiplies both insulin actions of the
UVA/Padova model: ``Vmx`` (insulin-dependent utilisation) and ``kp3`` (insulin suppression
of production). The record keeps it at every sample time as ``insulin_sensitivity_true``,
and the per-patient draws in its header, so a test can compare what a hybrid learns.

Every draw comes from its own stream (``SeedSequence([seed, crc32(patient)])``, 4th word),
so turning these options on changes neither meals, sensor noise nor logging errors, and a
replay (`synthetic.replay_therapy`) rebuilds the same profile from the same arguments.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["HiddenPhysiology", "Profile"]


@dataclass(frozen=True)
class HiddenPhysiology:
    """What the truth model adds to simglucose (all off by default).

    circadian_amplitude: mean ``a`` of the daily profile (0: none); a patient's ``a`` is
    uniform in [0.7, 1.3] times it. circadian_phase: mean hour of lowest sensitivity; a
    patient's is normal around it with SD `phase_sd` hours. day_sd: log-SD of the per-day
    factor. exercise_per_week: mean number of sessions (Poisson per day), each
    `exercise_minutes` long, starting uniformly between 16:00 and 19:00; `exercise_uptake`:
    relative rise of insulin-independent uptake during a session; `exercise_boost`:
    relative rise of insulin sensitivity at the end of a session, decaying with time
    constant `exercise_tau` minutes."""

    circadian_amplitude: float = 0.0
    circadian_phase: float = 6.0
    phase_sd: float = 1.5
    day_sd: float = 0.0
    exercise_per_week: float = 0.0
    exercise_minutes: float = 45.0
    exercise_uptake: float = 0.6
    exercise_boost: float = 0.5
    exercise_tau: float = 360.0

    def __post_init__(self):
        if not 0.0 <= self.circadian_amplitude < 0.7:
            raise ValueError(f"circadian_amplitude must be in [0, 0.7), got {self.circadian_amplitude!r}")
        for name in ("day_sd", "exercise_per_week", "exercise_uptake", "exercise_boost", "phase_sd"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.exercise_minutes <= 0 or self.exercise_tau <= 0:
            raise ValueError("exercise_minutes and exercise_tau must be > 0")

    @property
    def active(self) -> bool:
        return self.circadian_amplitude > 0 or self.day_sd > 0 or self.exercise_per_week > 0

    def settings(self) -> dict:
        return asdict(self)

    def draw(self, seed: int, days: int) -> "Profile":
        """The patient's profile (``seed``: the hidden stream's seed)."""
        rng = np.random.default_rng(seed)
        # the same draws in the same order whatever is switched on
        a = self.circadian_amplitude * rng.uniform(0.7, 1.3)
        phase = (self.circadian_phase + self.phase_sd * rng.standard_normal()) % 24.0
        n_days = int(math.ceil(days)) + 1
        day = np.exp(self.day_sd * rng.standard_normal(n_days))
        sessions = []
        counts = rng.poisson(self.exercise_per_week / 7.0, n_days)
        starts = rng.uniform(16 * 60, 19 * 60, n_days)
        for d in range(n_days):
            if counts[d] > 0:
                sessions.append(float(d * 1440 + round(starts[d])))
        return Profile(self, float(a), float(phase), tuple(float(v) for v in day), tuple(sessions))


@dataclass(frozen=True)
class Profile:
    """One patient's hidden physiology: ``factors(minute)`` gives ``(s, vm0 factor)``."""

    options: HiddenPhysiology
    amplitude: float
    phase: float  # hour of lowest sensitivity
    day_factors: tuple[float, ...]
    exercise: tuple[float, ...]  # session start minutes

    def circadian(self, minute) -> np.ndarray:
        hour = (np.asarray(minute, dtype=float) / 60.0) % 24.0
        return 1.0 - self.amplitude * np.cos(2.0 * math.pi * (hour - self.phase) / 24.0)

    def _exercise(self, minute: float) -> tuple[float, float]:
        o = self.options
        boost, uptake = 0.0, 0.0
        for start in self.exercise:
            end = start + o.exercise_minutes
            if start <= minute < end:
                frac = (minute - start) / o.exercise_minutes
                boost += o.exercise_boost * frac
                uptake += o.exercise_uptake
            elif minute >= end:
                boost += o.exercise_boost * math.exp(-(minute - end) / o.exercise_tau)
        return 1.0 + boost, 1.0 + uptake

    def factors(self, minute: float) -> tuple[float, float]:
        s_ex, vm0 = self._exercise(minute)
        s = float(self.circadian(minute)) * self.day_factors[int(minute // 1440)] * s_ex
        return s, vm0

    def describe(self) -> dict:
        """The draws, for the record's header."""
        return {"circadian_amplitude_drawn": round(self.amplitude, 6), "circadian_phase_drawn": round(self.phase, 6),
                "day_factors": "/".join(f"{v:.6g}" for v in self.day_factors),
                "exercise_starts": "/".join(f"{v:.0f}" for v in self.exercise)}


class SensitivePatient:
    """Wraps a simglucose `T1DPatient` (with plain-float parameters, `synthetic._fast_patient`):
    before each 1-min step, sets ``Vmx``, ``kp3`` and ``Vm0`` from the profile at the patient's time."""

    def __init__(self, patient, profile: Profile):
        self._patient, self._profile = patient, profile
        p = patient._params
        self._base = (p.Vmx, p.kp3, p.Vm0)

    def __getattr__(self, name):
        return getattr(self._patient, name)

    def factor(self, minute: float) -> float:
        return self._profile.factors(minute)[0]

    def step(self, action):
        s, vm0 = self._profile.factors(float(self._patient.t))
        p = self._patient._params
        p.Vmx, p.kp3, p.Vm0 = self._base[0] * s, self._base[1] * s, self._base[2] * vm0
        self._patient.step(action)

    def reset(self):
        self._patient.reset()
