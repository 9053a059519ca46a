"""Physiological validation of the composed glucose-cardiovascular-renal twin.

Reproduces the validation table of the design notes (PHYSIOLOGY.md): each row is a
situation a physiologist checks first, simulated with the three organs composed,
and compared with the literature range. It is registered as the validation study
``cardiorenal``; run it as

    python -m physiotwin.validation [--figures DIR] [--markdown FILE]

which prints model value, expected range and source side by side, and draws one
figure per situation. The tests (tests/test_validation.py) assert the same checks.
A run the solver flags (no steady state, a failed solve) is an error here, never
a row of the table.

All scenarios share one horizon and output grid, so they reuse one compiled model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from physiotwin.errors import SimulationError
from physiotwin.extensions import Check, ValidationStudy
from physiotwin.plugins import hookimpl

__all__ = ["run", "ORGANS", "PATIENT"]

ORGANS = ("glucose", "cardiovascular", "renal")
PATIENT = "adult#001"
DAYS = 7
EVERY = 10.0  # min
DAY = 1440.0
EMPAGLIFLOZIN_MW = 450.91  # g/mol


def _events(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["time", "kind", "value", "unit", "duration"])


def _simulate(timeline, patients=PATIENT):
    import physiotwin as pt

    ds = pt.simulate(list(ORGANS), patients, timeline, days=DAYS, every=EVERY)
    flagged = np.atleast_1d(ds["solver_status"].values) != 0
    if flagged.any():
        who = np.atleast_1d(ds["patient"].values)[flagged]
        why = np.atleast_1d(ds["solver_message"].values)[flagged]
        raise SimulationError(f"validation run flagged by the solver: {', '.join(f'{w}: {m}' for w, m in zip(who, why))}")
    return ds


def _at(ds, name, minute, patient=None):
    da = ds[name] if patient is None else ds[name].sel(patient=patient)
    return float(da.sel(time=minute, method="nearest"))


# ------------------------------------------------------------------ scenarios
def baseline():
    ds = _simulate(None)
    t0 = 0.0
    src = "PHYSIOLOGY.md; Guyton & Hall; Hallow 2017"
    return ds, [
        Check("baseline adult, steady state", "MAP", _at(ds, "cardiovascular.MAP", t0), 90, 100, "mmHg", src),
        Check("baseline adult, steady state", "cardiac output", _at(ds, "cardiovascular.CO", t0), 4.5, 6, "L/min", src),
        Check("baseline adult, steady state", "heart rate", _at(ds, "cardiovascular.HR", t0), 60, 80, "1/min", src),
        Check("baseline adult, steady state", "GFR", _at(ds, "renal.GFR", t0), 90, 130, "mL/min", src),
        Check("baseline adult, steady state", "blood volume", _at(ds, "cardiovascular.blood_volume", t0), 4.5, 5.5,
              "L", src),
        Check("baseline adult, steady state", "Na excretion (intake 100)", _at(ds, "renal.sodium_excretion", t0),
              98, 102, "mmol/day", "balance: excretion = intake"),
        Check("plasma glucose below ~180 mg/dL", "UGE (glucose "
              f"{_at(ds, 'glucose.plasma_glucose', t0):.0f} mg/dL)", _at(ds, "renal.UGE", t0), 0, 1, "mg/min",
              "renal threshold ~180 mg/dL (DeFronzo 2013)"),
    ]


def sodium_loading():
    ds = _simulate(_events((DAY, "sodium_intake", 300, "mmol/day", None)))
    base_map = _at(ds, "cardiovascular.MAP", DAY - EVERY)
    una = ds["renal.sodium_excretion"]
    t = ds["time"].values
    reached = t[(t > DAY) & (una.values >= 0.95 * 300)]
    days_to_balance = (reached[0] - DAY) / DAY if len(reached) else np.inf
    src = "Guyton; Hallow 2017 (salt loading, normal kidney)"
    return ds, [
        Check("sodium intake 100 -> 300 mmol/day", "days to 95 % of new intake excreted", days_to_balance, 0, 5,
              "day", src),
        Check("sodium intake 100 -> 300 mmol/day", "MAP rise after 6 days",
              _at(ds, "cardiovascular.MAP", 7 * DAY) - base_map, 0, 5, "mmHg", src),
    ]


def _renal_at_rest():
    """The renal organ alone, at its steady state with default inputs (no flux in)."""
    import jax.numpy as jnp

    import physiotwin as pt
    from physiotwin.patients import resolve_patients

    model = pt.compose(["renal"])
    renal = model.organs[0]
    _, theta, _ = resolve_patients(model, PATIENT)
    p = {d.name: jnp.asarray(v) for d, v in zip(renal.params, theta[0])}
    u = {i.name: jnp.asarray(i.default) for i in renal.inputs}
    u.update({port.name: jnp.asarray(0.0) for port in renal.ports})
    return renal, p, u, renal.initial_state(p, u)


def renal_glucose_handling():
    """UGE at plasma glucose 300 mg/dL, from the renal organ at its steady state
    (evaluated directly: an algebraic relation of the kidney)."""
    import jax.numpy as jnp

    renal, p, u, x = _renal_at_rest()
    rows = {}
    for g in (100.0, 180.0, 300.0):
        _, y = renal.rhs(0.0, x, p, {**u, "plasma_glucose": jnp.asarray(g)})
        rows[g] = (float(y["UGE"]), float(y["GFR"]))
    uge, gfr = rows[300.0]
    src = "UGE ~ GFR (G - RTG) (PHYSIOLOGY.md; DeFronzo 2013)"
    return rows, [
        Check(f"plasma glucose 300 mg/dL, GFR {gfr:.0f} mL/min", "UGE", uge, 100, 150, "mg/min", src),
        Check("plasma glucose 100 mg/dL", "UGE", rows[100.0][0], 0, 1, "mg/min", src),
    ]


def sglt2_inhibition():
    """Hyperglycaemia (basal insulin halved), with and without empagliflozin 25 mg daily."""
    import physiotwin as pt

    basal = pt.bundled_patients().loc[PATIENT]
    half = 0.5 * basal["u2ss"] * basal["BW"] / 6000.0 * 60.0  # U/h
    rows = [(0.0, "basal", half, "U/h", None)]
    without = _simulate(_events(*rows))
    with_drug = _simulate(_events(*rows, *[(d * DAY, "sglt2i", 25.0, "mg", None) for d in range(1, DAYS)]))
    day = slice(5 * DAY, 6 * DAY)

    g_mean = float(without["glucose.plasma_glucose"].sel(time=day).mean())
    # without the drug: filtered load above the threshold, GFR (G - RTG)+, integrated over the day
    excess = (without["renal.GFR"] * (without["glucose.plasma_glucose"] - 180.0).clip(min=0) / 100.0).sel(time=day)
    expected = float(np.trapezoid(excess.values, excess["time"].values)) / 1000.0
    src = ("empagliflozin 10-25 mg in T2D: UGE ~50-100 g/day (Heise 2013 DOM 15:613: +74-90 g/day); 25 mg "
           "for 5 days: +108 (SE 10.8) g/day, upper bound mean + 2 SE (Heise 2016 Clin Ther 38:2265)")
    return (without, with_drug), [
        Check(f"SGLT2i 25 mg/day, hyperglycaemia (mean glucose {g_mean:.0f} mg/dL)", "UGE on day 6",
              _grams_per_day(with_drug), 50, 130, "g/day", src),
        Check("same, no SGLT2i", "UGE on day 6", _grams_per_day(without), 0.7 * expected, 1.3 * expected, "g/day",
              f"GFR (G - RTG)+ over the day = {expected:.0f} g (threshold 180 mg/dL)"),
    ]


def _grams_per_day(ds, day=slice(5 * DAY, 6 * DAY)):
    uge = ds["renal.UGE"].sel(time=day)
    return float(np.trapezoid(uge.values, uge["time"].values)) / 1000.0


MEALS = ((7.5, 50.0), (12.5, 70.0), (19.0, 80.0))  # (hour, g carbohydrate)
CARB_RATIO = 15.0  # g/U: mean glucose without the drug ~145 mg/dL (scenario set-up)


def sglt2_near_normal_glucose():
    """Three meals a day with boluses, basal at the patient's steady rate (mean glucose
    near 140 mg/dL), with and without empagliflozin 25 mg each morning from day 1."""
    import physiotwin as pt

    basal = pt.bundled_patients().loc[PATIENT]
    rows = [(0.0, "basal", basal["u2ss"] * basal["BW"] / 6000.0 * 60.0, "U/h", None)]
    for d in range(DAYS):
        for hour, grams in MEALS:
            rows += [(d * DAY + 60.0 * hour, "carbs", grams, "g", None),
                     (d * DAY + 60.0 * hour, "bolus", grams / CARB_RATIO, "U", None)]
    without = _simulate(_events(*rows))
    with_drug = _simulate(_events(*rows, *[(d * DAY + 420.0, "sglt2i", 25.0, "mg", None) for d in range(1, DAYS)]))
    day = slice(5 * DAY, 6 * DAY)
    g_off = float(without["glucose.plasma_glucose"].sel(time=day).mean())
    g_on = float(with_drug["glucose.plasma_glucose"].sel(time=day).mean())
    src = ("healthy volunteers and well-controlled patients ~50-70 g/day on 25 mg (PHYSIOLOGY.md; Seman 2013 "
           "Clin Pharmacol Drug Dev 2:152); T2D, single doses 2.5-100 mg: 46-90 g/24 h (Heise 2013 Diabetes "
           "Ther 4:331); SGLT1 reserve ~80 g/day (Vallon & Thomson 2017 Diabetologia 60:215)")
    return (without, with_drug), [
        Check(f"SGLT2i 25 mg/day, near-normal glucose (mean {g_off:.0f} mg/dL without, {g_on:.0f} with; "
              "3 meals + boluses)", "UGE on day 6", _grams_per_day(with_drug), 50, 80, "g/day", src),
    ]


def halved_gfr():
    """Nephron loss: one kidney removed (half the nephrons), and CKD with GFR halved."""
    import physiotwin as pt

    table = pt.bundled_patients().loc[[PATIENT]].drop(columns=["source"]).reset_index()
    donor = table.assign(patient="uninephrectomy", nephrons=1.0e6)  # half of the nominal 2e6
    ckd = table.assign(patient="CKD", nephrons=0.45e6)  # chosen so that GFR is about halved
    ds = _simulate(None, pd.concat([table, donor, ckd], ignore_index=True))
    gfr = ds["renal.GFR"].sel(time=6 * DAY, method="nearest")
    g = ds["glucose.plasma_glucose"].sel(time=slice(5 * DAY, 6 * DAY)).mean("time")
    ins = ds["glucose.plasma_insulin"].sel(time=slice(5 * DAY, 6 * DAY)).mean("time")
    ratio = lambda who: float(gfr.sel(patient=who) / gfr.sel(patient=PATIENT))
    src = "slower renal insulin clearance in CKD (Rabkin 1970; Mak 2000)"
    return ds, [
        Check("one kidney removed (nephrons halved)", "GFR relative to before", ratio("uninephrectomy"), 0.6, 0.8,
              "1", "living donors: ~65-75 % after compensatory hyperfiltration (Kasiske 2015)"),
        Check("CKD, GFR halved (set-up)", "GFR relative to normal", ratio("CKD"), 0.4, 0.6, "1", "scenario set-up"),
        Check("CKD, GFR halved", "plasma insulin change, same insulin dose",
              float(ins.sel(patient="CKD") - ins.sel(patient=PATIENT)), 0.5, np.inf, "pmol/L", src),
        Check("CKD, GFR halved", "plasma glucose change, same insulin dose",
              float(g.sel(patient="CKD") - g.sel(patient=PATIENT)), -np.inf, -1, "mg/dL", src),
    ]


def exercise():
    start, minutes = DAY, 60.0
    ds = _simulate(_events((start, "exercise", 0.6, "1", minutes)))
    before = start - EVERY
    during = slice(start, start + minutes)
    hr_rise = float(ds["cardiovascular.HR"].sel(time=during).max()) - _at(ds, "cardiovascular.HR", before)
    uptake = float(ds["glucose.glucose_utilization"].sel(time=during).max()) / _at(ds, "glucose.glucose_utilization", before)
    fall = _at(ds, "glucose.plasma_glucose", before) - _at(ds, "glucose.plasma_glucose", start + minutes)
    src = "Breton 2008; Dalla Man, Breton & Cobelli 2009"
    return ds, [
        Check("exercise 60 min at 60 % HR reserve", "heart-rate rise", hr_rise, 30, 90, "1/min", "HR reserve"),
        Check("exercise 60 min at 60 % HR reserve", "glucose uptake, peak / rest", uptake, 1.2, np.inf, "1", src),
        Check("exercise 60 min at 60 % HR reserve", "plasma glucose fall", fall, 10, np.inf, "mg/dL", src),
    ]


def blood_loss():
    start = DAY
    ds0 = _simulate(None)
    loss = 0.1 * _at(ds0, "cardiovascular.blood_volume", 0.0) * 1000.0  # mL, 10 %
    ds = _simulate(_events((start, "blood_loss", loss, "mL", 10.0)))
    before = start - EVERY
    window = slice(start, start + 120.0)
    m0, h0 = _at(ds, "cardiovascular.MAP", before), _at(ds, "cardiovascular.HR", before)
    nadir = float(ds["cardiovascular.MAP"].sel(time=window).min())
    hr_peak = float(ds["cardiovascular.HR"].sel(time=window).max())
    later = _at(ds, "cardiovascular.MAP", start + 6 * 60.0)
    recovered = (later - nadir) / (m0 - nadir) if m0 > nadir else np.nan
    t_nadir = float(ds["cardiovascular.MAP"].sel(time=window).idxmin())
    at_2h = _at(ds, "cardiovascular.MAP", t_nadir + 120.0)
    recovered_2h = (at_2h - nadir) / (m0 - nadir) if m0 > nadir else np.nan
    src = "haemorrhage: baroreflex and transcapillary refill (Guyton & Hall)"
    return ds, [
        Check(f"10 % blood loss ({loss:.0f} mL in 10 min)", "MAP drop", m0 - nadir, 3, 30, "mmHg", src),
        Check(f"10 % blood loss ({loss:.0f} mL in 10 min)", "heart-rate rise", hr_peak - h0, 3, 40, "1/min", src),
        Check(f"10 % blood loss ({loss:.0f} mL in 10 min)", "MAP recovered after 6 h (fraction of drop)", recovered,
              0.3, 0.99, "1", src),
        Check("500 mL blood loss over 10 min", "MAP recovered 2 h after the nadir (fraction of the drop)",
              recovered_2h, 0.3, 0.99, "1",
              "partial recovery (PHYSIOLOGY.md; Guyton & Hall; refill with protein returned from the interstitium: "
              "Adamson & Hillman 1968, Drucker 1981). No human time course of MAP 2 h after ~10 % haemorrhage was "
              "found: the range is this qualitative statement, not a measurement; conscious humans lose little MAP "
              "at all after 375 mL-1 L (Leonetti 2004 Clin Auton Res 14:176; Johnson 2014 J Appl Physiol 117:131)"),
    ]


SCENARIOS = {
    "baseline": baseline,
    "sodium_loading": sodium_loading,
    "renal_glucose_handling": renal_glucose_handling,
    "sglt2_inhibition": sglt2_inhibition,
    "sglt2_near_normal_glucose": sglt2_near_normal_glucose,
    "halved_gfr": halved_gfr,
    "exercise": exercise,
    "blood_loss": blood_loss,
}


def run(figures: Path | None = None) -> list[Check]:
    """Run every scenario; draw one figure per scenario into ``figures`` if given."""
    checks = []
    for name, scenario in SCENARIOS.items():
        data, rows = scenario()
        checks.extend(rows)
        if figures is not None:
            _figure(name, data, Path(figures))
    return checks


# --------------------------------------------------------------------- figures
_PANELS = {
    "baseline": ["cardiovascular.MAP", "renal.GFR", "renal.sodium_excretion", "glucose.plasma_glucose"],
    "sodium_loading": ["renal.sodium_excretion", "cardiovascular.MAP", "cardiovascular.blood_volume", "renal.renin"],
    "sglt2_inhibition": ["glucose.plasma_glucose", "renal.UGE", "renal.sglt2_inhibition", "renal.urine_flow"],
    "sglt2_near_normal_glucose": ["glucose.plasma_glucose", "renal.UGE", "renal.sglt2_inhibition",
                                  "renal.urine_flow"],
    "halved_gfr": ["renal.GFR", "glucose.plasma_insulin", "glucose.plasma_glucose", "cardiovascular.MAP"],
    "exercise": ["cardiovascular.HR", "glucose.glucose_utilization", "glucose.plasma_glucose", "cardiovascular.MAP"],
    "blood_loss": ["cardiovascular.MAP", "cardiovascular.HR", "cardiovascular.blood_volume", "renal.urine_flow"],
}
_ZOOM = {"exercise": (DAY - 60, DAY + 300), "blood_loss": (DAY - 60, DAY + 720)}


def _figure(name, data, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    if name == "renal_glucose_handling":
        _glucose_curve(folder, plt)
        return
    runs = data if isinstance(data, tuple) else (data,)
    labels = ("without SGLT2i", "with SGLT2i") if len(runs) == 2 else (None,)
    fig, axes = plt.subplots(len(_PANELS[name]), 1, figsize=(8, 2.2 * len(_PANELS[name])), sharex=True)
    lo, hi = _ZOOM.get(name, (0, DAYS * DAY))
    for ax, var in zip(axes, _PANELS[name]):
        for ds, label in zip(runs, labels):
            da = ds[var].sel(time=slice(lo, hi))
            hours = da["time"].values / 60.0
            if "patient" in da.dims:
                for p in da["patient"].values:
                    ax.plot(hours, da.sel(patient=p).values, label=str(p))
            else:
                ax.plot(hours, da.values, label=label)
        ax.set_ylabel(f"{var.split('.', 1)[1]}\n[{runs[0][var].attrs.get('units', '')}]", fontsize=8)
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    if any(names):
        axes[0].legend(fontsize=7)
    axes[-1].set_xlabel("time [h]")
    fig.suptitle(name.replace("_", " "))
    fig.tight_layout()
    fig.savefig(folder / f"{name}.png", dpi=90)
    plt.close(fig)


def _glucose_curve(folder: Path, plt) -> None:
    import jax.numpy as jnp

    renal, p, u, x = _renal_at_rest()
    glucose = np.linspace(50, 500, 91)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for conc, label in ((0.0, "no SGLT2i"), (300.0, "empagliflozin (inhibited)")):
        xs = {**x, "A_c": jnp.asarray(conc * 1e-9 * EMPAGLIFLOZIN_MW * 1e3 * float(p["V_sglt2i"]))}
        uge = [float(renal.rhs(0.0, xs, p, {**u, "plasma_glucose": jnp.asarray(g)})[1]["UGE"]) for g in glucose]
        ax.plot(glucose, uge, label=label)
    ax.axvline(180, color="grey", ls=":", lw=1)
    ax.set(xlabel="plasma glucose [mg/dL]", ylabel="UGE [mg/min]", title="renal glucose handling")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "renal_glucose_handling.png", dpi=90)
    plt.close(fig)


@hookimpl
def register_validation_studies(register):
    register(ValidationStudy("cardiorenal", "the composed glucose, cardiovascular and renal organs against the "
                             "literature's validation table (PHYSIOLOGY.md)", run))
