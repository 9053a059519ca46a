"""Built-in observation models: ``cgm``, ``bg``, ``map``, ``heart_rate``, ``creatinine``.

``cgm``: a continuous glucose monitor. The reading is the model's subcutaneous
glucose plus sensor error. Real and simulated CGM errors are autocorrelated
(Facchinetti et al., IEEE TBME 61:620, 2014; the simglucose sensor draws
Johnson-distributed noise from a filtered process), so the default error is a
stationary Gaussian AR(1) process in continuous time (Ornstein-Uhlenbeck) with
standard deviation ``sigma`` and correlation ``phi`` over 5 minutes: between two
readings ``gap`` minutes apart the correlation is ``phi**(gap/5)``, so gaps in the
record need no special treatment. ``noise="gaussian"`` gives independent errors,
``noise="student_t"`` independent heavy-tailed errors (nu = 4) that limit the pull of
outliers and compression artefacts. The state filter carries the AR(1) error as a state.

The others read an organ output plus independent Gaussian error of SD ``sigma``
(in the reading's unit), which also absorbs the variability the model does not
describe (e.g. blood pressure's minute-to-minute swings around the model's
cycle-averaged MAP):

| model | kind | reads | unit | sigma (prior centre) |
|---|---|---|---|---|
| ``bg`` | finger-stick plasma glucose | ``plasma_glucose`` | mg/dL | 7 (ISO 15197 meters: 95 % within 15 mg/dL below 100) |
| ``map`` | cuff mean arterial pressure | ``MAP`` | mmHg | 6 (validated cuffs: SD <= 8 mmHg, AAMI/ESH; plus short-term variability) |
| ``heart_rate`` | heart rate | ``HR`` | 1/min | 5 |
| ``creatinine`` | serum creatinine | ``serum_creatinine`` | mg/dL | 0.06 (analytical CV ~3 % + within-person ~5 %, Ricos 1999) |
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp

from physiotwin.contract import Param
from physiotwin.observation import FilterNoise, ObservationModel, gaussian_nll
from physiotwin.plugins import hookimpl

__all__ = ["CGM", "BG", "MAP", "HeartRate", "Creatinine"]

_LOG2PI = math.log(2.0 * math.pi)
NU = 4.0  # degrees of freedom of the Student-t option
GLUCOSE_RANGE = (70.0, 180.0)  # mg/dL, the consensus target range (Battelino 2019)


class CGM(ObservationModel):
    """CGM reading = subcutaneous glucose + sensor error (AR(1) by default)."""

    name = "cgm"
    default_organs = ("glucose",)
    kind = "cgm"
    output = "subcutaneous_glucose"
    unit = "mg/dL"
    description = "continuous glucose monitor: subcutaneous glucose plus an AR(1) sensor error"
    typical_error = 8.0
    reference_range = GLUCOSE_RANGE
    reading_limits = (39.0, 600.0)  # mg/dL, what the simulated GuardianRT reports (simglucose clips to it)
    forecast_outputs = {"sensor_glucose": "subcutaneous_glucose", "plasma_glucose": "plasma_glucose"}
    jitter = 1.0  # mg/dL: reading noise left once the AR(1) sensor error is a filter state
    params = (
        Param("sigma", "mg/dL", 8.0, "standard deviation of the sensor error", lower=0.5, upper=100.0,
              transform="log", source="Facchinetti 2014: CGM error SD ~ 5-15 mg/dL; fitted per patient"),
        Param("phi", "1", 0.7, "correlation of the sensor error over 5 min (AR(1) noise)", lower=0.0, upper=0.99,
              transform="logit", source="Facchinetti 2014: AR(2) fits of Dexcom errors, lag-1 corr ~0.7-0.9"),
    )

    noise: str = eqx.field(static=True, default="ar1")

    def __check_init__(self):
        if self.noise not in ("ar1", "gaussian", "student_t"):
            raise ValueError(f"cgm observation model: noise must be 'ar1', 'gaussian' or 'student_t', "
                             f"not {self.noise!r}")

    @property
    def filter_tuning(self):
        sigma = (4.0, 8.0, 12.0, 16.0)
        return {"phi": (0.0, 0.8, 0.9, 0.95), "sigma": sigma} if self.noise == "ar1" else {"sigma": sigma}

    def _rho(self, gap, p):
        return jnp.where(jnp.isfinite(gap), p["phi"] ** (jnp.where(jnp.isfinite(gap), gap, 0.0) / 5.0), 0.0)

    def nll(self, pred, obs, mask, prev, gap, p):
        sigma = p["sigma"]
        if self.noise == "gaussian":
            return gaussian_nll(pred, obs, mask, sigma)
        e = jnp.where(mask, obs - pred, 0.0)
        if self.noise == "ar1":
            rho = self._rho(gap, p)
            innov = e - rho * e[prev]
            var = sigma ** 2 * (1.0 - rho ** 2) + 1e-9
            terms = 0.5 * (innov ** 2 / var + jnp.log(var) + _LOG2PI)
        else:  # Student-t with scale sigma
            z2 = (e / sigma) ** 2
            terms = (0.5 * (NU + 1.0) * jnp.log1p(z2 / NU) + jnp.log(sigma)
                     + 0.5 * math.log(NU * math.pi) + math.lgamma(NU / 2.0) - math.lgamma((NU + 1.0) / 2.0))
        return jnp.sum(jnp.where(mask, terms, 0.0))

    def filter_noise(self, p):
        sigma = jnp.asarray(p["sigma"])
        if self.noise != "ar1":
            return FilterNoise(jnp.zeros(()), jnp.zeros(()), sigma ** 2)
        return FilterNoise(p["phi"] ** (1.0 / 5.0), sigma ** 2, jnp.asarray(self.jitter ** 2))


class _Gaussian(ObservationModel):
    """A reading = an organ output + independent Gaussian error of SD ``sigma``."""

    def nll(self, pred, obs, mask, prev, gap, p):
        return gaussian_nll(pred, obs, mask, p["sigma"])

    def filter_noise(self, p):
        zero = jnp.zeros(())
        return FilterNoise(zero, zero, jnp.asarray(p["sigma"]) ** 2)


def _sigma(unit, value, lower, upper, source) -> tuple[Param, ...]:
    # prior spread 0.5 in log: a fit may find errors twice or half the nominal size, but cannot
    # buy a poor fit of sparse readings by declaring them 5 times noisier than the device is
    return (Param("sigma", unit, value, "standard deviation of a reading's error", lower=lower, upper=upper,
                  transform="log", source=source, prior_sd=0.5),)


class BG(_Gaussian):
    name = "bg"
    default_organs = ("glucose",)
    kind = "bg"
    output = "plasma_glucose"
    unit = "mg/dL"
    description = "finger-stick meter reading of plasma glucose"
    typical_error = 7.0
    reference_range = GLUCOSE_RANGE
    reading_limits = (20.0, 600.0)  # mg/dL: the range blood glucose meters report ("LO"/"HI" outside it)
    params = _sigma("mg/dL", 7.0, 1.0, 60.0, "ISO 15197:2013: 95 % of meter readings within 15 mg/dL below 100")


class MAP(_Gaussian):
    name = "map"
    default_organs = ("cardiovascular",)
    kind = "map"
    output = "MAP"
    unit = "mmHg"
    description = "cuff mean arterial pressure (home or ambulatory monitor)"
    typical_error = 6.0
    reference_range = (70.0, 100.0)
    params = _sigma("mmHg", 6.0, 1.0, 40.0, "AAMI/ESH validation: cuff error SD <= 8 mmHg; plus short-term "
                    "pressure variability the cycle-averaged model does not describe")


class HeartRate(_Gaussian):
    name = "heart_rate"
    default_organs = ("cardiovascular",)
    kind = "heart_rate"
    output = "HR"
    unit = "1/min"
    description = "heart rate (e.g. from a cuff)"
    typical_error = 5.0
    reference_range = (60.0, 100.0)
    params = _sigma("1/min", 5.0, 0.5, 40.0, "assumed: resting heart rate varies by a few beats per minute")


class Creatinine(_Gaussian):
    name = "creatinine"
    default_organs = ("renal",)
    kind = "creatinine"
    output = "serum_creatinine"
    unit = "mg/dL"
    description = "serum creatinine from a laboratory"
    typical_error = 0.06
    reference_range = (0.6, 1.2)
    params = _sigma("mg/dL", 0.06, 0.005, 2.0, "Ricos et al. 1999: analytical CV ~3 %, within-person CV ~5 %")


@hookimpl
def register_observation_models(register):
    for cls in (CGM, BG, MAP, HeartRate, Creatinine):
        register(cls)
