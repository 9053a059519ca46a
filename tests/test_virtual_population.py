"""Virtual populations (`physiotwin.population.sample_population`): reproducible draws, every
one at rest, spread like the bundled group they are drawn like; the UVA/Padova organ's
`derive` reproduces its bundled patients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from helpers import UVA_PATIENTS

import physiotwin as pt
from physiotwin.organs.glucose import Glucose
from physiotwin.patients import resolve_patients
from physiotwin.population import rest_signals, sample_population
from physiotwin.steady import TOL


@pytest.fixture(scope="module")
def model():
    return pt.compose(["glucose"])


@pytest.fixture(scope="module")
def adults(model):
    return sample_population(model, "adult", 200, seed=0)


def _rest_rates(model, theta):
    """Largest relative rate per day of each patient at the organs' initial state."""
    rest = jnp.asarray(rest_signals(model))

    def one(th):
        y0 = model.initial_state(th, rest)
        dy = model.evaluate(0.0, y0, th, rest)[0]
        return jnp.max(jnp.abs(dy) * 1440.0 / (jnp.abs(y0) + 1.0))

    return np.asarray(jax.vmap(one)(jnp.asarray(theta)))


def test_same_seed_same_patients(model, adults):
    table, report = adults
    again, report_again = sample_population(model, "adult", 200, seed=0)
    pd.testing.assert_frame_equal(table, again)
    assert report == report_again
    other, _ = sample_population(model, "adult", 200, seed=1)
    assert not np.allclose(other["glucose.Vm0"], table["glucose.Vm0"])
    fewer, _ = sample_population(model, "adult", 50, seed=0)  # the draws come in order
    pd.testing.assert_frame_equal(fewer, table.iloc[:50])


def test_table_is_a_patient_table(model, adults):
    table, report = adults
    assert list(table.columns) == ["patient", *model.param_names]
    assert table["patient"].iloc[0] == "adult-virtual#00001" and table["patient"].is_unique
    names, theta, _ = resolve_patients(model, table)  # validated column by column (bounds)
    assert names == list(table["patient"])
    np.testing.assert_array_equal(theta, table[list(model.param_names)].to_numpy())
    assert report["like"] == "adult" and report["n"] == 200 and report["seed"] == 0


def test_every_virtual_patient_starts_at_rest(model, adults):
    table, _ = adults
    rates = _rest_rates(model, table[list(model.param_names)].to_numpy())
    assert rates.max() < TOL, rates.max()
    # the steady state is the paper's: I = Ib, and the subcutaneous depot delivers u2ss
    np.testing.assert_allclose(table["glucose.Ipb"], table["glucose.Ib"] * table["glucose.Vi"], rtol=1e-12)
    isc = table["glucose.ka1"] * table["glucose.isc1ss"] + table["glucose.ka2"] * table["glucose.isc2ss"]
    np.testing.assert_allclose(isc, table["glucose.u2ss"], rtol=1e-12)


def test_spread_follows_the_bundled_adults(adults):
    table, report = adults
    bundled = pt.bundled_patients()
    group = bundled[bundled.index.str.startswith("adult")]
    sampled = report["parameters"]
    assert {"glucose.Vm0", "glucose.Vmx", "glucose.BW", "glucose.Gpb"} <= set(sampled)
    assert not set(sampled) & set(report["derived"])
    assert 0.0 < report["shrinkage"] <= 1.0
    logs = np.log(group[[q.split(".", 1)[1] for q in sampled]].to_numpy())
    drawn = np.log(table[sampled].to_numpy())
    # 200 draws: the standard error of a mean is 0.07 of the spread (b, truncated at its upper bound 1,
    # sits a little lower)
    shift = (drawn.mean(axis=0) - logs.mean(axis=0)) / logs.std(axis=0, ddof=1)
    assert np.abs(shift).max() < 0.3, dict(zip(sampled, shift.round(2)))
    ratio = drawn.std(axis=0, ddof=1) / logs.std(axis=0, ddof=1)
    assert 0.7 < ratio.min() and ratio.max() < 1.3, dict(zip(sampled, ratio.round(2)))
    # what does not vary is copied
    for q in ("glucose.HEb", "glucose.f", "glucose.Fsnc", "glucose.ke2"):
        assert q not in sampled and np.all(table[q] == group[q.split(".", 1)[1]].iloc[0])


def test_rejections_are_counted(adults):
    _, report = adults
    assert report["rejected"] == report["drawn"] - 200 == sum(report["reasons"].values())
    # a log-normal b (a fraction) passes 1 in about 4 % of the draws
    assert report["rejected"] > 0
    assert set(report["reasons"]) == {"glucose.b outside [0, 1]"}


class _Underived(Glucose):
    """The glucose organ without its steady-state relations: the basal values are drawn freely."""

    derived = ()

    def derive(self, p):
        return {}


def test_draws_not_at_rest_are_refused():
    model = pt.compose([_Underived()])
    with pytest.raises(pt.PatientError, match=r"only \d+ of 100 draws could start at rest.*not at rest: glucose\."):
        sample_population(model, "adult", 5, seed=0)


def test_unknown_or_small_group_is_refused(model):
    with pytest.raises(pt.PatientError, match=r"like='elderly': no bundled patient .*adult \(10\)"):
        sample_population(model, "elderly", 10)
    with pytest.raises(pt.PatientError, match=r"only 1 bundled patient\(s\) \(normal#001\).*at least 3"):
        sample_population(model, "normal", 10)
    with pytest.raises(pt.PatientError, match="positive whole number"):
        sample_population(model, "adult", 0)


def test_glucose_derive_reproduces_the_bundled_patients(model):
    """The basal relations of the UVA/Padova table hold in every bundled T1D patient."""
    _, theta, _ = resolve_patients(model, UVA_PATIENTS)
    organ = model.organ("glucose")
    p = {q.split(".", 1)[1]: theta[:, j] for j, q in enumerate(model.param_names)}
    derived = organ.derive(p)
    assert set(derived) == set(organ.derived)
    for name, values in derived.items():
        np.testing.assert_allclose(values, p[name], rtol=1e-9, err_msg=name)
    rederived = theta.copy()
    for name, values in derived.items():
        rederived[:, model.param_names.index(f"glucose.{name}")] = values
    assert _rest_rates(model, rederived).max() < 1e-10


def test_population_cli_writes_a_table_simulate_accepts(tmp_path):
    from click.testing import CliRunner

    from physiotwin.cli import main

    out = tmp_path / "cohort.csv"
    res = CliRunner().invoke(main, ["population", "--n", "20", "--like", "child", "--seed", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "20 patients" in res.output and "rejected" in res.output
    table = pd.read_csv(out, comment=None, skiprows=1)
    assert len(table) == 20 and table["patient"].str.startswith("child-virtual#").all()
    again = tmp_path / "again.csv"
    CliRunner().invoke(main, ["population", "--n", "20", "--like", "child", "--seed", "3", "--out", str(again)])
    assert out.read_text() == again.read_text()
    res = CliRunner().invoke(main, ["population", "--n", "5", "--like", "zz", "--out", str(tmp_path / "no.csv")])
    assert res.exit_code == 1 and "groups: adolescent, adult, child" in res.output
    assert not (tmp_path / "no.csv").exists()
