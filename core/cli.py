"""The ``physiotwin`` command line (click).

    physiotwin organs [--json]
    physiotwin patients [--csv]
    physiotwin simulate --organ glucose --patient adult#001 --timeline meals.csv --hours 24 --out run.nc [--plot run.png]
    physiotwin demo

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

    return (WiringError, OutputError, PatientError, PluginError, SimulationError, TimelineError, UnitError)


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


if __name__ == "__main__":
    main()
