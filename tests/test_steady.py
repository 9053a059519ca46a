"""Starting from the composed steady state (`initial="steady"`): a patient whose
parameters move the equilibrium starts at rest, and its gradient is exact."""

from __future__ import annotations

import jax
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
