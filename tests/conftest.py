"""Shared test setup: float64, a persistent compilation cache, and the compiled
models that several test files share (JIT compiles dominate the suite's time)."""

from __future__ import annotations

import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_num_cpu_devices", 2)  # as the CLI does on a 2-core machine: exercises the split path
_CACHE = os.environ.get("PHYSIOTWIN_TEST_JAX_CACHE", str(Path(__file__).resolve().parent.parent / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
os.environ.setdefault("PHYSIOTWIN_JAX_CACHE", _CACHE)  # for CLI subprocesses

import pytest  # noqa: E402
from helpers import DATA, UVA_PATIENTS  # noqa: E402

# the files that share the session's calibrated twin run on one xdist worker (calibrated once),
# every other file on a worker of its own choosing, whole (its module fixtures computed once)
_TWIN_FILES = {"test_calibration.py", "test_whatif.py", "test_control.py", "test_multikind.py"}


# the longest groups first, so that no worker is left alone with one at the end (the order is kept:
# --no-loadscope-reorder; xdist would otherwise put the groups with most tests first, notebooks last)
_LONGEST = ("06-hybrid-learns.ipynb", "session-twin", "04-cardiorenal-twin.ipynb", "07-real-data.ipynb", "test_steady.py",
            "03-calibrate-a-twin.ipynb", "test_cardiovascular.py", "test_population.py", "05-what-if.ipynb",
            "test_validation.py", "test_cohort.py", "02-multi-organ.ipynb")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("session-twin" if name in _TWIN_FILES else name))
    rank = {g: i for i, g in enumerate(_LONGEST)}

    def order(item):
        name = item.path.name
        return rank.get("session-twin" if name in _TWIN_FILES else name, len(rank))

    items.sort(key=order)  # stable: the order within a group is kept

@pytest.fixture(scope="session")
def reference_scenario():
    from physiotwin.registry import timeline_kinds
    from physiotwin.timeline import read_timeline

    return read_timeline(DATA / "reference_scenario.csv", kinds=timeline_kinds())


@pytest.fixture(scope="session")
def reference_run(reference_scenario):
    """All 30 UVA/Padova patients on the reference scenario, 24 h, output every minute."""
    import physiotwin as pt

    return pt.simulate(["glucose"], UVA_PATIENTS, reference_scenario, hours=24, every=1)


SPLIT = 36 * 60  # min


@pytest.fixture(scope="session")
def record_parts(tmp_path_factory):
    """tests/data/record_small.csv cut in two: 36 h to fit, the last 12 h to forecast."""
    from physiotwin.calibration.data import split_record, timeline_text
    from physiotwin.timeline import read_timeline

    tl = read_timeline(DATA / "record_small.csv")
    train, test = split_record(tl, SPLIT)
    d = tmp_path_factory.mktemp("records")
    (d / "train.csv").write_text(timeline_text(train))
    (d / "test.csv").write_text(timeline_text(test))
    return d / "train.csv", d / "test.csv"


@pytest.fixture(scope="session")
def twin_dir(record_parts, tmp_path_factory):
    """One small hybrid glucose twin, calibrated once through the CLI and shared by the tests."""
    from click.testing import CliRunner

    from physiotwin.cli import main

    out = tmp_path_factory.mktemp("twins") / "twin"
    # the record also holds heart-rate readings, left out with --ignore-kind (the twin is fitted,
    # tuned and saved without them: its record equals train.csv)
    with_hr = tmp_path_factory.mktemp("with_hr") / "train.csv"
    with_hr.write_text(record_parts[0].read_text()  # times in minutes (timeline_text)
                       + "".join(f"{m},heart_rate,{70 + m % 7},1/min,\n" for m in range(60, 2000, 240)))
    res = CliRunner().invoke(main, [str(a) for a in ("calibrate", with_hr, "--out", out, "--steps", 25,
                                                      "--hybrid-steps", 20, "--quiet", "--seed", 0,
                                                      "--ignore-kind", "heart_rate")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "hybrid twin" in res.output and "residual glucose.glucose_flux" in res.output
    assert "heart_rate" not in (out / "record.csv").read_text()
    return out

