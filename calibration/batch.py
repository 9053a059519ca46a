"""Calibrating many records: one twin per record, as tasks on the scale-out engine.

`calibrate_many` calibrates every record into ``OUT/<record name>/`` with the same options,
on a local Dask cluster, a scheduler or in this process (`physiotwin.scaleout.run_tasks`,
the engine of `physiotwin trial`). Each task writes its own twin (atomically), so a rerun
skips the records whose twin is already there. A record whose calibration fails does not
stop the others: its error is reported in the table, per record, and the run ends with
the failures listed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..errors import PhysiotwinError

__all__ = ["calibrate_many", "record_files", "calibrate_one"]

TABLE = "calibrations.csv"


def record_files(paths: Sequence[str | Path]) -> list[Path]:
    """Records named directly, and the ``*.csv`` files of folders (sorted). Two records with
    the same name (their twin folder) are refused."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.glob("*.csv") if f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise PhysiotwinError(f"{p}: no such record file or folder")
    if not out:
        raise PhysiotwinError("no records (CSV files) found in " + ", ".join(map(str, paths)))
    stems = [f.stem for f in out]
    dup = next((s for s in stems if stems.count(s) > 1), None)
    if dup is not None:
        raise PhysiotwinError(f"two records are named {dup!r} (their twins would share the folder {dup}/)")
    return out


def calibrate_one(record: str, out: str, organs, hybrid: bool, options: dict) -> dict:
    """One task: calibrate ``record`` into ``out``; returns its row of the table. Errors of the
    record or of the fit become the row's ``status``/``message``."""
    from ..jaxsetup import setup_jax

    setup_jax(devices=1)
    from .settings import FitSettings
    from .twin import calibrate

    t0 = time.perf_counter()
    row = {"record": str(record), "twin": str(out), "status": "ok", "message": "", "seconds": 0.0}
    try:
        twin = calibrate(record, list(organs) or None, hybrid=hybrid, settings=FitSettings(progress=False, **options))
        twin.record_source = Path(record).name
        twin.save(out)
        warnings = twin.result.diagnostics.get("warnings", [])
        if warnings:
            row.update(status="partial", message=" | ".join(warnings))
        held = twin.result.diagnostics.get("validation_rmse", {})
        row.update({f"held_out_rmse.{k}": v for k, v in held.items() if v is not None})
    except PhysiotwinError as err:
        row.update(status="failed", message=str(err))
    except (ArithmeticError, ValueError, RuntimeError) as err:  # a fit that breaks down, reported per record
        row.update(status="failed", message=f"{type(err).__name__}: {err}")
    row["seconds"] = time.perf_counter() - t0
    return row


def calibrate_many(records: Sequence[str | Path], out: str | Path, organs: Sequence[str] = (), *, hybrid: bool = True,
                   workers: int | None = None, scheduler: str | None = None,
                   progress: Callable[[dict], None] | None = None, **options) -> pd.DataFrame:
    """Calibrate every record (files, or folders of CSV files) into ``out/<record name>/``;
    twins already there are kept (a rerun resumes). Returns the table, also written to
    ``out/calibrations.csv``; ``progress(row)`` is called as each record finishes."""
    from ..io import atomic_write_text
    from ..scaleout import run_tasks

    files = record_files(records)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, tasks = [], []
    for f in files:
        twin = out / f.stem
        if (twin / "twin.json").is_file():
            rows.append({"record": str(f), "twin": str(twin), "status": "done before", "message": "", "seconds": 0.0})
        else:
            tasks.append((str(f), str(twin), tuple(organs), hybrid, options))
    rows += run_tasks(calibrate_one, tasks, workers=workers, scheduler=scheduler, name="calibrate",
                      done=(lambda t, row: progress(row)) if progress is not None else None)
    table = pd.DataFrame(rows).sort_values("record", kind="stable").reset_index(drop=True)
    atomic_write_text(out / TABLE, table.to_csv(index=False, float_format="%.6g"))
    return table
