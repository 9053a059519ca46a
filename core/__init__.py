"""physiotwin: patient digital twins from composable, differentiable organ models.

The public surface, in one place:

- organ contract: `Organ`, `State`, `Param`, `Input`, `Output`, `FluxPort`
- composing: `compose` -> `Model`; `list_organs()` lists the installed organ plugins
- data in: `read_timeline`, `Timeline`, `TimelineKind`, `bundled_patients()`
- solving: `simulate` (xarray out), `Simulator` (JAX arrays out, differentiable)
- twins: `calibrate(record, organs) -> Twin`, `Twin.load`, `Twin.forecast`, `evaluate`
  (from `physiotwin.calibration`, imported on first use)
- errors: `WiringError`, `TimelineError`, `PatientError`, `SimulationError`

physiotwin computes in float64. Enable it before creating JAX arrays:
``jax.config.update("jax_enable_x64", True)`` (the CLI does it for you).
"""

from __future__ import annotations

from .composer import Model, WiringError, compose
from .contract import FluxPort, Input, Organ, Output, Param, Residual, State
from .patients import PatientError
from .patients import bundled_patients as _bundled_patients
from .simulate import SimulationError, Simulator, simulate
from .timeline import Timeline, TimelineError, TimelineKind, read_timeline

__version__ = "0.1.0"

__all__ = [
    "Organ", "State", "Param", "Input", "Output", "FluxPort", "Residual",
    "Model", "compose", "list_organs", "bundled_patients",
    "Timeline", "TimelineKind", "read_timeline",
    "Simulator", "simulate",
    "WiringError", "TimelineError", "PatientError", "SimulationError",
    "calibrate", "Twin", "evaluate",
    "__version__",
]

_LAZY = {"calibrate", "Twin", "evaluate"}


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
