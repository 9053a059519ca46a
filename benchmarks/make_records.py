"""Generate synthetic T1D records with simglucose, one timeline CSV per patient.

    python benchmarks/make_records.py --out data/records [--patients adult#001 adult#002 ...]
        [--days 10] [--seed 0] [--jobs N] [--start 2026-01-05T00:00] [--clean]

Writes ``<out>/<patient with # as _>_seed<seed>.csv`` (e.g. ``adult_001_seed0.csv``) with
`physiotwin.plugins.synthetic.generate_record` (logging errors on unless ``--clean``)
and `write_record`. Patients run in a process pool (spawn) of ``--jobs`` workers. Needs
simglucose (``pip install "physiotwin[sim]"``). One patient-day takes about 2-3 s of
one core (simglucose integrates its ODE minute by minute with scipy).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

DEFAULT_PATIENTS = [f"adult#{i:03d}" for i in range(1, 11)]


def make_one(patient: str, days: float, seed: int, start: str, corrupt: bool, out: str,
             split: float | None = None) -> tuple[str, str, float]:
    """Generate and write one record; returns (patient, path, seconds)."""
    from physiotwin.plugins.synthetic import (
        generate_record,
        record_filename,
        write_record,
    )

    tic = time.perf_counter()
    df = generate_record(patient, days=days, seed=seed, start=start, corrupt=corrupt)
    path = write_record(df, Path(out) / record_filename(patient, seed))
    if split:
        from physiotwin.calibration.data import write_split

        train, test = write_split(path, split)
        path = f"{path} -> {Path(train).name}, {Path(test).name}"
    return patient, str(path), time.perf_counter() - tic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--patients", nargs="+", default=DEFAULT_PATIENTS, help="simglucose patient names")
    parser.add_argument("--days", type=float, default=10, help="days per record (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--start", default="2026-01-05T00:00", help="absolute start (default 2026-01-05T00:00)")
    parser.add_argument("--jobs", type=int, default=min(len(os.sched_getaffinity(0)), 4),
                        help="worker processes (default: cores, at most 4)")
    parser.add_argument("--clean", action="store_true", help="no logging errors (corrupt=False)")
    parser.add_argument("--split", type=float, default=None,
                        help="also write <name>_train.csv (the first SPLIT days) and <name>_test.csv (the rest)")
    args = parser.parse_args(argv)

    Path(args.out).mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(args.jobs, len(args.patients)))
    print(f"{len(args.patients)} patients x {args.days:g} days, seed {args.seed}, {jobs} jobs -> {args.out}",
          flush=True)
    tic = time.perf_counter()
    failed = 0
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            pool.submit(make_one, p, args.days, args.seed, args.start, not args.clean, args.out, args.split): p
            for p in args.patients
        }
        for done, future in enumerate(as_completed(futures), start=1):
            patient = futures[future]
            try:
                _, path, seconds = future.result()
            except Exception as err:  # report and go on with the others
                failed += 1
                print(f"[{done}/{len(futures)}] {patient}: FAILED: {err!r}", file=sys.stderr, flush=True)
                continue
            print(f"[{done}/{len(futures)}] {patient}: {path} ({seconds:.1f} s, "
                  f"{seconds / args.days:.2f} s per day)", flush=True)
    wall = time.perf_counter() - tic
    print(f"done in {wall:.1f} s ({wall * jobs / (len(args.patients) * args.days):.2f} s per patient-day per job)",
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
