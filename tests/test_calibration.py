"""Calibration, the hybrid twin, forecasting and evaluation, as a user runs them.

One small twin is calibrated once per session through the CLI (2-day simglucose
fixture: 36 h to fit, the last 12 h to forecast) and shared by the tests; budgets are
small because the point here is behaviour, not accuracy (`benchmarks/forecast.py`
measures accuracy)."""

from __future__ import annotations

import json
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import DATA

import physiotwin as pt
from physiotwin.calibration.data import prepare_record, split_record, timeline_text
from physiotwin.calibration.fit import FitSettings, fit_record
from physiotwin.calibration.hybrid import Hybrid, TwinField
from physiotwin.calibration.problem import substeps
from physiotwin.calibration.space import CalibrationError, population_space
from physiotwin.calibration.twin import Twin
from physiotwin.errors import TwinError
from physiotwin.integrate import integrate
from physiotwin.plugins.observations import CGM
from physiotwin.cli import main
from physiotwin.registry import timeline_kinds
from physiotwin.timeline import Timeline, read_timeline

SPLIT = 36 * 60  # min


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def twin(twin_dir):
    return Twin.load(twin_dir)


# ------------------------------------------------------------------ the hybrid
def test_untrained_hybrid_is_the_mechanism_exactly():
    model = pt.compose(["glucose"])
    hybrid = Hybrid.create(model, jax.random.PRNGKey(3))
    assert [s.name for s in hybrid.slots] == ["glucose.glucose_flux", "glucose.insulin_sensitivity"]
    _, theta, _ = pt.patients.resolve_patients(model, "adult#002")
    theta = jnp.asarray(theta[0])
    tl = read_timeline(DATA / "reference_scenario.csv", kinds=timeline_kinds())
    rec = prepare_record(model, tl, (), (), "s", minutes=600, require_readings=False)
    y0 = model.initial_state(theta, rec.inputs.values[0])
    stepping = substeps(model)

    def run(h):
        field = TwinField(model, theta, h, jnp.asarray(0.0))
        return integrate(field, y0, rec.inputs, stepping, t0=jnp.asarray(0.0),
                         observe=lambda t, y, u: jnp.concatenate([y, field.evaluate(t, y, u)[2]]))

    y_mech, obs_mech = eqx.filter_jit(run)(None)
    y_hyb, obs_hyb = eqx.filter_jit(run)(hybrid)
    S = len(model.state_names)
    assert np.all(np.asarray(obs_hyb[:, S:]) == 0.0)  # the residual term is exactly zero ...
    # ... so the trajectories agree to round-off (the two programs are compiled separately,
    # and XLA may fuse the mechanism's arithmetic differently in each)
    diff = np.abs(np.asarray(obs_mech[:, :S]) - np.asarray(obs_hyb[:, :S]))
    assert np.max(diff / (1.0 + np.abs(np.asarray(obs_mech[:, :S])))) < 1e-12, diff.max()
    # and the hybrid's field is the mechanism's, bit for bit, at the same compiled point
    u = rec.inputs.values[100]
    y = obs_mech[100, :S]
    both = jax.jit(lambda y: (model.evaluate(0.0, y, theta, u)[0], hybrid.evaluate(0.0, y, theta, u, 0.0)[0]))
    dm, dh = both(y)
    assert np.array_equal(np.asarray(dm), np.asarray(dh))
    # ... and a trained-looking net does change the dynamics (the comparison can fail)
    poked = jax.tree_util.tree_map(lambda a: a + 0.1 if eqx_is_array(a) else a, hybrid)
    _, obs_poked = eqx.filter_jit(run)(poked)
    assert not np.allclose(np.asarray(obs_poked[:, 3]), np.asarray(obs_mech[:, 3]))


def eqx_is_array(a):
    import equinox as eqx

    return eqx.is_inexact_array(a)


# ------------------------------------------------------------------ recovery
@pytest.mark.slow
def test_calibration_recovers_known_parameters():
    """Data simulated (adaptive solver) from adult#001 with accurate meals and 2 mg/dL white
    noise; the two insulin sensitivities start at the adult population mean (Vmx 46 % and
    kp3 31 % off) and are recovered."""
    model = pt.compose(["glucose"])
    meals = [(h * 60 + d * 1440, g) for d in range(2) for h, g in ((7, 45), (12.5, 70), (19, 60))]
    rows = [(0.0, "basal", 1.2675, "U/h")] + [(t, "carbs", g, "g") for t, g in meals] + \
           [(t, "bolus", round(g / 9.0, 1), "U") for t, g in meals]
    frame = __import__("pandas").DataFrame(rows, columns=["time", "kind", "value", "unit"])
    days = 2
    ds = pt.simulate(["glucose"], "adult#001", frame, days=days, every=5)
    rng = np.random.default_rng(0)
    sg = ds["glucose.subcutaneous_glucose"].values.ravel()
    t = ds["time"].values.astype(float)
    cgm = __import__("pandas").DataFrame({"time": t[1:], "kind": "cgm", "value": sg[1:] + rng.normal(0, 2, len(t) - 1),
                                          "unit": "mg/dL"})
    from physiotwin.timeline import timeline_from_frame

    tl = timeline_from_frame(__import__("pandas").concat([frame, cgm]), timeline_kinds(), source="synthetic")
    fit = ["glucose.Vmx", "glucose.kp3"]
    space = population_space(model, fit)
    obs = [CGM(noise="gaussian")]
    rec = prepare_record(model, tl, obs, (), "synthetic")
    true = dict(zip(model.param_names, pt.patients.resolve_patients(model, "adult#001")[1][0]))
    # the rest of the parameters at adult#001's values: only the two sensitivities are unknown
    import dataclasses

    space = dataclasses.replace(space, base=np.array([true[n] for n in model.param_names]))
    start = np.asarray(space.theta(jnp.asarray(space.mu)))[space.index]
    res, _ = fit_record(model, rec, obs, space, FitSettings(steps=200, starts=1, progress=False), hybrid=False)
    got = np.asarray(space.theta(jnp.asarray(res.z)))[space.index]
    want = np.array([true[n] for n in fit])
    assert np.all(np.abs(start / want - 1) > 0.25)  # the start is far off
    assert np.all(np.abs(got / want - 1) < 0.05), (got, want)


# ------------------------------------------------------------------ save / load
@pytest.mark.slow
def test_twin_saves_and_reloads_bit_identically(twin, twin_dir, tmp_path, record_parts):
    assert twin.hybrid is not None
    again = tmp_path / "copy"
    twin.save(again)
    back = Twin.load(again)
    for name in ("z", "z_mech", "errors", "errors_mech", "init", "end_state"):
        assert np.array_equal(getattr(back.result, name), getattr(twin.result, name)), name
    assert back.result.corrections.keys() == twin.result.corrections.keys() == {"meal_size"}
    assert all(np.array_equal(back.result.corrections[k], v) for k, v in twin.result.corrections.items())
    leaves = jax.tree_util.tree_leaves(twin.hybrid)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(leaves, jax.tree_util.tree_leaves(back.hybrid)))
    assert back.filters == twin.filters and back.space.names == twin.space.names
    a = twin.forecast(record_parts[1], [30])
    b = back.forecast(record_parts[1], [30])
    assert np.array_equal(a["cgm"].values, b["cgm"].values)


@pytest.mark.slow
def test_twin_json_is_readable(twin_dir):
    meta = json.loads((twin_dir / "twin.json").read_text())
    assert meta["organs"] == ["glucose"]
    assert set(meta["parameters"]) == {"population", "mechanistic", "twin"}
    assert "glucose.Vmx" in meta["parameters"]["twin"]
    assert meta["diagnostics"]["validation_readings"]["cgm"] > 0 and meta["history"]
    assert [o["kind"] for o in meta["observations"]] == ["cgm"]
    assert len(meta["corrections"]["meal_size"]) == len(Twin.load(twin_dir).training_timeline().select("carbs"))
    table = meta["diagnostics"]["identifiability"]
    assert {r["parameter"] for r in table} == set(meta["parameters"]["twin"])
    assert all(r["verdict"] in ("identified", "weakly identified", "left at prior", "not informed") for r in table)


# ------------------------------------------------------------------ forecasting
@pytest.mark.slow
def test_forecast_uses_no_future_information(twin, record_parts):
    """Changing everything after an origin (readings, a new meal, a bolus) leaves the forecasts
    made at or before it unchanged, and changes later ones."""
    tl = read_timeline(record_parts[1], kinds=timeline_kinds())
    o = 360.0
    later = tl.time > o
    value = np.where(later & (tl.kind == "cgm"), tl.value + 60.0, tl.value)
    extra_t, extra_k, extra_v = np.array([o + 10, o + 12]), np.array(["carbs", "bolus"], dtype=object), np.array([80., 6.])
    changed = Timeline(np.concatenate([tl.time, extra_t]), np.concatenate([tl.kind, extra_k]),
                       np.concatenate([value, extra_v]), np.concatenate([tl.duration, [np.nan, np.nan]]),
                       np.concatenate([tl.row, [0, 0]]), source="changed", start=tl.start, kinds=tl.kinds)
    order = np.argsort(changed.time, kind="stable")
    changed = Timeline(changed.time[order], changed.kind[order], changed.value[order], changed.duration[order],
                       changed.row[order], source="changed", start=tl.start, kinds=tl.kinds)
    a = twin.forecast(tl, [30, 60])
    b = twin.forecast(changed, [30, 60])
    before = a["origin"].values <= o
    for var in ("cgm", "sensor_glucose", "plasma_glucose"):
        assert np.array_equal(a[var].values[before], b[var].values[before]), var
        assert not np.allclose(a[var].values[~before], b[var].values[~before]), var


@pytest.mark.slow
def test_forecast_cli_writes_the_contract(twin_dir, record_parts, tmp_path):
    out = tmp_path / "fc.nc"
    png = tmp_path / "fc.png"
    res = _invoke("forecast", twin_dir, record_parts[1], "--horizon", 30, "--horizon", 60, "--every", 5, "--out", out,
                  "--plot", png)
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    import xarray as xr

    from physiotwin.calibration.data import readings_on_grid
    from physiotwin.timeline import read_timeline

    ds = xr.open_dataset(out)
    grid = readings_on_grid(read_timeline(record_parts[1]), "cgm", 10 ** 5)  # the readings each forecast is scored on
    at = ds["origin"].values.astype(int)[:, None] + np.array([30, 60]) - 1
    assert np.array_equal(ds["cgm_observed"].values, grid[at], equal_nan=True)
    assert np.isfinite(ds["cgm_observed"].values).mean() > 0.5
    assert ds["cgm"].dims == ("origin", "horizon") and list(ds["horizon"].values) == [30, 60]
    assert ds["cgm"].attrs["units"] == "mg/dL" and "plasma_glucose" in ds
    assert np.all(np.diff(ds["origin"].values) == 5)
    assert np.isfinite(ds["cgm"].values).all()
    g = ds["cgm"].values
    assert 30 < np.nanmin(g) and np.nanmax(g) < 450


@pytest.mark.slow
def test_evaluate_cli_reports_models_beside_baselines(twin_dir, record_parts, tmp_path):
    out = tmp_path / "table.csv"
    png = tmp_path / "scores.png"
    res = _invoke("evaluate", twin_dir, record_parts[1], "--out", out, "--plot", png)
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    import pandas as pd

    table = pd.read_csv(out)
    assert set(table["model"]) == {"persistence", "linear_ar", "population", "mechanistic", "twin"}
    assert set(table["kind"]) == {"cgm"}
    assert set(table["horizon"]) == {30, 60}
    p = table[table.model == "persistence"]
    assert np.allclose(p["rmse_vs_persistence"], 1.0)
    assert table["rmse"].notna().all() and (table["zone_a"] <= 100).all()
    assert "rmse_true" in table  # the fixture is simulated: noise-free sensor glucose is known
    assert "TIR" in res.output


# ------------------------------------------------------------------ bad input
def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, fragment", [
    ("time,kind,value,unit,duration\n", "empty"),
    ("time,kind,value,unit,duration\n0,basal,1,U/h,\n30,carbs,40,g,\n", "no readings of an observation kind"),
    ("time,kind,value,unit,duration\n0,basal,1,U/h,\n" + "".join(f"{5 * k},cgm,120,mg/dL,\n" for k in range(1, 12))
     + "900,carbs,10,g,\n", "fewer than"),
])
def test_calibrate_refuses_unusable_records(tmp_path, text, fragment):
    rec = _write(tmp_path / "rec.csv", text)
    out = tmp_path / "twin"
    res = _invoke("calibrate", rec, "--out", out, "--quiet")
    assert res.exit_code == 1
    assert fragment in res.output and "rec.csv" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not out.exists()


def test_calibrate_refuses_nan_readings(tmp_path):
    rec = _write(tmp_path / "nan.csv", "time,kind,value,unit,duration\n5,cgm,nan,mg/dL,\n10,cgm,nan,mg/dL,\n")
    res = _invoke("calibrate", rec, "--out", tmp_path / "twin", "--quiet")
    assert res.exit_code == 1 and "nan.csv" in res.output and "row 2" in res.output
    assert not (tmp_path / "twin").exists()


@pytest.mark.slow
def test_corrupted_or_foreign_twins_are_refused(twin_dir, record_parts, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(twin_dir, bad)
    data = bytearray((bad / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "arrays.npz").write_bytes(bytes(data))
    out = tmp_path / "fc.nc"
    res = _invoke("forecast", bad, record_parts[1], "--out", out)
    assert res.exit_code == 1 and "arrays.npz" in res.output and "corrupted" in res.output
    assert not out.exists()

    foreign = tmp_path / "foreign"
    shutil.copytree(twin_dir, foreign)
    meta = json.loads((foreign / "twin.json").read_text())
    meta["organs"] = ["bergman"]
    (foreign / "twin.json").write_text(json.dumps(meta))
    res = _invoke("evaluate", foreign, record_parts[1])
    assert res.exit_code == 1 and "twin.json" in res.output and "bergman" in res.output

    meta = json.loads((twin_dir / "twin.json").read_text())
    meta["hybrid"]["width"] = 8  # networks.eqx no longer matches the declared structure
    (foreign / "twin.json").write_text(json.dumps(meta))
    res = _invoke("forecast", foreign, record_parts[1], "--out", out)
    assert res.exit_code == 1 and "cannot be read as a twin" in res.output and "Traceback" not in res.output

    (foreign / "twin.json").write_text("{not json")
    res = _invoke("forecast", foreign, record_parts[1], "--out", out)
    assert res.exit_code == 1 and "corrupted" in res.output

    edited = tmp_path / "edited"  # hand edits to the readable parameters are refused, not ignored
    shutil.copytree(twin_dir, edited)
    meta = json.loads((edited / "twin.json").read_text())
    name = sorted(meta["parameters"]["twin"])[0]
    meta["parameters"]["twin"][name] *= 1.5
    (edited / "twin.json").write_text(json.dumps(meta))
    res = _invoke("forecast", edited, record_parts[1], "--out", out)
    assert res.exit_code == 1 and f"were edited ({name} = " in res.output and not out.exists()

    res = _invoke("forecast", tmp_path / "nothing", record_parts[1], "--out", out)
    assert res.exit_code == 1 and "not a twin directory" in res.output
    with pytest.raises(TwinError):
        Twin.load(tmp_path / "nothing")


def test_calibration_options_are_checked():
    with pytest.raises(CalibrationError):
        FitSettings(optimizer="sgd")
    model = pt.compose(["glucose"])
    with pytest.raises(CalibrationError, match="no such parameter"):
        population_space(model, ["glucose.nope"])


def test_calibrate_many_resumes_and_reports_failures_per_record(record_parts, twin_dir, tmp_path):
    """`calibrate-many` with the session twin's settings (in this process: the compiled programs
    are shared): a good record gives the same twin as `calibrate`, a broken one is reported in the
    table without stopping the others, and a rerun keeps the twins already written."""
    import shutil

    import pandas as pd
    from click.testing import CliRunner

    from physiotwin.cli import main

    recs = tmp_path / "records"
    recs.mkdir()
    shutil.copy(record_parts[0], recs / "patient_a.csv")
    (recs / "patient_b.csv").write_text("time,kind,value,unit\n0,carbs,40,g\n")  # no readings to fit
    args = ["calibrate-many", str(recs), "--out", str(tmp_path / "twins"), "--steps", "25", "--hybrid-steps", "20",
            "--seed", "0", "--workers", "0"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 3, res.output
    assert "patient_b.csv: " in res.output and "no readings" in res.output
    table = pd.read_csv(tmp_path / "twins" / "calibrations.csv")
    assert list(table["status"]) == ["ok", "failed"]
    mine, ref = pt.Twin.load(tmp_path / "twins" / "patient_a"), pt.Twin.load(twin_dir)
    np.testing.assert_allclose(mine.theta(), ref.theta(), rtol=1e-9)
    res = CliRunner().invoke(main, args)
    table = pd.read_csv(tmp_path / "twins" / "calibrations.csv")
    assert list(table["status"]) == ["done before", "failed"] and res.exit_code == 3


def test_public_api_is_listed_and_float32_is_refused(twin_dir):
    """`dir(physiotwin)` lists the lazily loaded calibration API; a twin used without
    float64 is refused (as `simulate` refuses), not run silently in float32."""
    import subprocess
    import sys

    code = ("import physiotwin\n"
            "assert {'calibrate', 'Twin', 'evaluate'} <= set(dir(physiotwin)), dir(physiotwin)\n"
            "from physiotwin.errors import SimulationError\n"
            f"try:\n    physiotwin.Twin.load({str(twin_dir)!r})\nexcept SimulationError as e:\n    print(e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "physiotwin needs float64" in res.stdout
