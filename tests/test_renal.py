"""Renal organ (reduced Hallow & Gebremichael 2017): steady state, baseline values,
sodium loading with the circulation, renal glucose handling, SGLT2 inhibition and
reduced nephron number."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import physiotwin as pt
from physiotwin.organs.renal import Renal

PAIR = ["cardiovascular", "renal"]


@pytest.fixture(scope="module")
def organ():
    R = Renal()
    p = {q.name: jnp.asarray(q.value) for q in R.params}
    u = {i.name: jnp.asarray(i.default) for i in R.inputs} | {"sodium_loss": jnp.asarray(0.0)}
    return R, p, u, R.initial_state(p, u)


def test_initial_state_is_a_steady_state_alone(organ):
    R, p, u, x = organ
    dx, y = R.rhs(jnp.asarray(0.0), x, p, u)
    for name, d in dx.items():
        assert abs(float(d)) <= 1e-10 * max(1.0, abs(float(x[name]))), (name, d)
    assert float(y["GFR"]) == pytest.approx(120.0, rel=1e-6)
    assert float(y["RBF"]) == pytest.approx(1.0, rel=1e-6)
    assert float(y["sodium_excretion"]) == pytest.approx(100.0, rel=1e-9)
    assert float(y["serum_creatinine"]) == pytest.approx(0.92)
    assert float(y["urine_flow"]) == pytest.approx(float(y["water_intake"]))
    assert float(y["UGE"]) < 1e-3 and float(y["relative_gfr"]) == pytest.approx(1.0)


def test_standalone_run_on_defaults_stays_put():
    ds = pt.simulate(["renal"], "adult#001", None, hours=24, every=60, solver=diffrax.Tsit5())
    assert int(ds.solver_status) == 0
    assert np.ptp(ds["renal.GFR"].values) < 0.05  # solver tolerance (rtol 1e-5) level
    assert np.ptp(ds["renal.sodium_excretion"].values) < 0.5


def test_composed_baseline():
    m = pt.compose(PAIR)
    theta = jnp.asarray(list(m.nominal_params().values()))
    sig = jnp.asarray([jnp.nan if n == "timeline.sodium_intake" else 0.0 for n in m.signal_names])
    y0 = m.initial_state(theta, sig)
    out = dict(zip(m.output_names, np.asarray(m.evaluate(jnp.asarray(0.0), y0, theta, sig)[1])))
    assert 90 <= out["renal.GFR"] <= 130
    assert 0.8 <= out["renal.RBF"] <= 1.2
    assert out["renal.sodium_excretion"] == pytest.approx(100.0, rel=1e-6)
    assert 0.15 <= out["renal.filtration_fraction"] <= 0.25


@pytest.fixture(scope="module")
def salt_loading():
    """Sodium intake 100 -> 300 mmol/day at day 1; CV + kidney for 6 days."""
    tl = pd.DataFrame({"time": [0.0, 1440.0], "kind": ["sodium_intake"] * 2, "value": [100.0, 300.0],
                       "unit": ["mmol/day"] * 2})
    return pt.simulate(PAIR, "adult#001", tl, days=6, every=60, solver=diffrax.Tsit5())


def test_sodium_loading_restores_balance_with_small_pressure_rise(salt_loading):
    ds = salt_loading
    assert int(ds.solver_status) == 0
    t = ds.time.values / 1440.0
    une = ds["renal.sodium_excretion"].values
    mapp = ds["cardiovascular.MAP"].values
    assert une[t == 1.0][0] == pytest.approx(100.0, rel=1e-3)
    assert np.all(np.abs(une[t >= 4.0] - 300.0) < 15.0)  # balance within 3 days of the switch
    assert 0.0 < mapp[-1] - 93.0 < 5.0
    assert ds["renal.renin"].values[-1] < 0.9  # RAAS suppressed
    assert ds["cardiovascular.ECF_volume"].values[-1] > 15.0  # some sodium and water retained
    assert abs(ds["renal.plasma_sodium"].values[-1] - 140.0) < 2.0


def test_renal_glucose_handling_curve(organ):
    R, p, u, x = organ
    uge = {}
    for G in (70.0, 100.0, 150.0, 170.0, 300.0):
        _, y = R.rhs(jnp.asarray(0.0), x, p, {**u, "plasma_glucose": jnp.asarray(G)})
        uge[G] = float(y["UGE"])
        assert float(y["GFR"]) == pytest.approx(120.0, rel=1e-6)
    assert max(uge[70.0], uge[100.0], uge[150.0]) < 0.01 and uge[170.0] < 1.0
    assert 100.0 <= uge[300.0] <= 150.0
    _, y_hi = R.rhs(jnp.asarray(0.0), x, p, {**u, "plasma_glucose": jnp.asarray(300.0)})
    _, y_lo = R.rhs(jnp.asarray(0.0), x, p, u)
    assert float(y_hi["urine_flow"]) > 2 * float(y_lo["urine_flow"])  # osmotic diuresis


def test_sglt2_inhibitor_in_hyperglycaemia(organ):
    """Empagliflozin 25 mg once daily (PK inside the organ, 4 days); UGE over day 4
    at plasma glucose 180 mg/dL."""
    tl = pd.DataFrame({"time": [1440.0 * k for k in range(4)], "kind": ["sglt2i"] * 4, "value": [25.0] * 4,
                       "unit": ["mg"] * 4})
    ds = pt.simulate(["renal"], "adult#001", tl, days=4, every=15, solver=diffrax.Tsit5())
    assert int(ds.solver_status) == 0
    c = ds["renal.sglt2i_concentration"].values
    t = ds.time.values
    assert 300 < c[t < 1440].max() < 900 and t[np.argmax(c[t < 1440])] < 240  # Cmax, tmax ~1-3 h
    R, p, u, x = organ
    day4 = t >= 3 * 1440

    def uge(A_gut, A_c, G):
        _, y = R.rhs(jnp.asarray(0.0), {**x, "A_gut": A_gut, "A_c": A_c}, p, {**u, "plasma_glucose": G})
        return y["UGE"]

    A_gut, A_c = (jnp.asarray(ds[f"renal.{k}"].values[day4]) for k in ("A_gut", "A_c"))
    on = float(jnp.mean(jax.vmap(uge, in_axes=(0, 0, None))(A_gut, A_c, 180.0))) * 1.44  # g/day
    off = float(uge(jnp.asarray(0.0), jnp.asarray(0.0), 180.0)) * 1.44
    filtered = 120.0 * 180.0 / 100.0 * 1.44  # g/day at GFR 120 mL/min
    # SGLT2 inhibitors leave 30-50 % of the filtered load unreabsorbed (Liu, Lee & DeFronzo 2012)
    assert off < 10.0 and 0.3 <= on / filtered <= 0.5


def test_full_sglt2_block_halves_tmg_and_spills_a_third_at_near_normal_glucose(organ):
    """Maximal SGLT2 inhibition (drug far above EC50): the reabsorptive maximum falls to
    about half (Al-Jobori 2017, empagliflozin 48 h: TmG -53 +- 6 %, T2D -44 +- 7 %), and at
    140 mg/dL 30-50 % of the filtered glucose is excreted (Liu, Lee & DeFronzo 2012;
    SGLT1 reserve ~80 g/day, Vallon & Thomson 2017)."""
    R, p, u, x = organ
    blocked = {**x, "A_c": jnp.asarray(1e5 * 1e-9 * 450.91 * 1e3 * float(p["V_sglt2i"]))}  # 1e5 nmol/L

    def out(state, G):
        return R.rhs(jnp.asarray(0.0), state, p, {**u, "plasma_glucose": jnp.asarray(G)})[1]

    tm = {k: float(y["filtered_glucose"] - y["UGE"]) for k, y in (("off", out(x, 400.0)), ("on", out(blocked, 400.0)))}
    assert 0.41 <= tm["on"] / tm["off"] <= 0.63
    y = out(blocked, 140.0)
    assert 0.3 <= float(y["UGE"] / y["filtered_glucose"]) <= 0.5
    assert float(out(x, 140.0)["UGE"]) < 0.01  # without the drug nothing spills at 140 mg/dL


def test_fewer_nephrons_lower_gfr_and_raise_creatinine(organ):
    R, p, u, x = organ
    p_ckd = {**p, "nephrons": p["nephrons"] / 2}
    x_ckd = R.initial_state(p_ckd, u)
    _, y = R.rhs(jnp.asarray(0.0), x_ckd, p_ckd, u)
    assert float(y["relative_gfr"]) < 0.7
    assert float(y["serum_creatinine"]) > 1.3
    assert float(y["sodium_excretion"]) < 100.0  # retains sodium until pressure rises
