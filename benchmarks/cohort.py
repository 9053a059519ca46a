"""Cohorts and trials at scale: one run, every figure, against simglucose in the same run.

    python benchmarks/cohort.py --out-dir data/cohort --json data/cohort/cohort.json --markdown docs/cohort_results.md
    python benchmarks/cohort.py --out-dir /tmp/c --quick        # small sizes, a few minutes
    python benchmarks/cohort.py --out-dir data/cohort --big      # also 100,000 patients x 7 days to Zarr

What it measures (see benchmarks/README.md for the method):

1. simglucose 0.2.11: seconds per patient-day (adult#001, the scenario of throughput.py);
2. in-process glucose cohort (`physiotwin.cohort.CohortRun`): patient-days/s;
3. the CLI as a user runs it (`physiotwin simulate --patients ... --out X.zarr`), process start
   included, at two cohort sizes: the marginal rate, and peak memory per patient;
4. the Zarr write rate;
5. `physiotwin trial` on a local Dask cluster of 1 and of 2 workers, and a trial killed halfway
   (SIGKILL) and restarted, compared with an uninterrupted one;
6. the cold start (empty compilation cache) and warm start of `physiotwin simulate` of one patient-day,
   and the import time;
7. the three-organ twin in process (cohort path), and the adaptive solver for reference;
8. with ``--big``: 100,000 patients x 7 days, per-patient timelines (1,000 distinct files), two
   variables every 5 min, to Zarr through the CLI: wall time, peak memory, store size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEALS = [(420, 50, 5), (720, 70, 7), (1110, 80, 8)]  # as benchmarks/throughput.py
OUTPUTS = "glucose.plasma_glucose,glucose.subcutaneous_glucose"


def cli(args, env=None, timeout=3600):
    """Run ``physiotwin ARGS``: (wall s, peak RSS MB, return code, output). Peak memory comes from
    GNU time (/usr/bin/time -f %M): a child forked from this process would start with its
    resident size as its own maximum (Linux keeps ru_maxrss across fork and exec)."""
    exe = shutil.which("physiotwin") or "physiotwin"
    timer = ["/usr/bin/time", "-f", "PEAK_KB %M"] if Path("/usr/bin/time").exists() else []
    t0 = time.perf_counter()
    proc = subprocess.run([*timer, exe, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    peak = [ln for ln in proc.stderr.splitlines() if ln.startswith("PEAK_KB ")]
    rss = float(peak[-1].split()[1]) / 1024.0 if peak else float("nan")
    return wall, rss, proc.returncode, proc.stdout + proc.stderr


def write_meals(path: Path, days: int = 1, jitter: int = 0, rng=None) -> Path:
    lines = ["time,kind,value,unit"]
    for d in range(days):
        for t, g, u in MEALS:
            dt = int(rng.integers(-jitter, jitter + 1)) if jitter else 0
            scale = float(rng.uniform(0.6, 1.4)) if jitter else 1.0
            lines += [f"{d * 1440 + t + dt},carbs,{g * scale:.1f},g", f"{d * 1440 + t + dt},bolus,{u * scale:.2f},U"]
    path.write_text("\n".join(lines) + "\n")
    return path


def simglucose_baseline(repeats=3):
    sys.path.insert(0, str(ROOT / "tests"))
    from simglucose_reference import run  # noqa: PLC0415

    events = [e for t, g, u in MEALS for e in ((t, "carbs", g, None), (t, "bolus", u, None))]
    run("adult#001", [], 1)
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run("adult#001", events, 1440)
        walls.append(time.perf_counter() - t0)
    return {"seconds_per_patient_day": statistics.median(walls), "walls_s": walls}


def population(out_dir: Path, n: int, env) -> Path:
    path = out_dir / f"pop{n}.csv"
    if not path.exists():
        wall, _, rc, out = cli(["population", "--n", n, "--like", "adult", "--seed", 0, "--out", path], env)
        assert rc == 0, out
    return path


def in_process(n: int, organs: list[str], days: int, repeats: int, chunk: int, meals: Path, outputs=None) -> dict:
    import jax

    import physiotwin as pt
    from physiotwin.cohort import Cohort, CohortRun, read_cohort

    model = pt.compose(organs)
    one = read_cohort(model, ["adult#001"], meals)
    cohort = Cohort(tuple(f"p{i}" for i in range(n)), np.repeat(one.theta, n, 0), one.timelines, np.zeros(n, int))
    run = CohortRun(model, cohort, days * 1440, 5, outputs=outputs, chunk=chunk)
    t0 = time.perf_counter()
    run.solve(0)
    first = time.perf_counter() - t0
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        status = np.concatenate([run.solve(k)["status"] for k in range(run.n_chunks)])
        walls.append(time.perf_counter() - t0)
    med = statistics.median(walls)
    return {"organs": organs, "patients": n, "days": days, "chunk": run.chunk, "devices": len(jax.local_devices()),
            "first_chunk_s": first, "median_s": med, "walls_s": walls, "patient_days_per_s": n * days / med,
            "all_ok": bool((status == 0).all())}


def adaptive_reference(n: int, organs: list[str], meals: Path) -> dict:
    import jax
    import jax.numpy as jnp

    import physiotwin as pt
    from physiotwin.patients import resolve_patients

    sim = pt.Simulator(organs, meals, hours=24)
    _, theta, _ = resolve_patients(sim.model, ["adult#001"])
    theta = jnp.asarray(np.repeat(theta, n, 0))
    jax.block_until_ready(sim.solve(theta))
    t0 = time.perf_counter()
    jax.block_until_ready(sim.solve(theta))
    wall = time.perf_counter() - t0
    return {"organs": organs, "patients": n, "days": 1, "median_s": wall, "patient_days_per_s": n / wall,
            "solver": type(sim.solver).__name__}


def zarr_rate(out_dir: Path, patients=1024, times=2017) -> dict:
    import xarray as xr

    from physiotwin.cohort_io import ZarrWriter

    rng = np.random.default_rng(0)
    names = [f"p{i}" for i in range(4 * patients)]

    def chunk(k):
        sl = slice(k * patients, (k + 1) * patients)
        return xr.Dataset({v: (("patient", "time"), rng.normal(120, 30, (patients, times))) for v in OUTPUTS.split(",")},
                          coords={"patient": np.asarray(names[sl], dtype="<U64"), "time": np.arange(times) * 5.0})

    store = out_dir / "rate.zarr"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(str(store) + ".part", ignore_errors=True)
    writer = ZarrWriter(store, chunk(0), names, patients, {"bench": 1})
    data = [chunk(k) for k in range(4)]
    t0 = time.perf_counter()
    for k, ds in enumerate(data):
        writer.write(k, ds)
    wall = time.perf_counter() - t0
    writer.finish(4)
    mb = 4 * patients * times * 2 * 8 / 1e6
    return {"patients": 4 * patients, "times": times, "variables": 2, "seconds": wall, "MB_per_s": mb / wall,
            "patients_per_s": 4 * patients / wall, "store_MB": du(store)}


def du(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def trial_spec(out_dir: Path, pop: Path, meals: Path, chunk: int) -> Path:
    spec = out_dir / "trial.toml"
    spec.write_text(f"""organs = ["glucose"]
days = 1
chunk = {chunk}
outputs = ["glucose.subcutaneous_glucose"]
metrics = ["tir", "tbr70"]

[cohort]
patients = "{pop.name}"
timeline = "{meals.name}"

[[arms]]
name = "usual care"

[[arms]]
name = "bolus +20 %"
scale = {{ bolus = 1.2 }}
""")
    return spec


def trials(out_dir: Path, pop: Path, meals: Path, env, chunk: int) -> dict:
    import xarray as xr

    spec = trial_spec(out_dir, pop, meals, chunk)
    res = {}
    for w in (0, 1, 2):
        out = out_dir / f"trial_w{w}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        wall, rss, rc, text = cli(["trial", spec, "--out", out, "--workers", w], env)
        assert rc == 0, text
        res[f"workers_{w}_s"] = wall
    res["speedup_2_vs_1"] = res["workers_1_s"] / res["workers_2_s"]
    res["patient_arm_days"] = 2 * (len(open(pop).readlines()) - 2)
    # killed halfway (SIGKILL of the CLI and its cluster), then restarted
    out = out_dir / "trial_killed.zarr"
    for p in (out, Path(str(out) + ".part")):
        shutil.rmtree(p, ignore_errors=True)
    exe = shutil.which("physiotwin") or "physiotwin"
    proc = subprocess.Popen([exe, "trial", str(spec), "--out", str(out), "--workers", "2"], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marks = Path(str(out) + ".part") / "_physiotwin_done"
    total = len(list(xr.open_zarr(out_dir / "trial_w2.zarr")["arm"])) * -(-len(open(pop).readlines()[2:]) // chunk)
    while proc.poll() is None and len(list(marks.glob("chunk-*"))) < total // 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(marks.glob("chunk-*")))
    wall, _, rc, text = cli(["trial", spec, "--out", out, "--workers", "2"], env)
    assert rc == 0, text
    a, b = xr.open_zarr(out_dir / "trial_w2.zarr").load(), xr.open_zarr(out).load()
    same = all(np.array_equal(a[v].values, b[v].values, equal_nan=a[v].dtype.kind == "f") for v in a.data_vars)
    res.update(killed_after_tasks=done_at_kill, tasks=total, restart_s=wall, restarted_equals_uninterrupted=same)
    return res


def cold_start(out_dir: Path, meals: Path) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="ptcache-"))
    args = ["simulate", "--organ", "glucose", "--patient", "adult#001", "--timeline", meals, "--days", 1,
            "--out", out_dir / "one.nc"]
    cold, _, rc, out = cli(args, {"PHYSIOTWIN_JAX_CACHE": str(cache)})
    assert rc == 0, out
    warm = statistics.median(cli(args, {"PHYSIOTWIN_JAX_CACHE": str(cache)})[0] for _ in range(3))
    nocache = cli(args, {"PHYSIOTWIN_JAX_CACHE": ""})[0]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import physiotwin.cli"], check=True)
    imp = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([shutil.which("physiotwin") or "physiotwin", "--version"], check=True, capture_output=True)
    version = time.perf_counter() - t0
    shutil.rmtree(cache, ignore_errors=True)
    return {"cold_empty_cache_s": cold, "warm_cache_median_s": warm, "cache_disabled_s": nocache,
            "import_s": imp, "physiotwin_version_s": version}


def cli_rates(out_dir: Path, sizes, meals: Path, env, repeats: int, sg: float) -> dict:
    rows = []
    for n in sizes:
        pop = population(out_dir, n, env)
        runs = []
        for _ in range(repeats):
            out = out_dir / f"cli{n}.zarr"
            runs.append(cli(["simulate", "--organ", "glucose", "--patients", pop, "--timeline", meals, "--days", 1,
                             "--outputs", OUTPUTS, "--out", out], env))
            assert runs[-1][2] == 0, runs[-1][3]
        walls = [r[0] for r in runs]
        rows.append({"patients": n, "median_s": statistics.median(walls), "walls_s": walls,
                     "peak_rss_MB": max(r[1] for r in runs)})
    a, b = rows[0], rows[-1]
    marginal = (b["patients"] - a["patients"]) / (b["median_s"] - a["median_s"])
    return {"rows": rows, "marginal_patient_days_per_s": marginal, "marginal_x_simglucose": marginal * sg,
            "marginal_MB_per_patient": (b["peak_rss_MB"] - a["peak_rss_MB"]) / (b["patients"] - a["patients"])}


def big_run(out_dir: Path, env, n=100_000, days=7, distinct=1000) -> dict:
    import pandas as pd

    rng = np.random.default_rng(1)
    folder = out_dir / "big"
    (folder / "tl").mkdir(parents=True, exist_ok=True)
    for k in range(distinct):
        path = folder / "tl" / f"t{k:04d}.csv"
        if not path.exists():
            write_meals(path, days, jitter=60, rng=rng)
    pop = population(out_dir, n, env)
    table = pd.read_csv(pop, comment=None, skiprows=1)
    table["timeline"] = [f"tl/t{k % distinct:04d}.csv" for k in range(len(table))]
    table.to_csv(folder / "cohort.csv", index=False)
    out = folder / "big.zarr"
    shutil.rmtree(out, ignore_errors=True)
    wall, rss, rc, text = cli(["simulate", "--organ", "glucose", "--patients", folder / "cohort.csv", "--days", days,
                               "--outputs", OUTPUTS, "--out", out], env, timeout=7200)
    assert rc == 0, text
    return {"patients": n, "days": days, "distinct_timelines": distinct, "wall_s": wall, "peak_rss_MB": rss,
            "store_MB": du(out), "patient_days_per_s": n * days / wall}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--quick", action="store_true", help="small sizes (a check of the script, not figures)")
    ap.add_argument("--big", action="store_true", help="also 100,000 patients x 7 days to Zarr")
    args = ap.parse_args(argv)
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    env = {"PHYSIOTWIN_JAX_CACHE": str(out_dir / "jax-cache")}
    jax.config.update("jax_compilation_cache_dir", env["PHYSIOTWIN_JAX_CACHE"])
    meals = write_meals(out_dir / "meals.csv")
    q = args.quick
    res = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                       "python": platform.python_version()}}
    print("simglucose ...", flush=True)
    res["simglucose"] = simglucose_baseline(2 if q else 3)
    sg = res["simglucose"]["seconds_per_patient_day"]
    print("in-process ...", flush=True)
    res["in_process"] = [in_process(1024 if q else 8192, ["glucose"], 1, 3, 1024, meals, OUTPUTS.split(",")),
                         in_process(1024 if q else 4096, ["glucose"], 7, 2, 1024, meals, OUTPUTS.split(","))]
    for r in res["in_process"]:
        r["x_simglucose"] = r["patient_days_per_s"] * sg
    print("CLI ...", flush=True)
    res["cli"] = cli_rates(out_dir, (100, 2000) if q else (1000, 20000), meals, env, 2 if q else 3, sg)
    print("Zarr ...", flush=True)
    res["zarr"] = zarr_rate(out_dir)
    print("trials ...", flush=True)
    res["trial"] = trials(out_dir, population(out_dir, 1024 if q else 32768, env), meals, env, 256 if q else 1024)
    print("cold start ...", flush=True)
    res["cold_start"] = cold_start(out_dir, meals)
    print("three organs ...", flush=True)
    three = ["glucose", "cardiovascular", "renal"]
    res["three_organs"] = [in_process(256 if q else 1000, three, 1, 2, 500, meals, ["glucose.plasma_glucose"]),
                           in_process(256 if q else 1000, three, 7, 1, 500, meals, ["glucose.plasma_glucose"]),
                           adaptive_reference(64 if q else 200, three, meals)]
    if args.big:
        print("100,000 x 7 days ...", flush=True)
        res["big"] = big_run(out_dir, env, n=10_000 if q else 100_000)
    text = report(res)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=float))
    if args.markdown:
        args.markdown.write_text(text)
    return 0


def report(r: dict) -> str:
    sg = r["simglucose"]["seconds_per_patient_day"]
    c = r["cli"]
    lines = ["# Cohort benchmark results", "", f"Machine: {r['machine']}", "",
             f"simglucose 0.2.11, adult#001, one day: **{sg:.3f} s per patient-day** (median).", "",
             "| path | organs | patients x days | pt-days/s | x simglucose |", "|---|---|---|---|---|"]
    for row in r["in_process"] + r["three_organs"]:
        x = row["patient_days_per_s"] * sg
        path = "in process, adaptive (reference)" if "solver" in row else f"in process, cohort (chunk {row['chunk']})"
        lines.append(f"| {path} | {'+'.join(row['organs'])} | {row['patients']} x {row['days']} | "
                     f"{row['patient_days_per_s']:.0f} | {x:,.0f} |")
    for row in c["rows"]:
        lines.append(f"| CLI `simulate ... --out X.zarr` (process start included) | glucose | {row['patients']} x 1 | "
                     f"{row['patients'] / row['median_s']:.0f} | {row['patients'] / row['median_s'] * sg:,.0f} |")
    lines.append(f"| CLI marginal ({c['rows'][0]['patients']} -> {c['rows'][-1]['patients']}) | glucose | | "
                 f"{c['marginal_patient_days_per_s']:.0f} | **{c['marginal_x_simglucose']:,.0f}** |")
    z, t, s = r["zarr"], r["trial"], r["cold_start"]
    lines += ["", f"CLI peak memory: " + ", ".join(f"{row['patients']} patients {row['peak_rss_MB']:.0f} MB"
                                                     for row in c["rows"])
              + f"; marginal {1000 * c['marginal_MB_per_patient']:.2f} kB per patient-day (2 variables, 5 min).",
              f"Zarr writes: {z['MB_per_s']:.0f} MB/s ({z['patients_per_s']:.0f} patients/s of 2 x {z['times']} "
              f"values; store {z['store_MB']:.0f} MB).",
              f"Trial (2 arms x {t['patient_arm_days'] // 2} patients x 1 day): in process {t['workers_0_s']:.1f} s, "
              f"Dask 1 worker {t['workers_1_s']:.1f} s, 2 workers {t['workers_2_s']:.1f} s "
              f"(x{t['speedup_2_vs_1']:.2f}). Killed (SIGKILL) after {t['killed_after_tasks']} of {t['tasks']} tasks, "
              f"restarted in {t['restart_s']:.1f} s: equal to the uninterrupted run: "
              f"**{'yes' if t['restarted_equals_uninterrupted'] else 'NO'}**.",
              f"One patient-day through the CLI: {s['cold_empty_cache_s']:.1f} s with an empty compilation cache, "
              f"{s['warm_cache_median_s']:.1f} s warm, {s['cache_disabled_s']:.1f} s with the cache disabled; "
              f"`import physiotwin.cli` {s['import_s']:.1f} s, `physiotwin --version` {s['physiotwin_version_s']:.1f} s."]
    if "big" in r:
        b = r["big"]
        lines.append(f"{b['patients']:,} patients x {b['days']} days, per-patient timelines ({b['distinct_timelines']} "
                     f"files), 2 variables every 5 min, to Zarr through the CLI: {b['wall_s']:.0f} s "
                     f"({b['patient_days_per_s']:.0f} pt-days/s), peak memory **{b['peak_rss_MB']:.0f} MB**, store "
                     f"{b['store_MB']:.0f} MB.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
