"""Cohorts: per-patient timelines (equal to separate runs), the fixed-step cohort solver
against the adaptive one, Zarr and NetCDF outputs agreeing, per-patient summaries, a
run resumed after a crash, and clear errors for bad cohort input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

import physiotwin as pt
from physiotwin.cli import main
from physiotwin.cohort import CohortRun, collect, read_cohort

HOURS = 6
PATIENTS = ["adult#001", "child#002", "adolescent#003", "adult#004", "adult#005"]
EARLY = "time,kind,value,unit\n30,carbs,40,g\n30,bolus,3,U\n200,carbs,25,g\n"
LATE = "time,kind,value,unit\n90,carbs,60,g\n95,bolus,5,U\n"
DEFAULT = "time,kind,value,unit\n60,carbs,30,g\n60,bolus,2,U\n"


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort")
    (d / "tl").mkdir()
    (d / "tl" / "early.csv").write_text(EARLY)
    (d / "tl" / "late.csv").write_text(LATE)
    (d / "default.csv").write_text(DEFAULT)
    table = pt.bundled_patients().loc[PATIENTS].drop(columns=["source"]).reset_index()
    table["timeline"] = ["tl/early.csv", "tl/late.csv", "", "tl/early.csv", "tl/late.csv"]
    table.to_csv(d / "cohort.csv", index=False)
    return d


@pytest.fixture(scope="module")
def model():
    return pt.compose(["glucose"])


@pytest.fixture(scope="module")
def cohort_run(model, cohort_dir):
    cohort = read_cohort(model, cohort_dir / "cohort.csv", cohort_dir / "default.csv")
    return collect(CohortRun(model, cohort, HOURS * 60, 5, chunk=2))


def test_per_patient_timelines_equal_separate_runs(model, cohort_dir, cohort_run):
    ds = cohort_run
    assert list(ds["patient"].values) == PATIENTS
    assert ds.sizes["time"] == HOURS * 12 + 1 and (ds["solver_status"].values == 0).all()
    files = {"tl/early.csv": cohort_dir / "tl" / "early.csv", "tl/late.csv": cohort_dir / "tl" / "late.csv",
             "": cohort_dir / "default.csv"}
    table = pd.read_csv(cohort_dir / "cohort.csv", keep_default_na=False)
    g = ds["glucose.plasma_glucose"].values
    for i, (name, cell) in enumerate(zip(table["patient"], table["timeline"])):
        alone = read_cohort(model, name, files[cell])
        one = collect(CohortRun(model, alone, HOURS * 60, 5, chunk=2))  # same chunk shape: no new compile
        np.testing.assert_array_equal(one["glucose.plasma_glucose"].values[0], g[i])
    # the timelines differ where they should: same patient, other meals
    assert np.abs(g[0] - g[3]).max() > 1.0 and np.abs(g[1] - g[4]).max() > 1.0


def test_fixed_steps_agree_with_adaptive(cohort_dir, cohort_run):
    """The cohort's fixed minute steps against the adaptive solver on the same patients and meals."""
    early = [i for i, t in enumerate(["e", "l", "d", "e", "l"]) if t == "e"]
    ref = pt.simulate(["glucose"], [PATIENTS[i] for i in early], cohort_dir / "tl" / "early.csv", hours=HOURS)
    diff = np.abs(ref["glucose.plasma_glucose"].values - cohort_run["glucose.plasma_glucose"].values[early])
    assert diff.max() < 0.2, diff.max()


@pytest.fixture(scope="module")
def cli_runs(cohort_dir):
    runner = CliRunner()
    common = ["simulate", "--organ", "glucose", "--patients", str(cohort_dir / "cohort.csv"), "--timeline",
              str(cohort_dir / "default.csv"), "--hours", str(HOURS), "--chunk", "2",
              "--outputs", "glucose.plasma_glucose,glucose.subcutaneous_glucose"]
    out = {}
    for name in ("run.nc", "run.zarr"):
        res = runner.invoke(main, common + ["--out", str(cohort_dir / name)])
        assert res.exit_code == 0, res.output
        out[name] = res.output
    res = runner.invoke(main, common + ["--out", str(cohort_dir / "summary.nc"), "--summary"])
    assert res.exit_code == 0, res.output
    return out


def test_zarr_and_netcdf_agree(cohort_dir, cli_runs, cohort_run):
    nc = xr.load_dataset(cohort_dir / "run.nc")
    zr = xr.open_zarr(cohort_dir / "run.zarr").load()
    assert set(nc.data_vars) == set(zr.data_vars)
    assert [v for v in nc.data_vars if "glucose" in v] == ["glucose.plasma_glucose", "glucose.subcutaneous_glucose"]
    for v in nc.data_vars:
        np.testing.assert_array_equal(nc[v].values, zr[v].values)
    assert list(zr["patient"].values) == PATIENTS
    np.testing.assert_array_equal(zr["glucose.plasma_glucose"].values, cohort_run["glucose.plasma_glucose"].values)
    assert zr["glucose.plasma_glucose"].encoding["chunks"] == (2, HOURS * 12 + 1)
    assert not (cohort_dir / "run.zarr.part").exists()


def test_summary_instead_of_trajectories(cohort_dir, cli_runs, cohort_run):
    from physiotwin.plugins.glucose_metrics import cgm_metrics

    s = xr.load_dataset(cohort_dir / "summary.nc")
    assert "time" not in s.dims and s.sizes["patient"] == len(PATIENTS)
    cgm = cohort_run["glucose.subcutaneous_glucose"].values
    for i in range(len(PATIENTS)):
        m = cgm_metrics(np.clip(cgm[i], 39.0, 600.0))
        assert s["glucose.subcutaneous_glucose.tir"].values[i] == pytest.approx(m["tir"])
        assert s["glucose.subcutaneous_glucose.mean"].values[i] == pytest.approx(m["mean"])


def test_zarr_run_resumes_after_a_crash(cohort_dir, cli_runs, monkeypatch):
    """A run that dies after its first chunks leaves OUT.zarr.part; the rerun skips the chunks
    already written and ends with the numbers of an uninterrupted run."""
    args = ["simulate", "--organ", "glucose", "--patients", str(cohort_dir / "cohort.csv"), "--timeline",
            str(cohort_dir / "default.csv"), "--hours", str(HOURS), "--chunk", "2",
            "--outputs", "glucose.plasma_glucose,glucose.subcutaneous_glucose", "--out", str(cohort_dir / "re.zarr")]
    real = CohortRun.solve
    solved = []

    def crash_at_2(self, k):
        if k == 2:
            raise KeyboardInterrupt
        solved.append(k)
        return real(self, k)

    monkeypatch.setattr(CohortRun, "solve", crash_at_2)
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 and (cohort_dir / "re.zarr.part").is_dir() and not (cohort_dir / "re.zarr").exists()
    assert solved == [0, 1]
    monkeypatch.setattr(CohortRun, "solve", lambda self, k: (solved.append(k), real(self, k))[1])
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert solved == [0, 1, 2]  # chunks 0 and 1 were not solved again
    ref = xr.open_zarr(cohort_dir / "run.zarr").load()
    again = xr.open_zarr(cohort_dir / "re.zarr").load()
    for v in ref.data_vars:
        np.testing.assert_array_equal(ref[v].values, again[v].values)
    # a leftover .part of another run is refused, not mixed in
    (cohort_dir / "other.zarr.part" / "_physiotwin_done").mkdir(parents=True)
    (cohort_dir / "other.zarr.part" / "_physiotwin_done" / "fingerprint").write_text("0123")
    res = CliRunner().invoke(main, args[:-1] + [str(cohort_dir / "other.zarr")])
    assert res.exit_code == 1 and "another specification" in res.output


def test_cohort_input_errors(tmp_path, cohort_dir, model):
    table = pd.read_csv(cohort_dir / "cohort.csv", keep_default_na=False)
    table.loc[1, "timeline"] = "tl/missing.csv"
    table.to_csv(cohort_dir / "bad.csv", index=False)
    runner = CliRunner()
    base = ["simulate", "--organ", "glucose", "--hours", "1", "--out", str(tmp_path / "x.nc")]
    res = runner.invoke(main, base + ["--patients", str(cohort_dir / "bad.csv")])
    assert res.exit_code == 1
    assert "bad.csv: patient 'child#002', column 'timeline': no timeline file 'tl/missing.csv'" in res.output
    res = runner.invoke(main, base + ["--patient", "adult#001", "--outputs", "glucose.nope"])
    assert res.exit_code == 1 and "unknown output 'glucose.nope'" in res.output and "glucose.Gp" in res.output
    res = runner.invoke(main, base + ["--patient", "adult#001", "--solver", "fixed", "--every", "7"])
    assert res.exit_code == 1 and "multiple of the output interval" in res.output
    assert not (tmp_path / "x.nc").exists()
    with pytest.raises(pt.PatientError, match="'timeline' column"):
        pt.simulate(["glucose"], cohort_dir / "cohort.csv", hours=1)


# ------------------------------------------------------------------ trials
def _write_spec(folder, name="spec.toml", extra=""):
    (folder / name).write_text(f"""organs = ["glucose"]
hours = {HOURS}
chunk = 2
metrics = ["tir", "tbr70"]
{extra}
[cohort]
patients = "cohort.csv"
timeline = "default.csv"

[[arms]]
name = "usual care"

[[arms]]
name = "bolus +30 %"
scale = {{ bolus = 1.3 }}
""")
    return folder / name


@pytest.fixture(scope="module")
def trial_in_process(cohort_dir):
    from physiotwin.trial import read_spec, run_trial

    spec = read_spec(_write_spec(cohort_dir))
    return spec, run_trial(spec, cohort_dir / "t0.zarr", workers=0).load()


def test_trial_arms_and_paired_summary(cohort_dir, trial_in_process, cohort_run):
    from physiotwin.trial import arm_summary

    spec, ds = trial_in_process
    assert list(ds["arm"].values) == ["usual care", "bolus +30 %"] and ds.sizes["patient"] == len(PATIENTS)
    usual = ds["glucose.plasma_glucose"].sel(arm="usual care").values
    np.testing.assert_array_equal(usual, cohort_run["glucose.plasma_glucose"].values)
    more = ds["glucose.plasma_glucose"].sel(arm="bolus +30 %").values
    assert (more <= usual + 1e-9).all() and (more < usual - 1).any()  # more insulin: lower glucose
    table = arm_summary(ds, spec.metrics)
    row = table[(table.arm == "bolus +30 %") & (table.metric == "glucose.subcutaneous_glucose.tbr70")].iloc[0]
    tbr = ds["glucose.subcutaneous_glucose.tbr70"].values
    assert row.paired_median_difference == pytest.approx(np.median(tbr[1] - tbr[0]))
    assert row["median"] == pytest.approx(np.median(tbr[1])) and row["patients"] == len(PATIENTS)
    assert row["mean"] == pytest.approx(tbr[1].mean()) and tbr[1].mean() > tbr[0].mean()


def test_trial_on_a_local_dask_cluster_equals_in_process(cohort_dir, trial_in_process):
    """Two worker processes, one device each: the numbers of the in-process run (two devices, one
    compiled program sharded over them) to rounding."""
    res = CliRunner().invoke(main, ["trial", str(cohort_dir / "spec.toml"), "--out", str(cohort_dir / "t2.zarr"),
                                    "--workers", "2"])
    assert res.exit_code == 0, res.output
    on_dask = xr.open_zarr(cohort_dir / "t2.zarr").load()
    for v in trial_in_process[1].data_vars:
        if on_dask[v].dtype.kind == "f":
            np.testing.assert_allclose(on_dask[v].values, trial_in_process[1][v].values, rtol=1e-12, err_msg=v)
        else:
            np.testing.assert_array_equal(on_dask[v].values, trial_in_process[1][v].values, err_msg=v)
    assert (cohort_dir / "t2_arms.csv").is_file() and (cohort_dir / "t2_arms.png").stat().st_size > 1000


def test_trial_killed_and_restarted_gives_the_same_numbers(cohort_dir, trial_in_process, monkeypatch):
    from physiotwin import trial as trial_mod

    spec = trial_in_process[0]
    real = trial_mod.run_task
    ran = []

    def dies_at_fourth(spec, store, arm, k):
        if len(ran) == 3:
            raise KeyboardInterrupt
        ran.append((arm, k))
        return real(spec, store, arm, k)

    monkeypatch.setattr(trial_mod, "run_task", dies_at_fourth)
    with pytest.raises(KeyboardInterrupt):
        trial_mod.run_trial(spec, cohort_dir / "tk.zarr", workers=0)
    assert (cohort_dir / "tk.zarr.part").is_dir() and not (cohort_dir / "tk.zarr").exists()
    monkeypatch.setattr(trial_mod, "run_task", lambda *a: (ran.append(a[2:]), real(*a))[1])
    ds = trial_mod.run_trial(spec, cohort_dir / "tk.zarr", workers=0).load()
    assert len(ran) == 5 and len(set(ran)) == 5  # 2 arms x 3 chunks, none solved twice (the first by the driver)
    for v in trial_in_process[1].data_vars:
        np.testing.assert_array_equal(ds[v].values, trial_in_process[1][v].values, err_msg=v)


def test_trial_spec_errors(cohort_dir):
    runner = CliRunner()
    _write_spec(cohort_dir)
    bad = _write_spec(cohort_dir, "bad.toml", extra="colour = 3")
    res = runner.invoke(main, ["trial", str(bad), "--out", str(cohort_dir / "b.zarr")])
    assert res.exit_code == 1 and "bad.toml: unknown key 'colour'" in res.output
    text = (cohort_dir / "spec.toml").read_text().replace("bolus = 1.3", "bolsu = 1.3")
    (cohort_dir / "bad2.toml").write_text(text)
    res = runner.invoke(main, ["trial", str(cohort_dir / "bad2.toml"), "--out", str(cohort_dir / "b.zarr")])
    assert res.exit_code == 1 and "arm 'bolus +30 %' scales unknown timeline kind 'bolsu'" in res.output
    assert not (cohort_dir / "b.zarr").exists() and not (cohort_dir / "b.zarr.part").exists()


def test_cohort_under_a_controller_matches_simulate(cohort_dir):
    """`--controller` on the cohort path: each patient's controller bound to its parameters and
    timeline, the same trajectories as `simulate(..., controller=)`."""
    res = CliRunner().invoke(main, ["simulate", "--organ", "glucose", "--patient", "adult#001", "--patient",
                                    "child#002", "--timeline", str(cohort_dir / "tl" / "early.csv"), "--hours",
                                    str(HOURS), "--solver", "fixed", "--chunk", "2", "--controller", "basal_bolus",
                                    "--outputs", "glucose.plasma_glucose", "--out", str(cohort_dir / "bb.nc")])
    assert res.exit_code == 0, res.output
    ours = xr.load_dataset(cohort_dir / "bb.nc")
    assert ours.attrs["controller"] == "basal_bolus"
    ref = pt.simulate(["glucose"], ["adult#001", "child#002"], cohort_dir / "tl" / "early.csv", hours=HOURS,
                      controller="basal_bolus")
    np.testing.assert_allclose(ours["glucose.plasma_glucose"].values, ref["glucose.plasma_glucose"].values,
                               rtol=1e-9)
