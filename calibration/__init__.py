"""Calibration, hybrid twins, state filtering, forecasting and evaluation, for any composition.

- `calibrate(record, organs, ...) -> Twin`: fit a patient twin (mechanistic parameters with
  population priors, input corrections, initial state, observation errors, and residual
  networks for a hybrid) to a timeline record holding any observation kinds the
  installed observation models explain; see `physiotwin.calibration.fit`.
- `Twin`: save/load (bit-identical), `Twin.forecast` (state filter + batched simulation).
- `evaluate(twin, record)`: scores beside persistence, linear AR, population and
  mechanistic baselines, per observation kind.
- `Hybrid`: a composition plus neural residual terms in the organs' residual slots.

The submodules load on first use (the optimisation stack is not imported with
``physiotwin``).
"""

from __future__ import annotations

import importlib

__all__ = ["calibrate", "Twin", "TwinError", "FitSettings", "evaluate", "Evaluation", "Hybrid",
           "ObservationModel", "ObservationError", "CalibrationError"]

_WHERE = {
    "calibrate": "twin", "Twin": "twin", "FitSettings": "settings", "evaluate": "evaluate",
    "Evaluation": "evaluate", "Hybrid": "hybrid",
}
_ERRORS = {"TwinError", "ObservationError", "CalibrationError"}


def __getattr__(name):
    if name in _ERRORS:
        from .. import errors

        return getattr(errors, name)
    if name == "ObservationModel":
        from ..observation import ObservationModel

        return ObservationModel
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'physiotwin.calibration' has no attribute {name!r}")
