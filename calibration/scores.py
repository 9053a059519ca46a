"""Generic forecast scores: RMSE and MAE over the pairs where neither value is missing."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["pairs", "rmse", "mae"]


def pairs(pred, ref) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (pred, ref) with every pair where either is NaN dropped."""
    p, r = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got {p.shape} and {r.shape}")
    p, r = p.ravel(), r.ravel()
    ok = ~(np.isnan(p) | np.isnan(r))
    return p[ok], r[ok]


def rmse(pred, ref) -> float:
    """Root-mean-square error over the pairs where neither value is NaN (NaN if none)."""
    p, r = pairs(pred, ref)
    return float(np.sqrt(np.mean((p - r) ** 2))) if p.size else math.nan


def mae(pred, ref) -> float:
    """Mean absolute error over the pairs where neither value is NaN (NaN if none)."""
    p, r = pairs(pred, ref)
    return float(np.mean(np.abs(p - r))) if p.size else math.nan
