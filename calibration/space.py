"""Parameter spaces for calibration: which parameters are fitted, their transforms,
bounds, population values and priors.

Mechanistic parameters are fitted in a transformed space (``log`` for rates and
volumes, ``logit`` between declared bounds, ``identity`` otherwise; `Param.transform`).
The prior of each fitted parameter is Gaussian in that space. Its centre and spread
come from the bundled virtual population (default: the 10 UVA/Padova adults): the
mean and standard deviation of the transformed values, the spread floored at 0.2
(about +-20 %) so that a parameter the population happens to share is not pinned.
A parameter without population data gets its nominal value and a spread of 0.5.
The *population twin* uses the population centre for every parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..composer import Model
from ..patients import bundled_patients, resolve_patients

__all__ = ["ParameterSpace", "population_space", "CalibrationError"]

SD_FLOOR = 0.2
SD_DEFAULT = 0.5


class CalibrationError(ValueError):
    """A calibration that cannot run with the given record, organs or options."""


def _forward(kind, lo, hi, theta):
    """Parameter -> transformed value (NumPy or JAX)."""
    xp = jnp if isinstance(theta, jnp.ndarray) and not isinstance(theta, np.ndarray) else np
    span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    frac = (theta - lo) / span
    frac = xp.clip(frac, 1e-9, 1 - 1e-9)
    return xp.where(kind == 1, xp.log(xp.maximum(theta, 1e-300)),
                    xp.where(kind == 2, xp.log(frac) - xp.log1p(-frac), theta))


def _inverse(kind, lo, hi, z):
    span = jnp.where(jnp.isfinite(hi - lo), hi - lo, 1.0)
    return jnp.where(kind == 1, jnp.exp(z), jnp.where(kind == 2, lo + span * jnp.reciprocal(1 + jnp.exp(-z)), z))


@dataclass(frozen=True)
class ParameterSpace:
    """The fitted subset of a model's parameter vector.

    Attributes:
        names: qualified names of the fitted parameters.
        index: their positions in ``model.param_names``.
        kind: 0 identity, 1 log, 2 logit (per fitted parameter).
        lower, upper: declared bounds.
        base: the full parameter vector the fitted values are written into (population).
        mu, sd: Gaussian prior in transformed space.
    """

    names: tuple[str, ...]
    index: np.ndarray
    kind: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    base: np.ndarray
    mu: np.ndarray
    sd: np.ndarray

    def theta(self, z: Array) -> Array:
        """Full parameter vector with the fitted entries set from ``z``."""
        values = _inverse(jnp.asarray(self.kind), jnp.asarray(self.lower), jnp.asarray(self.upper), z)
        return jnp.asarray(self.base).at[jnp.asarray(self.index)].set(values)

    def z(self, theta: np.ndarray) -> np.ndarray:
        """Transformed values of the fitted entries of a full parameter vector."""
        return np.asarray(_forward(self.kind, self.lower, self.upper, np.asarray(theta)[self.index]), dtype=float)

    def prior(self, z: Array) -> Array:
        return 0.5 * jnp.sum(((z - self.mu) / self.sd) ** 2)

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else np.asarray(v).tolist()) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, d: dict) -> "ParameterSpace":
        return cls(tuple(d["names"]), np.asarray(d["index"], dtype=int), np.asarray(d["kind"], dtype=int),
                   *(np.asarray(d[k], dtype=float) for k in ("lower", "upper", "base", "mu", "sd")))


_KIND = {"identity": 0, "log": 1, "logit": 2}


def default_fitted(model: Model) -> list[str]:
    names = []
    for organ in model.organs:
        chosen = organ.calibrated
        if chosen is None:
            chosen = [p.name for p in organ.params if p.scope == "patient"]
        names.extend(f"{organ.name}.{n}" for n in chosen)
    return names


def population_space(model: Model, fit: list[str] | None = None, population: str = "adult") -> ParameterSpace:
    """The parameter space of ``model``: fitted names (default: each organ's
    `Organ.calibrated`), population centre and prior from the bundled patients whose
    name starts with ``population`` (``""``: all of them)."""
    fit = default_fitted(model) if fit is None else list(fit)
    unknown = [n for n in fit if n not in model.param_names]
    if unknown:
        raise CalibrationError(f"cannot fit {unknown}: the composition ({', '.join(model.organ_names)}) has no such "
                               f"parameter")
    decls = {f"{o.name}.{p.name}": p for o in model.organs for p in o.params}
    kind = np.array([_KIND[decls[q].transform] for q in model.param_names])
    lower = np.array([decls[q].lower for q in model.param_names], dtype=float)
    upper = np.array([decls[q].upper for q in model.param_names], dtype=float)
    table = bundled_patients()
    names = [n for n in table.index if str(n).startswith(population)]
    nominal = np.array([decls[q].value for q in model.param_names], dtype=float)
    mu_all = _forward(kind, lower, upper, nominal)
    sd_all = np.full(len(nominal), SD_DEFAULT)
    if names:
        _, theta, _ = resolve_patients(model, names)
        z = _forward(kind[None], lower[None], upper[None], theta)
        varies = ~np.all(theta == nominal[None], axis=0) | (np.ptp(theta, axis=0) > 0)
        mu_all = np.where(varies, z.mean(axis=0), mu_all)
        sd_all = np.where(varies, np.maximum(z.std(axis=0), SD_FLOOR), sd_all)
    base = np.asarray(_inverse(jnp.asarray(kind), jnp.asarray(lower), jnp.asarray(upper), jnp.asarray(mu_all)))
    base = np.where(kind == 0, mu_all, base)
    idx = np.array([model.param_names.index(n) for n in fit], dtype=int)
    return ParameterSpace(tuple(fit), idx, kind[idx], lower[idx], upper[idx], base, mu_all[idx], sd_all[idx])
