"""Cardiovascular organ (cycle-averaged Guyton circulation + baroreflex) alone and
composed with the kidney: steady state, baseline values, 10 % haemorrhage, exercise,
and a gradient through the coupled model checked against finite differences."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import physiotwin as pt

PAIR = ["cardiovascular", "renal"]


def _at_start(organs):
    """Flat initial state, derivatives and outputs at nominal parameters, no events."""
    m = pt.compose(organs)
    theta = jnp.asarray(list(m.nominal_params().values()))
    sig = jnp.asarray([jnp.nan if n == "timeline.sodium_intake" else 0.0 for n in m.signal_names])
    y0 = m.initial_state(theta, sig)
    dy, out = m.evaluate(jnp.asarray(0.0), y0, theta, sig)
    return m, dict(zip(m.state_names, np.asarray(y0))), dict(zip(m.state_names, np.asarray(dy))), \
        dict(zip(m.output_names, np.asarray(out)))


@pytest.mark.parametrize("organs", [["cardiovascular"], PAIR])
def test_initial_state_is_a_steady_state(organs):
    _, y0, dy, _ = _at_start(organs)
    for name, d in dy.items():
        assert abs(d) <= 1e-10 * max(1.0, abs(y0[name])), (name, d)


def test_baseline_values_of_the_composed_pair():
    m, _, _, out = _at_start(PAIR)
    assert 90 <= out["cardiovascular.MAP"] <= 100
    assert 4.5 <= out["cardiovascular.CO"] <= 6
    assert 60 <= out["cardiovascular.HR"] <= 80
    assert 4.5 <= out["cardiovascular.blood_volume"] <= 5.5
    assert 14 <= out["cardiovascular.ECF_volume"] <= 16
    assert out["renal.urine_flow"] == pytest.approx(out["renal.water_intake"], rel=1e-9)
    conn = m.connections()
    assert conn["renal.MAP"] == "cardiovascular.MAP"
    assert conn["cardiovascular.sodium_concentration"] == "renal.plasma_sodium"


def test_standalone_run_on_defaults_stays_put():
    ds = pt.simulate(["cardiovascular"], "adult#001", None, hours=6, every=30, solver=diffrax.Tsit5())
    assert int(ds.solver_status) == 0
    assert np.ptp(ds["cardiovascular.MAP"].values) < 1e-6
    assert ds["cardiovascular.MAP"].values[0] == pytest.approx(93.0)


@pytest.fixture(scope="module")
def haemorrhage():
    """500 mL (10 %) lost over 10 min at t = 60 min, coupled CV + kidney, 24 h."""
    tl = pd.DataFrame({"time": [60.0], "kind": ["blood_loss"], "value": [500.0], "unit": ["mL"],
                       "duration": [10.0]})
    return pt.simulate(PAIR, "adult#001", tl, hours=24, every=5, solver=diffrax.Tsit5())


def test_blood_loss_drops_map_raises_hr_and_recovers_partly(haemorrhage):
    ds = haemorrhage
    assert int(ds.solver_status) == 0
    t = ds.time.values
    mapp, hr, v = (ds[f"cardiovascular.{k}"].values for k in ("MAP", "HR", "blood_volume"))
    assert v[t == 70][0] == pytest.approx(4.5, abs=0.1)  # 10 % shed (some refill already)
    nadir = mapp[(t > 60) & (t < 120)].min()
    assert 70 < nadir < 90  # MAP drops ...
    assert hr[(t > 60) & (t < 120)].max() > 75  # ... the baroreflex raises heart rate ...
    assert nadir + 3 < mapp[-1] < 93.0  # ... and MAP recovers partly within a day
    assert v[-1] > v[t == 75][0] + 0.1  # transcapillary refill, renal retention, thirst
    assert ds["renal.urine_flow"].values[(t > 70) & (t < 360)].mean() < 1.0  # antidiuresis


def test_exercise_raises_heart_rate_and_map_modestly():
    tl = pd.DataFrame({"time": [60.0], "kind": ["exercise"], "value": [0.5], "unit": ["1"], "duration": [60.0]})
    ds = pt.simulate(["cardiovascular"], "adult#001", tl, hours=4, every=5, solver=diffrax.Tsit5())
    t = ds.time.values
    hr, co, mapp = (ds[f"cardiovascular.{k}"].values for k in ("HR", "CO", "MAP"))
    during = (t >= 70) & (t <= 115)
    assert hr[during].min() > 110 and co[during].min() > 7.5
    assert 3 < mapp[during].mean() - 93 < 15
    assert abs(hr[-1] - 70) < 3


@pytest.mark.slow
def test_gradient_through_the_coupled_model_matches_finite_differences():
    """d mean(MAP) / d theta over 1 h with a 300 mL bleed, reverse mode vs central
    differences, with the default explicit solver. Its step is capped by the organs'
    `max_step`: at rest the fast reflex modes do not limit the error control, and a
    step past the stability limit keeps the trajectory right but makes its derivative
    diverge (without the cap: -4e5 instead of about -450 for Cv)."""
    tl = pd.DataFrame({"time": [10.0], "kind": ["blood_loss"], "value": [300.0], "unit": ["mL"], "duration": [10.0]})
    sim = pt.Simulator(PAIR, tl, hours=1, every=15, rtol=1e-9, atol=1e-9, initial="organs")
    p0 = sim.parameters("adult#001")
    loss = jax.jit(lambda p: sim(p)["cardiovascular.MAP"].mean())
    g = jax.jit(jax.grad(lambda p: sim(p)["cardiovascular.MAP"].mean()))(p0)
    for name in ("cardiovascular.Cv", "cardiovascular.G_R", "renal.Kf_sn", "renal.eta_pt0"):
        h = 1e-5 * float(p0[name])
        fd = (loss({**p0, name: p0[name] + h}) - loss({**p0, name: p0[name] - h})) / (2 * h)
        print(name, float(g[name]), float(fd))
        assert float(g[name]) == pytest.approx(float(fd), rel=1e-4), name
