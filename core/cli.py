"""The ``physiotwin`` command line (click).

    physiotwin organs [--json]
    physiotwin patients [--csv]
    physiotwin simulate --organ glucose --patient adult#001 --timeline meals.csv --hours 24 --out run.nc [--plot run.png]
    physiotwin demo
    physiotwin calibrate RECORD.csv --out TWIN_DIR [--organ glucose] [--hybrid/--no-hybrid] [--seed N]
    physiotwin forecast TWIN_DIR RECORD.csv --horizon 30 --horizon 60 --every 5 --out FC.nc
    physiotwin evaluate TWIN_DIR RECORD.csv [--horizon 30 --horizon 60] [--out TABLE.csv]

Input problems end with a one-line ``error: ...`` on stderr, exit status 1, and no
output file. Exit status 3 means the run finished but some patients' solves failed
(they are flagged in ``solver_status``; the other patients' results are written).
"""

from __future__ import annotations

import json
import os
import sys
from importlib import resources
from pathlib import Path

import click

EXIT_INPUT = 1
EXIT_PARTIAL = 3


def _setup_jax() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    # one CPU device per core: large cohorts are split over them (before JAX starts its backend)
    try:
        jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    except RuntimeError:
        pass  # the backend is already running (e.g. the CLI invoked from a Python session)
    cache = os.environ.get("PHYSIOTWIN_JAX_CACHE", str(Path.home() / ".cache" / "physiotwin" / "jax"))
    if cache:
        try:
            Path(cache).mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        except OSError:
            pass  # a cache is an optimisation only


def _user_errors():
    from .composer import WiringError
    from .io import OutputError
    from .patients import PatientError
    from .registry import PluginError
    from .simulate import SimulationError
    from .timeline import TimelineError
    from .units import UnitError
    from .calibration.observation import ObservationError
    from .calibration.space import CalibrationError
    from .calibration.twin import TwinError

    return (WiringError, OutputError, PatientError, PluginError, SimulationError, TimelineError, UnitError,
            CalibrationError, TwinError, ObservationError)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INPUT)


class _Group(click.Group):
    """Turns the package's own input errors into one-line messages (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _user_errors() as err:
            _fail(str(err))


@click.group(cls=_Group)
@click.version_option(package_name="physiotwin")
def main() -> None:
    """physiotwin: patient digital twins from composable organ models."""
    _setup_jax()


# --------------------------------------------------------------------- organs
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def organs(as_json: bool) -> None:
    """List the organs provided by installed plugins."""
    from .registry import organ_classes, plugin_manager

    pm = plugin_manager()
    dists = {name: dist.project_name if hasattr(dist, "project_name") else dist.metadata["name"]
             for plugin, dist in pm.list_plugin_distinfo() for name in [pm.get_name(plugin)]}
    rows = []
    for name, cls in organ_classes().items():
        plugin = next((n for n, p in pm.list_name_plugin() if getattr(p, "__name__", "") == cls.__module__), cls.__module__)
        rows.append({
            "name": name,
            "description": cls.description,
            "reference": cls.reference,
            "plugin": plugin,
            "distribution": dists.get(plugin, ""),
            "states": [s.name for s in cls.states],
            "inputs": {i.name: i.unit for i in cls.inputs},
            "outputs": {o.name: o.unit for o in cls.outputs},
            "ports": {p.name: p.unit for p in cls.ports},
            "parameters": len(cls.params),
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:<14} {r['description']}")
        click.echo(f"{'':<14} {len(r['states'])} states, {r['parameters']} parameters, "
                   f"outputs: {', '.join(r['outputs'])}   [{r['distribution'] or r['plugin']}]")


# ------------------------------------------------------------------- patients
@main.command()
@click.option("--csv", "as_csv", is_flag=True, help="Print the full parameter table as CSV (accepted back by --patients).")
def patients(as_csv: bool) -> None:
    """List the bundled virtual patients."""
    from .patients import bundled_patients

    table = bundled_patients()
    if as_csv:
        out = table.drop(columns=["source"]).reset_index()
        click.echo(out.to_csv(index=False, na_rep=""), nl=False)
        return
    for source, group in table.groupby("source", sort=False):
        click.echo(f"{source}:")
        names = list(group.index)
        for k in range(0, len(names), 5):
            click.echo("  " + "  ".join(f"{n:<16}" for n in names[k:k + 5]).rstrip())


# ------------------------------------------------------------------- simulate
def _summary(ds) -> None:
    import numpy as np

    from .simulate import STATUS_MEANINGS

    if "glucose.plasma_glucose" not in ds:
        return
    g = np.atleast_2d(ds["glucose.plasma_glucose"].values)
    names = list(np.atleast_1d(ds["patient"].values))
    status = np.atleast_1d(ds["solver_status"].values)
    click.echo(f"{'patient':<16} {'mean':>7} {'min':>7} {'max':>7} {'TIR%':>6}  status   (plasma glucose, mg/dL)")
    for n, row, s in zip(names, g, status):
        if s == 0:
            tir = 100.0 * np.mean((row >= 70) & (row <= 180))
            click.echo(f"{n:<16} {row.mean():7.1f} {row.min():7.1f} {row.max():7.1f} {tir:6.1f}  {STATUS_MEANINGS[s]}")
        else:
            click.echo(f"{n:<16} {'':>7} {'':>7} {'':>7} {'':>6}  {STATUS_MEANINGS[s]}")


def _run(organs, patients, timeline, minutes, every, out, plot) -> None:
    import numpy as np

    from .io import check_writable, plot_glucose, write_netcdf
    from .registry import timeline_kinds
    from .simulate import simulate
    from .timeline import read_timeline

    check_writable(out)
    if plot:
        check_writable(plot, "plot")
    tl = read_timeline(timeline, kinds=timeline_kinds()) if timeline is not None else None
    ds = simulate(list(organs), patients, tl, minutes=minutes, every=every)
    write_netcdf(ds, out)
    click.echo(f"wrote {out}  ({ds.sizes['time']} times x {ds.sizes.get('patient', 1)} patient(s), organs: {ds.attrs['organs']})")
    if plot:
        plot_glucose(ds, plot)
        click.echo(f"wrote {plot}")
    _summary(ds)
    status = np.atleast_1d(ds["solver_status"].values)
    if np.any(status != 0):
        failed = list(np.atleast_1d(ds["patient"].values)[status != 0])
        click.echo(f"warning: the solve failed for {len(failed)} patient(s): {', '.join(map(str, failed))} "
                   f"(see solver_status); the other results stand", err=True)
        sys.exit(EXIT_PARTIAL)


@main.command()
@click.option("--organ", "organs", multiple=True, required=True, help="Organ to compose (repeat for several).")
@click.option("--patient", "patient_names", multiple=True, help="Bundled patient name (repeat for several).")
@click.option("--patients", "patients_csv", type=click.Path(dir_okay=False), help="CSV table of patients (see `patients --csv`).")
@click.option("--timeline", type=click.Path(dir_okay=False), help="Timeline file (CSV or TOML).")
@click.option("--hours", type=float, help="Duration in hours.")
@click.option("--days", type=float, help="Duration in days.")
@click.option("--every", type=float, default=5.0, show_default=True, help="Output interval in minutes.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output NetCDF file.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write a PNG plot.")
def simulate(organs, patient_names, patients_csv, timeline, hours, days, every, out, plot) -> None:
    """Simulate patients on a timeline and write a NetCDF file."""
    if (hours is None) == (days is None):
        _fail("give exactly one of --hours or --days")
    minutes = hours * 60.0 if hours is not None else days * 1440.0
    if not minutes > 0:
        _fail(f"duration must be > 0, got {hours if hours is not None else days}")
    if bool(patient_names) == bool(patients_csv):
        _fail("give --patient NAME (repeatable) or --patients FILE.csv, not both or neither")
    if patients_csv:
        patients = Path(patients_csv)
    else:
        patients = patient_names[0] if len(patient_names) == 1 else list(patient_names)
    _run(organs, patients, timeline, minutes, every, out, plot)


# ----------------------------------------------------------------------- demo
@main.command()
@click.option("--out-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder for demo.nc and demo.png.")
def demo(out_dir: str) -> None:
    """Simulate three bundled patients for one day on the bundled scenario."""
    folder = Path(out_dir)
    if not folder.is_dir():
        _fail(f"--out-dir {folder}: folder does not exist")
    with resources.as_file(resources.files("physiotwin").joinpath("data/demo_scenario.csv")) as scenario:
        click.echo(f"scenario: {scenario.name} (3 meals with boluses, one basal change), 24 h, organ: glucose")
        _run(("glucose",), ["adult#001", "adult#002", "adolescent#006"], scenario, 1440.0, 5.0,
             folder / "demo.nc", folder / "demo.png")


# ------------------------------------------------------------------ calibrate
def _read_record(path: str):
    from .registry import timeline_kinds
    from .timeline import read_timeline

    return read_timeline(path, kinds=timeline_kinds())


@main.command()
@click.argument("record", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Twin directory to write.")
@click.option("--organ", "organs", multiple=True, default=("glucose",), show_default=True,
              help="Organ of the mechanistic core (repeat for several).")
@click.option("--hybrid/--no-hybrid", default=True, show_default=True,
              help="Add residual networks where the organs declare slots.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option("--optimizer", type=click.Choice(["adam", "bfgs"]), default="bfgs", show_default=True,
              help="Mechanistic stage: bfgs (optimistix) or adam (optax, early stopping). Networks: adam.")
@click.option("--starts", type=int, default=2, show_default=True, help="Multistart runs.")
@click.option("--steps", type=int, default=None, help="Iteration budget of the mechanistic stage.")
@click.option("--hybrid-steps", type=int, default=None, help="Iteration budget of the network stage.")
@click.option("--noise", type=click.Choice(["ar1", "gaussian", "student_t"]), default="ar1", show_default=True,
              help="CGM error model.")
@click.option("--fit", "fit", multiple=True, help="Parameter to fit, organ.param (repeat; default: the organs' own).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def calibrate(record, out, organs, hybrid, seed, optimizer, starts, steps, hybrid_steps, noise, fit, quiet) -> None:
    """Fit a patient twin to RECORD (timeline CSV with CGM readings) and save it to --out."""
    from .calibration.fit import FitSettings
    from .calibration.twin import calibrate as run

    out_path = Path(out)
    if out_path.exists() and not out_path.is_dir():
        _fail(f"--out {out}: exists and is not a folder")
    if out_path.is_dir() and any(out_path.iterdir()) and not (out_path / "twin.json").exists():
        _fail(f"--out {out}: folder is not empty and holds no twin; not overwriting it")
    tl = _read_record(record)
    options = {"seed": seed, "optimizer": optimizer, "starts": starts, "progress": not quiet}
    if steps is not None:
        options["steps"] = steps
    if hybrid_steps is not None:
        options["hybrid_steps"] = hybrid_steps
    twin = run(tl, list(organs), hybrid=hybrid, noise=noise, fit=list(fit) or None,
               settings=FitSettings(**options))
    twin.record_source = Path(record).name
    twin.save(out_path)
    d = twin.result.diagnostics
    click.echo(f"wrote {out}  ({'hybrid' if twin.hybrid is not None else 'mechanistic'} twin of {Path(record).name}, "
               f"organs: {', '.join(organs)}, {d['seconds']:.0f} s)")
    click.echo(f"fit RMSE {d['train_rmse']:.1f} mg/dL on {d['train_readings']} readings; held-out "
               f"{d['validation_minutes'] / 60:.0f} h: RMSE {d['validation_rmse']:.1f} mg/dL "
               f"(mechanism alone {d['mechanistic_validation_rmse']:.1f}); sensor SD {d['noise']['sigma']:.1f} mg/dL")
    for name, share in d.get("residual_share", {}).items():
        click.echo(f"residual {name}: {100 * share:.0f} % of its state's derivative (RMS)")


# ------------------------------------------------------------------- forecast
def _twin_and_record(command):
    """TWIN_DIR RECORD arguments and the --horizon/--every options of forecast and evaluate."""
    for decorator in reversed((
        click.argument("twin_dir", type=click.Path(file_okay=False)),
        click.argument("record", type=click.Path(dir_okay=False)),
        click.option("--horizon", "horizons", type=int, multiple=True, default=(30, 60), show_default=True,
                     help="Forecast horizon in minutes (repeat)."),
        click.option("--every", type=int, default=5, show_default=True, help="Minutes between forecast origins."),
    )):
        command = decorator(command)
    return command


@main.command()
@_twin_and_record
@click.option("--variant", type=click.Choice(["twin", "mechanistic", "population"]), default="twin",
              show_default=True, help="Which parameters forecast (see physiotwin.calibration.twin).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output NetCDF file.")
def forecast(twin_dir, record, horizons, every, variant, out) -> None:
    """Forecast CGM from every origin of RECORD with a saved twin; write a NetCDF file."""
    from .calibration.twin import Twin
    from .io import check_writable, write_netcdf

    check_writable(out)
    twin = Twin.load(twin_dir)
    tl = _read_record(record)
    ds = twin.forecast(tl, horizons, every, variant)
    write_netcdf(ds, out)
    click.echo(f"wrote {out}  ({ds.sizes['origin']} origins x horizons {', '.join(map(str, horizons))} min, "
               f"variant {variant})")
    if "warning" in ds.attrs:
        click.echo(f"warning: {ds.attrs['warning']}", err=True)
        sys.exit(EXIT_PARTIAL)


# ------------------------------------------------------------------- evaluate
@main.command()
@_twin_and_record
@click.option("--warmup", type=int, default=120, show_default=True,
              help="Minutes at the start of RECORD with no scored origin (the state filter settles).")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the table as CSV.")
def evaluate(twin_dir, record, horizons, every, warmup, out) -> None:
    """Score a twin's forecasts on RECORD beside persistence, linear AR, population and mechanistic baselines."""
    from .calibration.evaluate import evaluate as run
    from .calibration.twin import Twin
    from .io import check_writable

    if out:
        check_writable(out)
    twin = Twin.load(twin_dir)
    tl = _read_record(record)
    ev = run(twin, tl, horizons, every, warmup)
    click.echo(f"record {Path(record).name}: forecasts from {ev.origins} origins (every {every} min after "
               f"{warmup} min); n = those with a reading at origin + horizon")
    click.echo(ev.markdown(), nl=False)
    m = ev.record_metrics
    click.echo(f"record CGM: mean {m['mean']:.0f} mg/dL, CV {m['cv']:.0f} %, GMI {m['gmi']:.1f} %, "
               f"TIR {m['tir']:.0f} %, TBR<70 {m['tbr70']:.1f} %, TBR<54 {m['tbr54']:.1f} %, "
               f"TAR>180 {m['tar180']:.0f} %, TAR>250 {m['tar250']:.0f} %, LBGI {m['lbgi']:.1f}, HBGI {m['hbgi']:.1f}")
    if out:
        tmp = Path(out).with_name(Path(out).name + ".part")
        ev.table.to_csv(tmp, index=False)
        tmp.replace(out)
        click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
