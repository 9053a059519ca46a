"""Hypoglycaemia alerts: how well each model's forecasts warn of a CGM reading below
70 mg/dL within 30 and 60 minutes, on days the twin never saw.

    python benchmarks/whatif.py --out-dir data/whatif          # calibrates the twins (7 days)
    python benchmarks/alerts.py --twins data/whatif --markdown docs/alerts_results.md

For each twin folder of ``--twins`` (``<patient>_seed<S>/twin``, fitted on the first 7 days
of a simglucose record), the same patient and seed are simulated for 10 days
(`generate_record`: the first 7 days are the fitted record's, with the same meals and
sensor noise), and the last 3 days are scored with ``physiotwin evaluate`` as a user
runs it. The alert columns come from the ``hypo_alert`` metric
(`physiotwin.plugins.glucose_metrics`): a Gaussian forecast error whose SD per minute
ahead, and the alert threshold (90 % specificity), are set on the twin's training
record; reported are the ROC AUC of the alert probability, the sensitivity and
specificity of the alert on the 3 test days, the sensitivity at 90 % specificity
there, and the coverage of the 90 % forecast band (`coverage90`). An event is any reading
< 70 mg/dL within the horizon (ongoing lows count, which
favours persistence).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

COLUMNS = ["coverage90", "hypo_auc", "hypo_sens_at_spec90", "alert_sensitivity", "alert_specificity", "hypo_sensitivity",
           "hypo_specificity", "rmse"]


def test_record(patient: str, seed: int, days: float, fitted: float, path: Path) -> Path:
    from physiotwin.calibration.data import split_record, timeline_text
    from physiotwin.plugins.synthetic import generate_record, write_record
    from physiotwin.timeline import read_timeline

    if not path.exists():
        full = path.with_name(path.stem + "_full.csv")
        write_record(generate_record(patient, days=days, seed=seed), full)
        path.write_text(timeline_text(split_record(read_timeline(full), fitted * 1440.0)[1]))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--twins", default="data/whatif")
    ap.add_argument("--days", type=float, default=10.0, help="length of the simulated record")
    ap.add_argument("--fitted", type=float, default=7.0, help="days the twins were fitted on")
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)
    rows = []
    for d in sorted(p for p in Path(args.twins).iterdir() if (p / "twin" / "twin.json").exists()):
        name, seed = d.name.rsplit("_seed", 1)
        patient = name.replace("_", "#")
        test = test_record(patient, int(seed), args.days, args.fitted, d / "test.csv")
        out = d / "evaluation.csv"
        proc = subprocess.run([sys.executable, "-m", "physiotwin.cli", "evaluate", str(d / "twin"), str(test),
                               "--out", str(out)], capture_output=True, text=True)
        if proc.returncode not in (0, 3):
            print(f"{patient}: evaluate failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        t = pd.read_csv(out)
        t["patient"] = patient
        rows.append(t)
        print(f"{patient}: scored", flush=True)
    df = pd.concat(rows)
    order = ["persistence", "linear_ar", "population", "mechanistic", "twin"]
    lines = [f"# Hypoglycaemia alerts on 3 unseen days ({df['patient'].nunique()} simglucose adults)", "",
             "Means over patients (NaN where a patient had no event).", ""]
    for h in sorted(df["horizon"].unique()):
        sub = df[df["horizon"] == h]
        lines += [f"## {h}-minute horizon", "", "| model | " + " | ".join(COLUMNS) + " | patients with "
                  "sens >= 0.8 at spec >= 0.9 (alert) |", "|---" * (len(COLUMNS) + 2) + "|"]
        for m in order:
            s = sub[sub["model"] == m]
            if s.empty:
                continue
            good = int(((s["alert_sensitivity"] >= 0.8) & (s["alert_specificity"] >= 0.9)).sum())
            lines.append(f"| {m} | " + " | ".join(f"{s[c].mean():.3f}" for c in COLUMNS) +
                         f" | {good} of {s['alert_sensitivity'].notna().sum()} |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    df.to_csv(Path(args.twins) / "alerts.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
