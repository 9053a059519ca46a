"""physiotwin: patient digital twins from composable, differentiable organ models.

The public surface, in one place:

- organ contract: `Organ`, `State`, `Param`, `Input`, `Output`, `FluxPort`, `Residual`
- other plugin contracts: `TimelineKind`, `Signal`, `ObservationModel`, `InputCorrection`,
  `ForecastMetric`, `SeriesMetric`, `PatientTable`, `Demo`, `ValidationStudy`, `Check`
  (hook specifications in `physiotwin.plugins`)
- composing: `compose` -> `Model`; `list_organs()` lists the installed organ plugins
- data in: `read_timeline`, `Timeline`, `bundled_patients()`
- solving: `simulate` (xarray out), `Simulator` (JAX arrays out, differentiable)
- twins: `calibrate(record, organs) -> Twin`, `Twin.load`, `Twin.forecast`, `evaluate`
  (from `physiotwin.calibration`, imported on first use)
- errors: `PhysiotwinError` and its subclasses `WiringError`, `TimelineError`,
  `PatientError`, `SimulationError`, `ObservationError`, `CalibrationError`, `TwinError`, ...

physiotwin computes in float64. Enable it before creating JAX arrays:
``jax.config.update("jax_enable_x64", True)`` (the CLI does it for you).
"""

from __future__ import annotations

from .composer import Model, compose
from .contract import FluxPort, Input, Organ, Output, Param, Residual, State
from .correction import InputCorrection
from .errors import (CalibrationError, ObservationError, PatientError, PhysiotwinError, PluginError,
                     SimulationError, TimelineError, TwinError, UnitError, WiringError)
from .extensions import Check, Control, Demo, ForecastMetric, Goal, PatientTable, SeriesMetric, ValidationStudy
from .kinds import Signal, TimelineKind
from .observation import FilterNoise, ObservationModel
from .patients import bundled_patients as _bundled_patients
from .simulate import Simulator, simulate
from .timeline import Timeline, read_timeline

__version__ = "0.2.0"

__all__ = [
    "Organ", "State", "Param", "Input", "Output", "FluxPort", "Residual",
    "TimelineKind", "Signal", "ObservationModel", "FilterNoise", "InputCorrection", "ForecastMetric",
    "SeriesMetric", "PatientTable", "Demo", "ValidationStudy", "Check", "Control", "Goal",
    "Model", "compose", "list_organs", "bundled_patients",
    "Timeline", "read_timeline",
    "Simulator", "simulate",
    "PhysiotwinError", "WiringError", "TimelineError", "PatientError", "SimulationError", "PluginError",
    "UnitError", "ObservationError", "CalibrationError", "TwinError",
    "calibrate", "Twin", "evaluate",
    "__version__",
]

_LAZY = {"calibrate", "Twin", "evaluate"}


def __dir__():
    return sorted(set(globals()) | _LAZY)


def __getattr__(name):
    # the calibration stack (optax, optimistix) loads on first use, not with `import physiotwin`
    if name in _LAZY:
        from . import calibration

        return getattr(calibration, name)
    raise AttributeError(f"module 'physiotwin' has no attribute {name!r}")


def list_organs() -> dict[str, type[Organ]]:
    """The organ classes provided by installed plugins, by name."""
    from .registry import organ_classes

    return dict(organ_classes())


def bundled_patients():
    """The bundled virtual patients as a pandas DataFrame (index: name; column
    ``source`` names the table each comes from)."""
    return _bundled_patients().copy()
