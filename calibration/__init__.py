"""Calibration, hybrid twins, forecasting and evaluation.

- `calibrate(record, organs, ...) -> Twin`: fit a patient twin (mechanistic parameters with
  population priors, meal-size corrections, initial state, sensor noise, and residual
  networks for a hybrid) to a timeline record; see `physiotwin.calibration.fit`.
- `Twin`: save/load (bit-identical), `Twin.forecast` (filter + batched simulation).
- `evaluate(twin, record)`: scores beside persistence, linear AR, population and
  mechanistic baselines.
- `ObservationModel`: the plugin base class of observation models (``cgm`` built in).
- `Hybrid`: a composition plus neural residual terms in the organs' residual slots.
"""

from .evaluate import Evaluation, evaluate
from .fit import FitSettings
from .hybrid import Hybrid
from .observation import ObservationError, ObservationModel
from .space import CalibrationError
from .twin import Twin, TwinError, calibrate

__all__ = ["calibrate", "Twin", "TwinError", "FitSettings", "evaluate", "Evaluation", "Hybrid",
           "ObservationModel", "ObservationError", "CalibrationError"]
