"""What-if benchmark: replay a changed insulin therapy with a calibrated twin, judged
against the true counterfactual from simglucose.

    python benchmarks/whatif.py --out-dir data/whatif --markdown docs/whatif_results.md

For each simglucose adult (``--patients``, default adult#001..#010):

1. `generate_record`: 7 days (``--days``) closed loop with simglucose's basal-bolus
   controller, realistic logging errors (carb-count error, unlogged snacks, meal-time
   jitter, CGM dropouts); the bolus follows the *logged* carbs.
2. ``physiotwin calibrate`` on the whole record (hybrid twin, seed 0), timed, as a user runs it.
3. The changed therapy: every bolus x ``--bolus`` (1.25) and the basal rate x
   ``--night-basal`` (0.8) from 00:00 to 06:00 (`physiotwin.plugins.therapy`).
4. The true counterfactual: the same simglucose patient, the same meals eaten and the
   same sensor noise stream, open loop under the changed insulin
   (`physiotwin.plugins.synthetic.replay_therapy`).
5. ``physiotwin whatif TWIN --timeline NEW.csv --samples 100``, timed (process start
   included), and the ``mechanistic`` and ``population`` variants in-process.
6. ``physiotwin optimize TWIN --control basal_profile --control carb_ratio --objective tir
   --max-tbr 4``, timed; the plan applied to the record's insulin is given to the true
   simglucose patient (same meals and sensor, open loop), and compared with the
   patient's original therapy (the record: simglucose's basal-bolus controller dosing
   the *logged* carbs) and with simglucose's basal-bolus controller dosing the true
   carbs (a closed-loop baseline that knows every meal exactly).

Scores over the 7 days, at every 5-min sample (never tuned on these: the twin saw only
the original record, and nothing here was chosen by looking at the counterfactual):

- RMSE against the counterfactual's noise-free sensor glucose (``cgm_true``) and its CGM
  readings, for the twin, its mechanism, the population model, "nothing changes" (the
  record's CGM readings), and "record + predicted change" (the record's CGM plus the
  twin's change, the design note's estimator);
- predicted vs true change of mean sensor glucose and of time below 70 mg/dL;
- coverage of the twin's 90 % band of readings by the counterfactual CGM readings, and
  of its 90 % band of noise-free glucose by ``cgm_true``.

A twin whose fit or replay failed is reported as such and not scored.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent


def _cli(*args) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "physiotwin.cli", *map(str, args)], capture_output=True, text=True)
    return time.perf_counter() - t, proc


def _series(df: pd.DataFrame, kind: str, start) -> pd.Series:
    sel = df[df["kind"] == kind]
    minutes = ((pd.to_datetime(sel["time"]) - pd.Timestamp(start)).dt.total_seconds() / 60).round().astype(int)
    return pd.Series(sel["value"].to_numpy(float), index=minutes.to_numpy())


def _rmse(pred, truth) -> float:
    m = np.isfinite(pred) & np.isfinite(truth)
    return float(np.sqrt(np.mean((pred[m] - truth[m]) ** 2)))


def _tbr(x) -> float:
    x = x[np.isfinite(x)]
    return 100.0 * float(np.mean(x < 70.0))


def score(ds, variants: dict, rec: pd.DataFrame, cf: pd.DataFrame, start) -> dict:
    """Scores of one patient (see the module docstring)."""
    t = ds["time"].values.astype(int)
    cf_true = _series(cf, "cgm_true", start).reindex(t).to_numpy()
    cf_cgm = _series(cf, "cgm", start).reindex(t).to_numpy()
    rec_true = _series(rec, "cgm_true", start).reindex(t).to_numpy()
    rec_cgm = _series(rec, "cgm", start).reindex(t).to_numpy()
    twin = ds["cgm"].values
    out = {"rmse_twin": _rmse(twin, cf_true), "rmse_twin_vs_cgm": _rmse(twin, cf_cgm),
           "rmse_nothing_changes": _rmse(rec_cgm, cf_true), "rmse_nothing_changes_true": _rmse(rec_true, cf_true),
           "rmse_record_plus_change": _rmse(rec_cgm + ds["cgm_change"].values, cf_true)}
    for name, v in variants.items():
        out[f"rmse_{name}"] = _rmse(v["cgm"].values, cf_true)
    out["true_change_mean"] = float(np.nanmean(cf_true) - np.nanmean(rec_true))
    out["pred_change_mean"] = float(np.nanmean(twin) - np.nanmean(ds["cgm_original"].values))
    out["true_change_tbr"] = _tbr(cf_true) - _tbr(rec_true)
    out["pred_change_tbr"] = _tbr(twin) - _tbr(ds["cgm_original"].values)
    for name, v in variants.items():
        out[f"pred_change_mean_{name}"] = float(np.nanmean(v["cgm"].values) - np.nanmean(v["cgm_original"].values))
        out[f"pred_change_tbr_{name}"] = _tbr(v["cgm"].values) - _tbr(v["cgm_original"].values)
    if "cgm_quantiles" in ds:
        q = ds["cgm_quantiles"].values
        m = np.isfinite(cf_cgm)
        out["coverage90_readings"] = float(np.mean((cf_cgm[m] >= q[0][m]) & (cf_cgm[m] <= q[-1][m])))
        noise_free = ds["cgm_model_quantiles"].values[[0, -1]]
        m = np.isfinite(cf_true)
        out["coverage90_true"] = float(np.mean((cf_true[m] >= noise_free[0][m]) & (cf_true[m] <= noise_free[1][m])))
        out["band_width90"] = float(np.mean(q[-1] - q[0]))
    return out


def run_patient(patient: str, args) -> dict:
    from physiotwin.plugins.synthetic import generate_record, record_filename, replay_therapy, write_record
    from physiotwin.plugins.therapy import change_therapy, write_table

    d = Path(args.out_dir) / record_filename(patient, args.seed).removesuffix(".csv")
    d.mkdir(parents=True, exist_ok=True)
    rec = generate_record(patient, days=args.days, seed=args.seed)
    start = rec.attrs["start"]
    write_record(rec, d / "record.csv")
    new = change_therapy(rec, start, bolus=args.bolus, night_basal=args.night_basal)
    new_inputs = new[new["kind"].isin(["basal", "bolus", "carbs"])]
    write_table(new_inputs, d / "new.csv", start)
    cf = replay_therapy(new, patient, args.seed, start)
    cf.attrs["days"] = args.days
    write_record(cf, d / "counterfactual.csv", start)
    row = {"patient": patient}
    if not (d / "twin" / "twin.json").exists() or args.refit:
        secs, proc = _cli("calibrate", d / "record.csv", "--out", d / "twin", "--seed", args.seed, "--quiet")
        row["calibrate_s"] = secs
        if proc.returncode not in (0, 3):
            row["failure"] = f"calibrate exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
            return row
    secs, proc = _cli("whatif", d / "twin", "--timeline", d / "new.csv", "--out", d / "whatif.nc", "--samples",
                      args.samples, "--plot", d / "whatif.png")
    row["whatif_s"] = secs
    if proc.returncode != 0:
        row["failure"] = f"whatif exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
        return row
    import xarray as xr

    from physiotwin.calibration.twin import Twin

    twin = Twin.load(d / "twin")
    t = time.perf_counter()
    variants = {v: twin.whatif(d / "new.csv", variant=v) for v in ("mechanistic", "population")}
    row["variants_s"] = time.perf_counter() - t
    with xr.open_dataset(d / "whatif.nc") as ds:
        row.update(score(ds.load(), variants, rec, cf, start))
    if args.optimize:
        row.update(judge_plan(patient, d, rec, start, args))
    return row


def _true_metrics(df: pd.DataFrame, start, days: float) -> tuple[float, float]:
    g = _series(df, "cgm_true", start)
    g = g[g.index < days * 1440].to_numpy()
    return 100.0 * float(np.mean((g >= 70) & (g <= 180))), 100.0 * float(np.mean(g < 70))


def judge_plan(patient: str, d: Path, rec: pd.DataFrame, start, args) -> dict:
    """Optimise a plan through the twin; apply it to the true patient."""
    import tomllib

    from physiotwin.plugins.synthetic import generate_record, replay_therapy
    from physiotwin.plugins.therapy import read_table

    secs, proc = _cli("optimize", d / "twin", "--control", "basal_profile", "--control", "carb_ratio", "--objective",
                      "tir", "--max-tbr", 4, "--out", d / "plan.toml", "--timeline-out", d / "planned.csv")
    out = {"optimize_s": secs}
    if proc.returncode != 0:
        out["plan_failure"] = f"optimize exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
        return out
    plan = tomllib.loads((d / "plan.toml").read_text())
    out.update(pred_tir_before=plan["predicted"]["before"]["tir"]["mode"],
               pred_tir_after=plan["predicted"]["after"]["tir"]["mode"],
               pred_tbr_after=plan["predicted"]["after"]["tbr"]["mode"])
    planned, _ = read_table(d / "planned.csv")
    truth = replay_therapy(planned, patient, args.seed, start)
    out["true_tir_original"], out["true_tbr_original"] = _true_metrics(rec, start, args.days)
    out["true_tir_plan"], out["true_tbr_plan"] = _true_metrics(truth, start, args.days)
    bb = generate_record(patient, days=args.days, seed=args.seed, corrupt=False, bolus_on="true")
    out["true_tir_bb_true_carbs"], out["true_tbr_bb_true_carbs"] = _true_metrics(bb, start, args.days)
    return out


def _worker(patient: str, args) -> None:
    """One patient in a fresh process (compiled programs accumulate across calibrations)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    row = run_patient(patient, args)
    print("ROW " + json.dumps(row), flush=True)


def markdown(df: pd.DataFrame, args) -> str:
    ok = df[df.get("failure", pd.Series(index=df.index, dtype=object)).isna()] if "failure" in df else df
    n = len(ok)
    mean = ok.mean(numeric_only=True)
    within = ((ok["pred_change_mean"] - ok["true_change_mean"]).abs() <= 4) & (
        (ok["pred_change_tbr"] - ok["true_change_tbr"]).abs() <= 2)
    nothing = (ok["true_change_mean"].abs() <= 4) & (ok["true_change_tbr"].abs() <= 2)
    cols = ["patient", "rmse_twin", "rmse_mechanistic", "rmse_population", "rmse_nothing_changes",
            "rmse_nothing_changes_true", "rmse_record_plus_change", "true_change_mean", "pred_change_mean",
            "true_change_tbr", "pred_change_tbr", "coverage90_readings", "coverage90_true", "calibrate_s", "whatif_s"]
    lines = [f"# What-if replay against the true counterfactual ({n} simglucose adults)", "",
             f"Command: `python benchmarks/whatif.py --days {args.days} --bolus {args.bolus} --night-basal "
             f"{args.night_basal} --samples {args.samples} --seed {args.seed}`", "",
             "RMSE in mg/dL against the counterfactual's noise-free sensor glucose, every 5 min over the "
             f"{args.days:g} days; changes in mg/dL (mean) and points (% time < 70 mg/dL).", "",
             "| " + " | ".join(c for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, ""))
                                       for c in cols) + " |")
    lines += ["", f"- mean RMSE: twin {mean['rmse_twin']:.2f}, mechanistic {mean['rmse_mechanistic']:.2f}, "
              f"population {mean['rmse_population']:.2f}, nothing changes {mean['rmse_nothing_changes']:.2f} "
              f"(noise-free record: {mean['rmse_nothing_changes_true']:.2f}), record + predicted change "
              f"{mean['rmse_record_plus_change']:.2f}",
              f"- twin / nothing changes: {mean['rmse_twin'] / mean['rmse_nothing_changes']:.3f} "
              f"(per patient median {np.median(ok['rmse_twin'] / ok['rmse_nothing_changes']):.3f})",
              f"- predicted change of mean within 4 mg/dL and of TBR within 2 points: {int(within.sum())} of {n} "
              f"(\"nothing changes\": {int(nothing.sum())} of {n})",
              f"- 90 % band coverage: readings {mean.get('coverage90_readings', np.nan):.3f}, noise-free "
              f"{mean.get('coverage90_true', np.nan):.3f} (mean band width {mean.get('band_width90', np.nan):.1f} "
              "mg/dL)",
              f"- median times: calibrate {ok['calibrate_s'].median():.1f} s, whatif (CLI, {args.samples} draws, "
              f"process start included) {ok['whatif_s'].median():.1f} s"]
    if "true_tir_plan" in ok:
        p = ok.dropna(subset=["true_tir_plan"])
        raised = int(((p["true_tir_plan"] > p["true_tir_original"]) & (p["true_tbr_plan"] <= 4.0)).sum())
        lines += ["", "Optimised plan (basal profile + carb ratio, objective TIR, TBR <= 4 %), applied to the true "
                  "patient; TIR/TBR (%) of the true noise-free sensor glucose over the same days:", "",
                  "| patient | TIR original | TBR original | TIR plan | TBR plan | TIR BB true carbs | TBR BB true carbs "
                  "| predicted TIR before -> after | optimize s |", "|---|---|---|---|---|---|---|---|---|"]
        for _, r in p.iterrows():
            lines.append(f"| {r['patient']} | {r['true_tir_original']:.1f} | {r['true_tbr_original']:.2f} | "
                         f"{r['true_tir_plan']:.1f} | {r['true_tbr_plan']:.2f} | {r['true_tir_bb_true_carbs']:.1f} | "
                         f"{r['true_tbr_bb_true_carbs']:.2f} | {r['pred_tir_before']:.1f} -> {r['pred_tir_after']:.1f} "
                         f"| {r['optimize_s']:.0f} |")
        lines += ["", f"- the plan raised the true TIR with true TBR <= 4 % for {raised} of {len(p)} patients; mean "
                  f"true TIR {p['true_tir_original'].mean():.1f} -> {p['true_tir_plan'].mean():.1f} % (BB with true "
                  f"carbs {p['true_tir_bb_true_carbs'].mean():.1f} %), mean true TBR "
                  f"{p['true_tbr_original'].mean():.2f} -> {p['true_tbr_plan'].mean():.2f} %; median optimize "
                  f"{p['optimize_s'].median():.0f} s"]
    failed = df[df["failure"].notna()] if "failure" in df else df.iloc[:0]
    for _, r in failed.iterrows():
        lines.append(f"- {r['patient']}: not scored, {r['failure']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", nargs="*", default=[f"adult#{i:03d}" for i in range(1, 11)])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bolus", type=float, default=1.25)
    ap.add_argument("--night-basal", type=float, default=0.8)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--no-optimize", dest="optimize", action="store_false")
    ap.add_argument("--out-dir", default="data/whatif")
    ap.add_argument("--markdown", default=None, help="Write the results table here.")
    ap.add_argument("--refit", action="store_true", help="Calibrate again even when a twin is there.")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.worker, args)
        return 0
    rows = []
    for patient in args.patients:
        cmd = [sys.executable, __file__, "--worker", patient] + [a for a in (argv or sys.argv[1:])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        found = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
        row = found[0] if found else {"patient": patient, "failure": f"worker exit {proc.returncode}: "
                                      f"{proc.stderr.strip().splitlines()[-1:] if proc.stderr else ''}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    df = pd.DataFrame(rows)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    df.to_csv(Path(args.out_dir) / "whatif.csv", index=False)
    text = markdown(df, args)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
