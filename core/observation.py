"""Observation models: how a model output becomes a recorded reading.

An observation model explains one observation kind of the timeline by one organ
output plus an error. Plugins register subclasses through the
``register_observation_models`` hook. An observation model declares

- ``kind``: the timeline kind it explains; ``output``: the organ output it reads
  (unqualified, e.g. ``"MAP"``: whichever organ of the composition provides it), in
  ``unit``, the kind's canonical unit;
- ``params``: its error parameters (`physiotwin.Param`: nominal value = prior centre,
  bounds, transform), fitted with the twin;
- `ObservationModel.nll`: the negative log-likelihood of a series of readings with
  gaps;
- `ObservationModel.filter_noise`: how the state filter treats it: an
  autocorrelated error carried as an extra filter state (its correlation over one
  minute and its stationary variance) and a white reading variance;
- `ObservationModel.forecast_correction`: the expected future reading error, given the
  error at the forecast origin.

Everything is in the unit of the readings; `output_name` checks that the output
it reads has that unit, when a composition is built.
"""

from __future__ import annotations

import abc
import math
from dataclasses import fields
from typing import ClassVar, Mapping

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .contract import Param
from .errors import ObservationError

__all__ = ["ObservationModel", "ObservationError", "FilterNoise", "gaussian_nll"]

_LOG2PI = math.log(2.0 * math.pi)


class FilterNoise(eqx.Module):
    """How the state filter sees one kind's errors: an error state with correlation ``rho``
    over one minute and stationary variance ``error_var`` (``rho = 0``, ``error_var = 0``:
    no error state), plus a white reading variance ``reading_var``."""

    rho: Array
    error_var: Array
    reading_var: Array


def gaussian_nll(pred, obs, mask, sigma) -> Array:
    """Sum over present readings of the Gaussian negative log-likelihood (independent errors)."""
    e = jnp.where(mask, obs - pred, 0.0)
    terms = 0.5 * ((e / sigma) ** 2 + 2.0 * jnp.log(sigma) + _LOG2PI)
    return jnp.sum(jnp.where(mask, terms, 0.0))


class ObservationModel(eqx.Module):
    """Base class of observation models (see the module docstring).

    Class attributes:
        name: registry name. kind: the timeline kind it explains. output: the organ
        output it reads (unqualified; the composition must have exactly one). unit:
        unit of the readings. params: error parameters. typical_error: the size of a
        usual reading error, in ``unit`` (scales held-out errors of different kinds
        to one score). reference_range: a band drawn on plots of this quantity.
        forecast_outputs: more noise-free outputs ``forecast`` writes beside the
        predicted reading (``{variable: output}``). filter_tuning: values of error
        parameters tried when the state filter is tuned (``{param: values}``).
        default_organs: the organs a calibration composes when it is given none and the
        record holds this kind. reading_limits: the range the instrument reports (readings
        drawn from the model, e.g. by a what-if, are clipped to it), or None.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    output: ClassVar[str]
    unit: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    description: ClassVar[str] = ""
    typical_error: ClassVar[float] = 1.0
    reference_range: ClassVar[tuple[float, float] | None] = None
    forecast_outputs: ClassVar[Mapping[str, str]] = {}
    filter_tuning: ClassVar[Mapping[str, tuple[float, ...]]] = {}
    default_organs: ClassVar[tuple[str, ...]] = ()
    reading_limits: ClassVar[tuple[float, float] | None] = None

    @classmethod
    def create(cls, **options) -> "ObservationModel":
        """An instance with those of ``options`` this model accepts (e.g. a noise form)."""
        accepted = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in accepted})

    def option_values(self) -> dict:
        """The instance's options (saved with a twin)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def output_name(self, model) -> str:
        """The qualified output of ``model`` this observation model reads; raises
        `ObservationError` when the composition has none or several, or another unit."""
        from .units import parse_unit

        found = [n for n in model.output_names if n.split(".", 1)[1] == self.output]
        if len(found) != 1:
            have = ", ".join(model.organ_names)
            raise ObservationError(
                f"{self.kind!r} readings are explained by output {self.output!r}: the composition ({have}) has "
                + ("none; add the organ that provides it" if not found else f"several ({', '.join(found)})"))
        decl = model.declaration(found[0])
        if parse_unit(decl.unit) != parse_unit(self.unit):
            raise ObservationError(f"observation model {self.name!r} wants {self.output!r} in {self.unit}, "
                                   f"{found[0]} is in {decl.unit}")
        return found[0]

    @abc.abstractmethod
    def nll(self, pred: Float[Array, " n"], obs: Float[Array, " n"], mask: Array, prev: Array, gap: Array,
            p: Mapping[str, Array]) -> Array:
        """Negative log-likelihood of the readings ``obs`` given the model values ``pred``.

        ``mask`` marks the readings present; ``prev[i]`` is the index of the previous
        present reading of the series (``i`` itself for the first) and ``gap[i]`` the
        minutes since it (``inf`` for the first)."""

    @abc.abstractmethod
    def filter_noise(self, p: Mapping[str, Array]) -> FilterNoise:
        """The error structure the state filter uses (see `FilterNoise`)."""

    def forecast_correction(self, error: Array, horizon: Array, p: Mapping[str, Array]) -> Array:
        """Expected reading error ``horizon`` minutes ahead, given the filtered error state
        now: it decays with the error's correlation (0 for white errors)."""
        return error * self.filter_noise(p).rho ** horizon
