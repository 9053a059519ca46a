"""Pancreas (Dalla Man 2007 beta-cell secretion) composed with the glucose organ,
for the normal subject of the paper's Table 1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import physiotwin as pt

MEAL = pd.DataFrame({"time": [0.0], "kind": ["carbs"], "value": [78.0], "unit": ["g"]})


@pytest.fixture(scope="module")
def normal_meal():
    return pt.simulate(["glucose", "pancreas"], "normal#001", MEAL, hours=7, every=5)


def test_wiring_goes_both_ways():
    conn = pt.compose(["glucose", "pancreas"]).connections()
    assert conn["pancreas.G"] == "glucose.plasma_glucose"
    assert conn["pancreas.dGdt"] == "glucose.plasma_glucose_rate"
    assert conn["glucose.portal_insulin"] == "pancreas.portal_insulin"


def test_basal_state_is_an_equilibrium():
    ds = pt.simulate(["glucose", "pancreas"], "normal#001", None, hours=6, every=5, rtol=1e-9, atol=1e-9)
    g, i = ds["glucose.plasma_glucose"].values, ds["glucose.plasma_insulin"].values
    assert g[0] == pytest.approx(91.76) and i[0] == pytest.approx(25.49)
    assert np.ptp(g) < 1e-6 and np.ptp(i) < 1e-3
    assert ds["pancreas.insulin_secretion"].values == pytest.approx(pt.bundled_patients().loc["normal#001", "Sb"])


def test_meal_response_is_physiological(normal_meal):
    """Dalla Man 2007 (Fig. 5-6, normal subjects, 78 g meal): plasma glucose peaks
    near 150-170 mg/dL within about an hour and is back near basal by 4-5 h; insulin
    peaks at a few hundred pmol/L."""
    ds = normal_meal
    t = ds["time"].values
    g, ins = ds["glucose.plasma_glucose"].values, ds["glucose.plasma_insulin"].values
    assert 140 < g.max() < 180 and 30 <= t[g.argmax()] <= 90
    assert abs(g[t == 300][0] - 91.76) < 5
    assert 150 < ins.max() < 500 and t[ins.argmax()] <= 150
    secretion = ds["pancreas.insulin_secretion"].values
    assert secretion.max() > 3 * secretion[0]


def test_without_pancreas_the_same_meal_is_not_handled(normal_meal):
    alone = pt.simulate(["glucose"], "normal#001", MEAL, hours=7, every=5)
    assert alone["glucose.plasma_glucose"].max() > normal_meal["glucose.plasma_glucose"].max() + 40
