"""The UVA/Padova glucose organ: reproduction of simglucose, steady state, mass
balance and gradients.

Reference data: tests/data/simglucose_reference.npz, made by
tests/data/make_simglucose_reference.py with simglucose 0.2.11 (all 30 virtual
patients, tests/data/reference_scenario.csv, every minute for 24 h).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import DATA, UVA_PATIENTS, events_of

import physiotwin as pt


@pytest.fixture(scope="module")
def reference():
    return np.load(DATA / "simglucose_reference.npz")


@pytest.mark.parametrize("variable", ["plasma_glucose", "subcutaneous_glucose"])
def test_reproduces_simglucose_within_1_mg_dl_every_minute(reference_run, reference, variable):
    assert list(reference["patients"]) == UVA_PATIENTS
    ours = reference_run[f"glucose.{variable}"].values  # (patient, 1441)
    ref = reference[variable].astype(float)
    assert ours.shape == ref.shape == (30, 1441)
    assert np.all(reference_run["solver_status"].values == 0)
    err = np.abs(ours - ref)
    worst = np.unravel_index(np.argmax(err), err.shape)
    print(f"{variable}: max |physiotwin - simglucose| = {err.max():.4f} mg/dL "
          f"({UVA_PATIENTS[worst[0]]}, minute {worst[1]}); median {np.median(err):.2e}")
    assert err.max() < 1.0, f"{UVA_PATIENTS[worst[0]]} at minute {worst[1]}: {err.max():.3f} mg/dL"


def test_reference_data_is_what_simglucose_computes_now(reference_run, reference_scenario, reference):
    """Re-run simglucose live on two patients for the first 6 h (meal, bolus, basal
    change, second meal with an extended bolus), so the stored data cannot drift."""
    import simglucose_reference

    events = [e for e in events_of(reference_scenario) if e[0] < 360]
    for name in ("adult#004", "child#007"):
        live = simglucose_reference.run(name, events, 360)
        i = UVA_PATIENTS.index(name)
        for variable in ("plasma_glucose", "subcutaneous_glucose"):
            np.testing.assert_allclose(reference[variable][i, :361], live[variable], rtol=1e-6)
            assert np.abs(reference_run[f"glucose.{variable}"].values[i, :361] - live[variable]).max() < 1.0


def test_basal_steady_state_holds_for_every_patient():
    ds = pt.simulate(["glucose"], UVA_PATIENTS, None, hours=24, every=1)
    g = ds["glucose.plasma_glucose"].values
    gb = pt.bundled_patients().loc[UVA_PATIENTS, "Gb"].values[:, None]
    assert np.abs(g - gb).max() < 1e-6 * gb.max()
    # the tabulated basal insulin states are rounded, so insulin settles by ~1e-5 relative
    for name in ds.data_vars:
        if ds[name].dims == ("patient", "time") and ds[name].attrs["units"] not in ("mg/dL/min",):
            values = ds[name].values
            assert np.allclose(values, values[:, :1], rtol=1e-4, atol=1e-4), name


def test_meal_glucose_mass_balance(reference_run, reference_scenario):
    """What was eaten = what is still in the gut + what appeared in plasma / f."""
    params = pt.bundled_patients().loc[UVA_PATIENTS]
    eaten_mg = reference_scenario.select("carbs").value.sum() * 1000.0
    ds = reference_run
    t = ds["time"].values
    ra = ds["glucose.glucose_appearance"].values * params["BW"].values[:, None]  # mg/min
    appeared = np.trapezoid(ra, t, axis=1) / params["f"].values
    remaining = sum(ds[f"glucose.{s}"].values[:, -1] for s in ("Qsto1", "Qsto2", "Qgut"))
    # (trapezoidal quadrature of 1-min samples of Ra limits the precision of this check)
    np.testing.assert_allclose(appeared + remaining, eaten_mg, rtol=2e-3)


@pytest.fixture(scope="module")
def gradient_problem(reference_scenario):
    # tight tolerances: the gradient is that of the discretised solution, which converges
    # to the exact one as the tolerance shrinks
    sim = pt.Simulator(["glucose"], reference_scenario, hours=8, every=5, rtol=1e-12, atol=1e-12, max_steps=8192)
    params = sim.parameters("adult#001")

    def loss(p):
        traj = sim(p)
        return jnp.mean((traj["glucose.subcutaneous_glucose"] - 110.0) ** 2) + jnp.mean(traj["glucose.plasma_insulin"])

    return sim, params, loss


@pytest.mark.slow
def test_gradient_matches_central_finite_differences(gradient_problem):
    sim, params, loss = gradient_problem
    grad = jax.jit(jax.grad(loss))(params)
    names = list(sim.model.param_names)
    theta = np.array([float(params[n]) for n in names])
    h = 1e-4 * np.maximum(np.abs(theta), 1e-3)
    # all 2 x n_params perturbed solves in one vmapped call
    batch = np.concatenate([theta + np.diag(h), theta - np.diag(h)])
    _, outs, status, _ = sim.solve(jnp.asarray(batch))
    assert np.all(np.asarray(status) == 0)
    j_sc = sim.model.output_names.index("glucose.subcutaneous_glucose")
    j_ins = sim.model.output_names.index("glucose.plasma_insulin")
    losses = np.mean((np.asarray(outs)[:, :, j_sc] - 110.0) ** 2, axis=1) + np.mean(np.asarray(outs)[:, :, j_ins], axis=1)
    fd = (losses[: len(names)] - losses[len(names):]) / (2 * h)
    ad = np.array([float(grad[n]) for n in names])
    # compare in log-parameter units (d loss / d log theta), the scale calibration works in
    ad_s, fd_s = ad * theta, fd * theta
    norm_rel = np.linalg.norm(ad_s - fd_s) / np.linalg.norm(fd_s)
    significant = np.abs(fd_s) > 1e-2 * np.abs(fd_s).max()
    with np.errstate(divide="ignore", invalid="ignore"):  # parameters with no effect have fd = 0
        rel = np.abs(ad_s - fd_s) / np.abs(fd_s)
    worst = names[int(np.argmax(np.where(significant, rel, 0)))]
    print(f"gradient: relative error of the whole gradient {norm_rel:.2e}; {significant.sum()} parameters above 1% "
          f"of the largest, worst component {rel[significant].max():.2e} ({worst})")
    assert significant.sum() >= 20  # most parameters matter for this loss
    assert norm_rel < 1e-4
    assert rel[significant].max() < 1e-4


def test_smooth_mode_agrees_with_reference_mode_in_normal_ranges(reference_scenario):
    from physiotwin.organs.glucose import Glucose

    ref = pt.simulate([Glucose()], "adult#002", reference_scenario, hours=8)
    smooth = pt.simulate([Glucose(mode="smooth")], "adult#002", reference_scenario, hours=8)
    diff = np.abs(ref["glucose.plasma_glucose"].values - smooth["glucose.plasma_glucose"].values)
    assert diff.max() < 0.5
