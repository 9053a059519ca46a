"""Hybrids that learn: recovery of a planted modulation, records a population refuses, and
`explain`, as a user runs them (slow: it calibrates). The population fit itself (the
shared networks reused bit for bit by a new patient, the checksum) is checked by
notebooks/06-hybrid-learns.ipynb, which runs in the suite: one population fit serves both.

The data of the recovery test come from physiotwin's own glucose organ with a planted
time-of-day insulin-sensitivity modulation (the truth); the twin is calibrated on its
CGM alone and must find the modulation again."""

from __future__ import annotations

import json
import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import DATA
from test_hybrid_learns import SENS, _planted

import physiotwin as pt
from physiotwin.calibration.data import prepare_record
from physiotwin.calibration.explain import correlation, fitted_samples, time_of_day_term
from physiotwin.calibration.hybrid import TwinField
from physiotwin.calibration.population import calibrate_population
from physiotwin.calibration.problem import substeps
from physiotwin.calibration.twin import Twin, calibrate
from physiotwin.cli import main
from physiotwin.integrate import integrate
from physiotwin.registry import timeline_kinds
from physiotwin.timeline import read_timeline

pytestmark = pytest.mark.slow
DAYS = 2


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _planted_record(path, patient: str, amplitude: float, hour: float, seed: int, days: int = DAYS):
    """CGM of ``patient`` under the inputs of tests/data/record_small.csv, simulated with a planted
    modulation of insulin sensitivity ``0.3 * amplitude * cos(2 pi (h - hour) / 24)``, plus noise."""
    model = pt.compose(["glucose"])
    _, theta, _ = pt.patients.resolve_patients(model, patient)
    theta = jnp.asarray(theta[0])
    src = read_timeline(DATA / "record_small.csv", kinds=timeline_kinds())
    minutes = days * 1440
    rec = prepare_record(model, src, (), (), "s", minutes=minutes, require_readings=False)
    h = _planted(model, amplitude=amplitude, hour=hour)
    field = TwinField(model, theta, h, jnp.asarray(0.0))
    y0 = model.initial_state(theta, rec.inputs.values[0])
    gs = model.output_names.index("glucose.subcutaneous_glucose")
    _, obs = eqx.filter_jit(lambda f: integrate(f, y0, rec.inputs, substeps(model), t0=jnp.asarray(0.0),
                                                observe=lambda t, y, u: f.outputs(t, y, u)[gs:gs + 1]))(field)
    g = np.asarray(obs)[:, 0]
    rng = np.random.default_rng(seed)
    frame = src.to_frame()
    inputs = frame[frame.kind.isin(["basal", "bolus", "carbs_true"]) & (frame.time < minutes)].copy()
    inputs.loc[inputs.kind == "carbs_true", "kind"] = "carbs"
    t = np.arange(4, minutes, 5)  # the reading at the end of every 5th minute
    cgm = pd.DataFrame({"time": t + 1, "kind": "cgm", "value": g[t] + 2.0 * rng.standard_normal(t.size),
                        "unit": "mg/dL", "duration": np.nan})
    cgm = cgm[cgm.time < minutes]
    out = pd.concat([inputs[["time", "kind", "value", "unit", "duration"]], cgm]).sort_values("time", kind="stable")
    path.write_text(f"# start: {src.start.isoformat()}\n" + out.to_csv(index=False))
    return path


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    d = tmp_path_factory.mktemp("planted")
    return [_planted_record(d / f"p{i}.csv", p, 1.0, hour, i)
            for i, (p, hour) in enumerate([("adult#001", 6.0), ("adult#004", 4.0), ("adult#007", 7.0)])]


@pytest.fixture(scope="module")
def planted_twin(records, tmp_path_factory):
    twin = calibrate(records[0], ["glucose"], starts=1, slots=(SENS,), hybrid_steps=200, progress=False)
    return twin.save(tmp_path_factory.mktemp("tw") / "tw")


def test_a_hybrid_recovers_a_planted_modulation(planted_twin):
    twin = Twin.load(planted_twin)
    s = fitted_samples(twin)
    truth = 0.3 * np.cos(2 * np.pi * (s.hour - 6.0) / 24)
    # the learned daily profile (features at their mean) follows the planted one; the term
    # along the trajectory, which also varies with glucose, less closely
    daily = correlation(time_of_day_term(s, 0), truth)
    assert daily > 0.8, daily
    assert correlation(s.terms[:, 0], truth) > 0.5
    # and it forecasts its own record's held-out part better than the mechanism does
    d = twin.result.diagnostics
    assert d["validation_score"] < d["mechanistic_validation_score"]


def test_population_refuses_records_that_cannot_be_stacked(records, tmp_path):
    short = _planted_record(tmp_path / "short.csv", "adult#002", 0.8, 6.0, 5, days=1)
    with pytest.raises(pt.errors.CalibrationError, match="same length and kinds"):
        calibrate_population([records[0], short], tmp_path / "pop", ["glucose"], network_steps=2, workers=1,
                             slots=(SENS,), progress=False)
    assert not (tmp_path / "pop").exists()


def test_explain_writes_attribution_profile_and_equation(planted_twin, tmp_path):
    res = _invoke("explain", planted_twin, "--out", tmp_path / "ex")
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "ex").iterdir()} == {"attribution.csv", "profile.csv", "symbolic.json",
                                                             "explain.png"}
    att = pd.read_csv(tmp_path / "ex" / "attribution.csv")
    assert set(att.input) == {"glucose.Gp", "time of day"} and att.importance.notna().all()
    sym = json.loads((tmp_path / "ex" / "symbolic.json").read_text())["slots"][0]
    assert sym["slot"] == SENS and sym["equation"].startswith(SENS) and 0 <= sym["r2"] <= 1
    assert "R²" in res.output and math.isfinite(sym["rmse"])
    # the planted daily profile is what the equation is made of
    assert any("cos(2πh/24)" in t or "sin(2πh/24)" in t for t in sym["terms"])
