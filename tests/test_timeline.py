"""Timeline reader: format, conversions, and one-line errors naming file, row and field."""

from __future__ import annotations

import math
import re
from datetime import datetime

import numpy as np
import pandas as pd
import pluggy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physiotwin.timeline import (
    Timeline,
    TimelineError,
    TimelineKind,
    read_timeline,
    timeline_from_frame,
)

GLUCOSE_MG_DL_PER_MMOL_L = 18.0156

HEADER = "time,kind,value,unit,duration\n"


def write(tmp_path, text, name="meals.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path, **kwargs) -> str:
    with pytest.raises(TimelineError) as info:
        read_timeline(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def assert_row_error(path, row, field, *fragments, label="row", **kwargs):
    message = error_of(path, **kwargs)
    assert message.startswith(f"{path}, {label} {row}, field '{field}': "), message
    assert path.name in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------- happy path


def test_reads_converts_and_sorts(tmp_path):
    path = write(
        tmp_path,
        "time,kind,value,unit,duration\n"
        "30,carbs,0.045,kg,15\n"
        "0,basal,0.015,U/min,\n"
        "30,bolus,4.5,U,\n"
        "45,cgm,7,mmol/L,\n",
    )
    tl = read_timeline(path)
    assert len(tl) == 4
    assert tl.time.tolist() == [0.0, 30.0, 30.0, 45.0]
    assert tl.kind.tolist() == ["basal", "carbs", "bolus", "cgm"]  # stable for ties
    np.testing.assert_allclose(tl.value, [0.9, 45.0, 4.5, 7 * GLUCOSE_MG_DL_PER_MMOL_L], rtol=1e-12)
    assert tl.duration[1] == 15.0
    assert np.isnan(tl.duration[[0, 2, 3]]).all()
    assert tl.row.tolist() == [3, 2, 4, 5]
    assert tl.source == str(path)
    assert tl.start is None


@pytest.mark.parametrize(
    "kind, value, unit, expected",
    [
        ("carbs", "0.05", "kg", 50.0),
        ("carbs", "50", "g", 50.0),
        ("cgm", "5.5", "mmol/L", 5.5 * GLUCOSE_MG_DL_PER_MMOL_L),
        ("cgm", "100", "mg/dL", 100.0),
        ("basal", "0.02", "U/min", 1.2),
        ("bolus", "500", "mU", 0.5),
    ],
)
def test_unit_conversions(tmp_path, kind, value, unit, expected):
    path = write(tmp_path, f"time,kind,value,unit\n0,{kind},{value},{unit}\n")
    tl = read_timeline(path)
    assert tl.value[0] == pytest.approx(expected, rel=1e-12)
    assert tl.to_frame()["unit"][0] == {"carbs": "g", "cgm": "mg/dL", "basal": "U/h", "bolus": "U"}[kind]


def test_rows_in_any_order_are_sorted_stably(tmp_path):
    path = write(
        tmp_path,
        HEADER + "90,carbs,3,g,\n10,carbs,1,g,\n90,carbs,4,g,\n0,carbs,0,g,\n10,carbs,2,g,\n",
    )
    tl = read_timeline(path)
    assert tl.time.tolist() == [0, 10, 10, 90, 90]
    assert tl.value.tolist() == [0, 1, 2, 3, 4]
    assert tl.row.tolist() == [5, 3, 6, 2, 4]


def test_whitespace_blank_lines_comments_and_column_order(tmp_path):
    path = write(
        tmp_path,
        "# a meal plan, with commas, and \"quotes\n"
        "\n"
        "  unit , value , kind , time  \n"
        "# comment between rows\n"
        "   \n"
        " g , 45 , carbs , 30 \n"
        "\n",
    )
    tl = read_timeline(path)
    assert tl.time.tolist() == [30.0]
    assert tl.value.tolist() == [45.0]
    assert tl.row.tolist() == [6]
    assert np.isnan(tl.duration[0])


def test_trailing_comma_is_tolerated(tmp_path):
    path = write(tmp_path, "time,kind,value,unit\n0,carbs,5,g,\n")
    assert read_timeline(path).value.tolist() == [5.0]


@pytest.mark.parametrize("line", ["# start: 2026-01-05T07:00", "# start = 2026-01-05 07:00:00", '#start="2026-01-05T07:00"'])
def test_start_comment_with_minutes(tmp_path, line):
    path = write(tmp_path, f"{line}\n{HEADER}0,carbs,5,g,\n")
    tl = read_timeline(path)
    assert tl.start == datetime(2026, 1, 5, 7, 0)
    assert tl.time.tolist() == [0.0]


def test_start_argument_overrides_file(tmp_path):
    path = write(tmp_path, f"# start: 2026-01-05T07:00\n{HEADER}0,carbs,5,g,\n")
    assert read_timeline(path, start="2026-01-06T08:00").start == datetime(2026, 1, 6, 8)
    assert read_timeline(path, start=datetime(2026, 1, 7)).start == datetime(2026, 1, 7)


def test_bad_start_comment(tmp_path):
    path = write(tmp_path, f"{HEADER}# start: after breakfast\n0,carbs,5,g,\n")
    assert_row_error(path, 2, "start", "not an ISO-8601 timestamp", "'after breakfast'")


def test_bad_start_argument(tmp_path):
    path = write(tmp_path, f"{HEADER}0,carbs,5,g,\n")
    message = error_of(path, start="tomorrow")
    assert message.startswith(f"{path}: invalid start argument") and "'tomorrow'" in message


# --------------------------------------------------------------------------- timestamps


def test_iso_timestamps_start_is_earliest(tmp_path):
    path = write(
        tmp_path,
        HEADER + "2026-01-05T08:00,carbs,40,g,\n2026-01-05 07:30:00,bolus,4,U,\n2026-01-05T07:45,carbs,5,g,10\n",
    )
    tl = read_timeline(path)
    assert tl.start == datetime(2026, 1, 5, 7, 30)
    assert tl.time.tolist() == [0.0, 15.0, 30.0]
    assert tl.kind.tolist() == ["bolus", "carbs", "carbs"]


def test_iso_timestamps_with_explicit_start(tmp_path):
    path = write(tmp_path, HEADER + "2026-01-05T08:00,carbs,40,g,\n")
    tl = read_timeline(path, start="2026-01-05T07:00")
    assert tl.start == datetime(2026, 1, 5, 7)
    assert tl.time.tolist() == [60.0]
    path = write(tmp_path, "# start: 2026-01-05T06:00\n" + HEADER + "2026-01-05T08:00,carbs,40,g,\n")
    assert read_timeline(path).time.tolist() == [120.0]


def test_timestamp_before_start_is_an_error(tmp_path):
    path = write(tmp_path, HEADER + "2026-01-05T08:00,carbs,40,g,\n2026-01-05T06:59,carbs,1,g,\n")
    assert_row_error(path, 3, "time", "before the start", start="2026-01-05T07:00")
    path = write(tmp_path, "# start: 2026-01-05T07:00\n" + HEADER + "2026-01-05T06:00,carbs,1,g,\n")
    assert_row_error(path, 3, "time", "before the start")


def test_mixing_minutes_and_timestamps_is_an_error(tmp_path):
    path = write(tmp_path, HEADER + "2026-01-05T08:00,carbs,40,g,\n\n30,carbs,1,g,\n")
    assert_row_error(path, 4, "time", "mixes minutes and ISO-8601 timestamps", "row 2")
    path = write(tmp_path, HEADER + "30,carbs,1,g,\n2026-01-05T08:00,carbs,40,g,\n")
    assert_row_error(path, 3, "time", "mixes minutes and ISO-8601 timestamps")


def test_utc_offsets_are_converted_to_naive_utc(tmp_path):
    path = write(tmp_path, HEADER + "2026-01-05T08:00+01:00,carbs,40,g,\n2026-01-05T07:30Z,carbs,1,g,\n")
    tl = read_timeline(path)
    assert tl.start == datetime(2026, 1, 5, 7, 0)
    assert tl.time.tolist() == [0.0, 30.0]


def test_mixing_offset_and_naive_timestamps_is_an_error(tmp_path):
    path = write(tmp_path, HEADER + "2026-01-05T08:00+01:00,carbs,40,g,\n2026-01-05T07:30,carbs,1,g,\n")
    assert_row_error(path, 3, "time", "UTC offset")


# --------------------------------------------------------------------------- row errors


@pytest.mark.parametrize(
    "row, field, fragments",
    [
        ("0,carbs,abc,g,", "value", ["not a number: 'abc'"]),
        ("0,carbs,nan,g,", "value", ["not a finite number: 'nan'"]),
        ("0,carbs,inf,g,", "value", ["not a finite number"]),
        ("0,carbs,-inf,g,", "value", ["not a finite number"]),
        ("0,carbs,,g,", "value", ["empty"]),
        ("0,carbs,-5,g,", "value", ["negative amount -5 g for 'carbs'"]),
        ("0,carbs,-0.005,kg,", "value", ["negative amount -0.005 kg for 'carbs'"]),
        ("0,snack,5,g,", "kind", ["unknown kind 'snack'; known kinds: basal, bg, bg_true, blood_loss, bolus, carbs, carbs_true, cgm, cgm_true, creatinine, creatinine_true, exercise, heart_rate, heart_rate_true, insulin_sensitivity_true, map, map_true, sglt2i, sodium_intake, sodium_intake_true"]),
        ("0,Carbs,5,g,", "kind", ["unknown kind 'Carbs'"]),
        ("0,,5,g,", "kind", ["empty"]),
        ("0,carbs,5,mL,", "unit", ["unit 'mL' is not convertible to 'g' required by 'carbs'"]),
        ("0,cgm,5,mL,", "unit", ["not convertible to 'mg/dL' required by 'cgm'"]),
        ("0,basal,1,U,", "unit", ["not convertible to 'U/h' required by 'basal'"]),
        ("0,carbs,5,grams_of_xyz,", "unit", ["unknown unit 'grams_of_xyz'"]),
        ("0,carbs,5,,", "unit", ["empty"]),
        ("0,carbs,5,g,0", "duration", ["> 0"]),
        ("0,carbs,5,g,-3", "duration", ["> 0"]),
        ("0,carbs,5,g,abc", "duration", ["not a number: 'abc'"]),
        ("0,carbs,5,g,nan", "duration", ["not a finite number"]),
        ("0,basal,1,U/h,30", "duration", ["'basal' takes no duration"]),
        ("0,cgm,100,mg/dL,5", "duration", ["'cgm' takes no duration"]),
        ("-3,carbs,5,g,", "time", ["negative time -3"]),
        ("abc,carbs,5,g,", "time", ["not a number of minutes or an ISO-8601 timestamp: 'abc'"]),
        ("nan,carbs,5,g,", "time", ["not a finite number"]),
        (",carbs,5,g,", "time", ["empty"]),
        ("0,carbs,5", "unit", ["missing"]),
    ],
)
def test_row_errors_name_file_row_and_field(tmp_path, row, field, fragments):
    path = write(tmp_path, f"# comment\n{HEADER}0,carbs,1,g,\n{row}\n")
    assert_row_error(path, 4, field, *fragments)


def test_too_many_fields_names_row(tmp_path):
    path = write(tmp_path, "time,kind,value,unit\n0,carbs,1,g,extra\n")
    message = error_of(path)
    assert message.startswith(f"{path}, row 2: ")


def test_value_above_maximum(tmp_path):
    kinds = {
        "exercise": TimelineKind("exercise", "1", "exercise intensity", maximum=1.0),
        "carbs": TimelineKind("carbs", "g", "carbs", minimum=1.0, maximum=200.0),
    }
    path = write(tmp_path, HEADER + "0,exercise,0.5,1,30\n10,exercise,1.5,1,30\n")
    assert_row_error(path, 3, "value", "value 1.5 above maximum 1 for 'exercise'", kinds=kinds)
    path = write(tmp_path, HEADER + "0,carbs,0.3,kg,\n")
    assert_row_error(path, 2, "value", "value 300 g above maximum 200 g for 'carbs'", kinds=kinds)
    path = write(tmp_path, HEADER + "0,carbs,0.5,g,\n")
    assert_row_error(path, 2, "value", "below minimum 1 g", kinds=kinds)
    path = write(tmp_path, HEADER + "0,cgm,100,mg/dL,\n")
    assert_row_error(path, 2, "kind", "known kinds: carbs, exercise", kinds=kinds)


# --------------------------------------------------------------------------- file errors


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_no_header(tmp_path, text):
    path = write(tmp_path, text)
    assert error_of(path).startswith(f"{path}: no header line and no events")


@pytest.mark.parametrize("text", [HEADER, "# start: 2026-01-05T07:00\n" + HEADER + "\n# nothing\n"])
def test_header_only_is_a_timeline_with_no_events(tmp_path, text):
    tl = read_timeline(write(tmp_path, text))
    assert len(tl) == 0 and tl.source.endswith("meals.csv")
    assert tl.start == (datetime(2026, 1, 5, 7) if "start" in text else None)


@pytest.mark.parametrize(
    "header, expected",
    [
        ("time,kind,value", "missing column 'unit' (columns are time,kind,value,unit[,duration][,source])"),
        ("time,kind", "missing columns 'value', 'unit'"),
        ("time,kind,value,unit,note", "unknown column 'note'"),
        ("Time,kind,value,unit", "unknown column 'Time'"),
        ("time,kind,value,unit,unit", "column 'unit' given twice"),
    ],
)
def test_header_errors(tmp_path, header, expected):
    path = write(tmp_path, header + "\n0,carbs,5,g\n")
    message = error_of(path)
    assert message.startswith(f"{path}: ") and expected in message


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.csv"
    message = error_of(path)
    assert message.startswith(f"{path}: cannot read file")


def test_not_utf8(tmp_path):
    path = tmp_path / "meals.csv"
    path.write_bytes(b"time,kind,value,unit\n0,carbs,\xff\xfe,g\n")
    assert error_of(path).startswith(f"{path}: cannot read file")


# --------------------------------------------------------------------------- TOML


CSV_TEXT = (
    "# start: 2026-01-05T07:00\n"
    + HEADER
    + "30,carbs,0.045,kg,15\n0,basal,0.015,U/min,\n30,bolus,4.5,U,\n45,cgm,7,mmol/L,\n"
)

TOML_TEXT = """
start = 2026-01-05T07:00:00

[[event]]
time = 30
kind = "carbs"
value = 0.045
unit = "kg"
duration = 15

[[event]]
time = 0
kind = "basal"
value = 0.015
unit = "U/min"

[[event]]
time = 30.0
kind = "bolus"
value = "4.5"
unit = "U"

[[event]]
time = "45"
kind = "cgm"
value = 7
unit = "mmol/L"
"""


def test_toml_equals_csv(tmp_path):
    from_csv = read_timeline(write(tmp_path, CSV_TEXT))
    from_toml = read_timeline(write(tmp_path, TOML_TEXT, "scenario.toml"))
    for name in ("time", "kind", "value", "duration"):
        np.testing.assert_array_equal(getattr(from_csv, name), getattr(from_toml, name))
    assert from_toml.start == from_csv.start == datetime(2026, 1, 5, 7)
    assert from_toml.row.tolist() == [2, 1, 3, 4]
    assert from_toml.row_label == "event"
    assert str(from_toml.error(0, "value", "x")).endswith("scenario.toml, event 2, field 'value': x")


def test_toml_timestamps_and_string_start(tmp_path):
    text = 'start = "2026-01-05T07:00"\n[[event]]\ntime = 2026-01-05T07:30:00\nkind = "carbs"\nvalue = 5\nunit = "g"\n'
    tl = read_timeline(write(tmp_path, text, "scenario.toml"))
    assert tl.start == datetime(2026, 1, 5, 7) and tl.time.tolist() == [30.0]


@pytest.mark.parametrize(
    "event, field, fragment",
    [
        ('time = 0\nkind = "carbs"\nvalue = 5', "unit", "missing"),
        ('kind = "carbs"\nvalue = 5\nunit = "g"', "time", "missing"),
        ('time = 0\nkind = "carbs"\nvalue = 5\nunit = "g"\nnote = "x"', "note", "unknown key"),
        ('time = 0\nkind = "carbs"\nvalue = 5\nunit = "mL"', "unit", "not convertible"),
        ('time = 0\nkind = "carbs"\nvalue = -5\nunit = "g"', "value", "negative amount -5 g"),
        ('time = 0\nkind = "carbs"\nvalue = true\nunit = "g"', "value", "not a number"),
        ('time = 0\nkind = "carbs"\nvalue = nan\nunit = "g"', "value", "not a finite number"),
        ('time = 0\nkind = "carbs"\nvalue = 5\nunit = 3', "unit", "expected text"),
        ('time = 0\nkind = "basal"\nvalue = 1\nunit = "U/h"\nduration = 5', "duration", "takes no duration"),
    ],
)
def test_toml_errors_name_event_and_field(tmp_path, event, field, fragment):
    good = '[[event]]\ntime = 0\nkind = "carbs"\nvalue = 1\nunit = "g"\n'
    path = write(tmp_path, good + good + "[[event]]\n" + event + "\n", "scenario.toml")
    assert_row_error(path, 3, field, fragment, label="event")


def test_toml_file_errors(tmp_path):
    path = write(tmp_path, 'start = "2026-01-05"\n', "scenario.toml")
    assert len(read_timeline(path)) == 0 and read_timeline(path).start == datetime(2026, 1, 5)
    path = write(tmp_path, "[[event]\n", "scenario.toml")
    assert error_of(path).startswith(f"{path}: invalid TOML")
    path = write(tmp_path, 'start = "soon"\n', "scenario.toml")
    assert error_of(path).startswith(f"{path}, field 'start': not an ISO-8601 timestamp")


# --------------------------------------------------------------------------- DataFrame, Timeline API


def test_frame_round_trip():
    df = pd.DataFrame(
        {
            "time": [30, 0, 45],
            "kind": ["carbs", "basal", "cgm"],
            "value": [45.0, 0.015, 7.0],
            "unit": ["g", "U/min", "mmol/L"],
            "duration": [15.0, np.nan, None],
        }
    )
    tl = timeline_from_frame(df)
    assert tl.source == "<DataFrame>"
    assert tl.row.tolist() == [2, 1, 3]
    again = timeline_from_frame(tl.to_frame())
    for name in ("time", "kind", "value", "duration"):
        np.testing.assert_array_equal(getattr(tl, name), getattr(again, name))
    assert list(tl.to_frame().columns) == ["time", "kind", "value", "unit", "duration"]


def test_frame_errors():
    df = pd.DataFrame({"time": [0, 1], "kind": ["carbs", "carbs"], "value": [1.0, np.nan], "unit": ["g", "g"]})
    with pytest.raises(TimelineError, match=r"^<DataFrame>, row 2, field 'value': empty$"):
        timeline_from_frame(df)
    with pytest.raises(TimelineError, match=r"^plan, row 1, field 'kind'"):
        timeline_from_frame(df.assign(kind=["x", "carbs"]), source="plan")
    with pytest.raises(TimelineError, match="missing column 'unit'"):
        timeline_from_frame(df.drop(columns="unit"))


def test_frame_with_datetimes():
    df = pd.DataFrame(
        {
            "time": pd.to_datetime(["2026-01-05 07:30", "2026-01-05 07:00"]),
            "kind": ["carbs", "bolus"],
            "value": [5, 1],
            "unit": ["g", "U"],
        }
    )
    tl = timeline_from_frame(df)
    assert tl.start == datetime(2026, 1, 5, 7) and tl.time.tolist() == [0.0, 30.0]


def test_select_error_and_immutability(tmp_path):
    tl = read_timeline(write(tmp_path, CSV_TEXT))
    carbs = tl.select("carbs")
    assert isinstance(carbs, Timeline) and len(carbs) == 1 and carbs.row.tolist() == [3]
    assert len(tl.select("exercise")) == 0
    assert str(carbs.error(0, "duration", "too long")) == f"{tl.source}, row 3, field 'duration': too long"
    assert isinstance(carbs.error(0, "duration", "x"), TimelineError)
    with pytest.raises(ValueError):
        tl.time[0] = 1.0
    assert tl.time.dtype == np.float64 and tl.value.dtype == np.float64 and tl.row.dtype.kind == "i"


def test_empty_timeline_constructor():
    tl = Timeline.empty()
    assert len(tl) == 0 and tl.start is None and len(tl.select("carbs")) == 0
    assert list(tl.to_frame().columns) == ["time", "kind", "value", "unit", "duration"]


def test_timeline_kind_validation():
    with pytest.raises(ValueError, match="duration"):
        TimelineKind("x", "g", "", duration="sometimes")
    with pytest.raises(ValueError, match="unknown unit"):
        TimelineKind("x", "grams_of_xyz", "").check()  # units are checked once plugins defined theirs
    with pytest.raises(ValueError, match="ground-truth kind is an observation"):
        TimelineKind("x", "g", "", truth_of="y")
    with pytest.raises(ValueError, match="minimum"):
        TimelineKind("x", "g", "", minimum=2, maximum=1)


def test_builtin_kinds_register_through_hook():
    from physiotwin import plugins
    from physiotwin.plugins import kinds as kinds_module

    manager = pluggy.PluginManager(plugins.PROJECT)
    manager.add_hookspecs(plugins)
    manager.register(kinds_module)
    registered = []
    manager.hook.register_timeline_kinds(register=registered.append)
    assert {k.name for k in registered} == {"carbs", "bolus", "basal", "cgm", "sodium_intake", "exercise", "blood_loss",
                                            "sglt2i", "cgm_true", "bg", "bg_true", "carbs_true", "map", "heart_rate",
                                            "creatinine", "sodium_intake_true", "map_true", "heart_rate_true", "insulin_sensitivity_true",
                                            "creatinine_true"}
    builtin = kinds_module.BUILTIN_KINDS
    assert builtin["basal"].unit == "U/h" and builtin["basal"].duration == "forbidden"
    assert builtin["cgm"].observation and builtin["cgm"].unit_context == "glucose"
    assert builtin["cgm_true"].truth_of == "cgm" and not builtin["cgm_true"].fitted and builtin["cgm"].fitted
    assert builtin["basal"].level and builtin["sodium_intake"].level and not builtin["carbs"].level
    assert not builtin["carbs"].observation and builtin["bolus"].unit == "U"


# --------------------------------------------------------------------------- properties

# kind -> [(unit, factor to the canonical unit)]
UNITS = {
    "carbs": [("g", 1.0), ("kg", 1000.0)],
    "bolus": [("U", 1.0), ("mU", 1e-3)],
    "basal": [("U/h", 1.0), ("U/min", 60.0)],
    "cgm": [("mg/dL", 1.0), ("mmol/L", GLUCOSE_MG_DL_PER_MMOL_L)],
}
WITH_DURATION = {"carbs", "bolus"}
finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def an_event(draw):
    kind = draw(st.sampled_from(sorted(UNITS)))
    unit, factor = draw(st.sampled_from(UNITS[kind]))
    time = draw(st.integers(0, 10_000) | st.floats(0, 1e4, **finite))
    value = draw(st.floats(0, 500, **finite))
    duration = draw(st.none() | st.floats(0.01, 600, **finite)) if kind in WITH_DURATION else None
    return {"time": time, "kind": kind, "value": value, "unit": unit, "duration": duration, "factor": factor}


@st.composite
def a_table(draw):
    """Events in file order, the CSV text, and each event's line number."""
    events = draw(st.permutations(draw(st.lists(an_event(), min_size=1, max_size=12))))
    columns = draw(st.permutations(["time", "kind", "value", "unit", "duration"]))
    pad = draw(st.sampled_from(["", " ", "  "]))
    lines = [f"# prelude {i}" for i in range(draw(st.integers(0, 2)))]
    lines.append(",".join(f"{pad}{c}{pad}" for c in columns))
    rows = []
    for event in events:
        if draw(st.booleans()) and draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "# note", "   "])))
        cells = {k: ("" if v is None else repr(v) if isinstance(v, float) else str(v)) for k, v in event.items()}
        lines.append(",".join(f"{pad}{cells[c]}{pad}" for c in columns))
        rows.append(len(lines))
    return events, rows, columns, lines


def events_sorted(events, rows):
    order = sorted(range(len(events)), key=lambda i: float(events[i]["time"]))  # stable
    return [events[i] for i in order], [rows[i] for i in order]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=a_table())
def test_valid_tables_round_trip(tmp_path, table):
    events, rows, _, lines = table
    path = write(tmp_path, "\n".join(lines) + "\n")
    tl = read_timeline(path)
    expected, expected_rows = events_sorted(events, rows)
    assert tl.time.tolist() == [float(e["time"]) for e in expected]
    assert tl.kind.tolist() == [e["kind"] for e in expected]
    np.testing.assert_allclose(tl.value, [e["value"] * e["factor"] for e in expected], rtol=1e-12, atol=0)
    durations = [math.nan if e["duration"] is None else e["duration"] for e in expected]
    np.testing.assert_array_equal(tl.duration, durations)
    assert tl.row.tolist() == expected_rows


CORRUPTIONS = {
    "value": ["abc", "nan", "inf", "-5", "", "1e400", "5 g"],
    "unit": ["mL", "grams_of_xyz", "", "km"],
    "kind": ["snack", "Carbs", ""],
    "time": ["-1", "abc", "inf", ""],
    "duration": ["0", "-3", "abc", "nan"],
}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=a_table(), data=st.data())
def test_one_corrupted_field_is_reported(tmp_path, table, data):
    events, rows, columns, lines = table
    which = data.draw(st.integers(0, len(events) - 1))
    field = data.draw(st.sampled_from(sorted(CORRUPTIONS)))
    bad = data.draw(st.sampled_from(CORRUPTIONS[field]))
    line = rows[which] - 1
    cells = lines[line].split(",")
    cells[columns.index(field)] = bad
    lines = lines[:line] + [",".join(cells)] + lines[line + 1 :]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(TimelineError) as info:
        read_timeline(path)
    message = str(info.value)
    assert message.startswith(f"{path}, row {rows[which]}, field '{field}': "), message
    assert re.fullmatch(r"[^\n]+", message)


def test_required_duration_and_new_kinds(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("time,kind,value,unit,duration\n0,exercise,0.6,1,30\n10,blood_loss,0.5,L,20\n20,sglt2i,25,mg,\n"
                    "30,sodium_intake,6.9,g/day,\n")
    tl = read_timeline(path, kinds=None)
    assert list(tl.kind) == ["exercise", "blood_loss", "sglt2i", "sodium_intake"]
    assert tl.value[1] == 500.0  # 0.5 L -> mL
    path.write_text("time,kind,value,unit,duration\n0,exercise,0.6,1,\n")
    with pytest.raises(TimelineError, match=r"row 2, field 'duration': 'exercise' needs a duration"):
        read_timeline(path)
    path.write_text("time,kind,value,unit,duration\n0,exercise,1.2,1,10\n")
    with pytest.raises(TimelineError, match=r"row 2, field 'value': value 1.2 above maximum 1 for 'exercise'"):
        read_timeline(path)
    path.write_text("time,kind,value,unit,duration\n0,sodium_intake,-1,mmol/day,\n")
    with pytest.raises(TimelineError, match=r"row 2, field 'value': negative amount"):
        read_timeline(path)


def test_unit_errors_list_the_units_of_the_kind(tmp_path):
    path = write(tmp_path, HEADER + "0,exercise,50,percnt,30\n")
    assert error_of(path).endswith("unknown unit 'percnt' (units of 'exercise': 1, percent)")
    path = write(tmp_path, HEADER + "0,cgm,5,mmHg,\n")
    assert error_of(path).endswith("(units of 'cgm': mg/dL, mmol/L)")
    assert read_timeline(write(tmp_path, HEADER + "0,exercise,50,percent,30\n")).value[0] == 0.5
