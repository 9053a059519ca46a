"""Glucose evaluation metrics: CGM summary statistics, forecast errors, Clarke error grid
and hypoglycaemia detection. Pure NumPy; glucose in mg/dL throughout; NaNs mark missing
values and are ignored (pairwise, for the two-argument metrics).

Registered (``register_metrics``) for the observation kinds ``cgm`` and ``bg``:

- forecast metrics: ``zone_a`` (Clarke zone A, %), and ``hypo_sensitivity`` /
  ``hypo_specificity`` (a reading below 70 mg/dL within the horizon, predicted when the
  forecast path falls below 70 mg/dL at a 5-minute step);
- the consensus summary of a series of readings (`cgm_metrics`).

Sources
-------
* Battelino T, Danne T, Bergenstal RM, et al. Clinical targets for continuous glucose
  monitoring data interpretation: recommendations from the International Consensus on
  Time in Range. Diabetes Care 2019;42(8):1593-1603. (TIR 70-180, TBR < 70 / < 54,
  TAR > 180 / > 250, CV, GMI, data sufficiency.)
* Danne T, Nimri R, Battelino T, et al. International consensus on use of continuous
  glucose monitoring. Diabetes Care 2017;40(12):1631-1640. (CV = 100 SD / mean.)
* Bergenstal RM, Beck RW, Close KL, et al. Glucose Management Indicator (GMI): a new term
  for estimating A1C from continuous glucose monitoring. Diabetes Care
  2018;41(11):2275-2280. (GMI % = 3.31 + 0.02392 x mean glucose in mg/dL.)
* Kovatchev BP, Cox DJ, Gonder-Frederick LA, Clarke WL. Symmetrization of the blood
  glucose measurement scale and its applications. Diabetes Care 1997;20(11):1655-1658;
  Kovatchev BP, Cox DJ, Gonder-Frederick LA, et al. Assessment of risk for severe
  hypoglycemia among adults with IDDM: validation of the low blood glucose index.
  Diabetes Care 1998;21(11):1870-1875. (LBGI, HBGI.)
* Clarke WL, Cox D, Gonder-Frederick LA, Carter W, Pohl SL. Evaluating clinical accuracy
  of systems for self-monitoring of blood glucose. Diabetes Care 1987;10(5):622-628.
  (Error grid zones A-E.)
"""

from __future__ import annotations

import math

import numpy as np

from physiotwin.calibration.scores import mae, pairs, rmse
from physiotwin.extensions import ForecastMetric, SeriesMetric
from physiotwin.plugins import hookimpl

HYPO = 70.0  # mg/dL
STEP = 5  # min: a forecast path is checked for hypoglycaemia every 5 minutes (the CGM cadence)
KINDS = ("cgm", "bg")

__all__ = [
    "cgm_metrics",
    "clarke_zone_a",
    "clarke_zones",
    "hypo_detection",
    "mae",
    "risk_indices",
    "rmse",
]


def _values(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).ravel()


def _percent(mask: np.ndarray) -> float:
    return 100.0 * float(np.mean(mask)) if mask.size else math.nan


def risk_indices(glucose) -> tuple[float, float]:
    """(LBGI, HBGI) of glucose readings in mg/dL (NaNs ignored; > 0 required).

    Kovatchev et al. 1997/1998: the symmetrizing transform
    ``f(G) = 1.509 ((ln G)^1.084 - 5.381)`` (zero at G ~ 112.5 mg/dL), risk
    ``r = 10 f^2`` split into ``rl = r`` where ``f < 0`` (else 0) and ``rh = r`` where
    ``f > 0``; LBGI = mean ``rl``, HBGI = mean ``rh`` over all readings. NaN when empty.
    """
    g = _values(glucose)
    g = g[~np.isnan(g)]
    if g.size == 0:
        return math.nan, math.nan
    if np.any(g <= 0):
        raise ValueError("glucose must be > 0 mg/dL for the risk indices")
    f = 1.509 * (np.log(g) ** 1.084 - 5.381)
    rl = 10.0 * np.minimum(f, 0.0) ** 2
    rh = 10.0 * np.maximum(f, 0.0) ** 2
    return float(np.mean(rl)), float(np.mean(rh))


def cgm_metrics(glucose, expected: int | None = None) -> dict[str, float]:
    """Consensus CGM summary of glucose readings in mg/dL; NaNs are missing readings.

    Keys (Battelino et al. 2019 unless noted; percentages of the readings present):

    * ``n``: readings present (not NaN); ``percent_present``: ``100 n / expected``, with
      `expected` defaulting to the length of `glucose` (so NaN entries count as missing).
      The consensus asks for >= 70 % of 14 days.
    * ``mean`` (mg/dL); ``sd``: sample SD (ddof 1; NaN for fewer than 2 readings);
      ``cv`` = 100 sd / mean (%, Danne et al. 2017; target <= 36 %).
    * ``gmi`` = 3.31 + 0.02392 mean (%, Bergenstal et al. 2018).
    * ``tir``: 70 <= G <= 180; ``tbr70``: G < 70 (includes < 54); ``tbr54``: G < 54;
      ``tar180``: G > 180 (includes > 250); ``tar250``: G > 250 (all %). ``tir + tbr70 +
      tar180 = 100``.
    * ``lbgi``, ``hbgi``: Kovatchev's low / high blood glucose indices (see `risk_indices`).

    All but ``n`` and ``percent_present`` are NaN when no reading is present.
    """
    g = _values(glucose)
    slots = g.size if expected is None else int(expected)
    g = g[~np.isnan(g)]
    n = int(g.size)
    mean = float(np.mean(g)) if n else math.nan
    sd = float(np.std(g, ddof=1)) if n >= 2 else math.nan
    lbgi, hbgi = risk_indices(g)
    return {
        "n": n,
        "percent_present": 100.0 * n / slots if slots > 0 else math.nan,
        "mean": mean,
        "sd": sd,
        "cv": 100.0 * sd / mean if n >= 2 else math.nan,
        "gmi": 3.31 + 0.02392 * mean,
        "tir": _percent((g >= 70) & (g <= 180)),
        "tbr70": _percent(g < 70),
        "tbr54": _percent(g < 54),
        "tar180": _percent(g > 180),
        "tar250": _percent(g > 250),
        "lbgi": lbgi,
        "hbgi": hbgi,
    }


def _zone_labels(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Clarke zone (0..4 for A..E) of each (pred, ref) pair, NaN-free arrays.

    Clarke et al. 1987, with the reference on the x axis and the estimate on the y axis:

    * A: within 20 % of the reference (``|p - r| <= 0.2 r``), or both in the hypoglycaemic
      range (``p < 70`` and ``r < 70``).
    * E (erroneous treatment): ``r >= 180`` and ``p <= 70``, or ``r <= 70`` and ``p >= 180``.
    * C (overcorrection): upper, ``70 <= r <= 290`` and ``p >= r + 110`` (above the line
      from (70, 180) to (290, 400)); lower, ``130 <= r <= 180`` and ``p <= 7/5 r - 182``
      (below the line from (130, 0) to (180, 70)).
    * D (failure to detect): right, ``r >= 240`` and ``70 <= p <= 180``; left, ``r <= 70``
      and ``p`` between 70 (or ``1.2 r`` where that is higher) and 180.
    * B: everything else (benign errors).

    Zones are tested in the order A, E, C, D, B, as in the common implementation of the grid
    (so boundary points go to the first zone that claims them).
    """
    zone = np.full(p.shape, 1, dtype=np.int8)  # B
    a = (np.abs(p - r) <= 0.2 * r) | ((p < 70) & (r < 70))
    e = ((r >= 180) & (p <= 70)) | ((r <= 70) & (p >= 180))
    c = ((r >= 70) & (r <= 290) & (p >= r + 110)) | ((r >= 130) & (r <= 180) & (p <= 7.0 / 5.0 * r - 182))
    d = ((r >= 240) & (p >= 70) & (p <= 180)) | (
        (r <= 70) & (p >= 70) & (p >= 1.2 * r) & (p <= 180)
    )
    for label, mask in ((3, d), (2, c), (4, e), (0, a)):  # reversed priority: A wins, then E, C, D
        zone[mask] = label
    return zone


def clarke_zones(pred, ref) -> dict[str, float]:
    """Percent of (pred, ref) pairs in each Clarke error grid zone ``A``..``E`` (sums to 100).

    Pairs with a NaN are dropped; all zones are NaN when none is left. See `_zone_labels`
    for the zone definitions (Clarke et al., Diabetes Care 1987;10:622).
    """
    p, r = pairs(pred, ref)
    if p.size == 0:
        return dict.fromkeys("ABCDE", math.nan)
    counts = np.bincount(_zone_labels(p, r), minlength=5)
    return {z: 100.0 * float(c) / p.size for z, c in zip("ABCDE", counts)}


def clarke_zone_a(pred, ref) -> float:
    """Percent of (pred, ref) pairs in Clarke zone A: ``|pred - ref| <= 0.2 ref``, or both
    below 70 mg/dL (Clarke et al. 1987). NaN pairs dropped; NaN when none is left."""
    p, r = pairs(pred, ref)
    if p.size == 0:
        return math.nan
    return _percent((np.abs(p - r) <= 0.2 * r) | ((p < 70) & (r < 70)))


def hypo_detection(pred_min, ref_min, threshold: float = 70.0) -> dict[str, float]:
    """How well forecasts flag hypoglycaemia, one entry per forecast origin.

    `pred_min` is the minimum predicted glucose over the forecast horizon, `ref_min` the
    minimum observed over the same horizon (mg/dL). A predicted event is ``pred_min <
    threshold``, an actual event ``ref_min < threshold``. Origins where either is NaN are
    dropped. Returns ``sensitivity`` = TP / events (NaN when there are no events),
    ``specificity`` = TN / non-events (NaN when there are none), ``events``,
    ``non_events``, ``true_positives`` and ``false_positives``.
    """
    p, r = pairs(pred_min, ref_min)
    predicted, actual = p < threshold, r < threshold
    events, non_events = int(actual.sum()), int((~actual).sum())
    tp, fp = int((predicted & actual).sum()), int((predicted & ~actual).sum())
    tn = non_events - fp
    return {
        "sensitivity": tp / events if events else math.nan,
        "specificity": tn / non_events if non_events else math.nan,
        "events": events,
        "non_events": non_events,
        "true_positives": tp,
        "false_positives": fp,
    }


# ---------------------------------------------------------------- registration
def _zone_a(pred, observed, horizon):
    return {"zone_a": clarke_zone_a(pred[:, horizon - 1], observed[:, horizon - 1])}


def _hypo(pred, observed, horizon):
    """A reading < 70 mg/dL within (o, o + h], against the forecast path's minimum at 5-min steps."""
    steps = pred[:, STEP - 1:horizon:STEP] if horizon >= STEP else pred[:, :horizon]
    pred_min = np.min(steps, axis=1)
    seen = np.isfinite(observed).any(axis=1)
    actual_min = np.where(seen, np.nanmin(np.where(np.isfinite(observed), observed, np.inf), axis=1), np.nan)
    hd = hypo_detection(pred_min, actual_min, HYPO)
    return {"hypo_sensitivity": hd["sensitivity"], "hypo_specificity": hd["specificity"]}


def _describe(m) -> str:
    return (f"mean {m['mean']:.0f} mg/dL, CV {m['cv']:.0f} %, GMI {m['gmi']:.1f} %, TIR {m['tir']:.0f} %, "
            f"TBR<70 {m['tbr70']:.1f} %, TBR<54 {m['tbr54']:.1f} %, TAR>180 {m['tar180']:.0f} %, "
            f"TAR>250 {m['tar250']:.0f} %, LBGI {m['lbgi']:.1f}, HBGI {m['hbgi']:.1f}")


ALERT_SPECIFICITY = 0.9  # the alert threshold keeps this specificity on the training record


def hypo_probability(pred, sd, threshold: float = HYPO) -> np.ndarray:
    """Probability that a reading falls below ``threshold`` within the horizon, per origin:
    the largest over the 5-min steps of ``P(reading_h < threshold)`` with Gaussian forecast
    errors of SD ``sd[h]`` (a lower bound on the probability of any crossing)."""
    from scipy.stats import norm

    idx = np.arange(STEP - 1, pred.shape[1], STEP) if pred.shape[1] >= STEP else np.arange(pred.shape[1])
    z = (threshold - pred[:, idx]) / np.asarray(sd)[idx][None, :]
    return np.max(norm.cdf(z), axis=1)


def roc_auc(score, event) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN without both classes."""
    from scipy.stats import rankdata

    score, event = np.asarray(score, float), np.asarray(event, bool)
    n1, n0 = int(event.sum()), int((~event).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[event].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def sensitivity_at_specificity(score, event, specificity: float = 0.9) -> float:
    """The sensitivity of the alert ``score > cut``, with ``cut`` the ``specificity``
    quantile of the scores of non-events (so that specificity >= ``specificity``)."""
    score, event = np.asarray(score, float), np.asarray(event, bool)
    if not event.any() or event.all():
        return math.nan
    cut = np.quantile(score[~event], specificity, method="higher")
    return float(np.mean(score[event] > cut))


def _lowest(observed) -> np.ndarray:
    seen = np.isfinite(observed).any(axis=1)
    return np.where(seen, np.nanmin(np.where(np.isfinite(observed), observed, np.inf), axis=1), np.nan)


def _hypo_alert(pred, observed, horizon, train):
    """Probabilistic alerts of a reading < 70 mg/dL within the horizon. The forecast error
    SD per minute ahead and the alert threshold (the probability that keeps
    `ALERT_SPECIFICITY` on the training record) come from the model's forecasts on the
    training record; on the scored record: the alert's sensitivity and specificity, the
    ROC AUC of the probability, and the sensitivity at 90 % specificity there."""
    from physiotwin.calibration.forecast import error_sd

    t_pred, t_obs = train
    sd = error_sd(t_pred, t_obs)
    sd = np.maximum(np.where(np.isfinite(sd), sd, 10.0), 1e-3)
    t_low, low = _lowest(t_obs), _lowest(observed)
    t_p, p = hypo_probability(t_pred, sd), hypo_probability(pred, sd)
    t_ok, ok = np.isfinite(t_low) & np.isfinite(t_p), np.isfinite(low) & np.isfinite(p)
    t_event = t_low[t_ok] < HYPO
    cut = float(np.quantile(t_p[t_ok][~t_event], ALERT_SPECIFICITY, method="higher")) if (~t_event).any() else 0.5
    event = low[ok] < HYPO
    hd = hypo_detection(np.where(p[ok] > cut, 0.0, 1e9), low[ok], HYPO)
    return {"hypo_auc": roc_auc(p[ok], event), "hypo_sens_at_spec90": sensitivity_at_specificity(p[ok], event),
            "alert_threshold": cut, "alert_sensitivity": hd["sensitivity"], "alert_specificity": hd["specificity"]}


@hookimpl
def register_metrics(register):
    register(ForecastMetric("clarke_zone_a", KINDS, ("zone_a",), _zone_a,
                            "Clarke error grid zone A, % of forecasts (Clarke 1987)"))
    register(ForecastMetric("hypoglycaemia", KINDS, ("hypo_sensitivity", "hypo_specificity"), _hypo,
                            "prediction of a reading below 70 mg/dL within the horizon"))
    register(ForecastMetric("hypo_alert", KINDS, ("hypo_auc", "hypo_sens_at_spec90", "alert_threshold",
                                                  "alert_sensitivity", "alert_specificity"), _hypo_alert,
                            "probabilistic alert of a reading below 70 mg/dL within the horizon (forecast error SD "
                            "and alert threshold from the training record)", spread=True))
    register(SeriesMetric("consensus", KINDS, lambda g, expected: cgm_metrics(g, expected=expected), _describe,
                          "consensus CGM metrics (Battelino 2019), LBGI/HBGI (Kovatchev)", headline=("tir",)))
