"""Parameter spaces for calibration: which parameters are fitted, their transforms,
bounds, population values and priors.

Parameters are fitted in a transformed space (``log`` for rates and volumes,
``logit`` between declared bounds, ``identity`` otherwise; `Param.transform`). The
prior of each fitted parameter is Gaussian in that space. Its centre and spread
come from the bundled virtual population (default: the bundled patients whose name
starts with ``adult``): the mean and standard deviation of the transformed values,
the spread floored at 0.2 (about +-20 %) so that a parameter the population happens
to share is not pinned. A parameter the population does not vary gets its nominal
value and its declared between-patient spread `Param.prior_sd` (0.5 when it declares
none). The *population twin* uses the population centre for every parameter.

The same machinery describes the error parameters of observation models
(`error_space`): centre at the declared value, spread `Param.prior_sd` or 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..composer import Model
from ..contract import Param
from ..errors import CalibrationError
from ..patients import bundled_patients, resolve_patients

__all__ = ["ParameterSpace", "population_space", "error_space", "CalibrationError", "to_transformed",
           "from_transformed", "TRANSFORMS", "default_fitted"]

SD_FLOOR = 0.2
SD_DEFAULT = 0.5
TRANSFORMS = {"identity": 0, "log": 1, "logit": 2}


def to_transformed(kind, lo, hi, theta):
    """Parameter -> transformed value (NumPy or JAX arrays; ``kind`` per `TRANSFORMS`)."""
    xp = jnp if isinstance(theta, jnp.ndarray) and not isinstance(theta, np.ndarray) else np
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    frac = xp.clip((theta - lo) / span, 1e-9, 1 - 1e-9)
    return xp.where(kind == 1, xp.log(xp.maximum(theta, 1e-300)),
                    xp.where(kind == 2, xp.log(frac) - xp.log1p(-frac), theta))


def from_transformed(kind, lo, hi, z):
    """Transformed value -> parameter (JAX)."""
    span = jnp.where(jnp.isfinite(hi - lo), hi - lo, 1.0)
    return jnp.where(kind == 1, jnp.exp(z), jnp.where(kind == 2, lo + span * jnp.reciprocal(1 + jnp.exp(-z)), z))


@dataclass(frozen=True, eq=False)
class ParameterSpace:
    """The fitted subset of a parameter vector.

    Attributes:
        names: qualified names of the fitted parameters.
        index: their positions in the full vector (``model.param_names``).
        kind: 0 identity, 1 log, 2 logit (per fitted parameter).
        lower, upper: declared bounds.
        base: the full parameter vector the fitted values are written into (population).
        mu, sd: Gaussian prior in transformed space.

    Compared by identity (it holds arrays): a jitted program that closes over one is
    reused for that very space.
    """

    names: tuple[str, ...]
    index: np.ndarray
    kind: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    base: np.ndarray
    mu: np.ndarray
    sd: np.ndarray

    def values(self, z: Array) -> Array:
        """The fitted parameters' values for transformed values ``z``."""
        return from_transformed(jnp.asarray(self.kind), jnp.asarray(self.lower), jnp.asarray(self.upper), z)

    def theta(self, z: Array) -> Array:
        """Full parameter vector with the fitted entries set from ``z``."""
        return jnp.asarray(self.base).at[jnp.asarray(self.index)].set(self.values(z))

    def z(self, theta: np.ndarray) -> np.ndarray:
        """Transformed values of the fitted entries of a full parameter vector."""
        return np.asarray(to_transformed(self.kind, self.lower, self.upper, np.asarray(theta)[self.index]),
                          dtype=float)

    def prior(self, z: Array) -> Array:
        return 0.5 * jnp.sum(((z - self.mu) / self.sd) ** 2)

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else np.asarray(v).tolist()) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict) -> "ParameterSpace":
        return cls(tuple(d["names"]), np.asarray(d["index"], dtype=int), np.asarray(d["kind"], dtype=int),
                   *(np.asarray(d[k], dtype=float) for k in ("lower", "upper", "base", "mu", "sd")))


def default_fitted(model: Model) -> list[str]:
    """Each organ's `Organ.calibrated` (default: its parameters of scope ``"patient"``)."""
    names = []
    for organ in model.organs:
        chosen = organ.calibrated
        if chosen is None:
            chosen = [p.name for p in organ.params if p.scope == "patient"]
        names.extend(f"{organ.name}.{n}" for n in chosen)
    return names


def _declared(decls: Sequence[Param]):
    kind = np.array([TRANSFORMS[d.transform] for d in decls], dtype=int)
    lower = np.array([d.lower for d in decls], dtype=float)
    upper = np.array([d.upper for d in decls], dtype=float)
    nominal = np.array([d.value for d in decls], dtype=float)
    return kind, lower, upper, nominal


def population_space(model: Model, fit: Sequence[str] | None = None, population: str = "adult") -> ParameterSpace:
    """The parameter space of ``model``: fitted names (default: each organ's
    `Organ.calibrated`), population centre and prior from the bundled patients whose
    name starts with ``population`` (``""``: all of them)."""
    fit = default_fitted(model) if fit is None else list(fit)
    unknown = [n for n in fit if n not in model.param_names]
    if unknown:
        raise CalibrationError(f"cannot fit {unknown}: the composition ({', '.join(model.organ_names)}) has no such "
                               f"parameter")
    if len(set(fit)) != len(fit):
        raise CalibrationError("a parameter is named twice in the fitted set")
    decls = [model.declaration(q) for q in model.param_names]
    kind, lower, upper, nominal = _declared(decls)
    mu_all = to_transformed(kind, lower, upper, nominal)
    sd_all = np.array([SD_DEFAULT if d.prior_sd is None else d.prior_sd for d in decls], dtype=float)
    table = bundled_patients()
    names = [n for n in table.index if str(n).startswith(population)]
    if names:
        _, theta, _ = resolve_patients(model, names)
        z = to_transformed(kind[None], lower[None], upper[None], theta)
        varies = ~np.all(theta == nominal[None], axis=0) | (np.ptp(theta, axis=0) > 0)
        mu_all = np.where(varies, z.mean(axis=0), mu_all)
        sd_all = np.where(varies, np.maximum(z.std(axis=0), SD_FLOOR), sd_all)
    base = np.asarray(from_transformed(jnp.asarray(kind), jnp.asarray(lower), jnp.asarray(upper), jnp.asarray(mu_all)))
    base = np.where(kind == 0, mu_all, base)
    idx = np.array([model.param_names.index(n) for n in fit], dtype=int)
    return ParameterSpace(tuple(fit), idx, kind[idx], lower[idx], upper[idx], base, mu_all[idx], sd_all[idx])


def error_space(names: Sequence[str], decls: Sequence[Param]) -> ParameterSpace:
    """The space of observation-error parameters (qualified ``kind.param`` names): prior
    centre at the declared value, spread `Param.prior_sd` (1 when not declared)."""
    kind, lower, upper, nominal = _declared(decls)
    mu = to_transformed(kind, lower, upper, nominal)
    sd = np.array([1.0 if d.prior_sd is None else d.prior_sd for d in decls], dtype=float)
    return ParameterSpace(tuple(names), np.arange(len(decls)), kind, lower, upper, nominal, np.asarray(mu, float), sd)
