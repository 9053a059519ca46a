"""Calibration options, stored with every twin."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CalibrationError

__all__ = ["FitSettings"]


@dataclass(frozen=True)
class FitSettings:
    """Calibration options (all stored with the twin).

    window: multiple-shooting window (min; default: the longest `Organ.shooting_window` of
    the composition). validation: fraction of the record held
    out at its end (at least 360 min). starts: multistart runs. steps / hybrid_steps:
    iteration budgets (``steps`` default: 200, and 400 with day-long windows, whose slow
    coupled states take BFGS longer). lr / net_lr: Adam learning rates;
    hybrid_lr: Adam's rate for the mechanistic unknowns in the network stage (they start at
    the mechanistic optimum, and a large first step would leave it). patience: validation checks
    without an improvement of at least ``min_improvement`` (relative) before stopping;
    check_every: iterations between checks. continuity: allowed jump at window edges,
    as a fraction of each state's typical size. init_sd: prior SD of the initial-state
    offsets (same units). width/depth: residual MLPs. l2: weight decay of the nets.
    residual_weight: penalty on the mean squared residual term (in units of the slot
    scale). slots: the residual slots a hybrid uses (qualified ``organ.slot``; empty: all
    the composition declares). seed: all random draws. optimizer: ``"bfgs"`` (optimistix) or ``"adam"``
    (optax) for the mechanistic stage. progress: progress bars.
    """

    window: int | None = None
    validation: float = 1.0 / 7.0
    starts: int = 2
    steps: int | None = None
    hybrid_steps: int = 300
    lr: float = 0.05
    net_lr: float = 0.01
    hybrid_lr: float = 0.005
    patience: int = 4
    check_every: int = 20
    min_improvement: float = 0.003
    continuity: float = 0.02
    init_sd: float = 1.0
    width: int = 16
    depth: int = 2
    l2: float = 1e-4
    residual_weight: float = 1e-2
    slots: tuple[str, ...] = ()
    seed: int = 0
    optimizer: str = "bfgs"
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "slots", tuple(self.slots))
        if self.optimizer not in ("adam", "bfgs"):
            raise CalibrationError(f"optimizer must be 'adam' (optax) or 'bfgs' (optimistix), not {self.optimizer!r}")
        if self.window is not None and self.window < 30:
            raise CalibrationError("window must be at least 30 minutes")
        if not 0.0 < self.validation < 0.5:
            raise CalibrationError("validation must be a fraction between 0 and 0.5 of the record")
        if self.starts < 1:
            raise CalibrationError("starts must be >= 1")
        for name in ("steps", "hybrid_steps", "check_every", "patience", "width", "depth"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise CalibrationError(f"{name} must be >= 1")
