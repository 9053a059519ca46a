"""Starting from the composed steady state (`initial="steady"`): a patient whose
parameters move the equilibrium starts at rest, and its gradient is exact."""

from __future__ import annotations

import jax
import pandas as pd
import jax.numpy as jnp
import numpy as np
import pytest

import physiotwin as pt

ORGANS = ["glucose", "pancreas"]


@pytest.fixture(scope="module")
def sim():
    return pt.Simulator(ORGANS, None, hours=4, every=30, initial="steady", rtol=1e-8, atol=1e-8)


def test_a_shifted_patient_starts_at_rest(sim):
    table = pt.bundled_patients().loc[["normal#001"]].drop(columns=["source"]).reset_index()
    table.loc[0, "kp1"] *= 1.1  # more hepatic glucose production: a new, higher equilibrium
    ds = pt.simulate(ORGANS, table, None, hours=4, every=30, initial="steady", rtol=1e-8, atol=1e-8)
    g = ds["glucose.plasma_glucose"].values[0]
    assert ds["solver_status"].values[0] == 0
    assert g[0] > 93.0  # moved up from Gb = 91.76
    assert np.ptp(g) < 1e-5  # and stays there: it is an equilibrium
    assert ds.attrs["initial_state"].startswith("composed steady state")


@pytest.mark.slow
def test_gradient_through_the_steady_state(sim):
    p = sim.parameters("normal#001")
    p = {**p, "glucose.kp1": p["glucose.kp1"] * 1.1}
    start_glucose = lambda q: sim(q)["glucose.plasma_glucose"][0]
    grad = jax.grad(start_glucose)(p)
    h = 1e-4 * float(p["glucose.kp1"])
    fd = (start_glucose({**p, "glucose.kp1": p["glucose.kp1"] + h})
          - start_glucose({**p, "glucose.kp1": p["glucose.kp1"] - h})) / (2 * h)
    assert float(grad["glucose.kp1"]) == pytest.approx(float(fd), rel=1e-6)
    # the pancreas responds: more glucose, more basal secretion pressure -> beta matters too
    assert jnp.isfinite(grad["pancreas.beta"]) and float(grad["pancreas.beta"]) != 0.0


# ------------------------------------------------------------------ across the prior
THREE = ["glucose", "cardiovascular", "renal"]


@pytest.fixture(scope="module")
def prior_patients():
    """200 patients drawn from the calibration prior of the three-organ composition (its
    organs' default fitted parameters; the others at the population centre)."""
    from physiotwin.calibration.space import population_space

    model = pt.compose(THREE)
    space = population_space(model)
    rng = np.random.default_rng(7)
    z = space.mu + space.sd * rng.standard_normal((200, len(space.mu)))
    theta = np.stack([np.asarray(space.theta(jnp.asarray(zi))) for zi in z])
    return model, space, theta


@pytest.mark.slow
def test_the_steady_start_converges_across_the_prior(prior_patients):
    from physiotwin.signals import compile_signals
    from physiotwin.steady import settle
    from physiotwin.timeline import Timeline

    model, space, theta = prior_patients
    rest = jnp.asarray(compile_signals(Timeline.empty(), model.signal_names, 1.0)[1][0])
    solve = jax.jit(jax.vmap(lambda th: settle(model, th, rest, model.initial_state(th, rest))))
    out = solve(jnp.asarray(theta))
    ok = np.asarray(out.ok)
    assert ok.mean() >= 0.99, [model.state_names[int(w)] for w in np.asarray(out.worst)[~ok]]
    # the spread of the draws is real: the resting pressures differ between patients
    _, outs = jax.vmap(lambda y, th: model.evaluate(0.0, y, th, rest))(out.y, jnp.asarray(theta))
    map_ = np.asarray(outs[:, model.output_names.index("cardiovascular.MAP")])
    assert map_.std() > 3.0 and 70 < np.median(map_) < 120


@pytest.mark.slow
def test_patients_off_nominal_start_at_rest_and_stay_there(prior_patients):
    """The issue's cases (resistance 10 % up, half the nephrons) and prior draws: every solve
    succeeds and nothing moves over a day without events."""
    model, space, theta = prior_patients
    table = pd.DataFrame(theta[:6], columns=list(model.param_names))
    table.insert(0, "patient", [f"draw{i}" for i in range(6)])
    nominal = pd.DataFrame([model.nominal_params()])
    table = pd.concat([table, nominal.assign(patient="TPR0 +10 %", **{"cardiovascular.TPR0": 18.2 * 1.1}),
                       nominal.assign(patient="half nephrons", **{"renal.nephrons": 1e6})], ignore_index=True)
    ds = pt.simulate(THREE, table, None, hours=24, every=120)
    assert (ds["solver_status"].values == 0).all(), ds["solver_message"].values
    for var in ("cardiovascular.MAP", "renal.GFR", "renal.serum_creatinine", "glucose.plasma_glucose"):
        v = ds[var].values
        assert np.all(np.abs(v - v[:, :1]) <= 1e-4 * np.abs(v[:, :1]) + 1e-6), var
    assert ds["cardiovascular.MAP"].sel(patient="half nephrons")[0] > ds["cardiovascular.MAP"].sel(
        patient="TPR0 +10 %")[0]
