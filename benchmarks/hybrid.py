"""Hybrid-twin benchmark: can the residual network learn physiology the mechanism lacks?

    python benchmarks/hybrid.py --out-dir data/hybrid --markdown docs/hybrid_results.md

For each simglucose adult (``--patients``, default adult#001..#010), seed ``--seed``:

1. `generate_record` for 10 days with a hidden daily insulin-sensitivity profile
   (``HiddenPhysiology(circadian_amplitude=--amplitude)``: dawn resistance, amplitude and
   phase drawn per patient, acting on Vmx and kp3) and hypoglycaemia treated with 15 g of
   carbs, logged 30 % of the time. Days 1-7 train, days 8-10 test; days 1-3 are the
   "new patient with 3 days" record.
2. Through the CLI, timed: ``physiotwin calibrate`` of the 7-day record (hybrid with the
   ``glucose.insulin_sensitivity`` slot; its mechanistic stage is the calibrated
   mechanism) and of the 3-day record.
3. Population hybrids in two folds: ``physiotwin calibrate-population`` on the 7-day
   records of adults 1-5 (fold A) and of adults 6-10 (fold B), timed; each patient's
   3-day record is then calibrated with the *other* fold's networks
   (``physiotwin calibrate --population``), so no network saw the patient it is scored
   on.
4. Scores on the test days (never used for any choice), against the noise-free sensor
   glucose: RMSE of forecasts 30, 60 and 120 min ahead from every 5-min origin
   (`physiotwin.calibration.evaluate`, same origins for every model, beside persistence
   and the linear AR baseline); the learned modulation against the hidden profile over
   the training record (Pearson r and the fraction of the profile's variance it
   recovers); and what-if replays of a changed therapy (boluses x1.25, basal x0.8 from
   00:00 to 06:00) over the 10 days, scored on days 8-10 against the true counterfactual
   (the same simglucose patient, meals, sensor and hidden profile under the changed
   insulin, `replay_therapy`).

A calibration that fails is reported and not scored.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

SLOT = "glucose.insulin_sensitivity"
HORIZONS = (30, 60, 120)


def _cli(*args) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "physiotwin.cli", *map(str, args)], capture_output=True, text=True)
    return time.perf_counter() - t, proc


def _name(patient: str, seed: int) -> str:
    return f"{patient.replace('#', '_')}_seed{seed}"


def make_records(patient: str, args) -> dict:
    from physiotwin.calibration.data import split_record, timeline_text, write_split
    from physiotwin.plugins.hidden_physiology import HiddenPhysiology
    from physiotwin.plugins.synthetic import generate_record, write_record
    from physiotwin.timeline import read_timeline

    d = Path(args.out_dir) / "records"
    name = _name(patient, args.seed)
    path = d / f"{name}.csv"
    if not path.exists():
        rec = generate_record(patient, days=10, seed=args.seed, hidden=HiddenPhysiology(args.amplitude),
                              hypo_treatment=True)
        write_record(rec, path)
        write_split(path, 7)
        train3 = split_record(read_timeline(d / f"{name}_train.csv"), 3 * 1440.0)[0]
        (d / f"{name}_train3.csv").write_text(timeline_text(train3))
    return {"patient": patient, "name": name}


def calibrate_cli(record: Path, out: Path, *extra) -> dict:
    timing = out.with_name(out.name + ".seconds")  # the CLI time, kept for reruns
    if (out / "twin.json").exists() and timing.exists():
        return {"seconds": float(timing.read_text())}
    secs, proc = _cli("calibrate", record, "--out", out, "--slot", SLOT, "--quiet", *extra)
    if proc.returncode not in (0, 3):
        return {"failure": f"calibrate {record.name} exit {proc.returncode}: "
                           f"{(proc.stderr.strip().splitlines() or [''])[-1]}"}
    timing.write_text(f"{secs}\n")
    return {"seconds": secs}


def _truth(path: Path, minutes: np.ndarray) -> np.ndarray:
    from physiotwin.timeline import read_timeline

    tl = read_timeline(path)
    rows = tl.select("insulin_sensitivity_true")
    t = np.asarray(rows.time, float)
    return np.interp(minutes, t, np.asarray(rows.value, float))


def recovery(twin, record: Path) -> dict:
    """The learned modulation against the hidden profile over the training record."""
    from physiotwin.calibration.explain import correlation, fitted_samples

    s = fitted_samples(twin)
    i = [k for k, sl in enumerate(s.hybrid.slots) if sl.name == SLOT][0]
    m = s.terms[:, i]
    truth = _truth(record, s.minute) - 1.0
    tc, mc = truth - truth.mean(), m - m.mean()
    return {"r": correlation(m, truth), "variance_recovered": 1.0 - float(np.var(tc - mc) / np.var(tc)),
            "rms_learned": float(np.std(m)), "rms_hidden": float(np.std(truth))}


def forecast_scores(twin, test, train, label: str, with_baselines: bool) -> dict:
    from physiotwin.calibration.evaluate import evaluate

    ev = evaluate(twin, test, HORIZONS, train=train)
    t = ev.table
    out = {}
    models = {"twin": label}
    if "hybrid" in label:
        models["mechanistic"] = label.replace("hybrid", "mechanistic")
    if with_baselines:
        models.update({"persistence": "persistence", "linear_ar": "linear_ar"})
    for model, key in models.items():
        for h in HORIZONS:
            row = t[(t.model == model) & (t.horizon == h)]
            if len(row):
                out[f"{key}_{h}"] = float(row["rmse_true"].iloc[0])
    return out


def whatif_scores(twins: dict, d: Path, name: str, patient: str, args) -> dict:
    """What-if RMSE on days 8-10 against the true counterfactual."""
    from physiotwin.plugins.hidden_physiology import HiddenPhysiology
    from physiotwin.plugins.synthetic import replay_therapy, write_record
    from physiotwin.plugins.therapy import change_therapy, write_table

    wdir = Path(args.out_dir) / "whatif" / name
    wdir.mkdir(parents=True, exist_ok=True)
    rec = pd.read_csv(d / f"{name}.csv", comment="#")
    start = (d / f"{name}.csv").read_text().split("\n", 1)[0].split("start:", 1)[1].strip()
    rec.attrs["days"] = 10
    new = change_therapy(rec, start, bolus=1.25, night_basal=0.8)
    write_table(new[new["kind"].isin(["basal", "bolus", "carbs"])], wdir / "new.csv", start)
    # the record's own inputs over the 10 days: its replay is what the change is measured from
    write_table(rec[rec["kind"].isin(["basal", "bolus", "carbs"])], wdir / "original.csv", start)
    cf_path = wdir / "counterfactual.csv"
    if not cf_path.exists():
        cf = replay_therapy(new, patient, args.seed, start, hidden=HiddenPhysiology(args.amplitude))
        cf.attrs["days"] = 10
        write_record(cf, cf_path, start)
    cf = pd.read_csv(cf_path, comment="#")
    truth = cf[cf.kind == "cgm_true"]
    minutes = ((pd.to_datetime(truth.time) - pd.Timestamp(start)).dt.total_seconds() / 60).round().to_numpy()
    truth = pd.Series(truth.value.to_numpy(float), index=minutes.astype(int))
    rec_cgm = rec[rec.kind == "cgm"]
    rec_min = ((pd.to_datetime(rec_cgm.time) - pd.Timestamp(start)).dt.total_seconds() / 60).round().astype(int)
    out = {}
    test_days = truth.index >= 7 * 1440
    nothing = pd.Series(rec_cgm.value.to_numpy(float), index=rec_min.to_numpy())
    days = nothing.reindex(truth.index[test_days]).to_numpy()
    out["whatif_nothing_changes"] = float(np.sqrt(np.nanmean((days - truth[test_days].to_numpy()) ** 2)))
    for key, (twin, variant) in twins.items():
        ds = twin.whatif(wdir / "new.csv", variant=variant)
        base = twin.whatif(wdir / "original.csv", variant=variant)
        t = ds["time"].values.astype(int)
        change = ds["cgm"].values - base["cgm"].values
        for what, values in (("", ds["cgm"].values), ("_record_plus_change", nothing.reindex(t).to_numpy() + change)):
            pred = pd.Series(values, index=t).reindex(truth.index[test_days])
            out[f"whatif_{key}{what}"] = float(np.sqrt(np.nanmean((pred.to_numpy() - truth[test_days].to_numpy()) ** 2)))
    return out


def score_patient(p: dict, args) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from physiotwin.calibration.twin import Twin
    from physiotwin.timeline import read_timeline

    root = Path(args.out_dir)
    d = root / "records"
    name = p["name"]
    row = dict(p)
    train = read_timeline(d / f"{name}_train.csv")
    train3 = read_timeline(d / f"{name}_train3.csv")
    test = read_timeline(d / f"{name}_test.csv")
    tw7 = Twin.load(root / "twins7" / name)
    row.update(forecast_scores(tw7, test, train, "hybrid7", True))
    row.update({f"{k}_7": v for k, v in recovery(tw7, d / f"{name}_train.csv").items()})
    tw3 = Twin.load(root / "twins3" / name)
    row.update(forecast_scores(tw3, test, train3, "hybrid3", False))
    twins = {"hybrid7": (tw7, "twin"), "mechanistic7": (tw7, "mechanistic")}
    pop = root / "poptwins3" / name
    if (pop / "twin.json").exists():
        twp = Twin.load(pop)
        row.update({k: v for k, v in forecast_scores(twp, test, train3, "population3", False).items()
                    if k.startswith("population3")})
        row.update({f"{k}_pop3": v for k, v in recovery(twp, d / f"{name}_train3.csv").items()})
    row.update(whatif_scores(twins, d, name, p["patient"], args))
    return row


def markdown(df: pd.DataFrame, timing: dict, args) -> str:
    m = df.mean(numeric_only=True)
    lines = [f"# Hybrid twins learning a hidden daily sensitivity profile ({len(df)} simglucose adults)", "",
             f"Command: `python benchmarks/hybrid.py --seed {args.seed} --amplitude {args.amplitude}`; "
             "RMSE (mg/dL) against the noise-free sensor glucose on the 3 test days (days 8-10).", "",
             "## Forecasts", "",
             "| model | " + " | ".join(f"{h} min" for h in HORIZONS) + " |", "|---|" + "---|" * len(HORIZONS)]
    for key, label in (("persistence", "persistence"), ("linear_ar", "linear AR (7 days)"),
                       ("mechanistic7", "calibrated mechanism, 7 days"), ("hybrid7", "per-patient hybrid, 7 days"),
                       ("mechanistic3", "calibrated mechanism, 3 days"), ("hybrid3", "per-patient hybrid, 3 days"),
                       ("population3", "population hybrid, 3 days (other fold's networks)")):
        if f"{key}_30" in m:
            lines.append(f"| {label} | " + " | ".join(f"{m[f'{key}_{h}']:.2f}" for h in HORIZONS) + " |")
    gain = {h: 1 - m[f"hybrid7_{h}"] / m[f"mechanistic7_{h}"] for h in HORIZONS}
    lines += ["", "Per-patient hybrid (7 days) against the calibrated mechanism, change of the mean RMSE: " +
              ", ".join(f"{h} min {-100 * gain[h]:+.1f} %" for h in HORIZONS) + " (negative: lower RMSE).", ""]
    lines += ["## Per patient", "", "| patient | mech 30 | hybrid 30 | mech 120 | hybrid 120 | r | variance recovered "
              "| learned SD | hidden SD | mech 3d 120 | hybrid 3d 120 | population 3d 120 | what-if mech | what-if hybrid "
              "| what-if nothing changes |", "|" + "---|" * 15]
    for _, r in df.iterrows():
        lines.append(f"| {r['patient']} | {r['mechanistic7_30']:.2f} | {r['hybrid7_30']:.2f} | "
                     f"{r['mechanistic7_120']:.2f} | {r['hybrid7_120']:.2f} | {r['r_7']:.2f} | "
                     f"{r['variance_recovered_7']:.2f} | {r['rms_learned_7']:.3f} | {r['rms_hidden_7']:.3f} | "
                     f"{r['mechanistic3_120']:.2f} | {r['hybrid3_120']:.2f} | {r.get('population3_120', np.nan):.2f} | "
                     f"{r['whatif_mechanistic7']:.2f} | {r['whatif_hybrid7']:.2f} | {r['whatif_nothing_changes']:.2f} |")
    lines += ["", f"- learned modulation vs hidden profile: r mean {m['r_7']:.2f}, median {df['r_7'].median():.2f}, "
              f"r >= 0.7 for {int((df['r_7'] >= 0.7).sum())} of {len(df)}; variance recovered mean "
              f"{m['variance_recovered_7']:.2f}",
              f"- what-if on the held-out days, free replay: hybrid {m['whatif_hybrid7']:.2f}, mechanism "
              f"{m['whatif_mechanistic7']:.2f}; the record's readings plus the predicted change: hybrid "
              f"{m['whatif_hybrid7_record_plus_change']:.2f}, mechanism "
              f"{m['whatif_mechanistic7_record_plus_change']:.2f}; nothing changes {m['whatif_nothing_changes']:.2f}",
              f"- 3 days of data, 120 min: population hybrid {m.get('population3_120', np.nan):.2f}, per-patient "
              f"hybrid {m['hybrid3_120']:.2f}, mechanism {m['mechanistic3_120']:.2f}; 30 min: "
              f"{m.get('population3_30', np.nan):.2f}, {m['hybrid3_30']:.2f}, {m['mechanistic3_30']:.2f}",
              f"- CLI calibration, 7 days: median {timing['calibrate7_median']:.0f} s, max "
              f"{timing['calibrate7_max']:.0f} s (2 at a time on the machine)",
              "- population training (calibrate-population, 5 patients each, 2 workers, total time): " +
              ", ".join(f"{k} {v:.0f} s" for k, v in timing.items() if k.startswith("population_"))]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", nargs="*", default=[f"adult#{i:03d}" for i in range(1, 11)])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--amplitude", type=float, default=0.3)
    ap.add_argument("--jobs", type=int, default=2, help="calibrations at a time")
    ap.add_argument("--out-dir", default="data/hybrid")
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)
    root = Path(args.out_dir)
    (root / "records").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as ex:
        pats = list(ex.map(lambda p: make_records(p, args), args.patients))
    d = root / "records"
    jobs = [(d / f"{p['name']}_train.csv", root / "twins7" / p["name"]) for p in pats]
    jobs += [(d / f"{p['name']}_train3.csv", root / "twins3" / p["name"]) for p in pats]
    with ThreadPoolExecutor(args.jobs) as ex:
        cal = list(ex.map(lambda j: calibrate_cli(*j), jobs))
    secs7 = [c.get("seconds") for c in cal[:len(pats)] if c.get("seconds")]
    timing = {"calibrate7_median": float(np.median(secs7)) if secs7 else np.nan,
              "calibrate7_max": float(np.max(secs7)) if secs7 else np.nan}
    half = len(pats) // 2
    folds = {"A": pats[:half], "B": pats[half:]}
    for fold, members in folds.items():
        out = root / "populations" / fold
        if not (out / "population.json").exists():
            secs, proc = _cli("calibrate-population", *[d / f"{p['name']}_train.csv" for p in members], "--out", out,
                              "--organ", "glucose", "--slot", SLOT, "--quiet")
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return 1
        meta = json.loads((out / "population.json").read_text())
        timing[f"population_{fold}"] = meta["seconds"]["total"]
    other = {"A": "B", "B": "A"}
    pjobs = [(d / f"{p['name']}_train3.csv", root / "poptwins3" / p["name"], "--population",
              root / "populations" / other[f]) for f, members in folds.items() for p in members]
    with ThreadPoolExecutor(args.jobs) as ex:
        list(ex.map(lambda j: calibrate_cli(*j), pjobs))
    rows = []
    failures = [c.get("failure") for c in cal if c.get("failure")]
    for p in pats:
        try:
            rows.append(score_patient(p, args))
        except Exception as err:  # noqa: BLE001 - reported, not scored
            rows.append({**p, "failure": f"{type(err).__name__}: {err}"})
            print(f"{p['patient']}: not scored: {err}", file=sys.stderr)
    df = pd.DataFrame(rows)
    df.to_csv(root / "results.csv", index=False)
    (root / "timing.json").write_text(json.dumps(timing, indent=1))
    ok = df[df["failure"].isna()] if "failure" in df else df
    text = markdown(ok, timing, args)
    if failures:
        text += "\n" + "\n".join(f"- failed: {f}" for f in failures) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
