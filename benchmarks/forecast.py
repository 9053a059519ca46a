"""Forecasting benchmark: calibrate twins on 7 days, forecast and evaluate the 3 following days.

    python benchmarks/make_records.py --out data/records --days 10 --split 7     # simglucose, once
    python benchmarks/forecast.py --records data/records --out docs/forecasting.md

For every ``<name>_train.csv`` / ``<name>_test.csv`` pair it calibrates (all in this
process, the compile cache shared):

- the UVA/Padova core (``glucose``): mechanistic and hybrid twins;
- the Bergman minimal-model core (``bergman``): mechanistic and hybrid twins (the
  universal-differential-equation demonstration: a simpler core fitted to data from the
  full model, with a residual network for what it misses);

and scores every model beside persistence, linear AR and the population twin
(`physiotwin.calibration.evaluate`). It writes per-patient tables, the means, the
timings (calibration and forecast of the whole 3-day test record at 5-min origins) and
the targets of the issue, as Markdown, and the raw rows as CSV next to it.
"""

from __future__ import annotations

import argparse
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

CORES = {"glucose": "UVA/Padova", "bergman": "Bergman minimal model"}


def _setup():
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    except RuntimeError:
        pass
    cache = os.environ.get("PHYSIOTWIN_JAX_CACHE", str(Path.home() / ".cache" / "physiotwin" / "jax"))
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run_pair(train_path: Path, test_path: Path, cores, seed: int) -> tuple[list[dict], list[dict]]:
    from physiotwin.calibration.evaluate import evaluate
    from physiotwin.calibration.twin import calibrate
    from physiotwin.registry import timeline_kinds
    from physiotwin.timeline import read_timeline

    name = train_path.name.replace("_train.csv", "")
    train = read_timeline(train_path, kinds=timeline_kinds())
    test = read_timeline(test_path, kinds=timeline_kinds())
    rows, timings = [], []
    for core in cores:
        for hybrid in (False, True):
            tic = time.perf_counter()
            twin = calibrate(train, [core], hybrid=hybrid, seed=seed, progress=False)
            t_fit = time.perf_counter() - tic
            tic = time.perf_counter()
            twin.forecast(test, [30, 60], 5)
            t_fc = time.perf_counter() - tic
            ev = evaluate(twin, test, [30, 60], 5, 120, train=train)
            label = f"{core}:{'hybrid' if hybrid else 'mechanistic'}"
            d = twin.result.diagnostics
            timings.append({"record": name, "twin": label, "calibrate_s": t_fit, "forecast_s": t_fc,
                            "fit_s": d["seconds"], "validation_rmse": d["validation_rmse"]["cgm"],
                            "residual_share": json.dumps(d.get("residual_share", {}))})
            for r in ev.table.to_dict("records"):
                model = r["model"]
                if model in ("population", "mechanistic", "twin"):
                    if hybrid and model != "twin":
                        continue  # the hybrid run's population/mechanistic rows repeat the first run's
                    model = {"population": f"{core}:population", "mechanistic": f"{core}:mechanistic",
                             "twin": f"{core}:hybrid"}[model]
                elif core != cores[0] or hybrid:
                    continue  # baselines once per record
                rows.append({"record": name, **r, "model": model})
            print(f"{name} {label}: calibrate {t_fit:.1f} s, forecast {t_fc:.2f} s, held-out RMSE "
                  f"{d['validation_rmse']['cgm']:.1f}", flush=True)
    return rows, timings


def markdown(rows: pd.DataFrame, timings: pd.DataFrame) -> str:
    out = []
    order = ["persistence", "linear_ar"] + [f"{c}:{v}" for c in CORES for v in ("population", "mechanistic", "hybrid")]
    models = [m for m in order if m in set(rows["model"])]
    for h in sorted(rows["horizon"].unique()):
        sub = rows[rows["horizon"] == h]
        out.append(f"\n### {h}-minute horizon: RMSE against CGM (mg/dL) [ratio to persistence]\n")
        recs = sorted(sub["record"].unique())
        out.append("| model | " + " | ".join(recs) + " | mean | mean ratio | RMSE vs noise-free (ratio) | zone A % |"
                   " hypo sens | hypo spec | alert sens | alert spec | AUC | sens at spec 0.9 |")
        out.append("|---" * (len(recs) + 11) + "|")
        for m in models:
            s = sub[sub["model"] == m].set_index("record")
            cells = [f"{s.loc[r, 'rmse']:.1f}" if r in s.index else "" for r in recs]
            out.append(f"| {m} | " + " | ".join(cells) + f" | {s['rmse'].mean():.2f} | "
                       f"{s['rmse_vs_persistence'].mean():.3f} | {s['rmse_true'].mean():.2f} "
                       f"({s['rmse_true_vs_persistence'].mean():.3f}) | {s['zone_a'].mean():.1f} | "
                       f"{s['hypo_sensitivity'].mean():.2f} | {s['hypo_specificity'].mean():.3f} | "
                       f"{s['alert_sensitivity'].mean():.2f} | {s['alert_specificity'].mean():.3f} | "
                       f"{s['hypo_auc'].mean():.3f} | {s['hypo_sens_at_spec90'].mean():.2f} |")
    out.append("\n### Timings (s) and held-out fit\n")
    t = timings.groupby("twin").agg(calibrate_median=("calibrate_s", "median"), calibrate_max=("calibrate_s", "max"),
                                    forecast_median=("forecast_s", "median"), forecast_max=("forecast_s", "max"),
                                    validation_rmse=("validation_rmse", "mean"))
    out.append("| twin | calibrate median | calibrate max | forecast 3 days median | forecast max | "
               "held-out RMSE (mean) |")
    out.append("|---|---|---|---|---|---|")
    for k, r in t.iterrows():
        out.append(f"| {k} | {r.calibrate_median:.1f} | {r.calibrate_max:.1f} | {r.forecast_median:.2f} | "
                   f"{r.forecast_max:.2f} | {r.validation_rmse:.2f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", required=True, help="folder with <name>_train.csv / <name>_test.csv pairs")
    parser.add_argument("--out", default=None, help="Markdown file for the tables (CSV rows next to it)")
    parser.add_argument("--cores", nargs="+", default=list(CORES), help="mechanistic cores (organ names)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N records")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _setup()
    pairs = sorted(Path(args.records).glob("*_train.csv"))[:args.limit]
    if not pairs:
        print(f"no *_train.csv in {args.records}; run benchmarks/make_records.py with --split 7", file=sys.stderr)
        return 1
    rows, timings = [], []
    # one fresh process per record, one after the other: each calibration starts as a CLI
    # user's would (compiled programs from the persistent cache only), and memory is returned
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1, initializer=_setup) as pool:
        for train in pairs:
            test = train.with_name(train.name.replace("_train.csv", "_test.csv"))
            r, t = pool.submit(run_pair, train, test, args.cores, args.seed).result()
            rows += r
            timings += t
    rows, timings = pd.DataFrame(rows), pd.DataFrame(timings)
    text = markdown(rows, timings)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(out.with_suffix(".csv"), index=False)
        timings.to_csv(out.with_name(out.stem + "_timings.csv"), index=False)
        out.write_text(text)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
