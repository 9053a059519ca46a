"""Records with several observation kinds, as a user runs them through the CLI: what is
refused (one line naming the problem, exit status 1, no output) and honest failure."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

import physiotwin as pt
from physiotwin.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _record(tmp_path, extra: str = "", days: int = 2, name: str = "rec.csv"):
    """A small record: a pressure and heart-rate reading every 4 h, a creatinine each day."""
    rows = ["time,kind,value,unit,duration", "0,sodium_intake,150,mmol/day,"]
    for k in range(days * 6):
        t = 240 * k + 30
        rows += [f"{t},map,{95 + 3 * np.sin(k):.1f},mmHg,", f"{t},heart_rate,{70 + np.cos(k):.1f},1/min,"]
    rows += [f"{1440 * d + 600},creatinine,0.9,mg/dL," for d in range(days)]
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n" + extra)
    return path


def _refused(res, out, *fragments):
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    for f in fragments:
        assert f in res.output, res.output
    assert not out.exists()


def test_an_observation_whose_organ_is_not_composed_is_refused(tmp_path):
    rec, out = _record(tmp_path), tmp_path / "twin"
    _refused(_invoke("calibrate", rec, "--organ", "glucose", "--out", out, "--quiet"), out,
             "rec.csv", "'map' readings", "output 'MAP'", "(glucose)", "provided by: cardiovascular",
             "--ignore-kind map")


def test_a_kind_no_observation_model_explains_is_refused_unless_ignored(tmp_path, monkeypatch):
    from physiotwin import registry

    models = {k: v for k, v in registry.observation_models().items() if k != "heart_rate"}
    monkeypatch.setattr(registry, "observation_models", lambda: models)
    rec, out = _record(tmp_path), tmp_path / "twin"
    _refused(_invoke("calibrate", rec, "--organ", "cardiovascular", "--organ", "renal", "--out", out, "--quiet"),
             out, "rec.csv", "no installed observation model explains 'heart_rate'", "--ignore-kind heart_rate")


def test_observations_that_inform_no_fitted_parameter_are_refused(tmp_path):
    # the maximal heart rate acts only during exercise, which this record never has
    rec, out = _record(tmp_path), tmp_path / "twin"
    res = _invoke("calibrate", rec, "--organ", "cardiovascular", "--fit", "cardiovascular.HRmax",
                  "--ignore-kind", "creatinine", "--out", out, "--quiet")
    _refused(res, out, "rec.csv", "inform none of the fitted parameters (cardiovascular.HRmax)")


@pytest.mark.parametrize("row, fragment", [
    ("300,map,0,mmHg,", "value 0 mmHg below minimum 20 mmHg for 'map'"),
    ("300,map,400,mmHg,", "value 400 mmHg above maximum 250 mmHg for 'map'"),
    ("300,creatinine,-0.5,mg/dL,", "negative amount -0.5 mg/dL for 'creatinine'"),
    ("300,map,95,g,", "unit 'g' is not convertible to 'mmHg' required by 'map'"),
])
def test_implausible_readings_and_wrong_units_are_refused(tmp_path, row, fragment):
    rec, out = _record(tmp_path, row + "\n"), tmp_path / "twin"
    _refused(_invoke("calibrate", rec, "--organ", "cardiovascular", "--organ", "renal", "--out", out, "--quiet"),
             out, "rec.csv", fragment, "field")


def test_default_organs_come_from_the_record_kinds():
    from physiotwin.calibration.twin import default_organs

    assert default_organs(["cgm"]) == ["glucose"]
    assert default_organs(["map", "creatinine", "cgm"]) == ["cardiovascular", "renal", "glucose"]


def test_a_fit_that_diverges_is_an_error(tmp_path):
    """An organ whose output turns NaN: every start's loss is NaN, which must not pass as a fit."""
    from physiotwin.calibration.data import prepare_record
    from physiotwin.calibration.fit import fit_record
    from physiotwin.calibration.settings import FitSettings
    from physiotwin.calibration.space import population_space
    from physiotwin.plugins.observations import MAP

    class Broken(pt.Organ):
        name = "cardiovascular"
        states = (pt.State("P", "mmHg", "pressure", scale=100.0),)
        params = (pt.Param("k", "1/min", 0.1, "rate", lower=0.0, transform="log"),)
        outputs = (pt.Output("MAP", "mmHg", "pressure"),)

        def initial_state(self, p, u):
            return {"P": 90.0 + 0.0 * p["k"]}

        def rhs(self, t, x, p, u):
            return {"P": -p["k"] * (x["P"] - 90.0)}, {"MAP": jnp.sqrt(p["k"] - 1.0) * x["P"]}  # NaN for k < 1

    model = pt.compose([Broken()])
    tl = pt.read_timeline(_record(tmp_path))
    rec = prepare_record(model, tl, [MAP()], (), "rec.csv")
    with pytest.raises(pt.CalibrationError, match="the fit failed: at every one of the 2 starts"):
        fit_record(model, rec, [MAP()], population_space(model), FitSettings(steps=5, progress=False),
                   hybrid=False)


@pytest.mark.slow
def test_evaluate_with_nothing_to_score_exits_non_zero(tmp_path, twin_dir):
    rec = tmp_path / "nothing.csv"
    rec.write_text("time,kind,value,unit\n0,basal,1,U/h\n60,carbs,40,g\n")
    res = _invoke("evaluate", twin_dir, rec)
    assert res.exit_code == 1 and "nothing to score" in res.output and "nothing.csv" in res.output


def test_cardiovascular_and_renal_residual_slots_start_at_the_mechanism():
    """The new slots resolve in the three-organ composition, and an untrained hybrid's vector
    field is the mechanism's, bit for bit; a trained-looking net changes it."""
    import equinox as eqx
    import jax

    from physiotwin.calibration.hybrid import Hybrid
    from physiotwin.signals import compile_signals
    from physiotwin.timeline import Timeline

    model = pt.compose(["glucose", "cardiovascular", "renal"])
    hybrid = Hybrid.create(model, jax.random.PRNGKey(0))
    assert [s.name for s in hybrid.slots] == ["glucose.glucose_flux", "glucose.insulin_sensitivity",
                                              "cardiovascular.vascular_tone", "renal.sodium_handling"]
    theta = jnp.asarray(list(model.nominal_params().values()))
    u = jnp.asarray(compile_signals(Timeline.empty(), model.signal_names, 1.0)[1][0])
    y = model.initial_state(theta, u)
    both = eqx.filter_jit(lambda h: (model.evaluate(0.0, y, theta, u)[0], h.evaluate(0.0, y, theta, u, 0.0)[0]))
    dm, dh = both(hybrid)
    assert np.array_equal(np.asarray(dm), np.asarray(dh))
    poked = jax.tree_util.tree_map(lambda a: a + 0.1 if eqx.is_inexact_array(a) else a, hybrid)
    dm, dp = both(poked)
    changed = {model.state_names[i] for i in np.flatnonzero(np.asarray(dm) != np.asarray(dp))}
    assert changed == {"glucose.Gp", "cardiovascular.xR", "renal.Na"}


def test_patient_tables_take_qualified_columns(tmp_path):
    table = pt.bundled_patients().loc[["adult#001"]].drop(columns=["source"]).reset_index()
    table["renal.nephrons"] = 1e6
    table["cardiovascular.HR0"] = 80.0
    sim = pt.Simulator(["cardiovascular", "renal"], None, hours=1, every=60)
    p = sim.parameters(table)
    assert float(p["renal.nephrons"]) == 1e6 and float(p["cardiovascular.HR0"]) == 80.0
    with pytest.raises(pt.PatientError, match=r"columns '(renal\.)?nephrons' and '(renal\.)?nephrons' both set renal\.nephrons"):
        sim.parameters(table.assign(nephrons=1.5e6))
    with pytest.raises(pt.PatientError, match="column 'renal.nephron' is not a parameter"):
        sim.parameters(table.assign(**{"renal.nephron": 1.0}))
