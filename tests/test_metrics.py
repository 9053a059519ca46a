"""Glucose evaluation metrics (physiotwin.plugins.glucose_metrics): hand-computed examples
and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from physiotwin.plugins.glucose_metrics import (
    cgm_metrics,
    clarke_zone_a,
    clarke_zones,
    hypo_detection,
    mae,
    risk_indices,
    rmse,
)

# --------------------------------------------------------------------------- examples


def test_cgm_metrics_hand_computed():
    m = cgm_metrics([60, 100, 200, 300])
    assert m["n"] == 4 and m["percent_present"] == 100
    assert m["mean"] == 165
    sd = math.sqrt(((60 - 165) ** 2 + (100 - 165) ** 2 + (200 - 165) ** 2 + (300 - 165) ** 2) / 3)
    assert m["sd"] == pytest.approx(sd) and m["cv"] == pytest.approx(100 * sd / 165)
    assert m["tir"] == 25 and m["tbr70"] == 25 and m["tbr54"] == 0
    assert m["tar180"] == 50 and m["tar250"] == 25


def test_range_boundaries():
    m = cgm_metrics([53.9, 54, 69.9, 70, 180, 180.1, 250, 250.1])
    assert m["tbr54"] == pytest.approx(100 / 8) and m["tbr70"] == pytest.approx(300 / 8)
    assert m["tir"] == pytest.approx(200 / 8)  # 70 and 180 are in range
    assert m["tar180"] == pytest.approx(300 / 8) and m["tar250"] == pytest.approx(100 / 8)


def test_gmi():
    assert cgm_metrics([154.0])["gmi"] == pytest.approx(6.99, abs=0.005)
    assert cgm_metrics([100.0, 208.0])["gmi"] == pytest.approx(3.31 + 0.02392 * 154)


def test_missing_readings():
    m = cgm_metrics([100, np.nan, 150, np.nan])
    assert m["n"] == 2 and m["percent_present"] == 50 and m["mean"] == 125
    assert cgm_metrics([100, 150], expected=8)["percent_present"] == 25
    empty = cgm_metrics([np.nan, np.nan])
    assert empty["n"] == 0 and empty["percent_present"] == 0
    assert all(math.isnan(empty[k]) for k in ("mean", "sd", "cv", "gmi", "tir", "lbgi", "hbgi"))
    assert math.isnan(cgm_metrics([120.0])["sd"])


def test_risk_indices():
    # the symmetrizing transform maps 20 and 600 mg/dL to about -/+ sqrt(10), i.e. risk ~100,
    # and 112.5 mg/dL to about 0 (Kovatchev et al. 1997)
    assert risk_indices([20.0])[0] == pytest.approx(100, rel=0.01) and risk_indices([20.0])[1] == 0
    assert risk_indices([600.0])[1] == pytest.approx(100, rel=0.01) and risk_indices([600.0])[0] == 0
    assert risk_indices([112.5])[0] < 1e-5 and risk_indices([112.5])[1] == 0
    f50 = 1.509 * (math.log(50) ** 1.084 - 5.381)
    lbgi, hbgi = risk_indices([50.0, 112.5, np.nan])
    assert lbgi == pytest.approx((10 * f50**2 + 10 * 1.509**2 * (math.log(112.5) ** 1.084 - 5.381) ** 2) / 2)
    assert hbgi == 0
    m = cgm_metrics([50.0, 300.0])
    f300 = 1.509 * (math.log(300) ** 1.084 - 5.381)
    assert m["lbgi"] == pytest.approx(10 * f50**2 / 2) and m["hbgi"] == pytest.approx(10 * f300**2 / 2)


def test_rmse_mae():
    pred, ref = [110, 90, np.nan, 100], [100, 100, 100, np.nan]
    assert rmse(pred, ref) == pytest.approx(10) and mae(pred, ref) == pytest.approx(10)
    assert rmse([1, 4], [0, 0]) == pytest.approx(math.sqrt(8.5)) and mae([1, 4], [0, 0]) == 2.5
    assert math.isnan(rmse([np.nan], [1.0])) and math.isnan(mae([], []))
    with pytest.raises(ValueError, match="same shape"):
        rmse([1, 2], [1, 2, 3])


# (pred, ref, zone): two points per zone, one per region where a zone has two
CLARKE_POINTS = [
    (110, 100, "A"), (60, 50, "A"),          # within 20 %; both below 70
    (150, 100, "B"), (190, 250, "B"),        # 50 % over; 24 % under, not yet D
    (220, 100, "C"), (20, 150, "C"),         # upper C (p >= r + 110); lower C (p <= 7/5 r - 182 = 28)
    (150, 300, "D"), (100, 50, "D"),         # right D; left D
    (50, 200, "E"), (200, 50, "E"),
]


@pytest.mark.parametrize("pred, ref, zone", CLARKE_POINTS)
def test_clarke_zone_of_points(pred, ref, zone):
    zones = clarke_zones([pred], [ref])
    assert zones[zone] == 100 and sum(zones.values()) == 100
    assert clarke_zone_a([pred], [ref]) == (100 if zone == "A" else 0)


def test_clarke_zones_fractions():
    pred, ref, _ = zip(*CLARKE_POINTS)
    assert clarke_zones(pred, ref) == {z: 20.0 for z in "ABCDE"}
    assert clarke_zone_a(pred, ref) == 20
    assert clarke_zone_a([120, 80.1, 79.9, np.nan], [100, 100, 100, 100]) == pytest.approx(200 / 3)
    assert all(math.isnan(v) for v in clarke_zones([np.nan], [1.0]).values())
    assert math.isnan(clarke_zone_a([], []))


def test_clarke_zone_boundaries():
    # C lines: p = r + 110 from (70, 180) to (290, 400); p = 7/5 r - 182 from (130, 0) to (180, 70)
    assert clarke_zones([290.0], [180.0])["C"] == 100 and clarke_zones([289.0], [180.0])["B"] == 100
    assert clarke_zones([28.0], [150.0])["C"] == 100 and clarke_zones([29.0], [150.0])["B"] == 100
    assert clarke_zones([410.0], [300.0])["B"] == 100  # upper C ends at r = 290
    # right D spans 70..180 from r = 240 on; below 240 the same errors are B
    assert clarke_zones([180.0], [240.0])["D"] == 100 and clarke_zones([180.0], [239.0])["B"] == 100
    assert clarke_zones([181.0], [240.0])["B"] == 100
    # left D from 70 (or 1.2 r) to 180 for r <= 70; above 180 it is E
    assert clarke_zones([80.0], [60.0])["D"] == 100 and clarke_zones([70.0], [60.0])["A"] == 100
    assert clarke_zones([179.0], [40.0])["D"] == 100 and clarke_zones([180.0], [40.0])["E"] == 100


def test_hypo_detection():
    pred = [60, 80, 65, 90, np.nan, 50]
    ref = [55, 60, 100, 120, 40, np.nan]
    out = hypo_detection(pred, ref)
    assert out["events"] == 2 and out["non_events"] == 2
    assert out["true_positives"] == 1 and out["false_positives"] == 1
    assert out["sensitivity"] == 0.5 and out["specificity"] == 0.5
    none = hypo_detection([100, 60], [100, 120])
    assert math.isnan(none["sensitivity"]) and none["specificity"] == 0.5 and none["events"] == 0
    strict = hypo_detection([70, 69.9], [69.9, 70])  # "below threshold" is strict
    assert strict["true_positives"] == 0 and strict["false_positives"] == 1
    assert hypo_detection([80], [75], threshold=80)["false_positives"] == 0


# --------------------------------------------------------------------------- properties

glucose = st.floats(min_value=20, max_value=600, allow_nan=False)
maybe_missing = st.one_of(glucose, st.just(math.nan))


@settings(max_examples=200, deadline=None)
@given(st.lists(glucose, min_size=1, max_size=60))
def test_ranges_partition_readings(values):
    m = cgm_metrics(values)
    assert m["tir"] + m["tbr70"] + m["tar180"] == pytest.approx(100)
    assert m["tbr54"] <= m["tbr70"] and m["tar250"] <= m["tar180"]
    assert min(values) - 1e-9 <= m["mean"] <= max(values) + 1e-9
    assert m["lbgi"] >= 0 and m["hbgi"] >= 0


@settings(max_examples=100, deadline=None)
@given(st.lists(maybe_missing, min_size=1, max_size=60), st.randoms(use_true_random=False))
def test_cgm_metrics_permutation_invariant_and_ignore_nans(values, random):
    shuffled = list(values)
    random.shuffle(shuffled)
    present = [v for v in values if not math.isnan(v)]
    a, b = cgm_metrics(values, expected=len(values)), cgm_metrics(shuffled)
    c = cgm_metrics(present, expected=len(values))
    for key in a:
        assert a[key] == pytest.approx(b[key], nan_ok=True)
        assert a[key] == pytest.approx(c[key], nan_ok=True)


pairs = st.lists(st.tuples(maybe_missing, maybe_missing), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(pairs)
def test_clarke_and_errors_properties(data):
    pred = np.array([p for p, _ in data])
    ref = np.array([r for _, r in data])
    valid = ~(np.isnan(pred) | np.isnan(ref))
    zones = clarke_zones(pred, ref)
    a = clarke_zone_a(pred, ref)
    if not valid.any():
        assert math.isnan(a) and all(math.isnan(v) for v in zones.values())
        assert math.isnan(rmse(pred, ref)) and math.isnan(mae(pred, ref))
        return
    assert sum(zones.values()) == pytest.approx(100)
    assert all(0 <= v <= 100 for v in zones.values())
    assert 0 <= a <= 100 and a == pytest.approx(zones["A"])
    # NaN pairs are simply ignored
    assert clarke_zones(pred[valid], ref[valid]) == zones
    assert rmse(pred, ref) == rmse(pred[valid], ref[valid]) and mae(pred, ref) == mae(pred[valid], ref[valid])
    assert mae(pred, ref) <= rmse(pred, ref) + 1e-9
    # permutation invariance
    order = np.argsort(-np.arange(len(pred)))
    assert clarke_zones(pred[order], ref[order]) == pytest.approx(zones)
    assert rmse(pred[order], ref[order]) == pytest.approx(rmse(pred, ref))
    # a perfect forecast is all zone A
    assert clarke_zone_a(ref[valid], ref[valid]) == 100


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 40), elements=maybe_missing),
       hnp.arrays(np.float64, st.integers(1, 40), elements=maybe_missing),
       st.floats(min_value=40, max_value=100))
def test_hypo_detection_properties(pred, ref, threshold):
    n = min(len(pred), len(ref))
    pred, ref = pred[:n], ref[:n]
    out = hypo_detection(pred, ref, threshold)
    valid = ~(np.isnan(pred) | np.isnan(ref))
    assert out["events"] + out["non_events"] == valid.sum()
    assert out["events"] == (ref[valid] < threshold).sum()
    for key in ("sensitivity", "specificity"):
        assert math.isnan(out[key]) or 0 <= out[key] <= 1
    assert math.isnan(out["sensitivity"]) == (out["events"] == 0)
    perfect = hypo_detection(ref, ref, threshold)
    assert perfect["false_positives"] == 0 and perfect["true_positives"] == perfect["events"]
