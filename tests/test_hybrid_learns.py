"""Hybrids that learn missing physiology: modulating slots, explanations, hidden physiology.

Quick tests: no calibration here (the planted terms are set by hand). The calibrated
recovery of a planted modulation and the population fit are in
`test_population.py` (slow)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import physiotwin as pt
from physiotwin.calibration.explain import attribution, correlation, daily_profile, samples_along, symbolic_fit
from physiotwin.calibration.hybrid import Hybrid, slots_of
from physiotwin.contract import Organ, Output, Param, Residual, State
from physiotwin.errors import WiringError

SENS = "glucose.insulin_sensitivity"


@pytest.fixture(scope="module")
def glucose():
    model = pt.compose(["glucose"])
    _, theta, _ = pt.patients.resolve_patients(model, "adult#002")
    return model, jnp.asarray(theta[0])


def _planted(model, amplitude=0.5, eps=1e-3, hour=6.0, slots=(SENS,)):
    """A hybrid whose modulating net gives ``scale * amplitude * cos(2 pi (h - hour) / 24)``
    (to O(eps^2)): one hidden unit reads the clock's first harmonic with a tiny weight
    (tanh is linear there) and the last layer scales it back."""
    h = Hybrid.create(model, jax.random.PRNGKey(0), width=4, depth=1, only=slots)
    net = h.nets[0]
    nf = len(h.slots[0].feature_names)
    w1 = np.zeros(net.layers[0].weight.shape)
    a = 2 * math.pi * hour / 24
    w1[0, nf + 0] = eps * math.sin(a)  # cos(p - a) = cos p cos a + sin p sin a
    w1[0, nf + 1] = eps * math.cos(a)
    w2 = np.zeros(net.layers[1].weight.shape)
    w2[0, 0] = amplitude / eps
    net = eqx.tree_at(lambda n: (n.layers[0].weight, n.layers[0].bias, n.layers[1].weight), net,
                      (jnp.asarray(w1), jnp.zeros(net.layers[0].bias.shape), jnp.asarray(w2)))
    return eqx.tree_at(lambda x: x.nets, h, (net,))


def test_modulating_slot_is_declared_with_checked_units(glucose):
    model, _ = glucose
    slots = {s.name: s for s in slots_of(model)}
    s = slots[SENS]
    assert s.modulates and not slots["glucose.glucose_flux"].modulates
    names = [(model.state_names[i], model.output_names[o], sign) for i, o, sign in s.rates]
    assert names == [("glucose.Gt", "glucose.insulin_uptake", -1.0), ("glucose.Gp", "glucose.insulin_suppression", -1.0)]
    with pytest.raises(WiringError, match="unknown residual slot"):
        slots_of(model, ["glucose.nope"])

    class Bad(Organ):
        name = "bad"
        states = (State("x", "mg", 1.0, "a mass"),)
        params = (Param("k", "1/min", 0.1, "rate", scope="patient"),)
        outputs = (Output("flow", "mg", "not a rate"),)
        residuals = (Residual("r", "x", 0.1, (), rates=(("x", "flow", -1.0),)),)

        def initial_state(self, p, u):
            return {"x": 1.0 + 0.0 * p["k"]}

        def rhs(self, t, x, p, u):
            return {"x": -p["k"] * x["x"]}, {"flow": x["x"]}

    with pytest.raises(WiringError, match="not in the unit of 'x' per minute"):
        slots_of(pt.compose([Bad]))


def test_untrained_modulating_hybrid_is_the_mechanism_and_a_planted_one_scales_both_rates(glucose):
    model, theta = glucose
    u = jnp.zeros(len(model.signal_names))
    y = model.initial_state(theta, u).at[model.state_names.index("glucose.X")].set(0.02)
    dm, outs = model.evaluate(0.0, y, theta, u)
    untrained = Hybrid.create(model, jax.random.PRNGKey(1), only=(SENS,))
    dh, _, r = untrained.evaluate(0.0, y, theta, u, 0.0)
    assert np.array_equal(np.asarray(dm), np.asarray(dh)) and float(r[0]) == 0.0
    planted = _planted(model, amplitude=0.5)
    for minute in (0.0, 360.0, 900.0):
        dh, _, r = planted.evaluate(jnp.asarray(minute), y, theta, u, 0.0)
        m = 0.3 * 0.5 * math.cos(2 * math.pi * (minute / 60 - 6) / 24)
        assert float(r[0]) == pytest.approx(m, abs=1e-6)
        gt, gp = model.state_names.index("glucose.Gt"), model.state_names.index("glucose.Gp")
        up = float(outs[model.output_names.index("glucose.insulin_uptake")])
        sup = float(outs[model.output_names.index("glucose.insulin_suppression")])
        assert up > 0 and sup > 0  # the comparison below can fail
        assert float(dh[gt] - dm[gt]) == pytest.approx(-float(r[0]) * up, rel=1e-12)
        assert float(dh[gp] - dm[gp]) == pytest.approx(-float(r[0]) * sup, rel=1e-12)
        others = [i for i in range(len(model.state_names)) if i not in (gt, gp)]
        assert np.array_equal(np.asarray(dh)[others], np.asarray(dm)[others])


def test_conditioning_vector_enters_every_net(glucose):
    model, theta = glucose
    h = Hybrid.create(model, jax.random.PRNGKey(2), conditioning=2, only=(SENS,))
    assert h.cond.shape == (2,) and h.spec()["conditioning"] == 2
    x = h.inputs(jnp.asarray(0.0), model.initial_state(theta, jnp.zeros(len(model.signal_names))),
                  jnp.zeros(len(model.output_names)), 0.0)[0]
    assert x.shape == (len(h.slots[0].feature_names) + 4 + 2,)
    c = h.with_conditioning([0.5, -1.0])
    assert np.array_equal(np.asarray(c.inputs(0.0, jnp.ones(len(model.state_names)),
                                              jnp.ones(len(model.output_names)), 0.0)[0][-2:]), [0.5, -1.0])


def test_explanation_recovers_a_planted_term(glucose):
    model, theta = glucose
    h = _planted(model, amplitude=0.5, hour=5.0)
    rng = np.random.default_rng(0)
    T = 3 * 288
    minute = np.arange(T) * 5.0
    y0 = np.asarray(model.initial_state(theta, jnp.zeros(len(model.signal_names))))
    ys = y0 * (1 + 0.2 * rng.standard_normal((T, y0.size)))  # features vary, the term ignores them
    outs = rng.standard_normal((T, len(model.output_names)))
    s = samples_along(h, minute, ys, outs, day0=0.0)
    truth = 0.15 * np.cos(2 * np.pi * (minute / 60 - 5) / 24)
    assert correlation(s.terms[:, 0], truth) > 0.999
    att = attribution(s).set_index("input")
    assert att.loc["time of day", "importance"] > 0.99 and att.loc["glucose.Gp", "importance"] < 1e-3
    prof = daily_profile(s)
    assert prof.loc[prof["mean"].idxmin(), "hour"] in (16, 17, 18)  # cos minimum 12 h after the 05:00 peak
    (fit,) = symbolic_fit(s)
    assert fit["r2"] > 0.999 and set(fit["terms"]) == {"sin(2πh/24)", "cos(2πh/24)"}, fit["equation"]
    a = 2 * np.pi * 5 / 24
    assert fit["terms"]["cos(2πh/24)"] == pytest.approx(0.15 * np.cos(a), rel=1e-3)
    assert fit["terms"]["sin(2πh/24)"] == pytest.approx(0.15 * np.sin(a), rel=1e-3)


def test_cli_refuses_bad_population_and_explain_arguments(tmp_path):
    from click.testing import CliRunner
    from helpers import DATA

    from physiotwin.cli import main

    def run(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    rec = DATA / "record_small.csv"
    res = run("calibrate-population", rec, rec, "--out", busy)
    assert res.exit_code == 1 and "not a population directory" in res.output and (busy / "keep.txt").exists()
    res = run("calibrate-population", rec, tmp_path / "missing.csv", "--out", tmp_path / "pop")
    assert res.exit_code != 0 and "missing.csv" in res.output and not (tmp_path / "pop").exists()
    res = run("explain", tmp_path / "nothing", "--out", tmp_path / "ex")
    assert res.exit_code == 1 and "not a twin directory" in res.output and not (tmp_path / "ex").exists()
    res = run("calibrate", rec, "--out", tmp_path / "tw", "--population", tmp_path / "nothing", "--quiet")
    assert res.exit_code == 1 and "not a population directory" in res.output and not (tmp_path / "tw").exists()
    res = run("calibrate", rec, "--out", tmp_path / "tw", "--slot", "glucose.nope", "--quiet")
    assert res.exit_code == 1 and "unknown residual slot" in res.output and not (tmp_path / "tw").exists()
