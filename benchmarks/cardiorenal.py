"""The three-organ twin of a hypertensive patient with reduced kidney function, end to end.

    python benchmarks/cardiorenal.py --out data/cardiorenal [--days 14] [--train-days 10] [--seed 0]
        [--markdown docs/cardiorenal.md] [--figures docs/cardiorenal] [--no-hybrid]

1. Generates a 14-day record from the three-organ truth model
   (`physiotwin.plugins.cardiorenal_records`: parameters away from the nominal ones,
   unlogged walks, under-reported salt, sensor and laboratory errors) and splits it into
   the first ``--train-days`` (fitted) and the rest (never seen by the fit).
2. Runs the three CLI commands a user runs, timing each and recording its peak memory:
   ``physiotwin calibrate`` (``--organ glucose --organ cardiovascular --organ renal``),
   ``physiotwin forecast`` and ``physiotwin evaluate`` on the held-out days (horizons 60
   min and 1 day, an origin every 30 min).
3. Compares the recovered parameters with the truth, and replays a sodium 250 -> 100
   mmol/day change with the twin, the population twin and the truth.
4. Writes the results as Markdown (``--markdown``) and figures (``--figures``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ORGAN_ARGS = ["--organ", "glucose", "--organ", "cardiovascular", "--organ", "renal"]
HORIZONS = (60, 1440)
WHATIF_DAYS, SWITCH_DAY = 21, 3


# runs a command and writes its peak resident memory (kB, Linux) to the file named first
_PEAK = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[2:]).returncode; "
         "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
         "sys.exit(rc)")


def run_cli(args: list[str], log: Path) -> dict:
    """Run ``physiotwin ARGS`` as a user would; wall time, peak memory (GB) and exit status."""
    peak_file = log.with_suffix(".peak")
    tic = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-c", _PEAK, str(peak_file), "physiotwin", *args],
                              stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - tic
    peak = float(peak_file.read_text()) / 1e6 if peak_file.exists() else float("nan")
    print(f"physiotwin {' '.join(args)}: exit {proc.returncode}, {wall:.0f} s, {peak:.1f} GB", flush=True)
    return {"command": "physiotwin " + " ".join(args), "exit": proc.returncode, "seconds": wall, "peak_gb": peak}


def make_record(out: Path, days: int, train_days: int, seed: int) -> tuple[Path, Path, dict]:
    from physiotwin.calibration.data import write_split
    from physiotwin.plugins.cardiorenal_records import generate_cardiorenal_record, write_cardiorenal_record

    df = generate_cardiorenal_record(days=days, seed=seed)
    path = out / "record.csv"
    write_cardiorenal_record(df, path)
    train, test = write_split(path, train_days)
    return Path(train), Path(test), dict(df.attrs)


def sodium_timeline(switch_day: int, basal: float):
    import pandas as pd

    rows = [(0.0, "basal", basal, "U/h"), (0.0, "sodium_intake", 250.0, "mmol/day"),
            (switch_day * 1440.0, "sodium_intake", 100.0, "mmol/day")]
    return pd.DataFrame(rows, columns=["time", "kind", "value", "unit"])


def whatif(twin_dir: Path, attrs: dict) -> dict:
    """MAP over a sodium 250 -> 100 mmol/day switch: truth, twin, population twin."""
    import numpy as np
    import pandas as pd

    import physiotwin as pt
    from physiotwin.calibration import Twin
    from physiotwin.plugins.cardiorenal_records import truth_patient

    twin = Twin.load(twin_dir)
    truth, basal = truth_patient(attrs["patient"], attrs["truth"])
    names = twin.model.param_names
    table = pd.DataFrame([twin.theta("twin"), twin.theta("population")], columns=names)
    table.insert(0, "patient", ["twin", "population"])
    tl = sodium_timeline(SWITCH_DAY, basal)
    runs = {}
    for label, patients in (("truth", truth), ("models", table)):
        ds = pt.simulate(list(twin.organs), patients, tl, days=WHATIF_DAYS, every=60.0)
        bad = ds["solver_status"].values != 0
        if bad.any():
            raise RuntimeError(f"what-if solve failed for {label}: {ds['solver_message'].values[bad]}")
        runs[label] = ds
    hours = runs["truth"]["time"].values / 60.0
    curves = {"truth": runs["truth"]["cardiovascular.MAP"].values[0],
              "twin": runs["models"]["cardiovascular.MAP"].values[0],
              "population": runs["models"]["cardiovascular.MAP"].values[1]}
    before = hours < SWITCH_DAY * 24
    end = hours >= (WHATIF_DAYS - 1) * 24
    summary = {k: {"before": float(np.mean(v[before][-24:])), "after": float(np.mean(v[end])),
                   "change": float(np.mean(v[end]) - np.mean(v[before][-24:]))} for k, v in curves.items()}
    return {"hours": hours, "curves": curves, "summary": summary}


def parameter_rows(twin_dir: Path, attrs: dict) -> list[dict]:
    meta = json.loads((twin_dir / "twin.json").read_text())
    table = meta["diagnostics"].get("identifiability", [])
    truth = attrs["truth"]
    rows = []
    for row in table:
        name = row["parameter"]
        if name in truth:
            rows.append({**row, "truth": truth[name],
                         "error_pct": 100.0 * (row["value"] - truth[name]) / truth[name],
                         "prior_error_pct": 100.0 * (row["prior"] - truth[name]) / truth[name]})
    return rows


def forecast_figure(twin_dir: Path, test: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from physiotwin.calibration import Twin
    from physiotwin.timeline import read_timeline

    twin = Twin.load(twin_dir)
    tl = read_timeline(test)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for kind, style in (("map_true", "k-"), ("map", "k.")):
        m = tl.kind == kind
        ax.plot(tl.time[m] / 1440.0, tl.value[m], style, ms=3, lw=0.8, label=kind)
    hours = list(range(60, 1441, 60))
    for variant, colour in (("population", "tab:orange"), ("twin", "tab:blue")):
        ds = twin.forecast(test, horizons=hours, every=1440, variant=variant)
        for i, origin in enumerate(ds["origin"].values):
            ax.plot((origin + np.asarray(hours)) / 1440.0, ds["map"].isel(origin=i).values, color=colour, lw=1.2,
                    label=f"{variant} (1-day forecasts)" if i == 0 else None)
    ax.set_xlabel("day of the held-out record")
    ax.set_ylabel("MAP (mmHg)")
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def whatif_figure(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    for label, colour in (("truth", "k"), ("twin", "tab:blue"), ("population", "tab:orange")):
        ax.plot(result["hours"] / 24.0, result["curves"][label], color=colour, label=label)
    ax.axvline(SWITCH_DAY, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("day (sodium 250 -> 100 mmol/day at the dotted line)")
    ax.set_ylabel("MAP (mmHg)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def markdown(runs: list[dict], params: list[dict], evaluation, result: dict) -> str:
    lines = ["| command | exit | wall s | peak memory GB |", "|---|---|---|---|"]
    lines += [f"| `{r['command']}` | {r['exit']} | {r['seconds']:.0f} | "
              f"{r['peak_gb']:.1f} |" for r in runs]
    lines += ["", "| parameter | truth | prior | fitted | error % | prior error % | prior sd | posterior sd | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| `{p['parameter']}` | {p['truth']:.4g} | {p['prior']:.4g} | {p['value']:.4g} | {p['error_pct']:+.1f} | "
              f"{p['prior_error_pct']:+.1f} | {p['prior_sd']:.2f} | {p['posterior_sd']:.3f} | {p['verdict']} |"
              for p in params]
    cols = [c for c in ("kind", "model", "horizon", "n", "rmse", "rmse_vs_persistence", "n_true", "rmse_true",
                        "rmse_true_vs_persistence")
            if c in evaluation.columns]
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in evaluation[evaluation["kind"].isin(["map", "heart_rate", "creatinine"])].iterrows():
        lines.append("| " + " | ".join(f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c])
                                        for c in cols) + " |")
    lines += ["", "| model | MAP before (mmHg) | MAP after 18 days (mmHg) | change |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['before']:.1f} | {v['after']:.1f} | {v['change']:+.1f} |"
              for k, v in result["summary"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import jax
    import pandas as pd

    jax.config.update("jax_enable_x64", True)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="working folder (record, twin, forecasts, logs)")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--train-days", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", default=None, help="write the result tables here")
    parser.add_argument("--figures", default=None, help="folder for the figures")
    parser.add_argument("--no-hybrid", action="store_true", help="calibrate the mechanism only")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test, attrs = make_record(out, args.days, args.train_days, args.seed)
    twin = out / "twin"
    hz = [a for h in HORIZONS for a in ("--horizon", str(h))]
    runs = [run_cli(["calibrate", str(train), *ORGAN_ARGS, "--out", str(twin), "--seed", str(args.seed), "--quiet"]
                    + (["--no-hybrid"] if args.no_hybrid else []), out / "calibrate.log")]
    if runs[0]["exit"] not in (0, 3):
        print((out / "calibrate.log").read_text(), file=sys.stderr)
        return 1
    runs.append(run_cli(["forecast", str(twin), str(test), *hz, "--every", "30", "--out", str(out / "forecast.nc")],
                        out / "forecast.log"))
    runs.append(run_cli(["evaluate", str(twin), str(test), *hz, "--every", "30", "--warmup", "0",
                         "--out", str(out / "evaluation.csv")], out / "evaluate.log"))
    evaluation = pd.read_csv(out / "evaluation.csv")
    params = parameter_rows(twin, attrs)
    result = whatif(twin, attrs)
    print((out / "calibrate.log").read_text())
    print(evaluation.to_string())
    print(json.dumps(result["summary"], indent=1))
    text = markdown(runs, params, evaluation, result)
    (out / "results.md").write_text(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.figures:
        figs = Path(args.figures)
        figs.mkdir(parents=True, exist_ok=True)
        forecast_figure(twin, test, figs / "map_forecast.png")
        whatif_figure(result, figs / "sodium_whatif.png")
    return 0 if all(r["exit"] == 0 for r in runs) else 3


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
