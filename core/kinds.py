"""What a timeline may hold: event kinds, and the signals they compile to.

A plugin brings a domain's events through the ``register_timeline_kinds`` hook:

- a `TimelineKind` fixes the canonical unit of its values, the accepted range, whether
  a ``duration`` applies, and whether its rows are inputs (doses, intakes, levels),
  observations (readings an observation model explains) or ground truth (present in
  simulated records only, for scoring);
- the `Signal` objects an input kind lists are what organs read: piecewise-constant
  functions of time (``timeline.<signal>`` in an `Input.source`), with their unit,
  their breakpoints and their value on each piece. Several kinds may feed one signal
  (list the same `Signal` object in each).

`physiotwin.signals` holds the generic machinery (`compile_signals`) and helpers that
build the common shapes: amounts spread over a duration, rates, levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .units import UnitError, parse_unit

__all__ = ["Signal", "TimelineKind", "DURATION_RULES"]

DURATION_RULES = ("optional", "forbidden", "required")


@dataclass(frozen=True)
class Signal:
    """A timeline signal: its unit, the breakpoints it needs, and its value on each
    segment ``[left, right)`` of a grid that contains those breakpoints.

    Arguments:
        name: identifier, read by organs as ``timeline.<name>``.
        unit: unit of the values.
        description: one line.
        breakpoints: ``timeline -> times`` (min) where the value may change.
        values: ``(timeline, left, right) -> values`` on each segment.
        level: the signal is a level that holds from one row to the next; NaN before
            the first row means "not set", and a reading input then takes its default.
    """

    name: str
    unit: str
    description: str
    breakpoints: Callable[["Timeline"], np.ndarray]
    values: Callable[["Timeline", np.ndarray, np.ndarray], np.ndarray]
    level: bool = False


@dataclass(frozen=True)
class TimelineKind:
    """What one kind of event means and which values it accepts.

    * `unit`: the canonical unit every value is converted to.
    * `minimum`, `maximum`: allowed range, in the canonical unit (a value outside is
      an error naming the row: implausible readings are refused, not fitted).
    * `duration`: ``"optional"``, ``"forbidden"`` or ``"required"`` (whether the
      `duration` column may, may not, or must be filled for this kind).
    * `unit_context`: a substance defined by a plugin (``register_units``) for
      mass <-> moles conversions (e.g. mmol/L -> mg/dL).
    * `observation`: `True` for measured things, `False` for inputs.
    * `truth_of`: the kind this one is the noise-free truth of (simulated records
      only: never an input, never fitted, used to score).
    * `level`: a value that holds from its row to the next (a rate setting, an
      intake level); a record cut in two repeats the level in force at the cut.
    * `signals`: what an input kind compiles to (see `Signal`).
    * `units`: other units people write for this kind (e.g. ``("mmol/L",)``); listed,
      with `unit`, in the error for a unit that is unknown or of the wrong dimension (any
      unit pint converts is accepted).
    """

    name: str
    unit: str
    description: str
    minimum: float = 0.0
    maximum: float = math.inf
    duration: str = "optional"
    unit_context: str | None = None
    observation: bool = False
    truth_of: str | None = None
    level: bool = False
    signals: tuple[Signal, ...] = ()
    units: tuple[str, ...] = ()

    @property
    def accepted_units(self) -> str:
        """The units to name in messages: the canonical one and the declared others."""
        return ", ".join(dict.fromkeys((self.unit,) + tuple(self.units)))

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"timeline kind needs a non-empty name, got {self.name!r}")
        if self.duration not in DURATION_RULES:
            raise ValueError(
                f"timeline kind {self.name!r}: duration must be 'optional', 'forbidden' or 'required', "
                f"got {self.duration!r}"
            )
        if not self.minimum <= self.maximum:
            raise ValueError(
                f"timeline kind {self.name!r}: minimum {self.minimum} exceeds maximum {self.maximum}"
            )
        if self.truth_of is not None and not self.observation:
            raise ValueError(f"timeline kind {self.name!r}: a ground-truth kind is an observation")
        if self.signals and self.observation:
            raise ValueError(f"timeline kind {self.name!r}: an observation compiles to no signal")
        if not all(isinstance(s, Signal) for s in self.signals):
            raise ValueError(f"timeline kind {self.name!r}: signals must be physiotwin.Signal objects")

    def check(self) -> "TimelineKind":
        """Check the units (after every plugin has defined its own); raises ValueError."""
        for what, unit in ([("unit", self.unit)] + [(f"signal {s.name!r}", s.unit) for s in self.signals]
                           + [(f"accepted unit {u!r}", u) for u in self.units]):
            try:
                parse_unit(unit)
            except UnitError:
                raise ValueError(f"timeline kind {self.name!r}, {what}: unknown unit {unit!r}") from None
        return self

    @property
    def fitted(self) -> bool:
        """An observation a calibration may fit (not ground truth)."""
        return self.observation and self.truth_of is None
