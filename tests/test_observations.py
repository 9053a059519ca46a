"""Observation models and observation kinds: the built-in models' likelihoods and filter
errors, units and plausibility of the new kinds, and the plugin path for domain pieces
(metrics, corrections, units) reached through hooks."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

import physiotwin as pt
from physiotwin.registry import corrections, forecast_metrics, observation_models, series_metrics, timeline_kinds


def _frame_error(rows: str):
    import io

    import pandas as pd

    frame = pd.read_csv(io.StringIO("time,kind,value,unit\n" + rows))
    with pytest.raises(pt.TimelineError) as err:
        pt.timeline.timeline_from_frame(frame, source="rec.csv")
    return str(err.value)


def test_builtin_observation_models_explain_their_kinds():
    models = observation_models()
    assert set(models) == {"cgm", "bg", "map", "heart_rate", "creatinine"}
    kinds = timeline_kinds()
    for name, cls in models.items():
        assert cls.kind == name and kinds[name].fitted
        assert pt.units.parse_unit(cls.unit) == pt.units.parse_unit(kinds[name].unit)
        assert cls.params and all(p.lower < p.value < p.upper for p in cls.params)
        assert cls.default_organs
    model = pt.compose(["glucose", "cardiovascular", "renal"])
    outs = {name: cls().output_name(model) for name, cls in models.items()}
    assert outs == {"cgm": "glucose.subcutaneous_glucose", "bg": "glucose.plasma_glucose",
                    "map": "cardiovascular.MAP", "heart_rate": "cardiovascular.HR",
                    "creatinine": "renal.serum_creatinine"}
    with pytest.raises(pt.ObservationError, match=r"'map' readings are explained by output 'MAP'.*none"):
        models["map"]().output_name(pt.compose(["glucose"]))


def test_gaussian_likelihood_skips_gaps_and_matches_the_formula():
    om = observation_models()["map"]()
    pred = jnp.array([100.0, 102.0, 104.0, 106.0])
    obs = jnp.array([101.0, jnp.nan, 110.0, 100.0])
    mask = jnp.isfinite(obs)
    sigma = 5.0
    got = float(om.nll(pred, jnp.where(mask, obs, 0.0), mask, jnp.zeros(4, int), jnp.full(4, jnp.inf),
                       {"sigma": jnp.asarray(sigma)}))
    e = np.array([1.0, 6.0, -6.0])
    want = float(np.sum(0.5 * (e / sigma) ** 2 + math.log(sigma) + 0.5 * math.log(2 * math.pi)))
    assert got == pytest.approx(want, rel=1e-12)
    fn = om.filter_noise({"sigma": jnp.asarray(sigma)})
    assert float(fn.rho) == 0.0 and float(fn.error_var) == 0.0 and float(fn.reading_var) == sigma ** 2
    assert float(om.forecast_correction(jnp.asarray(3.0), jnp.asarray(30.0), {"sigma": sigma})) == 0.0


def test_cgm_error_is_ar1_over_gaps():
    om = observation_models()["cgm"]()
    p = {"sigma": jnp.asarray(8.0), "phi": jnp.asarray(0.8)}
    fn = om.filter_noise(p)
    assert float(fn.rho) == pytest.approx(0.8 ** 0.2) and float(fn.error_var) == 64.0
    # the expected reading error decays with the sensor's correlation: 0.8 per 5 min
    assert float(om.forecast_correction(jnp.asarray(10.0), jnp.asarray(10.0), p)) == pytest.approx(6.4)
    # a long gap makes the next error nearly independent of the last
    pred = jnp.zeros(3)
    obs = jnp.array([5.0, 5.0, 5.0])
    mask = jnp.ones(3, bool)
    near = float(om.nll(pred, obs, mask, jnp.array([0, 0, 1]), jnp.array([jnp.inf, 5.0, 5.0]), p))
    far = float(om.nll(pred, obs, mask, jnp.array([0, 0, 1]), jnp.array([jnp.inf, 500.0, 500.0]), p))
    assert near < far  # correlated errors of equal size are likelier than independent ones


def test_new_kinds_convert_units_and_refuse_implausible_values():
    tl = pt.timeline.timeline_from_frame(__import__("pandas").DataFrame({
        "time": [0, 10, 20, 30], "kind": ["creatinine", "map", "heart_rate", "bg"],
        "value": [88.40, 13.3322, 72, 5.5], "unit": ["umol/L", "kPa", "bpm", "mmol/L"]}))
    np.testing.assert_allclose(tl.value, [1.0, 100.0, 72.0, 99.08], rtol=2e-4)
    assert "value 0 mmHg below minimum 20 mmHg for 'map'" in _frame_error("0,map,0,mmHg\n")
    assert "above maximum 250 mmHg for 'map'" in _frame_error("0,map,400,mmHg\n")
    assert "row 1, field 'value'" in _frame_error("0,creatinine,-1,mg/dL\n")
    assert "not convertible to 'mmHg'" in _frame_error("0,map,90,g\n")


def test_domain_pieces_come_through_hooks():
    assert {"meal_size", "sodium_intake"} <= set(corrections())
    assert [m.name for m in forecast_metrics("cgm")] == ["clarke_zone_a", "hypoglycaemia", "hypo_alert"]
    assert forecast_metrics("map") == [] and [m.name for m in series_metrics("bg")] == ["consensus"]
    assert pt.units.conversion("mmol/L", "mg/dL", "glucose")[0] == pytest.approx(18.0156)
    from physiotwin.registry import demos, patient_tables, validation_studies

    assert "glucose" in demos() and "uva_padova" in patient_tables() and "cardiorenal" in validation_studies()


def test_a_misspelled_hook_is_refused(monkeypatch):
    """check_pending: a plugin implementing a hook that does not exist fails loudly."""
    import types

    import pluggy

    from physiotwin import plugins
    from physiotwin.hooks import plugin_manager

    bad = types.ModuleType("bad_plugin")
    bad.register_organ = plugins.hookimpl(lambda register: None)  # the hook is register_organs
    pm = pluggy.PluginManager(plugins.PROJECT)
    pm.add_hookspecs(plugins)
    pm.register(bad)
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'register_organ'"):
        pm.check_pending()
    assert plugin_manager().check_pending() is None  # the installed plugins are fine


def test_the_filter_update_is_robust_to_readings_it_cannot_explain():
    """A reading far outside its predicted spread moves the state at most MAX_MOVE of each
    state's typical size, the innovation is clipped at GATE SDs, and the covariance stays
    symmetric positive definite; an ordinary reading gets the plain Kalman update."""
    from physiotwin.calibration.filter import GATE, MAX_MOVE, kalman_update

    S = 2
    x = jnp.asarray([100.0, 1.0, 0.0])  # two model states, one reading-error state
    P = jnp.diag(jnp.asarray([400.0, 0.25, 4.0]))
    Hy = jnp.asarray([[1.0, 0.0]])
    scale = jnp.asarray([100.0, 1.0])
    outs = jnp.asarray([100.0])
    r = 4.0
    x1, P1, _ = kalman_update(x, P, x[:S], outs, Hy, jnp.asarray(103.0), r, S, 0, scale)
    s = 400.0 + 4.0 + r
    assert float(x1[0]) == pytest.approx(100.0 + 400.0 / s * 3.0, rel=1e-12)  # plain update
    x2, P2, _ = kalman_update(x, P, x[:S], outs, Hy, jnp.asarray(1e4), r, S, 0, scale)
    moved = np.abs(np.asarray(x2[:S] - x[:S])) / np.asarray(scale)
    assert moved.max() <= MAX_MOVE + 1e-12 and moved.max() > 0
    assert float(x2[0] - x[0]) <= GATE * math.sqrt(s) * 400.0 / s + 1e-9
    for Pn in (P1, P2):
        assert np.allclose(Pn, Pn.T) and np.all(np.linalg.eigvalsh(np.asarray(Pn)) > 0)
    x3, P3, nll = kalman_update(x, P, x[:S], outs, Hy, jnp.asarray(np.nan), r, S, 0, scale)
    assert np.array_equal(x3, x) and np.array_equal(P3, P) and float(nll) == 0.0
