"""``physiotwin report``: the AGP report's metrics against iglu-python, the three output
formats, bad inputs, the twin's sections and the page in a real headless browser.

The twin test shares the session's calibrated twin (``twin_dir``), so it runs in the
``session-twin`` xdist group with the other files that use it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import DATA

from physiotwin.cli import main

RECORD = DATA / "record_small.csv"
CHROMIUM = "/usr/bin/chromium"


def _cgm(path=RECORD):
    from physiotwin.plugins.agp import _readings
    from physiotwin.timeline import read_timeline

    tl = read_timeline(path)
    return tl, *_readings(tl)


def _iglu_frame(tl, minutes, glucose) -> pd.DataFrame:
    when = pd.Timestamp(tl.start) + pd.to_timedelta(minutes, unit="min")
    return pd.DataFrame({"id": "patient", "time": when, "gl": glucose})


# ------------------------------------------------------------------ metrics vs iglu
@pytest.mark.parametrize("edges", [False, True], ids=["record", "range-edges"])
def test_metrics_equal_iglu(edges):
    """mean, GMI, CV, TIR/TBR/TAR and % active agree with iglu-python on the same readings
    (with ``edges``: readings exactly at 54, 70, 180 and 250 mg/dL, where inclusive and
    exclusive bounds differ)."""
    iglu = pytest.importorskip("iglu_python")
    from physiotwin.plugins.agp import consensus_metrics

    tl, minutes, glucose = _cgm()
    if edges:
        glucose = glucose.copy()
        glucose[:40] = np.repeat([54.0, 70.0, 180.0, 250.0], 10)
    ours = consensus_metrics(minutes, glucose)
    df = _iglu_frame(tl, minutes, glucose)
    theirs = {
        "mean": iglu.mean_glu(df)["mean"].iloc[0],
        "gmi": iglu.gmi(df)["GMI"].iloc[0],
        "cv": iglu.cv_glu(df)["CV"].iloc[0],
        "tir": iglu.in_range_percent(df, [[70, 180]])["in_range_70_180"].iloc[0],
        "tbr70": iglu.below_percent(df, [54, 70])["below_70"].iloc[0],
        "tbr54": iglu.below_percent(df, [54, 70])["below_54"].iloc[0],
        "tar180": iglu.above_percent(df, [180, 250])["above_180"].iloc[0],
        "tar250": iglu.above_percent(df, [180, 250])["above_250"].iloc[0],
        "active": iglu.active_percent(df, tz="UTC")["active_percent"].iloc[0],
    }
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(float(value), rel=1e-9, abs=1e-9), key
    assert ours["tir"] + ours["tbr70"] + ours["tar180"] == pytest.approx(100.0)
    assert ours["days"] == pytest.approx(float(iglu.active_percent(df, tz="UTC")["ndays"].iloc[0]), abs=0.05)


def test_agp_percentiles_by_time_of_day():
    from physiotwin.plugins.agp import agp_percentiles

    minutes = np.arange(0, 3 * 1440, 5.0)
    glucose = 100 + 50 * np.sin(2 * np.pi * minutes / 1440)  # the same day three times
    grid, q = agp_percentiles(minutes, glucose)
    assert grid.size == 96 and q.shape == (5, 96)
    assert np.all(np.diff(q, axis=0) >= 0)  # 5 <= 25 <= 50 <= 75 <= 95
    assert q[2, 24] == pytest.approx(150.0, abs=1.0)  # 06:00, the peak of the sine


def test_no_applicable_report_names_the_kinds():
    from physiotwin.report import Report, ReportError, applicable
    from physiotwin.timeline import Timeline

    tl = Timeline(np.zeros(1), np.array(["carbs"], dtype=object), np.ones(1), np.full(1, np.nan), np.ones(1, int),
                  source="r.csv", start=None)
    reports = {"agp": Report("agp", "", ("cgm",), lambda inp: [])}
    with pytest.raises(ReportError, match=r"r.csv: .*\(carbs\).*agp: cgm"):
        applicable(tl, reports)


# ------------------------------------------------------------------ formats and bad inputs
def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in ("report", *args)])


@pytest.fixture(scope="module")
def html_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    res = _run(RECORD, "--out", out, "--title", "Record small")
    assert res.exit_code == 0, res.output
    return out


def test_html_is_self_contained(html_report):
    import re

    text = html_report.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for needle in ('id="agp"', 'id="consensus-metrics-table"', 'id="daily-profiles"', 'id="daily-profiles-figure"',
                   "Time in range 70–180 mg/dL",
                   "record_small.csv", "2026-01-05 00:00 to 2026-01-06 23:55", "physiotwin 0.", "<svg",
                   'id="therapy-table"', "Record small"):
        assert needle in text, needle
    assert not re.search(r'(src|href)="(https?:)?//', text)  # no external resource
    ids = re.findall(r'\bid="([^"]+)"', text)
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})  # valid HTML: unique ids
    assert "<script" not in text and "<link" not in text


@pytest.mark.parametrize("suffix", [".pdf", ".png"])
def test_pdf_and_png_are_written(tmp_path, suffix):
    out = tmp_path / f"report{suffix}"
    res = _run(RECORD, "--out", out)
    assert res.exit_code == 0, res.output
    data = out.read_bytes()
    if suffix == ".pdf":
        assert data.startswith(b"%PDF") and data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") >= 4
    else:
        import matplotlib.pyplot as plt

        assert data.startswith(b"\x89PNG")
        image = plt.imread(out)
        assert image.shape[0] > 800 and image.shape[1] > 800 and image.std() > 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary file left


def _no_cgm(tmp_path) -> Path:
    lines = [line for line in RECORD.read_text().splitlines() if ",cgm," not in line]
    path = tmp_path / "no_cgm.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("case", ["no-cgm", "twin-dir", "suffix", "forecast-file"])
def test_bad_inputs_exit_1_with_one_line(tmp_path, case):
    out = tmp_path / "out" / ("report.docx" if case == "suffix" else "report.html")
    out.parent.mkdir()
    args = {"no-cgm": (_no_cgm(tmp_path), "--out", out),
            "twin-dir": (RECORD, "--twin", tmp_path, "--out", out),
            "suffix": (RECORD, "--out", out),
            "forecast-file": (RECORD, "--forecast", RECORD, "--out", out)}[case]
    res = _run(*args)
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    expected = {"no-cgm": "no report applies", "twin-dir": "not a twin directory", "suffix": "unknown report format",
                "forecast-file": "cannot read the forecast result file"}[case]
    assert expected in lines[0]
    assert list(out.parent.iterdir()) == []


# ------------------------------------------------------------------ with the twin
@pytest.mark.xdist_group("session-twin")
def test_report_with_twin_forecast_and_whatif(twin_dir, record_parts, tmp_path):
    """The twin's fit, its own forecasts of the last day and a what-if, on the record the
    twin was fitted on (the replay is the one the fit section computes: compiled once)."""
    from physiotwin.calibration.twin import Twin
    from physiotwin.registry import reports
    from physiotwin.report import make_report
    from physiotwin.timeline import read_timeline

    twin = Twin.load(twin_dir)
    train = read_timeline(record_parts[0])
    whatif = twin.whatif(train)
    out = make_report(train, tmp_path / "twin.html", reports(), twin=twin, twin_source=str(twin_dir),
                      extras={"whatif": whatif})
    text = out.read_text()
    for needle in ('id="twin-fit"', 'id="twin-fit-table"', 'id="forecast-table"', 'id="whatif-table"',
                   "RMSE [mg/dL]", "computed by the twin", "hybrid"):
        assert needle in text, needle
    rmse = text.split("RMSE [mg/dL]</td>", 1)[1].split("</td>", 2)[1].rsplit(">", 1)[1]
    assert 0 < float(rmse) < 40  # the fitted trace follows the readings


# ------------------------------------------------------------------ in a real browser
def _chromium() -> str | None:
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if found is None and os.environ.get("PHYSIOTWIN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"PHYSIOTWIN_REQUIRE_BROWSER=1 but there is no {CHROMIUM} (apt-get install chromium)")
    if found is None:
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium; PHYSIOTWIN_REQUIRE_BROWSER=1 makes this a failure)")
    return found


def _browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}"]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)


def test_html_renders_in_headless_chromium(html_report, tmp_path):
    import matplotlib.pyplot as plt

    chromium = _chromium()
    url = html_report.resolve().as_uri()
    dom = _browser(chromium, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="agp"' in dom.stdout and "<svg" in dom.stdout.split('id="agp"', 1)[1][:400]
    assert 'id="consensus-metrics-table"' in dom.stdout and "Time in range 70–180 mg/dL" in dom.stdout
    shot = tmp_path / "shot.png"
    res = _browser(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,2000", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    image = plt.imread(shot)[..., :3]
    assert image.shape[:2] == (2000, 1200)
    not_white = np.mean(np.any(image < 0.9, axis=-1))
    assert not_white > 0.03 and image.std() > 0.05  # text, tables and figures drawn, not a blank page
