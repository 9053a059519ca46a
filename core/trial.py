"""In-silico trials: arms x a cohort, chunk by chunk, on dask.distributed.

A trial is described by a TOML file:

```toml
organs = ["glucose"]
days = 7
every = 5                                   # output interval, min
outputs = ["glucose.subcutaneous_glucose"]  # saved trajectories (default: the measurable variables)
trajectories = true                         # false: per-patient summaries only
chunk = 512                                 # patients per task
metrics = ["tir", "tbr70"]                  # summary entries compared between arms (default: the headline ones)

[cohort]
patients = "cohort.csv"                     # relative to this file; may have a 'timeline' column
timeline = "meals.csv"                      # timeline of the rows that name none

[[arms]]
name = "usual care"

[[arms]]
name = "bolus +20 %"
scale = { bolus = 1.2 }                     # multiply the values of these timeline kinds
# timeline = "other.csv"                    # or: every patient follows this timeline instead
# controller = "basal_bolus"                # and/or a closed-loop controller (`physiotwin extensions`)
```

Each task is one arm x one chunk of patients: it solves the chunk (`physiotwin.cohort`)
and writes its own region of the Zarr store (`physiotwin.cohort_io.ZarrWriter`), with
the per-patient summaries of the measurable variables beside the trajectories. Tasks run
on a ``LocalCluster`` of worker processes (one thread each), on a scheduler's cluster
(``scheduler=ADDRESS``), or in this process (``workers=0``). A rerun skips finished tasks:
a crash loses at most the running ones. At the end, `arm_summary` tabulates every arm's
distribution of the chosen metrics and the paired difference of each arm from the first.
"""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import xarray as xr

from .errors import PhysiotwinError

__all__ = ["TrialError", "TrialSpec", "read_spec", "run_trial", "arm_summary", "plot_arms"]


class TrialError(PhysiotwinError):
    """A trial specification that cannot be run."""


@dataclass(frozen=True)
class Arm:
    name: str
    scale: tuple[tuple[str, float], ...] = ()
    timeline: str | None = None
    controller: str | None = None


@dataclass(frozen=True)
class TrialSpec:
    path: str
    organs: tuple[str, ...]
    minutes: int
    every: int
    patients: str
    timeline: str | None
    arms: tuple[Arm, ...]
    outputs: tuple[str, ...] | None = None
    trajectories: bool = True
    chunk: int = 512
    metrics: tuple[str, ...] | None = None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


_KEYS = {"organs", "days", "hours", "every", "outputs", "trajectories", "chunk", "metrics", "cohort", "arms"}


def _get(table: dict, key: str, kind, where: str, default=None):
    value = table.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise TrialError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def read_spec(path: str | Path) -> TrialSpec:
    """Read and check a trial TOML file (paths in it are relative to it)."""
    path = Path(path)
    name = path.name
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as err:
        raise TrialError(f"{name}: cannot read trial specification ({err.strerror})") from None
    except tomllib.TOMLDecodeError as err:
        raise TrialError(f"{name}: not valid TOML ({err})") from None
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise TrialError(f"{name}: unknown key {unknown[0]!r} (keys: {', '.join(sorted(_KEYS))})")
    organs = _get(raw, "organs", list, name)
    if not organs:
        raise TrialError(f"{name}: 'organs' (a list of organ names) is required")
    days, hours = _get(raw, "days", (int, float), name), _get(raw, "hours", (int, float), name)
    if (days is None) == (hours is None):
        raise TrialError(f"{name}: give exactly one of 'days' or 'hours'")
    minutes = float(days) * 1440 if days is not None else float(hours) * 60
    cohort = _get(raw, "cohort", dict, name) or {}
    patients = _get(cohort, "patients", str, f"{name} [cohort]")
    if not patients:
        raise TrialError(f"{name}: [cohort] needs 'patients' (a patients table, CSV)")
    folder = path.resolve().parent
    rel = lambda p: None if p is None else str(p if Path(p).is_absolute() else folder / p)  # noqa: E731
    arms = []
    for i, a in enumerate(_get(raw, "arms", list, name) or []):
        where = f"{name} arms[{i}]"
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise TrialError(f"{where}: every [[arms]] needs a 'name'")
        extra = sorted(set(a) - {"name", "scale", "timeline", "controller"})
        if extra:
            raise TrialError(f"{where}: unknown key {extra[0]!r} (keys: name, scale, timeline, controller)")
        scale = _get(a, "scale", dict, where) or {}
        bad = [k for k, v in scale.items() if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0]
        if bad:
            raise TrialError(f"{where}: scale of {bad[0]!r} must be a number >= 0")
        arms.append(Arm(a["name"], tuple(sorted((k, float(v)) for k, v in scale.items())),
                        rel(_get(a, "timeline", str, where)), _get(a, "controller", str, where)))
    if not arms:
        raise TrialError(f"{name}: no [[arms]]")
    if len({a.name for a in arms}) != len(arms):
        raise TrialError(f"{name}: two arms share a name")
    outputs = _get(raw, "outputs", list, name)
    metrics = _get(raw, "metrics", list, name)
    return TrialSpec(str(path.resolve()), tuple(organs), int(round(minutes)), int(_get(raw, "every", int, name, 5)),
                     rel(patients), rel(_get(cohort, "timeline", str, f"{name} [cohort]")), tuple(arms),
                     tuple(outputs) if outputs else None, bool(_get(raw, "trajectories", bool, name, True)),
                     int(_get(raw, "chunk", int, name, 512)), tuple(metrics) if metrics else None)


# ------------------------------------------------------------------ the tasks
def scaled(timeline, factors: tuple[tuple[str, float], ...]):
    """The timeline with the values of some kinds multiplied (an arm's therapy change)."""
    from .timeline import Timeline

    if not factors:
        return timeline
    value = np.array(timeline.value)
    for kind, f in factors:
        value[timeline.kind == kind] *= f
    return Timeline(timeline.time, timeline.kind, value, timeline.duration, timeline.row, timeline.source,
                    timeline.start, timeline.kinds, timeline.row_label)


def _check_arm_kinds(spec: TrialSpec) -> None:
    from .registry import timeline_kinds

    known = timeline_kinds()
    for arm in spec.arms:
        for kind, _ in arm.scale:
            if kind not in known:
                raise TrialError(f"{Path(spec.path).name}: arm {arm.name!r} scales unknown timeline kind {kind!r} "
                                 f"(kinds: {', '.join(sorted(known))})")


@functools.lru_cache(maxsize=4)
def _runs(spec: TrialSpec):
    """Per arm, the cohort run (built once per process: workers keep it between tasks)."""
    from .cohort import Cohort, CohortRun, read_cohort
    from .cohort_io import measurable
    from .composer import compose
    from .timeline import read_timeline

    model = compose(list(spec.organs))
    base = read_cohort(model, Path(spec.patients), spec.timeline)
    outputs = spec.outputs or tuple(v for v, _ in measurable(list(model.state_names) + list(model.output_names)))
    runs = []
    for arm in spec.arms:
        if arm.timeline is not None:
            cohort = Cohort(base.names, base.theta, (read_timeline(arm.timeline),), np.zeros(len(base), np.int64),
                            base.source)
        else:
            cohort = Cohort(base.names, base.theta, tuple(scaled(t, arm.scale) for t in base.timelines), base.which,
                            base.source)
        runs.append(CohortRun(model, cohort, spec.minutes, spec.every, outputs=list(outputs) or None,
                              chunk=spec.chunk, devices=_devices(), controller=arm.controller))
    return runs


def _devices():
    import jax

    return jax.local_devices()


def chunk_dataset(spec: TrialSpec, arm: int, k: int) -> xr.Dataset:
    """The Dataset of one task: trajectories (unless ``trajectories = false``) and the
    per-patient summaries of the measurable variables."""
    from .cohort_io import summary_dataset

    run = _runs(spec)[arm]
    ds = run.dataset(k, run.solve(k))
    summary = summary_dataset(ds)
    if not spec.trajectories:
        return summary
    return ds.merge(summary[[v for v in summary.data_vars if v not in ds]])


def run_task(spec: TrialSpec, store: str, arm: int, k: int) -> int:
    """Solve and write one task (arm ``arm``, chunk ``k``); returns its number of patients.
    Runs in a worker process: sets up JAX there first."""
    from .cohort_io import ZarrWriter
    from .jaxsetup import setup_jax

    setup_jax(devices=1)
    ds = chunk_dataset(spec, arm, k)
    writer = ZarrWriter(store, None, [], spec.chunk, _fingerprint_spec(spec), outer=("arm", _arm_names(spec)))
    writer.write(k, ds, outer=arm)
    return int(ds.sizes["patient"])


def _arm_names(spec: TrialSpec) -> list[str]:
    return [a.name for a in spec.arms]


def _fingerprint_spec(spec: TrialSpec) -> dict:
    """What a resumed trial must share with the interrupted one: the specification and the
    contents of the files it names."""
    import hashlib

    files = [f for f in [spec.patients, spec.timeline] + [a.timeline for a in spec.arms] if f]
    return {**{k: v for k, v in spec.as_dict().items() if k != "path"},
            "files": {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}}


# ------------------------------------------------------------------ the driver
def run_trial(spec: TrialSpec, out: str | Path, *, workers: int | None = None, scheduler: str | None = None,
              progress: Callable[[int], None] | None = None, total: Callable[[int, int], None] | None = None
              ) -> xr.Dataset:
    """Run every task not yet done, then move the store into place; returns the opened store.

    ``workers=0`` runs the tasks in this process; otherwise on ``scheduler`` (an address) or a
    new ``LocalCluster`` of ``workers`` processes (default: one per core). ``progress(n)`` is
    called with each finished task's patients; ``total(patients, already_done)`` once at the start."""
    from .cohort_io import ZarrWriter

    _check_arm_kinds(spec)
    runs = _runs(spec)  # reads and checks the cohort here, before any worker starts
    run = runs[0]
    out = Path(out)
    tasks = [(a, k) for a in range(len(spec.arms)) for k in range(run.n_chunks)]
    part = out.with_name(out.name + ".part")
    template = None if part.exists() else chunk_template(spec)
    writer = ZarrWriter(out, template, run.cohort.names, run.chunk, _fingerprint_spec(spec),
                        outer=("arm", _arm_names(spec)))
    if template is not None:  # the driver solved the first task to build the store: keep it
        writer.write(0, template, outer=0)
    done = writer.done()
    todo = [t for t in tasks if t not in done]
    size = lambda t: run.bounds(t[1])[1] - run.bounds(t[1])[0]  # noqa: E731
    if total is not None:
        total(sum(size(t) for t in tasks), sum(size(t) for t in tasks if t in done))
    from .scaleout import run_tasks

    run_tasks(run_task, [(spec, str(out), a, k) for a, k in todo], workers=workers, scheduler=scheduler,
              done=(lambda t, n: progress(n)) if progress is not None else None, name="trial")
    writer.finish(set(tasks))
    return xr.open_zarr(out)


def chunk_template(spec: TrialSpec) -> xr.Dataset:
    """The variables and attributes of the store, from the first chunk of the first arm (a
    run of it in this process: it also checks the spec before any worker starts)."""
    ds = chunk_dataset(spec, 0, 0)
    ds.attrs.update(title="physiotwin in-silico trial", trial=Path(spec.path).name,
                    arms=" | ".join(_arm_names(spec)),
                    arm_changes=" | ".join(_describe_arm(a) for a in spec.arms))
    return ds


def _describe_arm(arm: Arm) -> str:
    what = [f"timeline {Path(arm.timeline).name}"] if arm.timeline else [f"{k} x{v:g}" for k, v in arm.scale]
    what += [f"controller {arm.controller}"] if arm.controller else []
    return ", ".join(what) or "as the cohort's timelines"


# ------------------------------------------------------------------ the comparison
def _metric_vars(ds: xr.Dataset, metrics) -> list[str]:
    """The summary variables compared: those whose entry is in ``metrics`` (default: the
    headline entries of the kinds' metrics)."""
    summaries = [v for v in ds.data_vars if "entry" in ds[v].attrs]
    if metrics is None:
        return [v for v in summaries if int(ds[v].attrs.get("headline", 0))]
    found = [v for v in summaries if ds[v].attrs["entry"] in metrics]
    missing = sorted(set(metrics) - {ds[v].attrs["entry"] for v in found})
    if missing:
        raise TrialError(f"metric {missing[0]!r} is not among the summaries "
                         f"({', '.join(sorted({ds[v].attrs['entry'] for v in summaries}))})")
    return found


def arm_summary(ds: xr.Dataset, metrics=None) -> pd.DataFrame:
    """Per arm and metric: its distribution over the patients solved in every arm, and the
    paired difference from the first arm (median, 2.5-97.5 % bootstrap interval of the
    median, Wilcoxon signed-rank p)."""
    from scipy.stats import wilcoxon

    arms = [str(a) for a in ds["arm"].values]
    ok = np.all(np.asarray(ds["solver_status"].values) == 0, axis=0)
    rng = np.random.default_rng(0)
    rows = []
    for var in _metric_vars(ds, metrics):
        values = np.asarray(ds[var].values, float)[:, ok]
        base = values[0]
        for i, arm in enumerate(arms):
            v = values[i]
            row = {"arm": arm, "metric": var, "patients": int(v.size), "median": np.median(v),
                   "q25": np.percentile(v, 25), "q75": np.percentile(v, 75), "mean": v.mean()}
            if i > 0 and v.size:
                d = v - base
                boot = np.median(d[rng.integers(0, d.size, (1000, d.size))], axis=1)
                row.update(paired_median_difference=np.median(d), ci_low=np.percentile(boot, 2.5),
                           ci_high=np.percentile(boot, 97.5),
                           wilcoxon_p=float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0)
            rows.append(row)
    return pd.DataFrame(rows)


def plot_arms(ds: xr.Dataset, path: str | Path, metrics=None) -> Path:
    """Box plots of each compared metric, one box per arm (patients solved in every arm)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path

    arms = [str(a) for a in ds["arm"].values]
    ok = np.all(np.asarray(ds["solver_status"].values) == 0, axis=0)
    names = _metric_vars(ds, metrics)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.0 * max(1, len(names)), 3.6), squeeze=False)
    for ax, var in zip(axes[0], names):
        values = np.asarray(ds[var].values, float)[:, ok]
        ax.boxplot(list(values), showfliers=False)
        ax.set_xticks(range(1, len(arms) + 1), arms, rotation=20, ha="right")
        ax.set_title(var, fontsize=9)
    fig.suptitle(f"{ds.attrs.get('trial', 'trial')}: {int(ok.sum())} patients per arm")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
