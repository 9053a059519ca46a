"""simulate(): the output contract, patients given in every accepted form, NetCDF
round trip, clock times, failure isolation and no retracing when only numbers change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import physiotwin as pt
from physiotwin.simulate import STATUS_MEANINGS, trace_count

SCENARIO = pd.DataFrame({
    "time": [30, 30, 200], "kind": ["carbs", "bolus", "carbs"], "value": [40, 3, 25], "unit": ["g", "U", "g"],
})


@pytest.fixture(scope="module")
def two_patients():
    return pt.simulate(["glucose"], ["adult#001", "child#002"], SCENARIO, hours=6, every=5)


def test_output_contract(two_patients):
    ds = two_patients
    assert dict(ds.sizes) == {"patient": 2, "time": 73, "parameter": len(ds["parameter"])}
    assert list(ds["patient"].values) == ["adult#001", "child#002"]
    np.testing.assert_array_equal(ds["time"].values, np.arange(0, 361, 5))
    assert ds["time"].attrs["units"] == "min"
    for name, unit in [("glucose.plasma_glucose", "mg/dL"), ("glucose.subcutaneous_glucose", "mg/dL"),
                       ("glucose.plasma_insulin", "pmol/L")]:
        assert ds[name].dims == ("patient", "time")
        assert ds[name].attrs["units"] == unit and ds[name].attrs["long_name"]
    assert all(ds[f"glucose.{s.name}"].attrs["units"] == s.unit for s in pt.list_organs()["glucose"].states)
    status = ds["solver_status"]
    assert status.attrs["flag_meanings"].split() == list(STATUS_MEANINGS)
    assert list(status.values) == [0, 0]
    for key in ("organs", "physiotwin_version", "solver", "rtol", "atol"):
        assert key in ds.attrs
    assert ds.attrs["organs"] == "glucose" and ds.attrs["solver"] == "Tsit5"
    # the meal raises glucose
    g = ds["glucose.plasma_glucose"].sel(patient="adult#001")
    assert g.sel(time=120) > g.sel(time=0) + 20


def test_single_patient_has_no_patient_dimension(two_patients):
    ds = pt.simulate(["glucose"], "adult#001", SCENARIO, hours=6, every=5)
    assert ds["glucose.plasma_glucose"].dims == ("time",)
    assert ds["patient"].item() == "adult#001"
    # patients of one batch share step sizes, so a patient alone agrees to solver tolerance
    np.testing.assert_allclose(ds["glucose.plasma_glucose"], two_patients["glucose.plasma_glucose"][0], rtol=1e-5)


def test_patient_table_round_trip(tmp_path, two_patients):
    """The bundled table written as CSV (what `physiotwin patients --csv` prints) is
    accepted back and gives the same results; an edited parameter changes them."""
    table = pt.bundled_patients().loc[["adult#001", "child#002"]].drop(columns=["source"]).reset_index()
    path = tmp_path / "cohort.csv"
    table.to_csv(path, index=False)
    ds = pt.simulate(["glucose"], path, SCENARIO, hours=6, every=5)
    np.testing.assert_allclose(ds["glucose.plasma_glucose"], two_patients["glucose.plasma_glucose"])
    table.loc[0, "Vmx"] *= 2  # twice as insulin sensitive
    ds2 = pt.simulate(["glucose"], table, SCENARIO, hours=6, every=5)
    assert ds2["glucose.plasma_glucose"][0, -1] < ds["glucose.plasma_glucose"][0, -1] - 5


def test_bad_patient_tables_name_the_problem(tmp_path):
    table = pt.bundled_patients().loc[["adult#001"]].drop(columns=["source"]).reset_index()
    bad = table.assign(Vgg=1.0)
    with pytest.raises(pt.PatientError, match="column 'Vgg' is not a parameter"):
        pt.simulate(["glucose"], bad, None, hours=1)
    bad = table.astype(object)
    bad.loc[0, "kp1"] = "fast"
    with pytest.raises(pt.PatientError, match=r"patient 'adult#001', column 'kp1': not a number"):
        pt.simulate(["glucose"], bad, None, hours=1)
    bad = table.assign(BW=-70.0)
    with pytest.raises(pt.PatientError, match=r"column 'BW'.*outside"):
        pt.simulate(["glucose"], bad, None, hours=1)
    with pytest.raises(pt.PatientError, match="unknown patient 'adult#099'"):
        pt.simulate(["glucose"], "adult#099", None, hours=1)


def test_netcdf_round_trip_and_clock_times(tmp_path):
    from physiotwin.io import write_netcdf

    frame = pd.DataFrame({"time": ["2026-03-02T07:00", "2026-03-02T07:30"], "kind": ["carbs", "bolus"],
                          "value": [50, 4], "unit": ["g", "U"]})
    ds = pt.simulate(["glucose"], ["adult#003", "adult#004"], frame, hours=6, every=5)
    assert ds["datetime"].values[0] == np.datetime64("2026-03-02T07:00")
    assert ds["datetime"].values[12] == np.datetime64("2026-03-02T08:00")
    path = write_netcdf(ds, tmp_path / "run.nc")
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back.load(), ds)


def test_a_failing_patient_is_flagged_and_the_others_stand(two_patients):
    table = pt.bundled_patients().loc[["adult#001", "child#002"]].drop(columns=["source"]).reset_index()
    table.loc[1, "ksc"] = 1e7  # absurdly fast sensor kinetics: the explicit solver runs out of steps
    ds = pt.simulate(["glucose"], table, SCENARIO, hours=6, every=5, max_steps=2000)
    status = ds["solver_status"].values
    assert status[0] == 0 and STATUS_MEANINGS[status[1]] in ("max_steps_reached", "solver_failure")
    np.testing.assert_allclose(ds["glucose.plasma_glucose"][0], two_patients["glucose.plasma_glucose"][0], rtol=1e-5)


def test_invalid_durations_and_intervals():
    for kwargs in ({"hours": 0}, {"hours": -1}, {"days": float("nan")}, {"hours": 1, "days": 1}, {}):
        with pytest.raises(pt.SimulationError, match="duration"):
            pt.simulate(["glucose"], "adult#001", None, **kwargs)
    with pytest.raises(pt.SimulationError, match="interval"):
        pt.simulate(["glucose"], "adult#001", None, hours=1, every=0)


def test_no_retrace_when_only_patients_or_scenario_values_change(two_patients):
    pt.simulate(["glucose"], ["adult#001", "child#002"], SCENARIO, hours=6, every=5)
    before = trace_count()
    other = SCENARIO.assign(value=[75, 6, 10], time=[45, 47, 260])
    pt.simulate(["glucose"], ["adolescent#002", "adult#009"], other, hours=6, every=5)
    more = pd.concat([other, pd.DataFrame({"time": [300], "kind": ["basal"], "value": [0.7], "unit": ["U/h"]})])
    pt.simulate(["glucose"], ["adult#005", "child#001"], more, hours=6, every=5)
    assert trace_count() == before
