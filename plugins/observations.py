"""Built-in observation model ``cgm``: a continuous glucose monitor.

The reading is the model's subcutaneous glucose plus sensor error. Real and simulated
CGM errors are autocorrelated (Facchinetti et al., IEEE TBME 61:620, 2014; the
simglucose sensor draws Johnson-distributed noise from a filtered process), so the
default noise is a stationary Gaussian AR(1) process in continuous time
(Ornstein-Uhlenbeck) with standard deviation ``sigma`` and correlation ``phi`` over
5 minutes: between two readings ``gap`` minutes apart the correlation is
``phi**(gap/5)``. Gaps in the record therefore need no special treatment: after a
long gap the next error is nearly independent. ``noise="gaussian"`` gives
independent errors, ``noise="student_t"`` independent heavy-tailed errors (nu = 4)
that limit the pull of outliers and compression artefacts.

Units: readings and ``sigma`` in mg/dL.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp

from physiotwin.calibration.observation import ObservationModel
from physiotwin.contract import Param
from physiotwin.plugins import hookimpl

__all__ = ["CGM"]

_LOG2PI = math.log(2.0 * math.pi)
NU = 4.0  # degrees of freedom of the Student-t option


class CGM(ObservationModel):
    """CGM reading = subcutaneous glucose + sensor error (AR(1) by default)."""

    name = "cgm"
    kind = "cgm"
    output = "subcutaneous_glucose"
    unit = "mg/dL"
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

    def _rho(self, gap, p):
        return jnp.where(jnp.isfinite(gap), p["phi"] ** (jnp.where(jnp.isfinite(gap), gap, 0.0) / 5.0), 0.0)

    def nll(self, pred, obs, mask, prev, gap, p):
        sigma = p["sigma"]
        e = jnp.where(mask, obs - pred, 0.0)
        if self.noise == "ar1":
            rho = self._rho(gap, p)
            innov = e - rho * e[prev]
            var = sigma ** 2 * (1.0 - rho ** 2) + 1e-9
            terms = 0.5 * (innov ** 2 / var + jnp.log(var) + _LOG2PI)
        elif self.noise == "gaussian":
            terms = 0.5 * ((e / sigma) ** 2 + 2.0 * jnp.log(sigma) + _LOG2PI)
        else:  # Student-t with scale sigma
            z2 = (e / sigma) ** 2
            terms = (0.5 * (NU + 1.0) * jnp.log1p(z2 / NU) + jnp.log(sigma)
                     + 0.5 * math.log(NU * math.pi) + math.lgamma(NU / 2.0) - math.lgamma((NU + 1.0) / 2.0))
        return jnp.sum(jnp.where(mask, terms, 0.0))

    def forecast_correction(self, residual, horizon, p):
        if self.noise != "ar1":
            return jnp.zeros_like(residual * horizon)
        return residual * p["phi"] ** (horizon / 5.0)


@hookimpl
def register_observation_models(register):
    register(CGM)
