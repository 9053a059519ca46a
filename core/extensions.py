"""Small declarations plugins register besides organs, kinds and observation models.

- `PatientTable` (``register_patient_tables``): a bundled table of virtual patients.
- `ForecastMetric`, `SeriesMetric` (``register_metrics``): scores of forecasts of an
  observation kind, and summaries of a series of its readings; ``physiotwin
  evaluate`` adds them to its generic scores.
- `Demo` (``register_demos``): what ``physiotwin demo`` runs.
- `ValidationStudy` with its `Check` rows (``register_validation_studies``): a
  comparison of a composition with the literature, run by ``python -m
  physiotwin.validation``.
- `Controller` (``register_controllers``): a closed-loop controller run inside a
  simulation (`physiotwin.control`), with the `Plant` a model-predictive one predicts with.
- `Control` (``register_controls``): a treatment setting ``physiotwin optimize`` may
  change; `Goal` (``register_goals``): a smooth score of a series of readings it may
  optimise or limit.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Finding", "RecordCheck", "PatientTable", "ForecastMetric", "SeriesMetric", "Demo", "ValidationStudy", "Check", "Control", "Goal",
           "Controller", "Plant"]


@dataclass(frozen=True)
class PatientTable:
    """A bundled patient table: a CSV resource with a ``patient`` column and one column per
    parameter (bare names, or ``organ.param``), comment lines (``#``) for provenance."""

    name: str
    package: str
    resource: str
    description: str = ""
    #: the composition the table's patients are made for (``physiotwin population`` draws
    #: for it by default)
    organs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ForecastMetric:
    """Scores of forecasts of the observation kinds ``kinds``.

    ``score(predicted, observed, horizon)`` gets, for every scored origin, the predicted
    readings and the readings actually recorded at minutes 1..horizon after it
    (``[origins, horizon]`` arrays in the kind's unit; NaN where nothing was read) and
    returns ``{column: value}``; ``columns`` names them (the columns of the table).
    With ``spread=True`` it also gets ``train = (predicted, observed)``: the same model's
    forecasts and the readings on the last days of the twin's training record (known at
    calibration), from which a probabilistic score takes its error spread and
    thresholds."""

    name: str
    kinds: tuple[str, ...]
    columns: tuple[str, ...]
    score: Callable[..., Mapping[str, float]]
    description: str = ""
    spread: bool = False


@dataclass(frozen=True)
class SeriesMetric:
    """A summary of a series of readings of the kinds ``kinds``: ``summarise(values,
    expected)`` gets the readings present (kind's unit) and how many were expected, and
    returns ``{name: value}``; ``describe(summary)`` makes one line for people; ``headline``
    names the entries short summaries show (e.g. ``physiotwin simulate``'s table)."""

    name: str
    kinds: tuple[str, ...]
    summarise: Callable[[np.ndarray, int], Mapping[str, float]]
    describe: Callable[[Mapping[str, float]], str] | None = None
    description: str = ""
    headline: tuple[str, ...] = ()


@dataclass(frozen=True)
class Demo:
    """What ``physiotwin demo`` simulates: organs, bundled patients and a bundled timeline."""

    name: str
    organs: tuple[str, ...]
    patients: tuple[str, ...]
    package: str
    timeline: str
    minutes: float
    description: str
    every: float = 5.0


@dataclass(frozen=True)
class Check:
    """One row of a validation table: a model value beside the literature's range."""

    situation: str
    quantity: str
    value: float
    low: float
    high: float
    unit: str
    source: str

    @property
    def passed(self) -> bool:
        return bool(self.low <= self.value <= self.high)

    def row(self) -> str:
        if math.isfinite(self.low) and math.isfinite(self.high):
            rng = f"{self.low:g} - {self.high:g}"
        elif math.isfinite(self.low):
            rng = f">= {self.low:g}"
        else:
            rng = f"<= {self.high:g}"
        return (f"| {self.situation} | {self.quantity} | {self.value:.4g} {self.unit} | {rng} {self.unit} | "
                f"{'yes' if self.passed else '**no**'} | {self.source} |")


@dataclass(frozen=True)
class ValidationStudy:
    """A validation study: ``run(figures)`` simulates its situations, draws one figure per
    situation into the folder ``figures`` when given, and returns its `Check` rows. A
    situation whose simulation is flagged by the solver raises instead of reporting."""

    name: str
    description: str
    run: Callable[[Path | None], Sequence[Check]]


@dataclass(frozen=True)
class Control:
    """A treatment setting that ``physiotwin optimize`` may change, as multipliers.

    ``layout(tl, minutes, day0)`` returns ``(component, index, n)`` for a timeline: the
    part of the signal ``signal`` (without ``timeline.``) each minute that the control
    acts on (``component[minutes]``, in the signal's unit), which of the control's ``n``
    multipliers acts in each minute (``index[minutes]``, -1 for none), and ``n``. A
    multiplier ``m`` turns the component into ``m * component``. ``bounds``: the range of
    every multiplier (a safety limit). ``apply(table, multipliers, start)`` writes the
    change into a timeline table (columns ``time,kind,value,unit,duration``; times ISO
    or minutes from ``start``), so that the plan can be given to a patient, or to a
    simulator; ``describe(multipliers, tl)`` says it for people and for the plan file
    (``{key: value}``)."""

    name: str
    signal: str
    layout: Callable[[object, int, float], tuple[np.ndarray, np.ndarray, int]]
    apply: Callable[[object, np.ndarray, object], object]
    describe: Callable[[np.ndarray, object], Mapping[str, object]]
    bounds: tuple[float, float] = (0.5, 2.0)
    description: str = ""

    def check(self) -> None:
        lo, hi = self.bounds
        if not (0 < lo < 1 < hi and math.isfinite(hi)):
            raise ValueError(f"control {self.name!r}: bounds must satisfy 0 < low < 1 < high, got {self.bounds}")


@dataclass(frozen=True)
class Goal:
    """A score of a series of readings of ``kind`` that a plan may optimise or limit.

    ``value(readings, width)``: the score of a JAX array of readings (the kind's unit,
    every 5 min), smooth with transitions ``width`` wide (in the kind's unit) so that it
    has gradients; ``width`` near 0 gives the exact score. ``sense``: ``"max"`` or
    ``"min"``, what ``--objective NAME`` does with it. ``unit``: of the score."""

    name: str
    kind: str
    value: Callable[[object, float], object]
    sense: str = "max"
    unit: str = ""
    width: float = 1.0
    description: str = ""

    def check(self) -> None:
        if self.sense not in ("max", "min"):
            raise ValueError(f"goal {self.name!r}: sense must be 'max' or 'min', not {self.sense!r}")


class Plant(eqx.Module):
    """The controlled model seen from a decision: ``predict(actions)`` runs it from the
    current state over the next ``len(actions)`` minutes (with the inputs the timeline
    holds for them, plus ``actions`` on the controller's signal) and returns the sensor."""

    field: object  # a physiotwin.integrate.AbstractField
    stepping: object = eqx.field(static=True)  # a physiotwin.integrate.FixedSteps
    y: jax.Array
    t: jax.Array
    future: jax.Array  # [H, signal]
    signal: int = eqx.field(static=True)
    reading: int = eqx.field(static=True)

    def predict(self, actions):
        def minute(y, x):
            k, a = x
            u = self.future[k].at[self.signal].add(a)
            y = self.stepping.step(self.field, self.t + k, y, u)
            return y, self.field.outputs(self.t + k + 1.0, y, u)[self.reading]

        _, out = jax.lax.scan(minute, self.y, (jnp.arange(actions.shape[0]), actions))
        return out


class Controller(eqx.Module):
    """Base class of closed-loop controllers (see the module docstring).

    Class attributes: ``name``; ``kind``: the observation kind it reads; ``signal``: the
    signal its action adds to (without ``timeline.``); ``replaces``: timeline kinds it
    takes over; ``period``: minutes between decisions; ``horizon``: minutes a `Plant`
    predicts (0: no plant); ``description``."""

    name: ClassVar[str]
    kind: ClassVar[str]
    signal: ClassVar[str]
    replaces: ClassVar[tuple[str, ...]] = ()
    period: ClassVar[int] = 5
    horizon: ClassVar[int] = 0
    future_unknown: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    def timeline(self, tl):
        """The timeline the controlled run uses: ``tl`` without the kinds it replaces."""
        keep = ~np.isin(tl.kind, self.replaces)
        return type(tl)(tl.time[keep], tl.kind[keep], tl.value[keep], tl.duration[keep], tl.row[keep],
                        source=tl.source, start=tl.start, kinds=tl.kinds, row_label=tl.row_label)

    def prepare(self, tl, minutes: int, day0: float) -> np.ndarray:
        """What the controller may know of the timeline at each minute: ``[minutes, F]``."""
        return np.zeros((minutes, 0))

    def configure(self, model, theta: np.ndarray, tl) -> dict[str, float]:
        """Its settings for one patient (numbers, e.g. from the patient's parameters or
        the therapy logged in ``tl``)."""
        return {}

    def init(self, settings):
        """The controller's state before its first decision (a pytree of arrays)."""
        return jnp.zeros(())

    @abc.abstractmethod
    def act(self, state, t, reading, feed, settings, plant: Plant | None):
        """One decision: ``(new state, action)`` from the sensor ``reading`` at minute ``t``
        and the prepared ``feed`` of that minute."""


# ------------------------------------------------------------- plausibility (physiotwin.plausibility)
SEVERITIES = ("error", "drop", "warning")


@dataclass(frozen=True)
class Finding:
    """What a check found. ``events`` are indices into the timeline's arrays: the rows
    an ``error`` names (the first one is the row of the message) or the rows a ``drop``
    removes. ``message`` is one line without the file name (added here)."""

    severity: str
    message: str
    events: Sequence[int] = ()
    field: str = "value"

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


@dataclass(frozen=True)
class RecordCheck:
    """A plausibility rule: ``rule(timeline) -> [Finding, ...]``. ``description`` states
    the rule for people (``physiotwin extensions`` lists it)."""

    name: str
    description: str
    rule: Callable[[Any], Sequence[Finding]]
    kinds: tuple[str, ...] = ()

    def check(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"record check name {self.name!r} must be a Python identifier")
