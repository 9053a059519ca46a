"""What-if replays of a calibrated twin, their bands, and the simglucose counterfactual
they are judged against (`benchmarks/whatif.py` measures accuracy on 7-day records)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

from physiotwin.calibration.data import readings_on_grid, timeline_text
from physiotwin.calibration.twin import Twin
from physiotwin.cli import main
from physiotwin.errors import CalibrationError
from physiotwin.plugins.therapy import change_therapy, read_table, write_table
from physiotwin.timeline import read_timeline


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def twin(twin_dir):
    return Twin.load(twin_dir)


@pytest.fixture(scope="module")
def changed(twin_dir, tmp_path_factory):
    """The twin's record with every bolus x 1.25 and the night basal x 0.8."""
    df, start = read_table(twin_dir / "record.csv")
    path = tmp_path_factory.mktemp("whatif") / "new.csv"
    write_table(change_therapy(df, start, bolus=1.25, night_basal=0.8), path, start)
    return path


def test_replay_of_the_unchanged_record_is_the_fitted_trajectory(twin):
    rec = twin.training_timeline()
    ds = twin.whatif(rec, every=1)
    d = twin.result.diagnostics
    W, L = d["windows"], d["window_minutes"]
    obs = readings_on_grid(rec, "cgm", ds.sizes["time"])
    pred = ds["cgm"].values
    for part, key in ((slice(0, W * L), "train_rmse"), (slice(W * L, None), "validation_rmse")):
        m = np.isfinite(obs[part])
        rmse = math.sqrt(np.mean((pred[part][m] - obs[part][m]) ** 2))
        assert rmse == pytest.approx(d[key]["cgm"], rel=1e-9, abs=1e-9), key
    # every window ends where the fit's window ended
    states = np.stack([ds[n].values for n in twin.model.state_names], -1)
    ends = twin.result.windows["twin"][1]
    np.testing.assert_allclose(states[np.arange(1, W + 1) * L - 1], ends, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(ds["cgm_change"].values, 0.0)
    m = ds["cgm_metrics"].to_pandas()
    assert (m["original"] == m["whatif"]).all()


def test_more_insulin_lowers_glucose_and_keeps_the_meal_corrections(twin, changed):
    from physiotwin.calibration.whatif import corrected_inputs

    ds = twin.whatif(changed)
    assert float(ds["cgm_change"].mean()) < -1.0
    assert float(ds["cgm_metrics"].sel(cgm_metric="mean", scenario="whatif")) < float(
        ds["cgm_metrics"].sel(cgm_metric="mean", scenario="original"))
    # every meal row is unchanged, so the carbohydrate signals are exactly the fitted ones
    rec, new = twin.training_timeline(), read_timeline(changed)
    fitted = twin.result.corrections
    minutes = 2000
    a = corrected_inputs(twin.model, rec, rec, minutes, fitted).values
    b = corrected_inputs(twin.model, new, rec, minutes, fitted).values
    carbs = [i for i, n in enumerate(twin.model.signal_names) if "carbs" in n]
    np.testing.assert_array_equal(np.asarray(a)[:, carbs], np.asarray(b)[:, carbs])
    assert not np.allclose(np.asarray(a)[:, carbs], np.asarray(corrected_inputs(twin.model, rec, rec, minutes,
                                                                                 {}).values)[:, carbs])


def test_a_changed_meal_loses_its_correction(twin, tmp_path):
    from physiotwin.calibration.whatif import corrected_inputs

    rec = twin.training_timeline()
    frame = rec.to_frame()
    first = int(np.flatnonzero(frame["kind"] == "carbs")[0])
    frame.loc[first, "value"] = frame.loc[first, "value"] + 10.0
    path = tmp_path / "meal.csv"
    path.write_text(f"# start: {rec.start.isoformat()}\n" + frame.to_csv(index=False))
    new = read_timeline(path)
    fitted = twin.result.corrections
    carbs = [i for i, n in enumerate(twin.model.signal_names) if n.endswith(".carbs")]
    minutes = 2000
    plain = np.asarray(corrected_inputs(twin.model, new, rec, minutes, {}).values)[:, carbs]
    got = np.asarray(corrected_inputs(twin.model, new, rec, minutes, fitted).values)[:, carbs]
    t0 = float(frame.loc[first, "time"])
    meal = slice(int(t0), int(t0) + 2)  # the first minutes of the changed meal: no factor
    np.testing.assert_array_equal(got[meal], plain[meal])


def test_whatif_cli_writes_the_contract_with_bands(twin_dir, changed, tmp_path):
    out, plot = tmp_path / "wi.nc", tmp_path / "wi.png"
    res = _invoke("whatif", twin_dir, "--timeline", changed, "--out", out, "--samples", 30, "--plot", plot)
    assert res.exit_code == 0, res.output
    assert "tir" in res.output and "90 % band" in res.output
    with xr.open_dataset(out) as ds:
        assert ds["glucose.plasma_glucose"].attrs["units"] == "mg/dL"
        assert ds["cgm_samples"].dims == ("sample", "time") and ds.sizes["sample"] == 30
        q = ds["cgm_quantiles"].values
        assert np.all(np.diff(q, axis=0) >= 0) and np.all(q[-1] - q[0] > 0)
        assert ds["cgm_metrics_quantiles"].dims == ("quantile", "cgm_metric")
        assert ds.attrs["samples"] == 30
    assert plot.stat().st_size > 10_000


@pytest.mark.slow
def test_whatif_is_reproducible_and_bands_cover_the_mode(twin, changed):
    a = twin.whatif(changed, 30, seed=3)
    b = twin.whatif(changed, 30, seed=3)
    np.testing.assert_array_equal(a["cgm_samples"].values, b["cgm_samples"].values)
    q = a["cgm_model_quantiles"].values
    inside = (a["cgm"].values >= q[0] - 1e-9) & (a["cgm"].values <= q[-1] + 1e-9)
    assert inside.mean() > 0.95


def test_whatif_extends_past_the_record(twin, tmp_path):
    rec = twin.training_timeline()
    frame = rec.to_frame()
    end = float(frame["time"].max())
    extra = pd.DataFrame({"time": [end + 60.0], "kind": ["carbs"], "value": [50.0], "unit": ["g"],
                          "duration": [math.nan]})
    path = tmp_path / "longer.csv"
    path.write_text(f"# start: {rec.start.isoformat()}\n" + pd.concat([frame, extra]).to_csv(index=False))
    ds = twin.whatif(path, hours=(end + 240.0) / 60.0)
    assert ds["time"].values[-1] >= end + 235.0
    assert np.isfinite(ds["cgm"].values).all()
    assert ds["cgm"].values[-1] > ds["cgm_original"].values[-1]  # the extra meal raises glucose


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["mechanistic", "population"])
def test_whatif_variants(twin, changed, variant):
    ds = twin.whatif(changed, variant=variant)
    assert np.isfinite(ds["cgm"].values).all() and ds.attrs["variant"] == variant


def test_whatif_refuses_bad_input(twin_dir, twin, changed, tmp_path):
    # a kind the composition has no input for
    df, start = read_table(changed)
    bad = pd.concat([df, pd.DataFrame({"time": [df["time"].iloc[3]], "kind": ["sodium_intake"], "value": [150.0],
                                       "unit": ["mmol/d"], "duration": [math.nan]})], ignore_index=True)
    path = tmp_path / "sodium.csv"
    write_table(bad, path, start)
    out = tmp_path / "wi.nc"
    res = CliRunner().invoke(main, ["whatif", str(twin_dir), "--timeline", str(path), "--out", str(out)])
    assert res.exit_code == 1 and "sodium.csv" in res.output and "'sodium_intake'" in res.output
    assert "row" in res.output and "no input" in res.output and not out.exists()
    # draws need a posterior
    res = CliRunner().invoke(main, ["whatif", str(twin_dir), "--timeline", str(changed), "--out", str(out),
                                    "--samples", "5", "--variant", "population"])
    assert res.exit_code == 1 and "posterior" in res.output and not out.exists()
    old = copy.copy(twin)
    old.result = copy.copy(twin.result)
    old.result.covariance = {}
    with pytest.raises(CalibrationError, match="posterior"):
        old.whatif(changed, 5)
    old.result.windows = {}
    with pytest.raises(Exception, match="calibrate it again"):
        old.whatif(changed)


def test_change_therapy_scales_boluses_and_the_night_basal():
    df = pd.DataFrame({"time": [0.0, 300.0, 600.0, 1500.0], "kind": ["basal", "bolus", "basal", "bolus"],
                       "value": [1.0, 4.0, 2.0, 2.0], "unit": ["U/h", "U", "U/h", "U"],
                       "duration": [math.nan, 5.0, math.nan, 5.0]})
    out = change_therapy(df, "2026-01-05T00:00:00", bolus=1.25, night_basal=0.8, night=(0, 6))
    bolus = out[out["kind"] == "bolus"]
    assert list(bolus["value"]) == [5.0, 2.5]
    basal = out[out["kind"] == "basal"].set_index("time")["value"]
    assert basal[0.0] == pytest.approx(0.8) and basal[360.0] == 1.0 and basal[600.0] == 2.0
    assert basal[1440.0] == pytest.approx(1.6) and len(basal) == 4  # the record ends at 25 h
    assert list(out["time"]) == sorted(out["time"])


def test_counterfactual_of_the_unchanged_therapy_is_the_record():
    pytest.importorskip("simglucose")
    from physiotwin.plugins.synthetic import generate_record, replay_therapy

    rec = generate_record("adult#004", days=0.5, seed=2)
    cf = replay_therapy(rec, "adult#004", 2, rec.attrs["start"])
    for kind in ("cgm_true", "bg_true"):
        np.testing.assert_array_equal(rec[rec["kind"] == kind]["value"].to_numpy(),
                                      cf[cf["kind"] == kind]["value"].to_numpy())
    more = change_therapy(rec, rec.attrs["start"], bolus=1.5)
    cf2 = replay_therapy(more, "adult#004", 2, rec.attrs["start"])
    assert cf2[cf2["kind"] == "cgm_true"]["value"].mean() < cf[cf["kind"] == "cgm_true"]["value"].mean() - 1


@pytest.mark.slow
def test_bands_widen_when_the_data_are_fewer(twin, record_parts, tmp_path):
    """The same patient fitted on 18 h and (the session's twin) on 36 h: the shorter record
    leaves the parameters, and so the predicted effect of a change, less certain."""
    from physiotwin.calibration.data import split_record

    short = tmp_path / "short.csv"
    short.write_text(timeline_text(split_record(read_timeline(record_parts[0]), 18 * 60)[0]))
    res = _invoke("calibrate", short, "--out", tmp_path / "short", "--no-hybrid", "--steps", 25, "--quiet")
    assert res.exit_code == 0, res.output
    widths, sds = [], []
    for t, path in ((Twin.load(tmp_path / "short"), short), (twin, record_parts[0])):
        sds.append(np.sqrt(np.diag(t.result.covariance["mechanistic"])))
        df, start = read_table(path)
        new = tmp_path / f"{path.stem}_new.csv"
        write_table(change_therapy(df, start, bolus=1.5), new, start)
        q = t.whatif(new, 30, variant="mechanistic")["cgm_model_quantiles"]
        widths.append(float((q.isel(quantile=-1) - q.isel(quantile=0)).sel(time=slice(0, 18 * 60)).mean()))
    assert np.median(sds[0] / sds[1]) > 1.1
    assert widths[0] > 1.1 * widths[1]


@pytest.mark.slow
def test_forecast_bands_and_their_coverage(twin_dir, record_parts, tmp_path):
    out = tmp_path / "fc.nc"
    res = _invoke("forecast", twin_dir, record_parts[1], "--horizon", 30, "--bands", "--out", out)
    assert res.exit_code == 0, res.output
    with xr.open_dataset(out) as ds:
        lo, mid, hi = (ds[v].values for v in ("cgm_lower", "cgm", "cgm_upper"))
        assert np.all(lo < mid) and np.all(mid < hi) and ds["cgm_upper"].attrs["units"] == "mg/dL"
    table = tmp_path / "ev.csv"
    res = _invoke("evaluate", twin_dir, record_parts[1], "--horizon", 30, "--out", table)
    assert res.exit_code == 0, res.output
    cov = pd.read_csv(table).set_index("model")["coverage90"]
    assert cov.between(0, 1).all() and cov["twin"] > 0.5


def test_metrics_of_a_predicted_series_are_those_the_instrument_would_report():
    """A replay may predict glucose at or below zero; its metrics are those of the readings a
    sensor would give (clipped to the observation model's range), not an error."""
    from physiotwin.calibration.whatif import _metrics

    m = _metrics("cgm", np.array([-5.0, 20.0, 100.0, 700.0]), (39.0, 600.0))
    ref = _metrics("cgm", np.array([39.0, 39.0, 100.0, 600.0]))
    assert np.isfinite(m["lbgi"]) and m == ref
    with pytest.raises(ValueError, match="> 0"):
        _metrics("cgm", np.array([-5.0, 100.0]))  # the unclipped series is refused: the test can fail
