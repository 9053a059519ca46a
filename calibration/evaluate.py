"""Honest evaluation of a twin's forecasts, always beside baselines computed in the same run.

On a record the twin was *not* fitted on, every model forecasts from the same origins
(every 5 minutes after a warm-up that lets the state filter settle), using only what
was known at each origin, and is scored against the readings at ``origin + horizon``:

- ``persistence``: the last reading stays;
- ``linear_ar``: a linear autoregression on the last 30 min of readings (6 lags, 5-min
  grid), one least-squares model per horizon ("direct" forecasting), fitted on the
  twin's training record;
- ``population``: the mechanistic model with population parameters (no fitting), with
  the same state filter;
- ``mechanistic``: the calibrated mechanism without residual networks;
- ``twin``: the calibrated twin (the hybrid when it has networks).

Scores per model and horizon: RMSE and MAE (mg/dL), RMSE relative to persistence,
Clarke zone A (%), and hypoglycaemia prediction (a reading < 70 mg/dL within the
horizon) sensitivity and specificity. When the record carries the noise-free sensor
glucose (``cgm_true``, simulated records) the RMSE against it is reported too. The
record's consensus CGM metrics (`cgm_metrics`) come with the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..timeline import Timeline
from .data import readings_on_grid
from .metrics import cgm_metrics, clarke_zone_a, hypo_detection, mae, rmse
from .space import CalibrationError

__all__ = ["Evaluation", "evaluate", "fit_ar", "AR_LAGS"]

AR_LAGS = 6  # 30 min of history at 5-min spacing
STEP = 5  # min, spacing of the AR model and of hypoglycaemia checks along a path
HYPO = 70.0


@dataclass
class Evaluation:
    table: pd.DataFrame  # one row per (model, horizon)
    record_metrics: dict
    origins: int
    record: str

    def markdown(self) -> str:
        cols = [c for c in self.table.columns if c not in ("n",)]
        t = self.table[cols].copy()
        head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
        rows = "".join("| " + " | ".join(_fmt(v) for v in r) + " |\n" for r in t.itertuples(index=False))
        return head + rows


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _locf(obs: np.ndarray, max_age: int = 10) -> np.ndarray:
    """Last reading at or before each minute end, if at most ``max_age`` min old."""
    idx = np.where(np.isfinite(obs), np.arange(len(obs)), -1)
    last = np.maximum.accumulate(idx)
    out = np.where(last >= 0, obs[np.maximum(last, 0)], np.nan)
    age = np.arange(len(obs)) - last
    return np.where(age <= max_age, out, np.nan)


def _lag_features(obs: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """Readings at o, o-5, ..., o-25 (minute ends o-1, ...), carried forward at most 10 min."""
    filled = _locf(obs)
    cols = []
    for j in range(AR_LAGS):
        k = origins - 1 - STEP * j
        cols.append(np.where(k >= 0, filled[np.clip(k, 0, len(obs) - 1)], np.nan))
    return np.stack(cols, axis=1)


def fit_ar(train: Timeline, kind: str, max_horizon: int) -> np.ndarray:
    """Direct linear AR coefficients ``[H, 1 + AR_LAGS]`` (intercept first), one model per
    5 minutes of horizon (NaN rows between), by least squares on the training readings."""
    minutes = int(np.ceil(float(np.max(train.time)) + 1e-9))
    obs = readings_on_grid(train, kind, minutes)
    origins = np.arange(STEP * AR_LAGS, minutes - 1, STEP)
    X = _lag_features(obs, origins)
    coefs = np.full((max_horizon, 1 + AR_LAGS), np.nan)
    for h in range(STEP, max_horizon + 1, STEP):  # (minutes between are interpolated along the path)
        t = origins + h - 1
        ok = t < minutes
        y = np.full(len(origins), np.nan)
        y[ok] = obs[t[ok]]
        m = np.isfinite(y) & np.all(np.isfinite(X), axis=1)
        if m.sum() < 4 * (AR_LAGS + 1):
            raise CalibrationError(f"{train.source}: too few complete {kind!r} windows to fit the AR baseline")
        A = np.column_stack([np.ones(m.sum()), X[m]])
        coefs[h - 1] = np.linalg.lstsq(A, y[m], rcond=None)[0]
    return coefs


def _ar_paths(coefs: np.ndarray, obs: np.ndarray, origins: np.ndarray) -> np.ndarray:
    X = _lag_features(obs, origins)
    filled = _locf(obs, max_age=10 ** 9)
    # a missing lag takes the most recent available reading (documented fallback)
    latest = filled[np.clip(origins - 1, 0, len(obs) - 1)]
    X = np.where(np.isfinite(X), X, latest[:, None])
    at = coefs[:, 0][None, :] + X @ coefs[:, 1:].T  # [O, H], NaN between the 5-min steps
    H = coefs.shape[0]
    fitted = np.flatnonzero(np.isfinite(coefs[:, 0])) + 1
    grid = np.concatenate([[0], fitted])
    path = np.empty_like(at)
    for i in range(len(origins)):
        path[i] = np.interp(np.arange(1, H + 1), grid, np.concatenate([[latest[i]], at[i, fitted - 1]]))
    return path


def evaluate(twin, record: Timeline, horizons: Sequence[int] = (30, 60), every: int = 5, warmup: int = 120,
             train: Timeline | None = None) -> Evaluation:
    """Score the twin and the baselines on ``record``; see the module docstring."""
    kind = twin.obs_model.kind
    horizons = sorted(int(h) for h in horizons)
    if not horizons or horizons[0] < 1 or int(every) < 1 or warmup < 0:
        raise CalibrationError("horizons and --every must be whole minutes >= 1, and --warmup >= 0")
    H = max(horizons)
    minutes = int(np.ceil(float(np.max(record.time)) + 1e-9)) if len(record) else 0
    obs_all = readings_on_grid(record, kind, minutes + H)
    if not np.isfinite(obs_all).any():
        raise CalibrationError(f"{record.source}: no {kind!r} readings to evaluate against")
    truth = readings_on_grid(record, "cgm_true", minutes + H) if kind == "cgm" else np.full(minutes + H, np.nan)
    has_truth = bool(np.isfinite(truth).any())
    train = twin.training_timeline() if train is None else train
    if train is None:
        raise CalibrationError("the twin has no training record saved; pass train= to fit the AR baseline")
    coefs = fit_ar(train, kind, H)

    paths: dict[str, np.ndarray] = {}
    origins = None
    variants = ["population", "mechanistic"] + (["twin"] if twin.hybrid is not None else [])
    for v in variants:
        res = twin.forecast_arrays(record, H, every, v)
        origins = res["origin"]
        paths[v] = res["reading"]
    assert origins is not None
    obs = obs_all[:minutes]
    last = _locf(obs, max_age=10 ** 9)[np.clip(origins - 1, 0, minutes - 1)]
    paths = {"persistence": np.repeat(last[:, None], H, axis=1), "linear_ar": _ar_paths(coefs, obs, origins),
             **paths}
    keep = origins >= warmup
    rows = []
    for h in horizons:
        target = obs_all[origins + h - 1]
        target_true = truth[origins + h - 1]
        # actual hypoglycaemia: a reading < 70 within (o, o + h]
        window = np.stack([obs_all[origins + k - 1] for k in range(1, h + 1)], axis=1)
        actual_min = np.where(np.isfinite(window).any(axis=1), np.nanmin(np.where(np.isfinite(window), window,
                                                                                   np.inf), axis=1), np.nan)
        common = keep & np.isfinite(target) & np.all([np.isfinite(p[:, h - 1]) for p in paths.values()], axis=0)
        ref = None
        for name, p in paths.items():
            pred = p[:, h - 1]
            steps = p[:, STEP - 1:h:STEP] if h >= STEP else p[:, :h]
            pred_min = np.min(steps, axis=1)
            row = {"model": name, "horizon": h, "n": int(common.sum()),
                   "rmse": rmse(pred[common], target[common]), "mae": mae(pred[common], target[common])}
            if ref is None:
                ref = row["rmse"]
            row["rmse_vs_persistence"] = row["rmse"] / ref if ref else np.nan
            row["zone_a"] = clarke_zone_a(pred[common], target[common])
            hd = hypo_detection(pred_min[common], actual_min[common], HYPO)
            row["hypo_sensitivity"] = hd["sensitivity"]
            row["hypo_specificity"] = hd["specificity"]
            if has_truth:
                mt = common & np.isfinite(target_true)
                row["rmse_true"] = rmse(pred[mt], target_true[mt])
            rows.append(row)
        if has_truth:
            ref_true = rows[-len(paths)]["rmse_true"]
            for r in rows[-len(paths):]:
                r["rmse_true_vs_persistence"] = r["rmse_true"] / ref_true if ref_true else np.nan
    table = pd.DataFrame(rows)
    metrics = cgm_metrics(obs_all[:minutes][np.isfinite(obs_all[:minutes])], expected=max(1, minutes // every))
    return Evaluation(table, metrics, int(keep.sum()), record.source)
