"""Observation models: how a model output becomes a recorded reading, and its likelihood.

An observation model explains one timeline kind (``cgm``) by one model output (the
organ output whose name is `ObservationModel.output`, e.g. any organ's
``subcutaneous_glucose``) plus noise. Its noise parameters (``sigma``, ...) are
declared like organ parameters and are fitted with the twin.

Plugins register subclasses through the ``register_observation_models`` hook; the
built-in ``cgm`` model lives in `physiotwin.plugins.observations`.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Mapping

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..composer import Model
from ..contract import Param

__all__ = ["ObservationModel", "ObservationError", "get_observation_model"]


class ObservationError(ValueError):
    """An observation model that cannot be used with a composition; names both."""


class ObservationModel(eqx.Module):
    """Base class of observation models.

    Class attributes:
        name: registry name (``"cgm"``).
        kind: the timeline kind it explains (``"cgm"``).
        output: the organ output it reads, without the organ prefix
            (``"subcutaneous_glucose"``); the composition must have exactly one.
        unit: unit of the readings (the output must be in this unit).
        params: noise parameters (`Param`; fitted in their transformed space).

    Readings arrive in time order, possibly with gaps; each carries the time since
    the previous reading of the same series (``gap``, minutes; ``inf`` for the first).
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    output: ClassVar[str]
    unit: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()

    def output_name(self, model: Model) -> str:
        """The qualified model output this observation model reads."""
        found = [n for n in model.output_names if n.split(".", 1)[1] == self.output]
        if len(found) != 1:
            have = ", ".join(model.organ_names)
            raise ObservationError(
                f"observation model {self.name!r} reads output {self.output!r}: the composition ({have}) has "
                + ("none" if not found else f"several ({', '.join(found)})"))
        decl = model.declaration(found[0])
        from ..units import parse_unit

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

    def forecast_correction(self, residual: Array, horizon: Array, p: Mapping[str, Array]) -> Array:
        """Expected future reading error, given the last one (``residual`` = reading - model):
        0 for white noise; an autocorrelated sensor error decays towards 0."""
        return jnp.zeros_like(residual * horizon)


def get_observation_model(name: str, **options) -> ObservationModel:
    from ..registry import observation_models

    models = observation_models()
    if name not in models:
        raise ObservationError(f"unknown observation model {name!r}; installed: {', '.join(models) or 'none'}")
    return models[name](**options)
