"""The command line as a user runs it: listings, a simulation to NetCDF, the demo,
and bad input (one-line error naming the file/row/field, exit 1, no output file)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from physiotwin.cli import main

GOOD = "time,kind,value,unit,duration\n30,carbs,40,g,\n30,bolus,3,U,\n120,basal,0.9,U/h,\n"


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_organs_and_patients(run):
    res = run("organs", "--json")
    assert res.exit_code == 0
    organs = {o["name"]: o for o in json.loads(res.stdout)}
    assert {"glucose", "pancreas"} <= set(organs)
    assert organs["glucose"]["outputs"]["plasma_glucose"] == "mg/dL"
    assert "glucose" in run("organs").stdout
    listing = run("patients").stdout
    assert "adult#001" in listing and "child#010" in listing and "normal#001" in listing
    table = run("patients", "--csv").stdout.splitlines()
    assert table[0].startswith("patient,") and len(table) == 32


def test_simulate_writes_netcdf_and_plot(run, tmp_path):
    (tmp_path / "tl.csv").write_text(GOOD)
    out, png = tmp_path / "run.nc", tmp_path / "run.png"
    res = run("simulate", "--organ", "glucose", "--patient", "adult#001", "--patient", "adult#002",
              "--timeline", tmp_path / "tl.csv", "--hours", 4, "--every", 10, "--out", out, "--plot", png)
    assert res.exit_code == 0, res.output
    with xr.open_dataset(out) as ds:
        assert ds["glucose.plasma_glucose"].dims == ("patient", "time")
        assert ds.sizes["time"] == 25
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "adult#002" in res.stdout


def test_baseline_runs_with_no_events(run, tmp_path):
    """A header-only timeline and no --timeline at all are the same baseline run."""
    (tmp_path / "none.csv").write_text("time,kind,value,unit,duration\n")
    runs = []
    for extra in ([], ["--timeline", tmp_path / "none.csv"]):
        out = tmp_path / f"b{len(runs)}.nc"
        res = run("simulate", "--organ", "glucose", "--patient", "adult#001", "--patient", "adult#002", *extra,
                  "--hours", 4, "--every", 10, "--out", out)
        assert res.exit_code == 0, res.output
        with xr.open_dataset(out) as ds:
            runs.append(ds["glucose.plasma_glucose"].values)
    assert np.array_equal(runs[0], runs[1]) and np.ptp(runs[0], axis=1).max() < 1e-6  # at rest


def test_patients_csv_round_trip(run, tmp_path):
    (tmp_path / "tl.csv").write_text(GOOD)
    lines = run("patients", "--csv").stdout.splitlines()
    (tmp_path / "cohort.csv").write_text("\n".join([lines[0]] + [ln for ln in lines if ln.startswith("adult#00")][:2]))
    res = run("simulate", "--organ", "glucose", "--patients", tmp_path / "cohort.csv", "--timeline", tmp_path / "tl.csv",
              "--hours", 4, "--every", 10, "--out", tmp_path / "a.nc")
    assert res.exit_code == 0, res.output
    res = run("simulate", "--organ", "glucose", "--patient", "adult#001", "--patient", "adult#002",
              "--timeline", tmp_path / "tl.csv", "--hours", 4, "--every", 10, "--out", tmp_path / "b.nc")
    with xr.open_dataset(tmp_path / "a.nc") as a, xr.open_dataset(tmp_path / "b.nc") as b:
        np.testing.assert_array_equal(a["glucose.plasma_glucose"], b["glucose.plasma_glucose"])


def test_demo(run, tmp_path):
    res = run("demo", "--out-dir", tmp_path)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "demo.nc").exists() and (tmp_path / "demo.png").exists()


BAD_TIMELINES = {
    "missing column": ("time,kind,value\n0,carbs,10\n", "missing column 'unit'"),
    "non-numeric time": ("time,kind,value,unit\nsoon,carbs,10,g\n", "row 2, field 'time'"),
    "non-numeric value": ("time,kind,value,unit\n0,carbs,ten,g\n", "row 2, field 'value'"),
    "NaN": ("time,kind,value,unit\n0,carbs,10,g\n5,bolus,nan,U\n", "row 3, field 'value'"),
    "negative amount": ("time,kind,value,unit\n0,carbs,-10,g\n", "row 2, field 'value': negative"),
    "unknown kind": ("time,kind,value,unit\n0,snack,10,g\n", "row 2, field 'kind': unknown kind 'snack'; known kinds: basal, bg, bg_true, blood_loss, bolus, carbs, carbs_true, cgm, cgm_true, creatinine, creatinine_true, exercise, heart_rate, heart_rate_true, insulin_sensitivity_true, map, map_true, sglt2i, sodium_intake, sodium_intake_true"),
    "wrong dimension": ("time,kind,value,unit\n0,carbs,10,mL\n", "row 2, field 'unit'"),
    "empty file": ("", "no header line"),
}


@pytest.mark.parametrize("case", sorted(BAD_TIMELINES))
def test_bad_timeline_gives_one_line_and_no_output(run, tmp_path, case):
    text, expected = BAD_TIMELINES[case]
    (tmp_path / "bad.csv").write_text(text)
    out = tmp_path / "out.nc"
    res = run("simulate", "--organ", "glucose", "--patient", "adult#001", "--timeline", tmp_path / "bad.csv",
              "--hours", 2, "--out", out)
    assert res.exit_code == 1
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "bad.csv" in res.stderr and expected in res.stderr
    assert "Traceback" not in res.output
    assert not out.exists() and os.listdir(tmp_path) == ["bad.csv"]


def test_convertible_units_are_converted(run, tmp_path):
    (tmp_path / "kg.csv").write_text("time,kind,value,unit\n0,carbs,0.04,kg\n")
    (tmp_path / "g.csv").write_text("time,kind,value,unit\n0,carbs,40,g\n")
    for name in ("kg", "g"):
        res = run("simulate", "--organ", "glucose", "--patient", "adult#001", "--timeline", tmp_path / f"{name}.csv",
                  "--hours", 2, "--out", tmp_path / f"{name}.nc")
        assert res.exit_code == 0, res.output
    with xr.open_dataset(tmp_path / "kg.nc") as a, xr.open_dataset(tmp_path / "g.nc") as b:
        np.testing.assert_allclose(a["glucose.plasma_glucose"], b["glucose.plasma_glucose"])


@pytest.mark.parametrize("changes, expected", [
    ({"--patient": "adult#099"}, "unknown patient 'adult#099'"),
    ({"--organ": "liver"}, "unknown organ 'liver'"),
    ({"--hours": "0"}, "duration must be > 0"),
    ({"--hours": "-3"}, "duration must be > 0"),
    ({"--out": "/nonexistent/dir/x.nc"}, "does not exist"),
])
def test_bad_arguments(run, tmp_path, changes, expected):
    (tmp_path / "tl.csv").write_text(GOOD)
    options = {"--organ": "glucose", "--patient": "adult#001", "--timeline": str(tmp_path / "tl.csv"),
               "--hours": "2", "--out": str(tmp_path / "x.nc"), **changes}
    res = run("simulate", *[a for item in options.items() for a in item])
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("error: ") and expected in res.stderr
    assert not (tmp_path / "x.nc").exists()


def test_failed_patient_exit_code(run, tmp_path):
    (tmp_path / "tl.csv").write_text(GOOD)
    lines = run("patients", "--csv").stdout.splitlines()
    header = lines[0].split(",")
    rows = [ln.split(",") for ln in lines if ln.startswith("adult#001") or ln.startswith("adult#002")]
    rows[1][header.index("ksc")] = "1e9"
    (tmp_path / "cohort.csv").write_text("\n".join(",".join(r) for r in [header] + rows))
    res = run("simulate", "--organ", "glucose", "--patients", tmp_path / "cohort.csv", "--timeline", tmp_path / "tl.csv",
              "--hours", 2, "--out", tmp_path / "x.nc")
    assert res.exit_code == 3
    assert "adult#002" in res.stderr
    with xr.open_dataset(tmp_path / "x.nc") as ds:
        assert list(ds["solver_status"].values != 0) == [False, True]
