"""Honest evaluation of a twin's forecasts, always beside baselines computed in the same run.

On a record the twin was *not* fitted on, every model forecasts from the same origins
(every ``every`` minutes after a warm-up that lets the state filter settle), using only
what was known at each origin, and is scored, kind by kind, against the readings at
``origin + horizon``:

- ``persistence``: the last reading of the kind stays;
- ``linear_ar``: a linear autoregression on the last 6 readings of the kind at its
  usual spacing (5 min for a CGM), one least-squares model per horizon ("direct"
  forecasting), fitted on the twin's training record (left out for a kind read too
  sparsely to fit one);
- ``population``: the mechanistic model with population parameters (no fitting), with
  the same state filter;
- ``mechanistic``: the calibrated mechanism without residual networks;
- ``twin``: the calibrated twin (the hybrid when it has networks).

For kinds with a probabilistic metric, ``coverage90`` is the share of readings inside
each model's 90 % band (Gaussian, with the SD of its forecast errors at that horizon on
the last `SPREAD_DAYS` of the training record).

Generic scores per kind, model and horizon: ``n`` (origins with a reading at origin +
horizon), RMSE and MAE (in the kind's unit), RMSE relative to persistence; when the
record carries the kind's ground truth (a ``truth_of`` kind of a simulated record),
the RMSE against it too, at every scored origin where the truth is known (``n_true``).
Model forecasts that are not finite (a solver failure) are left out of the scores and
counted in `Evaluation.failures`. Plugins add their own metrics per kind (``register_metrics``:
e.g. Clarke zone A for glucose), and summaries of the record's readings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import CalibrationError
from ..timeline import Timeline
from .data import check_kinds, readings_on_grid, record_minutes
from .forecast import Z90, error_sd, readings_ahead, spread_origins, spread_part
from .scores import mae, rmse

__all__ = ["Evaluation", "evaluate", "fit_ar", "AR_LAGS"]

AR_LAGS = 6  # readings of history


@dataclass
class Evaluation:
    table: pd.DataFrame  # one row per (kind, model, horizon)
    record_metrics: dict  # {kind: {summary: value}}
    origins: int
    record: str
    descriptions: dict = field(default_factory=dict)  # {kind: one line for people}
    notes: list = field(default_factory=list)
    failures: dict = field(default_factory=dict)  # {variant: scored origins whose forecast is not finite}

    def markdown(self) -> str:
        cols = list(self.table.columns)
        t = self.table
        head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
        rows = "".join("| " + " | ".join(_fmt(v) for v in r) + " |\n" for r in t.itertuples(index=False))
        return head + rows


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _locf(obs: np.ndarray, max_age: int) -> np.ndarray:
    """Last reading at or before each minute end, if at most ``max_age`` min old."""
    idx = np.where(np.isfinite(obs), np.arange(len(obs)), -1)
    last = np.maximum.accumulate(idx)
    out = np.where(last >= 0, obs[np.maximum(last, 0)], np.nan)
    return np.where(np.arange(len(obs)) - last <= max_age, out, np.nan)


def spacing(tl: Timeline, kind: str) -> int:
    """The usual spacing of a kind's readings (median gap, whole minutes)."""
    t = np.sort(tl.select(kind).time)
    gaps = np.diff(t)
    gaps = gaps[gaps > 0]
    return max(1, int(round(float(np.median(gaps))))) if len(gaps) else 1


def _lag_features(obs: np.ndarray, origins: np.ndarray, step: int) -> np.ndarray:
    """Readings at o, o-step, ... (minute ends o-1, ...), carried forward at most 2 steps."""
    filled = _locf(obs, 2 * step)
    cols = []
    for j in range(AR_LAGS):
        k = origins - 1 - step * j
        cols.append(np.where(k >= 0, filled[np.clip(k, 0, len(obs) - 1)], np.nan))
    return np.stack(cols, axis=1)


def fit_ar(train: Timeline, kind: str, max_horizon: int, step: int | None = None) -> tuple[np.ndarray, int]:
    """Direct linear AR coefficients ``[H, 1 + AR_LAGS]`` (intercept first), one model per
    ``step`` minutes of horizon (NaN rows between), by least squares on the training
    readings, and the spacing ``step``. Raises `CalibrationError` when too few complete
    windows exist."""
    step = spacing(train, kind) if step is None else step
    minutes = record_minutes(train)
    obs = readings_on_grid(train, kind, minutes)
    origins = np.arange(step * AR_LAGS, minutes - 1, step)
    X = _lag_features(obs, origins, step)
    coefs = np.full((max_horizon, 1 + AR_LAGS), np.nan)
    for h in range(step, max_horizon + 1, step):  # (minutes between are interpolated along the path)
        t = origins + h - 1
        ok = t < minutes
        y = np.full(len(origins), np.nan)
        y[ok] = obs[t[ok]]
        m = np.isfinite(y) & np.all(np.isfinite(X), axis=1)
        if m.sum() < 4 * (AR_LAGS + 1):
            raise CalibrationError(f"{train.source}: too few complete {kind!r} windows to fit the AR baseline")
        A = np.column_stack([np.ones(m.sum()), X[m]])
        coefs[h - 1] = np.linalg.lstsq(A, y[m], rcond=None)[0]
    return coefs, step


def _ar_paths(coefs: np.ndarray, step: int, obs: np.ndarray, origins: np.ndarray) -> np.ndarray:
    X = _lag_features(obs, origins, step)
    latest = _locf(obs, 10 ** 9)[np.clip(origins - 1, 0, len(obs) - 1)]
    # a missing lag takes the most recent available reading (documented fallback)
    X = np.where(np.isfinite(X), X, latest[:, None])
    at = coefs[:, 0][None, :] + X @ coefs[:, 1:].T  # [O, H], NaN between the steps
    H = coefs.shape[0]
    fitted = np.flatnonzero(np.isfinite(coefs[:, 0])) + 1
    grid = np.concatenate([[0], fitted])
    if len(fitted) == 0:
        return np.full((len(origins), H), np.nan)
    path = np.empty_like(at)
    for i in range(len(origins)):
        path[i] = np.interp(np.arange(1, H + 1), grid, np.concatenate([[latest[i]], at[i, fitted - 1]]))
    return path


def _truth_kind(kind: str) -> str | None:
    from ..registry import timeline_kinds

    return next((name for name, k in timeline_kinds().items() if k.truth_of == kind), None)


def _model_paths(twin, record: Timeline, H: int, every: int, ignore) -> tuple[np.ndarray, dict]:
    """Forecast paths ``{variant: [O, H, kind]}`` of the twin's variants."""
    variants = ["population", "mechanistic"] + (["twin"] if twin.hybrid is not None else [])
    paths, origins = {}, None
    for v in variants:
        res = twin.forecast_arrays(record, H, every, v, ignore=ignore)
        origins = res["origin"]
        paths[v] = res["reading"]
    return origins, paths


def _kind_rows(kind: str, paths: dict, obs_all, truth, origins, keep, horizons, metrics, spreads) -> list[dict]:
    """The table rows of one kind: every model at every horizon, on the origins all share."""
    rows = []
    for h in horizons:
        target = obs_all[origins + h - 1]
        observed = np.stack([obs_all[origins + k - 1] for k in range(1, h + 1)], axis=1)
        finite_all = np.all([np.isfinite(p[:, h - 1]) for p in paths.values()], axis=0)
        common = keep & np.isfinite(target) & finite_all
        ref = ref_true = None
        for name, p in paths.items():
            pred = p[:, h - 1]
            row = {"kind": kind, "model": name, "horizon": h, "n": int(common.sum()),
                   "rmse": rmse(pred[common], target[common]), "mae": mae(pred[common], target[common])}
            ref = row["rmse"] if ref is None else ref
            row["rmse_vs_persistence"] = row["rmse"] / ref if ref else np.nan
            if name in spreads:  # the 90 % band from the training record's forecast errors
                sd = error_sd(*(a[:, h - 1:h] for a in spreads[name]))[0]
                row["coverage90"] = float(np.mean(np.abs(pred[common] - target[common]) <= Z90 * sd)) \
                    if common.any() else np.nan
            for m in metrics:
                if m.spread:
                    if name in spreads:
                        tp, to = spreads[name]
                        row.update(m.score(p[common, :h], observed[common], h, (tp[:, :h], to[:, :h])))
                else:
                    row.update(m.score(p[common, :h], observed[common], h))
            if truth is not None:  # against the truth wherever it is known, reading or not
                mt = keep & np.isfinite(truth[origins + h - 1]) & finite_all
                row["n_true"] = int(mt.sum())
                row["rmse_true"] = rmse(pred[mt], truth[origins + h - 1][mt])
                ref_true = row["rmse_true"] if ref_true is None else ref_true
                row["rmse_true_vs_persistence"] = row["rmse_true"] / ref_true if ref_true else np.nan
            rows.append(row)
    return rows


def _spreads(twin, train: Timeline, k: int, kind: str, H: int, every: int, models, ar_fit, ignore, cache: dict
             ) -> dict[str, tuple]:
    """``{model: (predicted[O, H], observed[O, H])}``: each model's forecasts 1..H minutes
    ahead over the last `SPREAD_DAYS` of the twin's training record (known at
    calibration), and the readings they forecast. ``ar_fit``: the kind's AR fit (or
    None); ``cache`` keeps the twin's forecasts there across kinds."""
    part = spread_part(train)
    minutes = record_minutes(part)
    obs_all = readings_on_grid(part, kind, minutes + H)
    obs = obs_all[:minutes]
    origins = np.arange(every, minutes + 1, every)
    keep = spread_origins(origins, minutes)
    paths = {"persistence": np.repeat(_locf(obs, 10 ** 9)[np.clip(origins - 1, 0, minutes - 1)][:, None], H, 1)}
    if "linear_ar" in models:
        paths["linear_ar"] = _ar_paths(*ar_fit, obs, origins)
    for v in models:
        if v not in paths:
            if v not in cache:
                cache[v] = twin.forecast_arrays(part, H, every, v, ignore=ignore)["reading"]
            paths[v] = cache[v][..., k]
    target = readings_ahead(obs_all, origins, H)
    return {name: (p[:len(origins)][keep], target[keep]) for name, p in paths.items()}


def evaluate(twin, record: Timeline, horizons: Sequence[int] = (30, 60), every: int = 5, warmup: int = 120,
             train: Timeline | None = None, ignore: Sequence[str] = ()) -> Evaluation:
    """Score the twin and the baselines on ``record``, kind by kind; see the module docstring.

    Raises `CalibrationError` when there is nothing to score (no reading of any kind the
    twin observes at any scored origin + horizon)."""
    from ..registry import forecast_metrics, series_metrics

    horizons = sorted(int(h) for h in horizons)
    if not horizons or horizons[0] < 1 or int(every) < 1 or warmup < 0:
        raise CalibrationError("horizons and --every must be whole minutes >= 1, and --warmup >= 0")
    check_kinds(record, twin.kinds, record.source, ignore)
    train = twin.training_timeline() if train is None else train
    if train is None:
        raise CalibrationError("the twin has no training record saved; pass train= to fit the AR baseline")
    H, minutes = max(horizons), record_minutes(record)
    origins, model_paths = _model_paths(twin, record, H, every, ignore)
    keep = origins >= warmup
    ev = Evaluation(pd.DataFrame(), {}, int(keep.sum()), record.source)
    rows, cache = [], {}
    for k, kind in enumerate(twin.kinds):
        obs_all = readings_on_grid(record, kind, minutes + H)
        obs = obs_all[:minutes]
        truth_kind = _truth_kind(kind)
        truth = readings_on_grid(record, truth_kind, minutes + H) if truth_kind else None
        truth = truth if truth is not None and np.isfinite(truth).any() else None
        last = _locf(obs, 10 ** 9)[np.clip(origins - 1, 0, minutes - 1)]
        paths = {"persistence": np.repeat(last[:, None], H, axis=1)}
        ar_fit = None
        try:
            ar_fit = fit_ar(train, kind, H)
            ar = _ar_paths(*ar_fit, obs, origins)
            if np.isfinite(ar[keep]).any():
                paths["linear_ar"] = ar
            else:
                ev.notes.append(f"{kind}: no linear_ar baseline (no scored origin has {AR_LAGS} recent readings)")
        except CalibrationError as err:
            ev.notes.append(f"{kind}: no linear_ar baseline ({err})")
        paths.update({v: p[..., k] for v, p in model_paths.items()})
        metrics = forecast_metrics(kind)
        spreads = _spreads(twin, train, k, kind, H, every, list(paths), ar_fit, ignore, cache) \
            if any(m.spread for m in metrics) else {}
        rows += _kind_rows(kind, paths, obs_all, truth, origins, keep, horizons, metrics, spreads)
        present = obs[np.isfinite(obs)]
        for m in series_metrics(kind):
            summary = dict(m.summarise(present, max(1, minutes // spacing(record, kind))))
            ev.record_metrics[kind] = summary
            if m.describe is not None:
                ev.descriptions[kind] = m.describe(summary)
    ev.table = pd.DataFrame(rows)
    for v, p in model_paths.items():
        bad = int((~np.isfinite(p[keep, :, :])).any(axis=(1, 2)).sum())
        if bad:
            ev.failures[v] = bad
    if ev.table.empty or int(ev.table["n"].max()) == 0:
        raise CalibrationError(f"{record.source}: nothing to score: no reading of {', '.join(twin.kinds)} at any "
                               f"origin + horizon after the {warmup}-min warm-up")
    return ev
