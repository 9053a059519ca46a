"""The ``physiotwin`` command line (click).

    physiotwin organs [--json]
    physiotwin patients [--csv]
    physiotwin simulate --organ glucose --patient adult#001 --timeline meals.csv --hours 24 --out run.nc [--plot run.png]
    physiotwin demo
    physiotwin calibrate RECORD.csv --out TWIN_DIR [--organ glucose] [--hybrid/--no-hybrid] [--seed N]
    physiotwin forecast TWIN_DIR RECORD.csv --horizon 30 --horizon 60 --every 5 --out FC.nc [--plot FC.png]
    physiotwin evaluate TWIN_DIR RECORD.csv [--horizon 30 --horizon 60] [--out TABLE.csv] [--plot SCORES.png]
    physiotwin whatif TWIN_DIR --timeline NEW.csv --out WI.nc [--samples N] [--plot WI.png]
    physiotwin optimize TWIN_DIR --control NAME [--control ...] --objective GOAL [--max-GOAL V] --out PLAN.toml
    physiotwin report RECORD.csv [--twin TWIN_DIR] [--forecast FC.nc] [--whatif WI.nc] --out REPORT.html|.pdf|.png
    physiotwin import FILE... [--format dexcom|libre|carelink|nightscout|tidepool|ohiot1dm|fhir] --out RECORD.csv [--tz ZONE]

Input problems end with a one-line ``error: ...`` on stderr, exit status 1, and no
output file. Exit status 3 means the run finished but some patients' solves failed
(they are flagged in ``solver_status``; the other patients' results are written).
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import click

EXIT_INPUT = 1
EXIT_PARTIAL = 3


def _setup_jax() -> None:
    from .jaxsetup import setup_jax

    setup_jax()


def _user_errors():
    from .errors import PhysiotwinError

    return (PhysiotwinError,)


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
    _show_warnings_as_lines()


def _show_warnings_as_lines() -> None:
    """Notes about the user's data (`RecordWarning`) as ``warning: ...`` lines on stderr."""
    import warnings

    from .plausibility import RecordWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RecordWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("always", RecordWarning)


# ----------------------------------------------------------------- extensions
@main.command()
def extensions() -> None:
    """List what installed plugins provide besides organs: observation models, input
    corrections, closed-loop controllers, treatment controls and goals, importers, reports
    and plausibility checks."""
    from .registry import controllers, controls, corrections, goals, importers, observation_models, record_checks, reports

    sections = [
        ("observation models", {n: f"{c.kind}: {c.description}" for n, c in observation_models().items()}),
        ("input corrections", {n: f"{c.kind}: {c.description}" for n, c in corrections().items()}),
        ("controllers (--controller)", {n: f"reads {c.kind}, sets {c.signal}: {c.description}"
                                        for n, c in controllers().items()}),
        ("controls (optimize --control)", {n: c.description for n, c in controls().items()}),
        ("goals (optimize --objective, --max-GOAL, --min-GOAL)",
         {n: f"{g.description} [{g.unit}], {g.sense}imise, of {g.kind}" for n, g in goals().items()}),
        ("importers (import --format)", {n: i.description for n, i in importers().items()}),
        ("reports (report)", {n: f"{', '.join(r.kinds)}: {r.description}" for n, r in reports().items()}),
        ("plausibility checks (every record)", {n: c.description for n, c in record_checks().items()}),
    ]
    for title, rows in sections:
        click.echo(f"{title}:")
        for name, text in rows.items():
            click.echo(f"  {name:<20} {text}")


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
LIST_LIMIT = 20  # cohorts larger than this get a distribution over patients, not one line each


def _summary_rows(ds) -> dict:
    """``{variable: (unit, {column: values per patient})}`` for the measurable variables, as the
    instrument would report them (clipped to its range); failed patients are NaN."""
    import numpy as np

    from .cohort_io import measurable, reported
    from .registry import series_metrics

    status = np.atleast_1d(ds["solver_status"].values)
    out = {}
    for var, cls in measurable(ds.data_vars):
        values = np.atleast_2d(ds[var].values)
        metrics = [(m, key) for m in series_metrics(cls.kind) for key in m.headline]
        cols = {"mean": [], "min": [], "max": [], **{key: [] for _, key in metrics}}
        for row, s in zip(values, status):
            shown = reported(row, cls)
            ok = s == 0
            cols["mean"].append(row.mean() if ok else np.nan)
            cols["min"].append(row.min() if ok else np.nan)
            cols["max"].append(row.max() if ok else np.nan)
            for m, key in metrics:
                cols[key].append(m.summarise(shown, len(shown))[key] if ok else np.nan)
        out[var] = (ds[var].attrs.get("units", ""), {k: np.asarray(v, float) for k, v in cols.items()})
    return out


def _merge_rows(parts: list[dict]) -> dict:
    """`_summary_rows` of consecutive chunks of patients, as one."""
    import numpy as np

    if not parts:
        return {}
    return {var: (unit, {k: np.concatenate([p[var][1][k] for p in parts]) for k in cols})
            for var, (unit, cols) in parts[0].items()}


def _summary(ds, rows: dict | None = None) -> None:
    """Per measurable variable: mean, min, max and the kind's headline metrics, one line per
    patient, or for a large cohort their distribution over patients (median and 5-95 %).
    ``rows``: the `_summary_rows` already computed (chunk by chunk), else from ``ds``."""
    import numpy as np

    from .simulate import STATUS_MEANINGS

    names = list(np.atleast_1d(ds["patient"].values))
    status = np.atleast_1d(ds["solver_status"].values)
    for var, (unit, cols) in (_summary_rows(ds) if rows is None else rows).items():
        click.echo(f"{var} [{unit}]")
        if len(names) > LIST_LIMIT:
            ok = status == 0
            click.echo(f"  {len(names)} patients ({int(ok.sum())} solved); over patients:")
            click.echo(f"  {'':<8} {'median':>9} {'5 %':>9} {'95 %':>9}")
            for key, v in cols.items():
                if ok.any():
                    q = np.nanpercentile(v[ok], [50, 5, 95])
                    click.echo(f"  {key:<8} {q[0]:9.4g} {q[1]:9.4g} {q[2]:9.4g}")
            continue
        keys = [k for k in cols if k not in ("mean", "min", "max")]
        click.echo(f"  {'patient':<16} {'mean':>9} {'min':>9} {'max':>9} " + "".join(f"{k:>8}" for k in keys)
                   + "  status")
        for i, (n, s) in enumerate(zip(names, status)):
            if s != 0:
                click.echo(f"  {n:<16} {'':>9} {'':>9} {'':>9} " + " " * 8 * len(keys) + f"  {STATUS_MEANINGS[s]}")
                continue
            click.echo(f"  {n:<16} {cols['mean'][i]:9.4g} {cols['min'][i]:9.4g} {cols['max'][i]:9.4g} "
                       + "".join(f"{cols[k][i]:8.1f}" for k in keys) + f"  {STATUS_MEANINGS[s]}")


def _report_failures(ds) -> None:
    import numpy as np

    status = np.atleast_1d(ds["solver_status"].values)
    if np.any(status != 0):
        who = np.atleast_1d(ds["patient"].values)[status != 0]
        why = np.atleast_1d(ds["solver_message"].values)[status != 0]
        click.echo(f"warning: the solve failed for {len(who)} patient(s) (see solver_status); the other results "
                   f"stand:", err=True)
        for w, m in list(zip(who, why))[:LIST_LIMIT]:
            click.echo(f"  {w}: {m}", err=True)
        if len(who) > LIST_LIMIT:
            click.echo(f"  ... and {len(who) - LIST_LIMIT} more", err=True)
        sys.exit(EXIT_PARTIAL)


def _run(organs, patients, timeline, minutes, every, out, plot, controller=None) -> None:
    from .cohort_io import measurable
    from .io import check_writable, plot_timeseries, write_netcdf
    from .simulate import simulate
    from .timeline import read_timeline

    check_writable(out)
    if plot:
        check_writable(plot, "plot")
    tl = read_timeline(timeline) if timeline is not None else None
    ds = simulate(list(organs), patients, tl, minutes=minutes, every=every, controller=controller)
    write_netcdf(ds, out)
    click.echo(f"wrote {out}  ({ds.sizes['time']} times x {ds.sizes.get('patient', 1)} patient(s), "
               f"organs: {', '.join(ds.attrs['organs'].split())})")
    if plot:
        plot_timeseries(ds, plot, [(v, cls.reference_range) for v, cls in measurable(ds.data_vars)])
        click.echo(f"wrote {plot}")
    _summary(ds)
    _report_failures(ds)


def _progress(total: int, unit: str = "patient"):
    """A progress bar on stderr (tqdm; shown on terminals only)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)


def _run_cohort(organs, patients, timeline, minutes, every, out, outputs, summary, chunk, controller=None) -> None:
    """The chunked cohort path: per-patient timelines, fixed minute steps, NetCDF or Zarr. The
    console summary is computed chunk by chunk (a Zarr run never holds the whole cohort)."""
    import time

    import xarray as xr

    from .cohort import CohortRun, read_cohort
    from .cohort_io import ZarrWriter, fingerprint, measurable, summary_dataset
    from .composer import compose
    from .io import check_writable, write_netcdf

    zarr = str(out).rstrip("/").endswith(".zarr")
    if not zarr:
        check_writable(out)
    model = compose(list(organs))
    cohort = read_cohort(model, patients, timeline)
    if summary and not outputs:
        outputs = [v for v, _ in measurable(list(model.state_names) + list(model.output_names))] or None
    run = CohortRun(model, cohort, minutes, every, outputs=outputs, chunk=chunk, controller=controller)
    shape = summary_dataset if summary else (lambda d: d)
    t0 = time.perf_counter()
    rows, parts = [], []
    bar = _progress(len(cohort))

    def keep(ds):  # what the console summary needs of a chunk
        rows.append({} if summary else _summary_rows(ds))
        bar.update(ds.sizes["patient"])

    if zarr:
        spec = {"organs": list(organs), "patients": fingerprint(list(cohort.names)),
                "theta": fingerprint(cohort.theta.tobytes().hex()), "which": fingerprint(cohort.which.tolist()),
                "timelines": fingerprint([t.to_frame().to_json() for t in cohort.timelines]),
                "minutes": minutes, "every": every, "outputs": run.names, "summary": summary, "chunk": run.chunk,
                "controller": controller}
        resuming = Path(str(out).rstrip("/") + ".part").exists()
        first = raw = None
        if not resuming:
            raw = run.dataset(0, run.solve(0))
            first = shape(raw)
        writer = ZarrWriter(out, first, cohort.names, run.chunk, spec)
        done = writer.done()
        if first is not None and 0 not in done:
            writer.write(0, first)
            keep(raw)
            done = writer.done()
        for k in sorted(done - ({0} if first is not None else set())):  # written before an interruption
            a, b = run.bounds(k)
            bar.update(b - a)
        for k, ds in run.chunks([k for k in range(run.n_chunks) if k not in done]):
            writer.write(k, shape(ds))
            keep(ds)
        writer.finish(run.n_chunks)
        flags = xr.open_zarr(out)[["solver_status", "solver_message"]].load()
    else:
        for k, ds in run.chunks():
            parts.append(shape(ds))
            keep(ds)
        result = xr.concat(parts, dim="patient", data_vars="minimal", coords="minimal", compat="override") \
            if len(parts) > 1 else parts[0]
        write_netcdf(result, out)
        flags = result[["solver_status", "solver_message"]]
    bar.close()
    seconds = time.perf_counter() - t0
    click.echo(f"wrote {out}  ({len(cohort)} patients x {minutes / 1440:g} day(s), {len(cohort.timelines)} "
               f"timeline(s), {run.n_chunks} chunk(s) of {run.chunk}, {seconds:.1f} s; organs: {', '.join(organs)})")
    if not summary and len(rows) == run.n_chunks:
        _summary(flags, _merge_rows(rows))
    elif not summary:
        click.echo("(a resumed run: the console summary is left out; the store holds every patient)")
    _report_failures(flags)


def _outputs_option(value):
    if value is None:
        return None
    return [v.strip() for part in value for v in part.split(",") if v.strip()]


@main.command()
@click.option("--organ", "organs", multiple=True, required=True, help="Organ to compose (repeat for several).")
@click.option("--patient", "patient_names", multiple=True, help="Bundled patient name (repeat for several).")
@click.option("--patients", "patients_csv", type=click.Path(dir_okay=False),
              help="CSV table of patients (see `patients --csv`); an optional 'timeline' column names each "
                   "patient's timeline file (relative to the table).")
@click.option("--timeline", type=click.Path(dir_okay=False),
              help="Timeline file (CSV or TOML); with --patients, the timeline of rows that name none. "
                   "Without it (and without a 'timeline' column): no events.")
@click.option("--hours", type=float, help="Duration in hours.")
@click.option("--days", type=float, help="Duration in days.")
@click.option("--every", type=float, default=5.0, show_default=True, help="Output interval in minutes.")
@click.option("--out", required=True, type=click.Path(),
              help="Output file: NetCDF (.nc) or a chunked Zarr store (.zarr, bounded memory for any cohort).")
@click.option("--outputs", "outputs", multiple=True,
              help="Variables to save, organ.var, comma-separated or repeated (default: every state and output).")
@click.option("--summary", is_flag=True, help="Save per-patient summaries of the measurable variables instead of "
                                                "trajectories.")
@click.option("--solver", type=click.Choice(["auto", "adaptive", "fixed"]), default="auto", show_default=True,
              help="adaptive: shared adaptive steps that stop at every input change (one timeline); fixed: "
                   "fixed minute steps, chunked, per-patient timelines. auto: fixed for per-patient timelines, "
                   "Zarr, --outputs, --summary or more patients than --chunk, else adaptive.")
@click.option("--chunk", type=int, default=1024, show_default=True, help="Patients solved together (fixed solver).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write a PNG plot (adaptive solver).")
@click.option("--controller", help="A closed-loop controller (from a plugin) that takes over part of the timeline's "
                                   "inputs; `physiotwin extensions` lists the installed ones.")
def simulate(organs, patient_names, patients_csv, timeline, hours, days, every, out, outputs, summary, solver, chunk,
             plot, controller) -> None:
    """Simulate patients on their timelines and write NetCDF or Zarr."""
    if (hours is None) == (days is None):
        _fail("give exactly one of --hours or --days")
    minutes = hours * 60.0 if hours is not None else days * 1440.0
    if not minutes > 0:
        _fail(f"duration must be > 0, got {hours if hours is not None else days}")
    if bool(patient_names) == bool(patients_csv):
        _fail("give --patient NAME (repeatable) or --patients FILE.csv, not both or neither")
    if chunk < 1:
        _fail(f"--chunk must be >= 1, got {chunk}")
    if patients_csv:
        patients = Path(patients_csv)
    else:
        patients = patient_names[0] if len(patient_names) == 1 else list(patient_names)
    outputs = _outputs_option(outputs) or None
    if solver == "auto":
        solver = "fixed" if _wants_cohort(patients, out, outputs, summary, chunk) else "adaptive"
    if solver == "fixed" or outputs or summary:
        if plot:
            _fail("--plot runs with the adaptive solver only (one timeline, NetCDF output, every variable): leave "
                  "out --outputs/--summary/--solver fixed and the 'timeline' column")
        if solver == "adaptive":
            _fail("--outputs and --summary need --solver fixed (or auto)")
        _run_cohort(organs, patients, timeline, minutes, every, out, outputs, summary, chunk, controller)
        return
    if str(out).rstrip("/").endswith(".zarr"):
        _fail("Zarr output needs --solver fixed (or auto)")
    _run(organs, patients, timeline, minutes, every, out, plot, controller)


def _wants_cohort(patients, out, outputs, summary, chunk) -> bool:
    """Whether ``--solver auto`` takes the chunked fixed-step path (cheap checks, no parsing of
    the whole table)."""
    if outputs or summary or str(out).rstrip("/").endswith(".zarr"):
        return True
    if isinstance(patients, Path):
        from .cohort import TIMELINE_COLUMN
        from .patients import patient_table

        table = patient_table(patients)
        return TIMELINE_COLUMN in table.columns or len(table) > chunk
    return False


# ----------------------------------------------------------------- population
@main.command()
@click.option("--n", "n", type=int, required=True, help="Number of virtual patients.")
@click.option("--like", required=True, help="Bundled patients to resemble: those whose name starts with this "
                                            "(e.g. adult, adolescent, child).")
@click.option("--organ", "organs", multiple=True, help="Organs whose parameters are drawn (default: the organs of "
                                                         "the bundled table the group comes from).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Patients table to write (CSV).")
def population(n, like, organs, seed, out) -> None:
    """Draw virtual patients like a group of bundled ones (a multivariate log-normal fitted to
    the group; each organ re-derives its steady state; draws that cannot start at rest are
    rejected and counted). The table is accepted by `simulate --patients` and trial specs."""
    from .composer import compose
    from .io import atomic_write_text, check_writable
    from .population import sample_population

    if n < 1:
        _fail(f"--n must be >= 1, got {n}")
    check_writable(out)
    if not organs:
        organs = _table_organs(like)
    table, report = sample_population(compose(list(organs)), like, n, seed)
    atomic_write_text(out, f"# {n} virtual patients like the bundled '{like}' patients, seed {seed}, organs "
                           f"{', '.join(organs)} (physiotwin population)\n" + table.to_csv(index=False))
    reasons = ", ".join(f"{k}: {v}" for k, v in report["reasons"].items()) or "none"
    click.echo(f"wrote {out}  ({n} patients; {report['drawn']} drawn, {report['rejected']} rejected "
               f"({100 * report['rejected'] / max(1, report['drawn']):.1f} %): {reasons}; "
               f"{len(report['parameters'])} parameters drawn, correlations shrunk by {report['shrinkage']:.2f})")


def _table_organs(like: str) -> list[str]:
    """The composition the bundled table of the patients named ``like...`` is made for."""
    from .patients import bundled_patients
    from .registry import patient_tables

    table = bundled_patients()
    sources = set(table["source"][[str(p).startswith(like) for p in table.index]])
    if not sources:
        groups = sorted({str(p).split("#")[0] for p in table.index})
        _fail(f"--like {like!r}: no bundled patient's name starts with it (groups: {', '.join(groups)})")
    organs = {t.organs for t in patient_tables().values() if t.resource in sources and t.organs}
    if len(organs) != 1:
        _fail(f"give --organ: the bundled patients named {like!r}... come from {len(sources)} table(s) "
              f"{'without a composition' if not organs else 'made for different compositions'}")
    return list(organs.pop())


# ---------------------------------------------------------------------- trial
@main.command()
@click.argument("spec_file", metavar="SPEC.toml", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(), help="Zarr store to write (TRIAL.zarr).")
@click.option("--workers", type=int, default=None,
              help="Worker processes of a local Dask cluster (default: one per core; 0: run in this process).")
@click.option("--scheduler", help="Address of a running Dask scheduler (a real cluster) instead of a local one.")
@click.option("--table", "table_out", type=click.Path(dir_okay=False),
              help="Per-arm summary table (CSV; default: next to --out).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Per-arm box plots (PNG; default: next to --out).")
def trial(spec_file, out, workers, scheduler, table_out, plot) -> None:
    """Run an in-silico trial: every arm of SPEC.toml on its cohort, chunk by chunk on Dask.
    A rerun after an interruption skips the chunks already written."""
    from .io import atomic_write_text, check_writable
    from .trial import arm_summary, plot_arms, read_spec, run_trial

    if workers is not None and workers < 0:
        _fail(f"--workers must be >= 0, got {workers}")
    spec = read_spec(spec_file)
    out = Path(out)
    if not out.name.endswith(".zarr"):
        _fail(f"--out {out}: a trial is written to a Zarr store (name ending in .zarr)")
    table_out = Path(table_out) if table_out else out.with_name(out.name[:-5] + "_arms.csv")
    plot = Path(plot) if plot else out.with_name(out.name[:-5] + "_arms.png")
    check_writable(table_out, "table")
    check_writable(plot, "plot")
    bar = _progress(0)

    def total(n, done):
        bar.total = n
        bar.update(done)
        if done:
            click.echo(f"resuming: {done} of {n} patient-arms already written", err=True)

    ds = run_trial(spec, out, workers=workers, scheduler=scheduler, progress=bar.update, total=total)
    bar.close()
    summary = arm_summary(ds, spec.metrics)
    atomic_write_text(table_out, summary.to_csv(index=False, float_format="%.6g"))
    plot_arms(ds, plot, spec.metrics)
    click.echo(f"wrote {out}  ({len(spec.arms)} arms x {ds.sizes['patient']} patients x {spec.minutes / 1440:g} "
               f"day(s)), {table_out}, {plot}")
    click.echo(summary.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    _report_failures(_worst_arm(ds))


def _worst_arm(ds):
    """The per-patient status over arms (a patient counts as failed if any arm failed)."""
    status = ds["solver_status"].max("arm").values
    first_bad = ds["solver_status"].argmax("arm").values
    message = ds["solver_message"].values[first_bad, range(len(first_bad))]
    import xarray as xr

    return xr.Dataset({"solver_status": ("patient", status), "solver_message": ("patient", message)},
                      coords={"patient": ds["patient"].values})


# ----------------------------------------------------------------------- demo
@main.command()
@click.option("--out-dir", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder for demo.nc and demo.png.")
@click.option("--name", default=None, help="Which demo (default: the first one the installed plugins register).")
def demo(out_dir: str, name: str | None) -> None:
    """Simulate bundled patients on a bundled scenario (the demo a plugin provides)."""
    from .registry import demos

    folder = Path(out_dir)
    if not folder.is_dir():
        _fail(f"--out-dir {folder}: folder does not exist")
    available = demos()
    if not available or (name is not None and name not in available):
        _fail(f"no demo {name!r}; installed demos: {', '.join(available) or 'none'}")
    d = available[name] if name is not None else next(iter(available.values()))
    with resources.as_file(resources.files(d.package).joinpath(d.timeline)) as scenario:
        click.echo(f"scenario: {scenario.name} ({d.description})")
        _run(d.organs, list(d.patients), scenario, d.minutes, d.every, folder / "demo.nc", folder / "demo.png")


# ------------------------------------------------------------------ calibrate
def _print_fit(twin, record: str, organs) -> None:
    d = twin.result.diagnostics
    click.echo(f"wrote twin ({'hybrid' if twin.hybrid is not None else 'mechanistic'} twin of {Path(record).name}, "
               f"organs: {', '.join(organs)}, {d['seconds']:.0f} s)")
    for om in twin.observations:
        k = om.kind
        val, mech = d["validation_rmse"].get(k), d["mechanistic_validation_rmse"].get(k)
        held = "no held-out readings" if val is None else (f"held-out RMSE {val:.3g} (mechanism alone "
                                                            f"{mech:.3g})" if mech is not None else f"{val:.3g}")
        train = d["train_rmse"].get(k)
        click.echo(f"{k}: fit RMSE {train if train is None else f'{train:.3g}'} {om.unit} on "
                   f"{d['train_readings'][k]} readings; {held}; error "
                   + ", ".join(f"{n} {v:.3g}" for n, v in d["errors"][k].items()))
    for name, share in d.get("residual_share", {}).items():
        click.echo(f"residual {name}: {100 * share:.0f} % of its state's derivative (RMS)")
    _print_identifiability(d.get("identifiability", []))
    for w in d.get("warnings", []):
        click.echo(f"warning: {w}", err=True)


def _print_identifiability(rows) -> None:
    if not rows:
        return
    click.echo("parameters (posterior spread from the curvature at the optimum, in units of the prior's):")
    click.echo(f"  {'parameter':<28} {'value':>11} {'prior':>11} {'spread':>7}  verdict")
    for r in rows:
        if "value" not in r:
            click.echo(f"  {r['parameter']:<28} {'':>11} {'':>11} {'':>7}  {r['verdict']} (left at prior: no "
                       f"observation depends on it)")
            continue
        click.echo(f"  {r['parameter']:<28} {r['value']:>11.4g} {r['prior']:>11.4g} {r['ratio']:>7.2f}  {r['verdict']}")
    left = [r["parameter"] for r in rows if r["verdict"] in ("left at prior", "not informed")]
    if left:
        click.echo(f"left at their prior: {', '.join(left)}")


@main.command()
@click.argument("record", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Twin directory to write.")
@click.option("--organ", "organs", multiple=True,
              help="Organ of the mechanistic core (repeat for several; default: the organs the record's "
                   "observation kinds call for).")
@click.option("--hybrid/--no-hybrid", default=True, show_default=True,
              help="Add residual networks where the organs declare slots.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option("--optimizer", type=click.Choice(["adam", "bfgs"]), default="bfgs", show_default=True,
              help="Mechanistic stage: bfgs (optimistix) or adam (optax, early stopping). Networks: adam.")
@click.option("--starts", type=int, default=2, show_default=True, help="Multistart runs.")
@click.option("--steps", type=int, default=None, help="Iteration budget of the mechanistic stage.")
@click.option("--hybrid-steps", type=int, default=None, help="Iteration budget of the network stage.")
@click.option("--window", type=int, default=None, help="Multiple-shooting window, minutes (default: the longest the organs ask for).")
@click.option("--noise", type=click.Choice(["ar1", "gaussian", "student_t"]), default="ar1", show_default=True,
              help="Error form, for the observation models that offer one.")
@click.option("--fit", "fit", multiple=True, help="Parameter to fit, organ.param (repeat; default: the organs' own).")
@click.option("--ignore-kind", "ignore", multiple=True, help="Observation kind of the record to leave out (repeat).")
@click.option("--slot", "slots", multiple=True,
              help="Residual slot of a hybrid, organ.slot (repeat; default: every slot the organs declare).")
@click.option("--population", "shared", type=click.Path(file_okay=False),
              help="Population directory (calibrate-population): use its shared networks and fit only this "
                   "patient's parameters and conditioning vector.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def calibrate(record, out, organs, hybrid, seed, optimizer, starts, steps, hybrid_steps, window, noise, fit, ignore,
              slots, shared, quiet) -> None:
    """Fit a patient twin to RECORD (a timeline with readings) and save it to --out.

    Exit status 3: a twin was written, but part of the fit failed (see the warnings)."""
    from .calibration.settings import FitSettings
    from .calibration.twin import calibrate as run

    out_path = Path(out)
    if out_path.exists() and not out_path.is_dir():
        _fail(f"--out {out}: exists and is not a folder")
    if out_path.is_dir() and any(out_path.iterdir()) and not (out_path / "twin.json").exists():
        _fail(f"--out {out}: folder is not empty and holds no twin; not overwriting it")
    tl = _read_record(record)
    options = {"seed": seed, "optimizer": optimizer, "starts": starts, "progress": not quiet, "slots": slots}
    options.update({k: v for k, v in (("steps", steps), ("hybrid_steps", hybrid_steps), ("window", window))
                    if v is not None})
    if shared and not hybrid:
        _fail("--population uses the population's networks; it cannot be combined with --no-hybrid")
    twin = run(tl, list(organs) or None, hybrid=hybrid, noise=noise, fit=list(fit) or None, settings=FitSettings(**options),
               ignore=list(ignore), shared=shared)
    twin.record_source = Path(record).name
    twin.save(out_path)
    click.echo(f"wrote {out}")
    _print_fit(twin, record, twin.organs)
    if twin.result.diagnostics.get("warnings"):
        sys.exit(EXIT_PARTIAL)


def _read_record(path: str):
    from .plausibility import read_record

    return read_record(path)


@main.command("calibrate-many")
@click.argument("records", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder of twins: one sub-folder per record (its file name), and calibrations.csv.")
@click.option("--organ", "organs", multiple=True, help="Organ of the mechanistic core (repeat; default: per record, "
                                                         "the organs its observation kinds call for).")
@click.option("--hybrid/--no-hybrid", default=True, show_default=True, help="Add residual networks.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option("--starts", type=int, default=2, show_default=True, help="Multistart runs.")
@click.option("--steps", type=int, default=None, help="Iteration budget of the mechanistic stage.")
@click.option("--hybrid-steps", type=int, default=None, help="Iteration budget of the network stage.")
@click.option("--workers", type=int, default=None,
              help="Worker processes of a local Dask cluster (default: one per core; 0: in this process).")
@click.option("--scheduler", help="Address of a running Dask scheduler instead of a local cluster.")
@click.option("--window", type=int, default=None, help="Multiple-shooting window, minutes (default: the longest the organs ask for).")
def calibrate_many(records, out, organs, hybrid, seed, starts, steps, hybrid_steps, workers, scheduler, window) -> None:
    """Calibrate a twin of every RECORD (files, or folders of CSV records) on Dask. A rerun
    keeps the twins already written; a record that fails is reported and does not stop the
    others (exit status 3)."""
    from .calibration.batch import TABLE, calibrate_many as run, record_files

    if workers is not None and workers < 0:
        _fail(f"--workers must be >= 0, got {workers}")
    files = record_files(records)
    options = {"seed": seed, "starts": starts}
    options.update({k: v for k, v in (("steps", steps), ("hybrid_steps", hybrid_steps), ("window", window))
                    if v is not None})
    bar = _progress(len(files), unit="record")
    table = run(files, out, organs, hybrid=hybrid, workers=workers, scheduler=scheduler,
                progress=lambda row: bar.update(1), **options)
    bar.close()
    counts = table["status"].value_counts().to_dict()
    click.echo(f"wrote {Path(out) / TABLE}  ({len(table)} records: "
               + ", ".join(f"{n} {k}" for k, n in counts.items()) + ")")
    bad = table[table["status"] == "failed"]
    for _, row in bad.iterrows():
        click.echo(f"  {Path(row['record']).name}: {row['message']}", err=True)
    if len(bad):
        sys.exit(EXIT_PARTIAL)


@main.command("calibrate-population")
@click.argument("records", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Population directory to write.")
@click.option("--organ", "organs", multiple=True, help="Organ of the mechanistic core (repeat; default: from the kinds).")
@click.option("--conditioning", type=int, default=2, show_default=True,
              help="Length of each patient's conditioning vector.")
@click.option("--workers", type=int, default=None, help="Processes for the per-patient stage (default: one per core).")
@click.option("--steps", type=int, default=300, show_default=True, help="Adam steps of the shared-network stage.")
@click.option("--batch", type=int, default=4, show_default=True, help="Patients per step.")
@click.option("--slot", "slots", multiple=True, help="Residual slot, organ.slot (repeat; default: all).")
@click.option("--starts", type=int, default=2, show_default=True, help="Multistart runs of each patient's mechanism.")
@click.option("--mechanistic-steps", type=int, default=None, help="Iteration budget of each patient's mechanism.")
@click.option("--window", type=int, default=None, help="Multiple-shooting window of each patient's mechanism, minutes.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def calibrate_population(records, out, organs, conditioning, workers, steps, batch, slots, starts, mechanistic_steps,
                         window, seed, quiet) -> None:
    """Train residual networks shared by the patients of RECORDS (one record each, same length
    and kinds), with a conditioning vector per patient; write them to --out."""
    from .calibration.population import calibrate_population as run
    from .calibration.settings import FitSettings

    out_path = Path(out)
    if out_path.exists() and (not out_path.is_dir() or (any(out_path.iterdir())
                                                         and not (out_path / "population.json").exists())):
        _fail(f"--out {out}: exists and is not a population directory; not overwriting it")
    for r in records:
        _read_record(r)  # every record readable before any work starts
    settings = FitSettings(seed=seed, starts=starts, steps=mechanistic_steps, slots=slots, progress=not quiet,
                           window=window)
    pop = run(records, out_path, list(organs) or None, conditioning=conditioning, seed=seed, workers=workers,
              network_steps=steps, batch=batch, settings=settings)
    m = pop.meta
    click.echo(f"wrote {out}  ({len(m['patients'])} patients, slots {', '.join(m['spec']['slots'])}, "
               f"conditioning {conditioning}; mean validation score {m['validation_score']:.3g}; "
               f"{m['seconds']['total']:.0f} s, of which {m['seconds']['mechanistic']:.0f} s per-patient mechanisms)")
    for p in m["patients"]:
        click.echo(f"  {p['name']:<28} c = [{', '.join(f'{v:+.3f}' for v in p['cond'])}]")


@main.command()
@click.argument("twin_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the explanation to.")
def explain(twin_dir, out) -> None:
    """Explain a hybrid twin's residual networks: attribution over their inputs, the term by
    hour of day, and a sparse symbolic fit (attribution.csv, profile.csv, symbolic.json, explain.png)."""
    from .calibration.explain import explain as run, write_explanation
    from .calibration.twin import Twin

    twin = Twin.load(twin_dir)
    ex = run(twin)
    write_explanation(ex, Path(out), twin_dir)
    click.echo(f"wrote {out}")
    for row in ex["symbolic"]:
        click.echo(f"  {row['equation']}\n    (R² {row['r2']:.3f}, RMSE {row['rmse']:.3g}; dense library R² "
                   f"{row['r2_dense']:.3f})")
    for slot, tab in ex["attribution"].groupby("slot", sort=False):
        click.echo(f"  {slot}: " + ", ".join(f"{r.input} {r.importance:.2f}" for r in tab.itertuples()))


# ------------------------------------------------------------------- forecast
def _twin_and_record(command):
    """TWIN_DIR RECORD arguments and the --horizon/--every/--ignore-kind options of forecast and evaluate."""
    for decorator in reversed((
        click.argument("twin_dir", type=click.Path(file_okay=False)),
        click.argument("record", type=click.Path(dir_okay=False)),
        click.option("--horizon", "horizons", type=int, multiple=True, default=(30, 60), show_default=True,
                     help="Forecast horizon in minutes (repeat; minutes to days, e.g. 1440)."),
        click.option("--every", type=int, default=5, show_default=True, help="Minutes between forecast origins."),
        click.option("--ignore-kind", "ignore", multiple=True, help="Observation kind of RECORD to leave out."),
    )):
        command = decorator(command)
    return command


@main.command()
@_twin_and_record
@click.option("--variant", type=click.Choice(["twin", "mechanistic", "population"]), default="twin",
              show_default=True, help="Which parameters forecast (see physiotwin.calibration.twin).")
@click.option("--bands", is_flag=True, help="Also a 90 % predictive band per kind (KIND_lower, KIND_upper).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output NetCDF file.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write a PNG: forecasts beside the readings.")
def forecast(twin_dir, record, horizons, every, ignore, variant, bands, out, plot) -> None:
    """Forecast every observation kind of a saved twin from every origin of RECORD; write NetCDF.

    One variable per kind, named as the kind, in its unit, and the reading each forecast is
    scored against (KIND_observed)."""
    from .calibration.twin import Twin
    from .io import check_writable, plot_forecast, write_netcdf

    check_writable(out)
    if plot:
        check_writable(plot, "plot")
    twin = Twin.load(twin_dir)
    tl = _read_record(record)
    ds = twin.forecast(tl, horizons, every, variant, ignore=list(ignore), bands=bands)
    write_netcdf(ds, out)
    click.echo(f"wrote {out}  ({ds.sizes['origin']} origins x horizons {', '.join(map(str, horizons))} min, "
               f"variant {variant}, kinds {', '.join(twin.kinds)})")
    if plot:
        plot_forecast(ds, plot, twin.kinds, {om.kind: om.reference_range for om in twin.observations})
        click.echo(f"wrote {plot}")
    if "warning" in ds.attrs:
        click.echo(f"warning: {ds.attrs['warning']}", err=True)
        sys.exit(EXIT_PARTIAL)


# ------------------------------------------------------------------- evaluate
@main.command()
@_twin_and_record
@click.option("--warmup", type=int, default=120, show_default=True,
              help="Minutes at the start of RECORD with no scored origin (the state filter settles).")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the table as CSV.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write a PNG: RMSE of every model by horizon.")
def evaluate(twin_dir, record, horizons, every, ignore, warmup, out, plot) -> None:
    """Score a twin's forecasts on RECORD, kind by kind, beside persistence, linear AR, population and
    mechanistic baselines. Exits 1 when there is nothing to score, 3 when some
    forecasts are not finite (left out of the scores)."""
    from .calibration.evaluate import evaluate as run
    from .calibration.twin import Twin
    from .io import atomic_write_text, check_writable, plot_scores

    for path in (out, plot):
        if path:
            check_writable(path)
    twin = Twin.load(twin_dir)
    tl = _read_record(record)
    ev = run(twin, tl, horizons, every, warmup, ignore=list(ignore))
    click.echo(f"record {Path(record).name}: forecasts from {ev.origins} origins (every {every} min after "
               f"{warmup} min); n = those with a reading at origin + horizon")
    click.echo(ev.markdown(), nl=False)
    for note in ev.notes:
        click.echo(f"note: {note}")
    for kind, line in ev.descriptions.items():
        click.echo(f"record {kind}: {line}")
    if out:
        atomic_write_text(out, ev.table.to_csv(index=False))
        click.echo(f"wrote {out}")
    if plot:
        plot_scores(ev.table, plot)
        click.echo(f"wrote {plot}")
    if ev.failures:
        failed = ", ".join(f"{v} at {n} origins" for v, n in ev.failures.items())
        click.echo(f"warning: forecasts not finite (solver failure), left out of the scores: {failed}", err=True)
        sys.exit(3)


# --------------------------------------------------------------------- whatif
@main.command()
@click.argument("twin_dir", type=click.Path(file_okay=False))
@click.option("--timeline", "timeline", required=True, type=click.Path(dir_okay=False),
              help="The changed timeline (usually the record with some rows changed; may run past its end).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output NetCDF file.")
@click.option("--samples", type=int, default=0, show_default=True,
              help="Draws from the twin's posterior, for bands (0: the replay at the fitted values only).")
@click.option("--variant", type=click.Choice(["twin", "mechanistic", "population"]), default="twin",
              show_default=True, help="Which parameters replay.")
@click.option("--every", type=int, default=5, show_default=True, help="Output interval in minutes.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the posterior and sensor draws.")
@click.option("--hours", type=float, help="Length of the replay (default: the longer of the record and NEW.csv).")
@click.option("--controller", help="Run NEW.csv under a closed-loop controller (`physiotwin extensions` lists them).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write a PNG plot.")
def whatif(twin_dir, timeline, out, samples, variant, every, seed, hours, controller, plot) -> None:
    """Replay a saved twin's record under a changed timeline; write NetCDF.

    Unchanged events keep what calibration inferred about them (input corrections,
    disturbances), so replaying the record itself gives the fitted trajectory. Prints
    each observed kind's metrics for the record and the what-if side by side."""
    from .calibration.twin import Twin
    from .io import check_writable, plot_replay, write_netcdf

    check_writable(out)
    if plot:
        check_writable(plot, "plot")
    twin = Twin.load(twin_dir)
    tl = _read_record(timeline)
    ds = twin.whatif(tl, samples, variant=variant, seed=seed, every=every, hours=hours, controller=controller)
    _print_whatif(ds, twin.observations)
    write_netcdf(ds, out)
    click.echo(f"wrote {out}  ({ds.sizes['time']} times x {every} min, variant {variant}, "
               f"{samples} posterior draws)")
    if plot:
        plot_replay(ds, plot, twin.kinds, {om.kind: om.reference_range for om in twin.observations})
        click.echo(f"wrote {plot}")
    if "warning" in ds.attrs:
        click.echo(f"warning: {ds.attrs['warning']}", err=True)
        sys.exit(EXIT_PARTIAL)


# -------------------------------------------------------------------- optimize
def _limits(extra: list[str]) -> dict[str, tuple[float, float]]:
    """``--max-NAME V`` / ``--min-NAME V`` pairs (any goal a plugin registers)."""
    limits: dict[str, list[float]] = {}
    args = list(extra)
    while args:
        flag = args.pop(0)
        if not (flag.startswith("--max-") or flag.startswith("--min-")) or not args:
            raise click.UsageError(f"unexpected argument {flag!r} (limits are --max-GOAL VALUE or --min-GOAL VALUE)")
        name, raw = flag[6:], args.pop(0)
        try:
            value = float(raw)
        except ValueError:
            raise click.UsageError(f"{flag} needs a number, got {raw!r}") from None
        bounds = limits.setdefault(name, [-float("inf"), float("inf")])
        bounds[1 if flag.startswith("--max-") else 0] = value
    return {k: (v[0], v[1]) for k, v in limits.items()}


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("twin_dir", type=click.Path(file_okay=False))
@click.option("--control", "controls", multiple=True, required=True,
              help="A setting to change (repeat); `physiotwin extensions` lists the installed ones.")
@click.option("--objective", required=True, help="The goal to optimise (e.g. tir).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The plan, as TOML.")
@click.option("--timeline-out", type=click.Path(dir_okay=False),
              help="Also write the record with the plan applied (a timeline for whatif or a simulator).")
@click.option("--samples", type=int, default=4, show_default=True,
              help="Posterior draws the plan must also work for (robustness).")
@click.option("--steps", type=int, default=100, show_default=True, help="Most optimiser (BFGS) steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def optimize(ctx, twin_dir, controls, objective, out, timeline_out, samples, steps, seed) -> None:
    """Optimise treatment settings through a saved twin over its record's days.

    Limits: --max-GOAL VALUE and --min-GOAL VALUE for any goal (e.g. --max-tbr 4).
    Exits 1 with the limit named when no plan within the controls' bounds meets it."""
    from .calibration.plan import apply_plan, optimize_plan, plan_toml
    from .calibration.twin import Twin
    from .io import atomic_write_text, check_writable

    limits = _limits(ctx.args)
    check_writable(out)
    if timeline_out:
        check_writable(timeline_out)
    twin = Twin.load(twin_dir)
    res = optimize_plan(twin, controls, objective, limits, samples, steps, seed)
    for goal in res.after:
        b, a = res.before[goal], res.after[goal]
        click.echo(f"{goal:>8}: {b['mode']:7.2f} -> {a['mode']:7.2f}   (90 % of posterior draws: {a['low']:.2f} to "
                   f"{a['high']:.2f})")
    for name, described in res.described.items():
        click.echo(f"{name}: " + ", ".join(f"{k} = {v}" for k, v in described.items()))
    if timeline_out:
        record = twin.training_timeline()
        planned = apply_plan(res, record.to_frame(), record.start).to_csv(index=False, float_format="%.10g")
        atomic_write_text(timeline_out, _with_start(twin, planned))
        click.echo(f"wrote {timeline_out}")
    atomic_write_text(out, plan_toml(res, str(twin_dir)))
    click.echo(f"wrote {out}  ({res.steps} steps, {res.seconds:.1f} s)")


def _with_start(twin, text: str) -> str:
    start = twin.training_timeline().start
    return (f"# start: {start.isoformat()}\n" if start is not None else "") + text


def _print_whatif(ds, observations) -> None:
    for om in observations:
        name = f"{om.kind}_metrics"
        if name not in ds:
            continue
        m = ds[name].to_pandas()
        bands = ds[f"{name}_quantiles"].to_pandas() if f"{name}_quantiles" in ds else None
        click.echo(f"{om.kind}: {'metric':<16}{'record':>10}{'what if':>10}" + ("   90 % band" if bands is not None
                                                                            else ""))
        for metric in m.index:
            if metric in ("n", "percent_present"):
                continue
            line = f"      {metric:<16}{m.loc[metric, 'original']:10.2f}{m.loc[metric, 'whatif']:10.2f}"
            if bands is not None:
                line += f"   {bands.loc[0.05, metric]:.2f} to {bands.loc[0.95, metric]:.2f}"
            click.echo(line)



# ----------------------------------------------------------------- import
@main.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", help="Export format (default: guessed from each file; see docs/importing.md).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Record CSV to write.")
@click.option("--tz", help="Time zone of the devices' clocks (IANA name, e.g. Europe/Berlin): resolves "
                           "daylight-saving changes and writes UTC offsets.")
def import_(files, fmt, out, tz) -> None:
    """Turn device and data-system exports (FILE...) into one record CSV (--out)."""
    from .record_import import import_files, summary_lines, write_record
    from .io import check_writable
    from .plausibility import check_record
    from .registry import importers

    check_writable(out)
    result = import_files(files, importers(), fmt, tz, check=check_record)
    write_record(result, out)
    for note in result.notes:
        click.echo(f"note: {note}")
    for line in summary_lines(result):
        click.echo(line)
    click.echo(f"wrote {out} ({len(result.frame)} rows from {len(result.sources)} file(s))")


# --------------------------------------------------------------------- report
@main.command()
@click.argument("record", metavar="RECORD.csv", type=click.Path(dir_okay=False))
@click.option("--twin", "twin_dir", type=click.Path(), help="A twin directory (`physiotwin calibrate`): adds its "
              "fit, forecasts and what-if sections.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Report to write: REPORT.html (self-contained page), .pdf (a page per section/figure) or .png "
                   "(the first section).")
@click.option("--forecast", "forecast_file", type=click.Path(dir_okay=False),
              help="A forecast file (`physiotwin forecast`, FC.nc) to show instead of the twin's own forecasts.")
@click.option("--whatif", "whatif_file", type=click.Path(dir_okay=False),
              help="A what-if file (`physiotwin whatif`, WI.nc) to compare with the record.")
@click.option("--title", help="Title of the report (default: from the record's file name).")
def report(record, twin_dir, out, forecast_file, whatif_file, title) -> None:
    """Write a report of RECORD (and its twin) for people: every installed report that applies
    to the record's observation kinds (`physiotwin extensions` lists them), as HTML, PDF or PNG."""
    from .registry import reports
    from .report import check_output, make_report

    check_output(out)
    tl = _read_record(record)
    twin = None
    if twin_dir:
        from .calibration.twin import Twin

        twin = Twin.load(twin_dir)
    make_report(tl, out, reports(), twin=twin, twin_source=twin_dir or "", title=title,
                extras={"forecast": forecast_file, "whatif": whatif_file})
    click.echo(f"wrote {out}")

if __name__ == "__main__":
    main()
