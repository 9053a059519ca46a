"""Plausibility checks every record goes through (physiotwin.plausibility and the glucose
rules in physiotwin.plugins.record_checks): each of the records a new user calibrated
"successfully" before these checks gives a clear error, or a note with a count under a
documented rule."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physiotwin.cli import main
from physiotwin.errors import RecordError
from physiotwin.plausibility import RecordWarning, check_record, flat_runs, read_record
from physiotwin.timeline import timeline_from_frame

RECORD = Path(__file__).parent / "data" / "record_small.csv"


@pytest.fixture(scope="module")
def frame():
    return pd.read_csv(RECORD, comment="#")


def _tl(df):
    return timeline_from_frame(df.reset_index(drop=True), source="rec.csv")


def _cgm(df):
    return df.index[df.kind == "cgm"]


def _error(df) -> str:
    with pytest.raises(RecordError) as err:
        check_record(_tl(df))
    assert "\n" not in str(err.value) and str(err.value).startswith("rec.csv, row ")
    return str(err.value)


def test_the_bundled_record_passes_untouched(frame):
    tl = _tl(frame)
    checked, notes = check_record(tl)
    assert checked is tl and notes == []


def test_mmol_labelled_mg_dl_is_caught_by_its_range(frame):
    df = frame.copy()
    df.loc[_cgm(df), "value"] = (df.loc[_cgm(df), "value"] / 18.0).round(1)
    assert "look like mmol/L labelled mg/dL" in _error(df)
    df.loc[_cgm(df), "unit"] = "mmol/L"  # the right label passes
    check_record(_tl(df))


def test_readings_no_sensor_reports_are_dropped_and_counted(frame):
    df = frame.copy()
    i = _cgm(df)
    df.loc[i[10], "value"], df.loc[i[20], "value"] = 0.0, 2000.0
    tl, notes = check_record(_tl(df))
    assert len(tl) == len(df) - 2 and len(notes) == 1
    assert "2 'cgm' readings outside 40-500 mg/dL" in notes[0] and "dropped" in notes[0]
    df.loc[i[: len(i) // 3], "value"] = 0.0  # a third of the readings: a broken export, refused
    assert "lie outside 40-500 mg/dL" in _error(df)


def test_a_500_unit_bolus_is_an_error_naming_its_row(frame):
    df = frame.copy()
    j = df.index[df.kind == "bolus"][1]
    df.loc[j, "value"] = 500.0
    message = _error(df)
    assert f"row {j + 1}" in message and "'bolus' of 500 U is implausible" in message


def test_a_flat_lined_sensor_is_refused_and_a_stuck_stretch_dropped(frame):
    df = frame.copy()
    df.loc[_cgm(df), "value"] = 120.0
    assert "the CGM is flat-lined" in _error(df)
    df = frame.copy()
    stuck = _cgm(df)[100:148]  # 4 h stuck at 120
    df.loc[stuck, "value"] = 120.0
    tl, notes = check_record(_tl(df))
    assert len(tl) == len(df) - 48 and "48 'cgm' readings in 1 flat run" in notes[0]


def test_conflicting_duplicates_are_an_error_and_identical_ones_dropped(frame):
    df = frame.copy()
    i = _cgm(df)[30]
    twin = df.loc[[i]].copy()
    message = _error(pd.concat([df, twin.assign(value=twin.value + 25)]))
    assert "given twice with different values" in message
    tl, notes = check_record(_tl(pd.concat([df, twin])))
    assert len(tl) == len(df) and "1 duplicated rows" in notes[0]
    bolus = df.loc[df.kind == "bolus"].iloc[[0]]  # two doses at one time are two doses
    assert len(check_record(_tl(pd.concat([df, bolus])))[0]) == len(df) + 1


def test_a_clock_put_back_an_hour_is_refused_not_interleaved(frame):
    df = frame.copy()
    t = pd.to_datetime(df.time)
    late = t >= pd.Timestamp("2026-01-06T03:00")
    df.loc[late, "time"] = (t[late] - pd.Timedelta("57min")).dt.strftime("%Y-%m-%dT%H:%M:%S")
    message = _error(df)
    assert "field 'time': the clock goes back 52 min (from 2026-01-06 02:55" in message and "--tz" in message
    shuffled = frame.sample(frac=1.0, random_state=1)  # rows in any order are still fine
    assert check_record(_tl(shuffled))[1] == []


def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, frame):
    df = frame.copy()
    df.loc[df.index[df.kind == "bolus"][0], "value"] = 500.0
    path = tmp_path / "bad.csv"
    path.write_text("# start: 2026-01-05T00:00:00\n" + df.to_csv(index=False))
    result = CliRunner().invoke(main, ["calibrate", str(path), "--out", str(tmp_path / "tw")])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and result.output.startswith(f"error: {path}, row ")
    assert not (tmp_path / "tw").exists()


def test_read_record_warns_with_the_count(tmp_path, frame):
    df = frame.copy()
    df.loc[_cgm(df)[5], "value"] = 0.0
    path = tmp_path / "r.csv"
    path.write_text(df.to_csv(index=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tl = read_record(path)
    assert len(tl) == len(df) - 1
    row = _cgm(df)[5] + 2  # the header is row 1
    assert [str(w.message) for w in caught if w.category is RecordWarning] == [
        f"{path}: 1 'cgm' readings outside 40-500 mg/dL (what its instruments report; e.g. 0) dropped (rows {row})"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(0, 5, allow_nan=False), min_size=0, max_size=40), st.floats(0, 2))
def test_flat_runs_cover_the_series_and_break_only_on_steps(values, tol):
    v = np.cumsum(np.asarray(values))
    runs = flat_runs(v, tol)
    assert sum(b - a + 1 for a, b in runs) == len(v)
    for a, b in runs:
        assert np.all(np.abs(np.diff(v[a:b + 1])) <= tol)
    for (_, b), (a, _) in zip(runs, runs[1:]):
        assert abs(v[a] - v[b]) > tol
