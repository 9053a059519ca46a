"""Small declarations plugins register besides organs, kinds and observation models.

- `PatientTable` (``register_patient_tables``): a bundled table of virtual patients.
- `ForecastMetric`, `SeriesMetric` (``register_metrics``): scores of forecasts of an
  observation kind, and summaries of a series of its readings; ``physiotwin
  evaluate`` adds them to its generic scores.
- `Demo` (``register_demos``): what ``physiotwin demo`` runs.
- `ValidationStudy` with its `Check` rows (``register_validation_studies``): a
  comparison of a composition with the literature, run by ``python -m
  physiotwin.validation``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["PatientTable", "ForecastMetric", "SeriesMetric", "Demo", "ValidationStudy", "Check"]


@dataclass(frozen=True)
class PatientTable:
    """A bundled patient table: a CSV resource with a ``patient`` column and one column per
    parameter (bare names, or ``organ.param``), comment lines (``#``) for provenance."""

    name: str
    package: str
    resource: str
    description: str = ""


@dataclass(frozen=True)
class ForecastMetric:
    """Scores of forecasts of the observation kinds ``kinds``.

    ``score(predicted, observed, horizon)`` gets, for every scored origin, the predicted
    readings and the readings actually recorded at minutes 1..horizon after it
    (``[origins, horizon]`` arrays in the kind's unit; NaN where nothing was read) and
    returns ``{column: value}``; ``columns`` names them (the columns of the table)."""

    name: str
    kinds: tuple[str, ...]
    columns: tuple[str, ...]
    score: Callable[[np.ndarray, np.ndarray, int], Mapping[str, float]]
    description: str = ""


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
