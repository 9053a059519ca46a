"""``physiotwin import``: every sample export (tests/data/imports, written by make_samples.py)
becomes a record that reads back and that calibration's data check accepts; sentinels,
duplicates, daylight saving, format guessing and bad files."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from physiotwin.cli import main
from physiotwin.errors import ImportFileError
from physiotwin.plausibility import check_record
from physiotwin.record_import import import_files
from physiotwin.registry import importers
from physiotwin.timeline import read_timeline

DATA = Path(__file__).parent / "data" / "imports"
SAMPLES = {  # files, format, --tz, expected counts per kind
    "dexcom": (["dexcom.csv"], "dexcom", "Europe/Berlin", {"cgm": 552, "carbs": 8, "bolus": 8, "exercise": 1}),
    "libre": (["libre.csv"], "libre", None, {"cgm": 196, "bg": 2, "carbs": 8, "bolus": 8}),
    "libre_mmol": (["libre_mmol.csv"], "libre", None, {"cgm": 196, "bg": 2, "carbs": 8, "bolus": 8}),
    "carelink": (["carelink.csv"], "carelink", None, {"cgm": 552, "carbs": 8, "bolus": 8, "basal": 2}),
    "nightscout": (["nightscout_entries.json", "nightscout_treatments.json"], "nightscout", None,
                   {"cgm": 564, "bg": 1, "carbs": 9, "bolus": 9, "basal": 2}),
    "tidepool": (["tidepool.json"], "tidepool", None, {"cgm": 564, "bg": 1, "carbs": 8, "bolus": 9, "basal": 3}),
    "ohiot1dm": (["ohiot1dm.xml"], "ohiot1dm", None,
                 {"cgm": 556, "bg": 1, "carbs": 8, "bolus": 8, "basal": 4, "exercise": 1, "heart_rate": 96}),
    "fhir": (["fhir_bundle.json"], "fhir", None,
             {"cgm": 192, "bg": 2, "carbs": 8, "bolus": 8, "map": 2, "heart_rate": 2, "creatinine": 1}),
}


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _counts(tl) -> dict:
    kinds, n = np.unique(tl.kind.astype(str), return_counts=True)
    return dict(zip(kinds, n.tolist()))


@functools.lru_cache(maxsize=None)
def _imported(name):
    files, fmt, tz, _ = SAMPLES[name]
    return import_files([DATA / f for f in files], importers(), fmt, tz, check=check_record)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_every_sample_imports_through_the_cli_and_reads_back(name, tmp_path):
    files, _, tz, expected = SAMPLES[name]
    out = tmp_path / "record.csv"
    args = ["import", *[DATA / f for f in files], "--out", out] + (["--tz", tz] if tz else [])
    result = _run(*args)  # no --format: guessed
    assert result.exit_code == 0, result.output
    tl = read_timeline(out)
    assert _counts(tl) == expected
    assert np.all(np.diff(tl.time) >= 0)
    text = out.read_text()
    assert f"# source: {files[0]}" in text and f"{files[0]}:" in text  # header and provenance
    assert _counts(_imported(name).timeline) == expected  # the Python API agrees


def test_the_calibration_data_check_accepts_an_imported_record():
    from physiotwin.calibration.data import observed_kinds, prepare_record
    from physiotwin.calibration.twin import default_organs, observation_models_for
    from physiotwin.composer import compose

    tl = _imported("dexcom").timeline
    kinds = observed_kinds(tl)
    model = compose(default_organs(kinds))
    rec = prepare_record(model, tl, observation_models_for(model, kinds, "dexcom"))
    assert rec.minutes >= 2 * 1440 - 10 and np.isfinite(rec.obs).sum() >= 540


def test_sentinels_and_duplicates_are_counted():
    notes = "\n".join(_imported("dexcom").notes)
    assert "2 x 'High' reading(s) set to the sensor's upper limit" in notes
    assert "4 x 'Low'" in notes and "dropped 3 exact duplicate" in notes
    assert "Long-Acting" in notes  # a long-acting dose is skipped, not a bolus
    cgm = _imported("dexcom").timeline.select("cgm").value
    assert cgm.max() == 400 and cgm.min() == 40
    libre = "\n".join(_imported("libre").notes)
    assert "2 x 'LO'" in libre and "1 x 'HI'" in libre
    assert _imported("libre").timeline.select("cgm").value.max() == 500
    mmol = _imported("libre_mmol").timeline.select("cgm").value  # mmol/L converted to mg/dL by the reader
    assert 40 < mmol.min() and mmol.max() < 250


def test_daylight_saving_with_tz_gives_strictly_increasing_utc_times():
    frame = _imported("dexcom").frame
    cgm = frame[frame.kind == "cgm"]
    utc = pd.to_datetime(cgm.time, utc=True)
    assert utc.is_monotonic_increasing and utc.is_unique
    assert any(t.endswith("02:30:00+02:00") for t in cgm.time) and any(t.endswith("02:30:00+01:00") for t in cgm.time)


def test_daylight_saving_without_tz_is_refused(tmp_path):
    out = tmp_path / "r.csv"
    result = _run("import", DATA / "dexcom.csv", "--out", out)
    assert result.exit_code == 1 and not out.exists()
    assert "dexcom.csv, row" in result.output and "--tz" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_format_guessing():
    head = lambda f: (DATA / f).read_text()[:65536]
    for name, (files, fmt, _, _) in SAMPLES.items():
        found = [i.name for i in importers().values() if i.sniff(DATA / files[0], head(files[0]))]
        assert found == [fmt], name


def test_unknown_format_lists_the_installed_ones(tmp_path):
    result = _run("import", DATA / "dexcom.csv", "--format", "medtronic", "--out", tmp_path / "r.csv")
    assert result.exit_code == 1 and "installed formats: carelink, dexcom, fhir" in result.output
    weird = tmp_path / "weird.csv"
    weird.write_text("a,b\n1,2\n")
    result = _run("import", weird, "--out", tmp_path / "r.csv")
    assert result.exit_code == 1 and "cannot be guessed" in result.output and "pass --format" in result.output


def _bad(tmp_path, name, text, *extra):
    path = tmp_path / name
    path.write_text(text)
    out = tmp_path / "out.csv"
    result = _run("import", path, "--out", out, *extra)
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not out.exists()
    return result.output


def test_bad_files_give_one_line_naming_file_row_and_column(tmp_path):
    dexcom = (DATA / "dexcom.csv").read_text()
    lines = dexcom.splitlines()
    # wrong format: a Libre export read as Dexcom
    out = _bad(tmp_path, "libre.csv", (DATA / "libre.csv").read_text(), "--format", "dexcom")
    assert "libre.csv" in out and "no header line" in out
    # a truncated export (cut mid-row)
    out = _bad(tmp_path, "cut.csv", "\n".join(lines[:60]) + "\n" + lines[60][:25], "--tz", "Europe/Berlin")
    assert "cut.csv, row 61, column" in out and "truncated" in out
    # an unknown vendor column
    out = _bad(tmp_path, "renamed.csv", dexcom.replace("Transmitter ID", "Transmitter Serial", 1))
    assert "renamed.csv, row 1, column 'Transmitter Serial': unknown column" in out
    # mixed units in one column: a mmol/L value among mg/dL readings
    fields = lines[30].split(",")
    fields[7] = "7.9"
    out = _bad(tmp_path, "mixed.csv", "\n".join(lines[:30] + [",".join(fields)] + lines[31:]), "--tz", "Europe/Berlin")
    assert "mixed.csv, row 31, column 'Glucose Value (mg/dL)'" in out and "mixed units" in out


def test_bad_json_and_xml_name_the_row(tmp_path):
    out = _bad(tmp_path, "t.json", (DATA / "tidepool.json").read_text()[:5000], "--format", "tidepool")
    assert "t.json, row 1" in out and "truncated" in out
    out = _bad(tmp_path, "o.xml", (DATA / "ohiot1dm.xml").read_text()[:3000], "--format", "ohiot1dm")
    assert "o.xml, row" in out and "truncated" in out


LIBRE_LINES = (DATA / "libre.csv").read_text().splitlines()


@settings(max_examples=25, deadline=None)
@given(order=st.permutations(range(2, 60)), repeat=st.lists(st.integers(2, 59), max_size=5),
       blank=st.lists(st.integers(2, 59), max_size=3))
def test_libre_parser_is_indifferent_to_row_order_duplicates_and_blank_cells(tmp_path_factory, order, repeat, blank):
    rows = [LIBRE_LINES[i] for i in order] + [LIBRE_LINES[i] for i in repeat]
    blanked = {LIBRE_LINES[i] for i in blank}
    rows = [",".join(c if k < 4 else "" for k, c in enumerate(r.split(","))) if r in blanked else r for r in rows]
    path = tmp_path_factory.mktemp("libre") / "libre.csv"
    path.write_text("\n".join(LIBRE_LINES[:2] + rows) + "\n")
    reference = importers()["libre"].read(DATA / "libre.csv").frame.iloc[:58]
    frame = importers()["libre"].read(path).frame
    key = lambda f: sorted(zip(f.time.astype(str), f.kind, f.value.round(6)))
    kept = set(key(frame))
    assert kept <= set(key(reference))
    assert len(kept) >= len(set(key(reference))) - len(blank)


def test_api_errors_are_import_file_errors():
    with pytest.raises(ImportFileError, match="no such file"):
        import_files([DATA / "missing.csv"], importers(), "dexcom")
