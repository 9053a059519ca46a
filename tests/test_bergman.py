"""The Bergman minimal-model organ (T1D, Hovorka s.c. insulin and gut): declarations,
exact basal steady state, glucose and insulin mass balance, closed-form behaviour of
the minimal model, and gradients against finite differences."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import physiotwin as pt
from physiotwin.organs import bergman as bergman_module
from physiotwin.organs.bergman import Bergman

PMOL_PER_U = 6000.0


def _timeline(*rows):
    return pd.DataFrame(list(rows), columns=["time", "kind", "value", "unit", "duration"])


def _params(ds):
    return {str(q).split(".", 1)[1]: float(v) for q, v in zip(ds["parameter"].values, ds["parameter_values"].values)}


# ----------------------------------------------------------------- declarations
def test_declarations_and_registration():
    names = {p.name for p in Bergman.params}
    states = {s.name for s in Bergman.states}
    outputs = {o.name for o in Bergman.outputs}
    assert set(Bergman.calibrated) <= names
    assert all(p.source and p.lower <= p.value <= p.upper for p in Bergman.params)
    for r in Bergman.residuals:
        assert r.state in states and r.scale > 0 and set(r.features) <= states | outputs
    # same timeline signals and output names/units as the UVA/Padova organ
    from physiotwin.organs.glucose import Glucose

    glucose_inputs = {i.name: (i.unit, i.source) for i in Glucose.inputs}
    for i in Bergman.inputs:
        assert glucose_inputs[i.name] == (i.unit, i.source)
    glucose_outputs = {o.name: o.unit for o in Glucose.outputs}
    assert all(glucose_outputs[o.name] == o.unit for o in Bergman.outputs)
    registered = []
    bergman_module.register_organs(register=registered.append)
    assert registered == [Bergman]


# ----------------------------------------------------------------- steady state
@pytest.mark.parametrize("basal_from_timeline", [False, True])
def test_basal_state_is_an_exact_equilibrium(basal_from_timeline):
    model = pt.compose([Bergman()])
    nominal = model.nominal_params()
    theta = jnp.asarray([nominal[q] for q in model.param_names])
    insulin = nominal["bergman.u2ss"] * nominal["bergman.BW"] / PMOL_PER_U  # U/min
    values = {"timeline.carbs": 0.0, "timeline.insulin": insulin if basal_from_timeline else 0.0,
              "timeline.basal_set": 1.0 if basal_from_timeline else 0.0}
    signals = jnp.asarray([values[n] for n in model.signal_names])
    y0 = model.initial_state(theta, signals)
    dy, out = model.evaluate(jnp.asarray(0.0), y0, theta, signals)
    scales = np.asarray(model.state_scales)
    assert np.max(np.abs(np.asarray(dy)) / scales) < 1e-12
    y = dict(zip(model.output_names, np.asarray(out)))
    assert y["bergman.plasma_glucose"] == pytest.approx(nominal["bergman.Gb"])
    # I_b = u_b / (k_e V_I)
    i_b = nominal["bergman.u2ss"] / (nominal["bergman.k_e"] * nominal["bergman.V_I"])
    assert y["bergman.plasma_insulin"] == pytest.approx(i_b, rel=1e-12)


def test_bundled_patient_gives_weight_basal_glucose_and_basal_insulin():
    """BW, Gb and u2ss share name, meaning and unit with the UVA/Padova table; the other
    parameters take their nominal values, and 24 h without events stay at basal."""
    ds = pt.simulate([Bergman()], "adult#001", None, hours=24, every=60)
    row = pt.bundled_patients().loc["adult#001"]
    p = _params(ds)
    for name in ("BW", "Gb", "u2ss"):
        assert p[name] == row[name]
    nominal = {q.name: q.value for q in Bergman.params}
    assert all(p[n] == nominal[n] for n in nominal if n not in ("BW", "Gb", "u2ss"))
    g = ds["bergman.plasma_glucose"].values
    assert int(ds["solver_status"]) == 0
    np.testing.assert_allclose(g, row["Gb"], rtol=1e-9)


# ----------------------------------------------------------------- mass balance
def test_meal_and_insulin_mass_balance(tmp_path):
    """Carbohydrate: A_G x eaten = what appeared in plasma + what is still in the gut.
    Insulin: delivered = what is still under the skin + V_I BW (I(T) - I(0) + k_e int I)."""
    (tmp_path / "day.csv").write_text(
        "time,kind,value,unit,duration\n"
        "30,carbs,60,g,15\n30,bolus,6,U,\n"
        "240,carbs,25,g,\n240,bolus,2.5,U,10\n"
        "330,basal,1.2,U/h,\n"
    )
    ds = pt.simulate([Bergman()], "adult#001", tmp_path / "day.csv", hours=8, every=0.5, rtol=1e-10, atol=1e-10)
    assert int(ds["solver_status"]) == 0
    p = _params(ds)
    t = ds["time"].values
    # carbohydrate
    eaten = 85_000.0  # mg
    appeared = np.trapezoid(ds["bergman.glucose_appearance"].values * p["BW"], t)
    in_gut = ds["bergman.D1"].values[-1] + ds["bergman.D2"].values[-1]
    assert in_gut > 100.0  # the second meal is still being absorbed: the check covers both terms
    np.testing.assert_allclose(appeared + in_gut, p["A_G"] * eaten, rtol=2e-4)
    # insulin: patient's basal u_b until minute 330, then 1.2 U/h, plus 8.5 U of boluses
    delivered = p["u2ss"] * p["BW"] * 330.0 + (1.2 / 60.0 * (t[-1] - 330.0) + 8.5) * PMOL_PER_U
    sc = ds["bergman.S1"].values + ds["bergman.S2"].values
    ins = ds["bergman.I"].values
    plasma = p["V_I"] * p["BW"] * (ins[-1] - ins[0] + p["k_e"] * np.trapezoid(ins, t))
    np.testing.assert_allclose(sc[-1] - sc[0] + plasma, delivered, rtol=2e-4)


# ------------------------------------------------------ closed forms / behaviour
class _Displaced(Bergman):
    """Starts with plasma and sensor glucose 50 mg/dL above basal, insulin at basal."""

    def initial_state(self, p, u):
        x = dict(super().initial_state(p, u))
        x["G"] = x["Gs"] = p["Gb"] + 50.0
        return x


def test_glucose_effectiveness_closed_form():
    """At basal insulin X stays 0, so glucose returns to G_b exponentially at the rate S_G
    (the minimal model's definition of glucose effectiveness), and the sensor follows
    through its first-order lag: Gs - G_b = A (e^{-S_G t} - S_G tau_s e^{-t/tau_s}) / (1 - S_G tau_s)."""
    ds = pt.simulate([_Displaced()], "adult#001", None, hours=6, every=5, rtol=1e-10, atol=1e-10)
    p = _params(ds)
    t = ds["time"].values
    a, tau = p["S_G"], p["tau_s"]
    np.testing.assert_allclose(ds["bergman.X"].values, 0.0, atol=1e-14)
    np.testing.assert_allclose(ds["bergman.plasma_glucose"].values - p["Gb"], 50.0 * np.exp(-a * t), rtol=1e-7)
    gs = 50.0 * (np.exp(-a * t) - a * tau * np.exp(-t / tau)) / (1.0 - a * tau)
    np.testing.assert_allclose(ds["bergman.subcutaneous_glucose"].values - p["Gb"], gs, rtol=1e-7)


@pytest.fixture(scope="module")
def meal_and_bolus():
    """50 g eaten over 1 min, without and with a 5 U bolus; a 3 U bolus alone (adult#001)."""
    sim_meal = pt.simulate([Bergman()], "adult#001", _timeline((60, "carbs", 50, "g", 1)), hours=24, every=0.5,
                           rtol=1e-10, atol=1e-10)
    sim_both = pt.simulate([Bergman()], "adult#001",
                           _timeline((60, "carbs", 50, "g", 1), (60, "bolus", 5, "U", None)),
                           hours=24, every=0.5, rtol=1e-10, atol=1e-10)
    sim_bolus = pt.simulate([Bergman()], "adult#001", _timeline((60, "bolus", 3, "U", 1)), hours=24, every=0.5,
                            rtol=1e-10, atol=1e-10)
    return sim_meal, sim_both, sim_bolus


def test_meal_without_bolus(meal_and_bolus):
    """Hovorka's gut: appearance peaks t_max,G = tau_m after the meal. With insulin at basal
    (X = 0) the excursion's area is exactly S_G int (G - G_b) = (A_G D - gut(T)) / (BW V_G) - (G(T) - G_b)."""
    ds, _, _ = meal_and_bolus
    p = _params(ds)
    t = ds["time"].values
    ra = ds["bergman.glucose_appearance"].values
    assert t[np.argmax(ra)] - 60.0 == pytest.approx(p["tau_m"] + 0.5, abs=1.0)  # (eaten over [60, 61])
    g = ds["bergman.plasma_glucose"].values
    np.testing.assert_allclose(ds["bergman.X"].values, 0.0, atol=1e-14)
    gut = ds["bergman.D1"].values[-1] + ds["bergman.D2"].values[-1]
    area = (p["A_G"] * 50_000.0 - gut) / (p["BW"] * p["V_G"]) - (g[-1] - p["Gb"])
    np.testing.assert_allclose(p["S_G"] * np.trapezoid(g - p["Gb"], t), area, rtol=1e-5)
    # it rises by tens of mg/dL (40 g absorbed into ~160 dL) within 1-2 h, then returns to G_b
    rise = g.max() - p["Gb"]
    assert 60.0 < rise < 200.0
    assert 30.0 < t[np.argmax(g)] - 60.0 < 150.0
    assert abs(g[t == 60 + 12 * 60][0] - p["Gb"]) < 5.0


def test_insulin_bolus_lowers_glucose(meal_and_bolus):
    """A bolus lowers glucose (alone: below G_b; with the meal: a smaller excursion). The
    total insulin action is exact: int X dt = S_I int (I - I_b) dt = S_I dose / (k_e V_I BW)
    once the dose is absorbed."""
    meal, both, bolus = meal_and_bolus
    p = _params(bolus)
    t = bolus["time"].values
    g = bolus["bergman.plasma_glucose"].values
    assert np.all(g[t <= 60] == pytest.approx(p["Gb"]))
    assert g.min() < p["Gb"] - 30.0
    nadir = t[np.argmin(g)] - 60.0
    assert 90.0 < nadir < 360.0  # rapid-acting insulin: nadir 2-4 h after the bolus
    i_b = p["u2ss"] / (p["k_e"] * p["V_I"])
    x, ins = bolus["bergman.X"].values, bolus["bergman.I"].values
    assert x.min() > -1e-12
    dose_action = p["S_I"] * 3 * PMOL_PER_U / (p["k_e"] * p["V_I"] * p["BW"])
    np.testing.assert_allclose(np.trapezoid(x, t), dose_action, rtol=1e-4)
    np.testing.assert_allclose(np.trapezoid(ins - i_b, t), dose_action / p["S_I"], rtol=1e-4)
    # the meal bolus blunts the meal excursion
    g_meal, g_both = meal["bergman.plasma_glucose"].values, both["bergman.plasma_glucose"].values
    assert g_both.max() < g_meal.max() - 20.0
    assert np.all(g_both <= g_meal + 1e-9)


# -------------------------------------------------------------------- gradients
def test_gradient_matches_central_finite_differences():
    tl = _timeline((30, "carbs", 60, "g", 15), (30, "bolus", 5, "U", None), (240, "carbs", 30, "g", None),
                   (250, "bolus", 2, "U", 5), (300, "basal", 1.0, "U/h", None))
    sim = pt.Simulator([Bergman()], tl, hours=8, every=5, rtol=1e-12, atol=1e-12, max_steps=16384)
    params = sim.parameters("adult#001")

    def loss(p):
        traj = sim(p)
        return jnp.mean((traj["bergman.subcutaneous_glucose"] - 110.0) ** 2) + jnp.mean(traj["bergman.plasma_insulin"])

    # one compiled function for both: its value gives the finite differences (tracing the
    # reverse-mode solve dominates the cost; a second compile would double it)
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    _, grad = value_and_grad(params)
    names = list(sim.model.param_names)
    theta = np.array([float(params[n]) for n in names])
    h = 1e-4 * np.abs(theta)

    def loss_at(k, step):
        p = dict(params)
        p[names[k]] = jnp.asarray(theta[k] + step)
        return float(value_and_grad(p)[0])

    fd = np.array([(loss_at(k, h[k]) - loss_at(k, -h[k])) / (2 * h[k]) for k in range(len(names))])
    ad = np.array([float(grad[n]) for n in names])
    ad_s, fd_s = ad * theta, fd * theta  # d loss / d log theta
    significant = np.abs(fd_s) > 1e-3 * np.abs(fd_s).max()
    assert significant.sum() >= 10
    norm_rel = np.linalg.norm(ad_s - fd_s) / np.linalg.norm(fd_s)
    rel = np.abs(ad_s - fd_s)[significant] / np.abs(fd_s)[significant]
    print(f"gradient: relative error {norm_rel:.2e}, worst significant component {rel.max():.2e}")
    assert norm_rel < 1e-5
    assert rel.max() < 1e-4
    assert all(math.isfinite(v) for v in ad)
