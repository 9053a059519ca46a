"""Throughput of the batched glucose solve, against simglucose in the same run.

    python benchmarks/throughput.py [--patients 1 30 1000] [--repeats 5] [--no-simglucose] [--json OUT.json]

One simulated day (three meals with boluses, each patient's default rest) for N
virtual patients in one jitted, vmapped call. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import physiotwin as pt  # noqa: E402
from physiotwin.patients import resolve_patients  # noqa: E402

DAY = 1440  # minutes
# (minute, carbs g, bolus U): the timed scenario and a same-shape variant for the retrace check
SCENARIO = [(420, 50, 5), (720, 70, 7), (1110, 80, 8)]
VARIANT = [(450, 40, 4), (765, 60, 6), (1140, 90, 9)]


def timeline(meals) -> pd.DataFrame:
    rows = []
    for t, g, u in meals:
        rows += [(t, "carbs", g, "g", np.nan), (t, "bolus", u, "U", np.nan)]
    return pd.DataFrame(rows, columns=["time", "kind", "value", "unit", "duration"])


def sg_events(meals):
    return [e for t, g, u in meals for e in ((t, "carbs", g, None), (t, "bolus", u, None))]


class CompileLog(logging.Handler):
    """Counts XLA compilations of the batched solve (needs jax_log_compiles)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.events: list[float] = []  # seconds of each XLA compilation of _solve_batch

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Finished XLA compilation of") and "_solve_batch" in msg:
            self.events.append(float(msg.rsplit(" in ", 1)[1].split()[0]))


def timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, out


def tile(theta: np.ndarray, n: int, shift: int = 0) -> jnp.ndarray:
    rows = np.arange(shift, shift + n) % theta.shape[0]
    return jnp.asarray(theta[rows])


def bench_n(n, sim, sim_variant, theta30, repeats, log):
    theta = tile(theta30, n)
    before = len(log.events)
    first, _ = timed(sim.solve, theta)
    xla_compile = sum(log.events[before:])
    walls, steps, ok = [], None, True
    for _ in range(repeats):
        wall, (_, _, status, steps) = timed(sim.solve, theta)
        walls.append(wall)
        ok &= bool(np.all(np.asarray(status) == 0))
    med = statistics.median(walls)
    # retrace check: new patients (rows shifted by 7), then new scenario values, same shapes
    mark = len(log.events)
    t_pat, (_, _, st1, _) = timed(sim.solve, tile(theta30, n, shift=7))
    retrace_pat = len(log.events) > mark
    mark = len(log.events)
    t_scn, (_, _, st2, _) = timed(sim_variant.solve, theta)
    retrace_scn = len(log.events) > mark
    return {
        "patients": n, "median_wall_s": med, "min_wall_s": min(walls), "walls_s": walls,
        "patient_days_per_s": n * (sim.times[-1].item() / DAY) / med,
        "first_call_s": first, "compile_s": first - med, "xla_compile_s": xla_compile,
        "median_steps": float(np.median(np.asarray(steps))), "max_solver_steps": int(np.max(np.asarray(steps))),
        "all_status_ok": ok,
        "variant_status_ok": bool(np.all(np.asarray(st1) == 0) and np.all(np.asarray(st2) == 0)),
        "retrace_new_patients": retrace_pat, "retrace_new_scenario": retrace_scn,
        "new_patients_wall_s": t_pat, "new_scenario_wall_s": t_scn,
    }


def bench_simglucose(repeats=2, patient="adult#001"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from simglucose_reference import run  # noqa: PLC0415

    run(patient, [], 1)  # warm-up: imports simglucose and reads its patient table
    walls = [timed(run, patient, sg_events(SCENARIO), DAY)[0] for _ in range(repeats)]
    from importlib.metadata import version  # noqa: PLC0415

    return {"patient": patient, "seconds_per_patient_day": statistics.median(walls), "walls_s": walls,
            "version": version("simglucose")}


def machine_info():
    dev = jax.devices()[0]
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "jax": jax.__version__,
            "physiotwin": pt.__version__, "device": f"{dev.platform}:{getattr(dev, 'device_kind', dev)}",
            "devices": len(jax.devices()), "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, nargs="+", default=[1, 30, 1000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-simglucose", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--devices", type=int, default=os.cpu_count(),
                    help="CPU devices to split patients over (default: one per core)")
    ap.add_argument("--rtol", type=float, default=None, help="solver rtol (default: physiotwin's)")
    ap.add_argument("--organs", nargs="+", default=["glucose"],
                    help="composition to time (e.g. glucose cardiovascular renal)")
    args = ap.parse_args(argv)
    jax.config.update("jax_num_cpu_devices", args.devices)  # before JAX starts its backend

    log = CompileLog()
    jax_logger = logging.getLogger("jax")
    jax_logger.addHandler(log)
    jax_logger.propagate = False  # keep the compile log off stderr
    jax.config.update("jax_log_compiles", True)

    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items() if v != ""))
    tol = {} if args.rtol is None else {"rtol": args.rtol, "atol": args.rtol}
    sim = pt.Simulator(args.organs, timeline(SCENARIO), hours=24, every=5, **tol)
    sim_variant = pt.Simulator(args.organs, timeline(VARIANT), hours=24, every=5, **tol)
    names = [p for p in pt.bundled_patients().index if not p.startswith("normal")]
    _, theta30, _ = resolve_patients(sim.model, names)
    assert theta30.shape[0] == 30, theta30.shape

    rows = []
    for n in args.patients:
        rows.append(bench_n(n, sim, sim_variant, theta30, args.repeats, log))
        rows[-1]["organs"] = list(args.organs)
        r = rows[-1]
        print(f"  N={n}: median {r['median_wall_s']:.4f} s, first call {r['first_call_s']:.2f} s", flush=True)
    sg = None if args.no_simglucose else bench_simglucose()

    print(f"\norgans: {' + '.join(args.organs)}; start: "
          f"{'composed steady state' if sim.rest is not None else 'organ initial states'}")
    print(f"scenario: 24 h, meals {SCENARIO} (min, g, U), default rest; "
          f"{type(sim.solver).__name__} rtol={float(sim.rtol):g} atol={float(sim.atol):g}, output every 5 min; "
          f"{args.repeats} timed calls per N; {len(jax.devices())} CPU device(s)")
    head = f"{'N':>6} {'median s':>10} {'pt-days/s':>11} {'compile s':>10} {'(xla s)':>8} {'steps':>7} {'max':>6} {'status':>7}"
    if sg:
        head += f" {'x simglucose':>13}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        line = (f"{r['patients']:>6} {r['median_wall_s']:>10.4f} {r['patient_days_per_s']:>11.1f} "
                f"{r['compile_s']:>10.2f} {r['xla_compile_s']:>8.2f} {r['median_steps']:>7.0f} {r['max_solver_steps']:>6} "
                f"{'ok' if r['all_status_ok'] else 'FAIL':>7}")
        if sg:
            r["speedup_vs_simglucose"] = r["patient_days_per_s"] * sg["seconds_per_patient_day"]
            line += f" {r['speedup_vs_simglucose']:>12.1f}x"
        print(line)
    if sg:
        print(f"simglucose {sg['version']} ({sg['patient']}, minute steps): "
              f"{sg['seconds_per_patient_day']:.3f} s per patient-day "
              f"= {1 / sg['seconds_per_patient_day']:.2f} pt-days/s (median of {len(sg['walls_s'])})")
    for r in rows:
        print(f"N={r['patients']}: retrace on new patients: {'yes' if r['retrace_new_patients'] else 'no'}; "
              f"retrace on new scenario values: {'yes' if r['retrace_new_scenario'] else 'no'} "
              f"(calls {r['new_patients_wall_s']:.4f} s / {r['new_scenario_wall_s']:.4f} s; "
              f"variant status {'ok' if r['variant_status_ok'] else 'FAIL'})")

    if args.json:
        args.json.write_text(json.dumps({"machine": info, "scenario": SCENARIO, "repeats": args.repeats,
                                         "results": rows, "simglucose": sg}, indent=2))
        print(f"wrote {args.json}")
    if not log.events:
        print("WARNING: no XLA compilation of _solve_batch was logged; the retrace check saw nothing")
    bad = any(not r["all_status_ok"] or r["retrace_new_patients"] or r["retrace_new_scenario"] for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
